//! `os.environ/NAME` in any string value of the config, as LiteLLM reads it ("works for ANY
//! value on the config.yaml"): resolved from the config's own `environment_variables`
//! first, then from the environment (the CLI's own, or the wasm VM's, which `render` fills
//! from `environment_variables` and `host_env_keys`).

use super::{join_index, join_key, Diagnostics};
use serde_json::Value;

pub const PREFIX: &str = "os.environ/";

/// The config's `environment_variables` as name → text (numbers and booleans as written).
pub fn declared(value: &Value) -> Vec<(String, String)> {
    value
        .get("environment_variables")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    Value::Number(n) => Some((k.clone(), n.to_string())),
                    Value::Bool(b) => Some((k.clone(), b.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Replace every `os.environ/NAME` string (outside `environment_variables` itself) by the
/// variable's value; a missing variable is an error at the path where it was written.
/// Returns the paths that were replaced, so a number read from the environment can be taken
/// as a number where the config needs one.
pub fn resolve(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    d: &mut Diagnostics,
) -> Vec<String> {
    let mut replaced = Vec::new();
    if let Value::Object(top) = value {
        for (key, v) in top.iter_mut() {
            if key != "environment_variables" {
                walk(v, key, lookup, d, &mut replaced);
            }
        }
    }
    replaced
}

fn walk(
    v: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    d: &mut Diagnostics,
    replaced: &mut Vec<String>,
) {
    match v {
        Value::String(s) => {
            let Some(name) = s.strip_prefix(PREFIX) else {
                return;
            };
            let name = name.trim();
            if name.is_empty() {
                d.error(path, "`os.environ/` needs a variable name after it");
                return;
            }
            match lookup(name) {
                Some(found) => {
                    *s = found;
                    replaced.push(path.to_string());
                }
                None => d.error(
                    path,
                    format!(
                        "`os.environ/{name}`: the environment variable {name} is not set \
                         (export it, or give it under environment_variables)"
                    ),
                ),
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &join_index(path, i), lookup, d, replaced);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                walk(item, &join_key(path, k), lookup, d, replaced);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_string_value_resolves_and_missing_ones_are_named() {
        let mut v = json!({
            "environment_variables": {"BASE": "http://h:1", "KEEP": "os.environ/NOT_RESOLVED_HERE"},
            "model_list": [{"litellm_params": {"api_base": "os.environ/BASE", "tags": ["os.environ/TIER"]}}],
            "general_settings": {"master_key": "os.environ/MISSING"}
        });
        let lookup = |n: &str| match n {
            "BASE" => Some("http://h:1".to_string()),
            "TIER" => Some("paid".to_string()),
            _ => None,
        };
        let mut d = Diagnostics::default();
        let replaced = resolve(&mut v, &lookup, &mut d);
        assert_eq!(
            v["model_list"][0]["litellm_params"]["api_base"],
            "http://h:1"
        );
        assert_eq!(v["model_list"][0]["litellm_params"]["tags"][0], "paid");
        assert_eq!(
            v["environment_variables"]["KEEP"],
            "os.environ/NOT_RESOLVED_HERE"
        );
        assert_eq!(
            replaced,
            [
                "model_list[0].litellm_params.api_base",
                "model_list[0].litellm_params.tags[0]"
            ]
        );
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].path, "general_settings.master_key");
        assert!(d.errors[0].message.contains("MISSING is not set"));
    }
}
