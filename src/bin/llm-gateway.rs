//! `llm-gateway render CONFIG [-o FILE] [--port 4000] [--admin-port 9901] [--wasm PATH] [--reloadable FILE]`
//! writes a complete Envoy config for a LiteLLM `config.yaml` (or JSON);
//! `llm-gateway check CONFIG` validates it with the filter's own messages.

use llm_gateway::config;
use llm_gateway::render::{ecds_resource, envoy_bootstrap, RenderOptions};
use std::process::ExitCode;

const USAGE: &str = "usage:
  llm-gateway render CONFIG [-o FILE] [--port 4000] [--admin-port 9901] [--wasm PATH] [--reloadable ECDS_FILE]
  llm-gateway check CONFIG";

const DEFAULT_WASM: &str = "target/wasm32-wasip1/release/llm_gateway.wasm";

fn read_config(path: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // YAML is a superset of JSON: one parser reads both.
    serde_yaml::from_str(&text).map_err(|e| format!("{path}: not YAML or JSON: {e}"))
}

/// LiteLLM's top-level `environment_variables`: values for `os.environ/NAME`.
fn config_env(value: &serde_json::Value) -> Vec<(String, String)> {
    value
        .get("environment_variables")
        .and_then(|e| e.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                    serde_json::Value::Number(n) => Some((k.clone(), n.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn validate(value: &serde_json::Value) -> Result<(config::Config, Vec<String>), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let from_config = config_env(value);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let env = |name: &str| {
        std::env::var(name).ok().or_else(|| {
            from_config
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    };
    config::parse(&bytes, &env, now).map_err(|e| format!("invalid configuration: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    let (config_path, flags) = rest.split_first().ok_or(USAGE)?;
    let value = read_config(config_path)?;
    let (config, warnings) = validate(&value)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match command.as_str() {
        "check" => {
            println!(
                "{config_path}: valid — {} model groups, {} deployments",
                config.groups.len(),
                config.deployments.len()
            );
            Ok(())
        }
        "render" => {
            let mut opts = RenderOptions {
                port: 4000,
                admin_port: 9901,
                wasm_path: DEFAULT_WASM.to_string(),
                reloadable: None,
            };
            let mut out: Option<String> = None;
            let mut it = flags.iter();
            while let Some(flag) = it.next() {
                let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
                match flag.as_str() {
                    "-o" | "--output" => out = Some(value()?),
                    "--port" => {
                        opts.port = value()?.parse().map_err(|_| "--port needs a port number")?
                    }
                    "--admin-port" => {
                        opts.admin_port = value()?
                            .parse()
                            .map_err(|_| "--admin-port needs a port number")?
                    }
                    "--wasm" => opts.wasm_path = value()?,
                    "--reloadable" => opts.reloadable = Some(value()?),
                    other => return Err(format!("unknown option {other}\n{USAGE}")),
                }
            }
            if let Some(ecds) = &opts.reloadable {
                let resource = serde_yaml::to_string(&ecds_resource(&value, &opts.wasm_path))
                    .map_err(|e| e.to_string())?;
                write_atomically(ecds, &resource)?;
                eprintln!(
                    "wrote {ecds}: edit the gateway config there (atomic rename) to reload it live"
                );
            }
            let yaml = serde_yaml::to_string(&envoy_bootstrap(&value, &config, &opts))
                .map_err(|e| e.to_string())?;
            let yaml = format!("# Rendered by `llm-gateway render {config_path}`.\n{yaml}");
            match out {
                Some(path) => write_atomically(&path, &yaml),
                None => {
                    print!("{yaml}");
                    Ok(())
                }
            }
        }
        _ => Err(USAGE.to_string()),
    }
}

/// Write through a temporary file and a rename, so a watcher never sees half a file.
fn write_atomically(path: &str, content: &str) -> Result<(), String> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, content).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{path}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
