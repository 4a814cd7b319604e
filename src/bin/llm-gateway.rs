//! `llm-gateway render CONFIG [-o FILE] [--port 4000] [--admin-port 9901] [--wasm PATH] [--runtime wasm|native] [--reloadable FILE]`
//! writes a complete Envoy config for a LiteLLM `config.yaml` (or JSON);
//! `llm-gateway check CONFIG` validates it with the filter's own messages.

use llm_gateway::config::{self, yaml};
use llm_gateway::render::{ecds_resource, envoy_bootstrap, RenderOptions, Runtime};
use std::process::ExitCode;

const USAGE: &str = "usage:
  llm-gateway render CONFIG [-o FILE] [--port 4000] [--admin-port 9901] [--wasm PATH] [--runtime wasm|native] [--reloadable ECDS_FILE] [--drop-unsupported] [--ratelimit-config FILE] [--limitador-limits FILE]
  llm-gateway check CONFIG";

const DEFAULT_WASM: &str = "target/wasm32-wasip1/release/llm_gateway.wasm";

/// Where in which file: messages are listed in this order.
type FileOrder = (String, usize, usize);

/// What a config was found to have, each message with the position the user wrote it at.
struct Report {
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn located(loaded: &yaml::Loaded, path: &str, message: &str) -> String {
    let at = loaded
        .position(path)
        .map(|p| format!("{p}: "))
        .unwrap_or_default();
    if path.is_empty() {
        format!("{at}{message}")
    } else {
        format!("{at}{path}: {message}")
    }
}

/// Read, include, resolve and validate a config the way the filter will, collecting every
/// problem.
fn read_and_check(
    config_path: &str,
    drop: bool,
) -> Result<(yaml::Loaded, Option<config::Config>, Report), String> {
    let mut loaded = yaml::load_file(std::path::Path::new(config_path))?;
    if drop {
        for line in drop_unsupported(&mut loaded) {
            eprintln!("{line}");
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let env = |name: &str| std::env::var(name).ok();
    let (config, d) = config::check_value(loaded.value.clone(), &env, now);
    // In the order they appear in the files.
    let in_file_order = |items: Vec<(&str, &str)>| -> Vec<String> {
        let mut keyed: Vec<(Option<FileOrder>, String)> = items
            .into_iter()
            .map(|(path, message)| {
                let at = loaded
                    .position(path)
                    .map(|p| (p.file.clone(), p.line, p.col));
                (at, located(&loaded, path, message))
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.into_iter().map(|(_, text)| text).collect()
    };
    let errors = in_file_order(
        d.errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect(),
    );
    let warnings = in_file_order(
        loaded
            .warnings
            .iter()
            .map(|(p, m)| (p.as_str(), m.as_str()))
            .chain(
                d.warnings
                    .iter()
                    .map(|w| (w.path.as_str(), w.message.as_str())),
            )
            .collect(),
    );
    Ok((loaded, config, Report { errors, warnings }))
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_report(config_path: &str, report: &Report) {
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !report.errors.is_empty() {
        eprintln!(
            "{config_path}: invalid — {}, {}",
            plural(report.errors.len(), "error", "errors"),
            plural(report.warnings.len(), "warning", "warnings")
        );
    }
}

/// `render`'s options.
struct RenderFlags {
    opts: RenderOptions,
    out: Option<String>,
    drop_unsupported: bool,
    /// Where to write the rate-limit service's configuration (envoyproxy/ratelimit, Limitador).
    ratelimit_config: Option<String>,
    limitador_limits: Option<String>,
}

fn render_flags(flags: &[String]) -> Result<RenderFlags, String> {
    let mut r = RenderFlags {
        opts: RenderOptions {
            port: 4000,
            admin_port: 9901,
            wasm_path: DEFAULT_WASM.to_string(),
            reloadable: None,
            runtime: Runtime::Wasm,
        },
        out: None,
        drop_unsupported: false,
        ratelimit_config: None,
        limitador_limits: None,
    };
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "-o" | "--output" => r.out = Some(value()?),
            "--port" => r.opts.port = value()?.parse().map_err(|_| "--port needs a port number")?,
            "--admin-port" => {
                r.opts.admin_port = value()?
                    .parse()
                    .map_err(|_| "--admin-port needs a port number")?
            }
            "--wasm" => r.opts.wasm_path = value()?,
            "--reloadable" => r.opts.reloadable = Some(value()?),
            "--runtime" => {
                let name = value()?;
                r.opts.runtime = Runtime::parse(&name)
                    .ok_or(format!("--runtime is wasm or native, not {name}"))?
            }
            "--drop-unsupported" => r.drop_unsupported = true,
            "--ratelimit-config" => r.ratelimit_config = Some(value()?),
            "--limitador-limits" => r.limitador_limits = Some(value()?),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(r)
}

fn run(args: &[String]) -> Result<(), String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    let (config_path, flags) = rest.split_first().ok_or(USAGE)?;
    let render = match command.as_str() {
        "check" if flags.is_empty() => None,
        "render" => Some(render_flags(flags)?),
        _ => return Err(USAGE.to_string()),
    };
    let drop = render.as_ref().is_some_and(|r| r.drop_unsupported);
    let (loaded, config, report) = read_and_check(config_path, drop)?;
    print_report(config_path, &report);
    let Some(config) = config else {
        return Err(String::new());
    };
    let value = loaded.value;
    let Some(RenderFlags {
        opts,
        out,
        ratelimit_config,
        limitador_limits,
        ..
    }) = render
    else {
        let mut hosts: Vec<&str> = config
            .deployments
            .iter()
            .map(|d| d.cluster.as_str())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        println!(
            "{config_path}: valid — {}, {}{}; calls {}",
            plural(config.groups.len(), "model group", "model groups"),
            plural(config.deployments.len(), "deployment", "deployments"),
            if report.warnings.is_empty() {
                String::new()
            } else {
                format!(", {}", plural(report.warnings.len(), "warning", "warnings"))
            },
            hosts.join(", ")
        );
        return Ok(());
    };
    let value = llm_gateway::render::with_route_defaults(&value, &config);
    use llm_gateway::fleet::service_config;
    let service_files = [
        (ratelimit_config, service_config::envoy_ratelimit(&config)),
        (limitador_limits, service_config::limitador(&config)),
    ];
    for (path, text) in service_files {
        let Some(path) = path else { continue };
        let text = text.ok_or(format!(
            "{config_path} has no general_settings.rate_limit_service: no limits to write to {path}"
        ))?;
        write_atomically(&path, &text)?;
        eprintln!("wrote {path}");
    }
    if let Some(ecds) = &opts.reloadable {
        // JSON is YAML: Envoy's YAML loader reads it, and no YAML writer is needed.
        let resource = serde_json::to_string_pretty(&ecds_resource(&value, &opts))
            .map_err(|e| e.to_string())?;
        write_atomically(ecds, &resource)?;
        eprintln!("wrote {ecds}: edit the gateway config there (atomic rename) to reload it live");
    }
    let yaml = serde_json::to_string_pretty(&envoy_bootstrap(&value, &config, &opts))
        .map_err(|e| e.to_string())?;
    let yaml = format!(
        "# Rendered by `llm-gateway render {config_path}` (JSON, which is YAML).\n{yaml}\n"
    );
    match out {
        Some(path) => write_atomically(&path, &yaml),
        None => {
            print!("{yaml}");
            Ok(())
        }
    }
}

/// `render --drop-unsupported`: take out the deployments whose provider the gateway cannot
/// call (so a mixed config can move over today), saying which and why.
fn drop_unsupported(loaded: &mut yaml::Loaded) -> Vec<String> {
    let Some(list) = loaded
        .value
        .get_mut("model_list")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return Vec::new();
    };
    let mut said = Vec::new();
    let mut kept = Vec::new();
    let mut renumber: Vec<Option<usize>> = Vec::new();
    for (i, entry) in std::mem::take(list).into_iter().enumerate() {
        let model = entry
            .pointer("/litellm_params/model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let why = model
            .split_once('/')
            .and_then(|(prefix, _)| config::providers::unsupported(prefix).map(|w| (prefix, w)));
        match why {
            Some((prefix, why)) => {
                let group = entry
                    .get("model_name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("?");
                said.push(format!(
                    "dropped model_list[{i}] (`{model}` in model group `{group}`): `{prefix}/` is not supported: {why}"
                ));
                renumber.push(None);
            }
            None => {
                renumber.push(Some(kept.len()));
                kept.push(entry);
            }
        }
    }
    *list = kept;
    // Positions follow their entries to the new indices.
    let old = std::mem::take(&mut loaded.positions);
    for (path, pos) in old {
        let renamed = match path.strip_prefix("model_list[") {
            Some(rest) => {
                let (index, tail) = rest.split_once(']').unwrap_or((rest, ""));
                match index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| renumber.get(i).copied())
                {
                    Some(Some(new)) => format!("model_list[{new}]{tail}"),
                    Some(None) => continue,
                    None => path,
                }
            }
            None => path,
        };
        loaded.positions.insert(renamed, pos);
    }
    said
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
            if !e.is_empty() {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
