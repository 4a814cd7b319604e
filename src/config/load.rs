//! From the JSON tree to wire sections, collecting every problem instead of stopping at the
//! first: each `model_list` entry and each settings section is read on its own, so one bad
//! entry does not hide the next; unknown keys go through `policy`.

use super::policy::{self, Verdict};
use super::wire::*;
use super::{env, join_index, join_key, Diagnostics};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One `model_list` entry: its index as written, its `model_name` when readable (so other
/// settings naming it are not reported again), and the entry if it could be read.
pub(super) struct Entry {
    pub index: usize,
    pub name: Option<String>,
    pub wire: Option<WireDeployment>,
}

/// The sections of a config as read, each defaulted when absent or unreadable.
#[derive(Default)]
pub(super) struct Sections {
    pub entries: Vec<Entry>,
    pub router_settings: WireRouterSettings,
    pub litellm_settings: WireLitellmSettings,
    pub general_settings: WireGeneralSettings,
}

/// Read a config tree: resolve `os.environ/`, then every section.
pub(super) fn sections(
    mut value: Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    d: &mut Diagnostics,
) -> Sections {
    let declared = env::declared(&value);
    let combined = |name: &str| {
        declared
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| lookup(name))
    };
    let replaced = env::resolve(&mut value, &combined, d);
    let mut out = Sections::default();
    let Value::Object(top) = value else {
        d.error(
            "",
            "the configuration must be a mapping (model_list, router_settings, …)",
        );
        return out;
    };
    for (key, v) in &top {
        match key.as_str() {
            "model_list" => out.entries = entries(v, &replaced, d),
            "router_settings" => {
                out.router_settings = typed(v, key, &replaced, d).unwrap_or_default();
            }
            "litellm_settings" => {
                refuse_guardrail_callbacks(v, d);
                out.litellm_settings = typed(v, key, &replaced, d).unwrap_or_default();
            }
            "general_settings" => {
                out.general_settings = typed(v, key, &replaced, d).unwrap_or_default();
            }
            "environment_variables" => {
                let scalars = v.as_object().is_some_and(|m| {
                    m.values()
                        .all(|x| x.is_string() || x.is_number() || x.is_boolean())
                });
                if !scalars {
                    d.error(key, "must map variable names to strings or numbers");
                }
            }
            "include" => d.error(
                key,
                "must be resolved before the gateway reads its config: `llm-gateway render` and `check` merge the included files",
            ),
            other => unknown(other, d),
        }
    }
    if out.entries.is_empty() && !d.errors.iter().any(|e| e.path.starts_with("model_list")) {
        d.error("model_list", "must list at least one deployment");
    }
    out
}

fn entries(v: &Value, replaced: &[String], d: &mut Diagnostics) -> Vec<Entry> {
    let Value::Array(items) = v else {
        d.error("model_list", "must be a list of deployments");
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let path = join_index("model_list", index);
            Entry {
                index,
                name: item
                    .get("model_name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                wire: typed(item, &path, replaced, d),
            }
        })
        .collect()
}

/// `litellm_settings.callbacks` (and the success/failure lists) naming a guardrail.
fn refuse_guardrail_callbacks(settings: &Value, d: &mut Diagnostics) {
    for key in ["callbacks", "success_callback", "failure_callback"] {
        if let Some(name) = settings.get(key).and_then(policy::guardrail_callback) {
            d.error(
                join_key("litellm_settings", key),
                format!("`{name}` is a guardrail; guardrails do not run in this gateway, so requests would reach the models unchecked"),
            );
        }
    }
}

/// An unknown key: refused, ignored for a stated reason, or ignored as unknown.
pub(super) fn unknown(path: &str, d: &mut Diagnostics) {
    match policy::classify(path) {
        Some(Verdict::Refuse(why)) => d.error(path, format!("not supported: {why}")),
        Some(Verdict::Ignore(why)) => d.warn(path, format!("ignored: {why}")),
        None => d.warn(path, "unknown key, ignored"),
    }
}

/// One section as its wire type, with every problem in it reported: a value of the wrong
/// type is reported and taken out, and the section read again (bounded), so a second bad
/// value is found in the same run. A value that came from `os.environ/` as text where the
/// section needs a number or a boolean is read as one (the environment only holds text).
fn typed<T: DeserializeOwned>(
    value: &Value,
    prefix: &str,
    replaced: &[String],
    d: &mut Diagnostics,
) -> Option<T> {
    let mut value = value.clone();
    let mut failed = false;
    for _ in 0..MAX_PASSES {
        let mut ignored = Vec::new();
        let result = {
            let mut on_ignored = |p: serde_ignored::Path<'_>| ignored.push(ignored_path(&p));
            let de = serde_ignored::Deserializer::new(&value, &mut on_ignored);
            serde_path_to_error::deserialize::<_, T>(de)
        };
        let e = match result {
            Ok(t) => {
                for p in ignored {
                    unknown(&join_path(prefix, &p), d);
                }
                // When a value had to be taken out the config is refused (its error is
                // recorded), and the rest of the section is still checked.
                return Some(t);
            }
            Err(e) => e,
        };
        let inner = e.path().to_string();
        let path = join_path(prefix, if inner == "." { "" } else { &inner });
        let message = e.inner().to_string();
        if failed && message.starts_with("missing field") {
            // A required value taken out after its own error: nothing new to say.
            return None;
        }
        if replaced.contains(&path) && message.starts_with("invalid type: string") {
            if let Some(slot) = slot(&mut value, e.path()) {
                if let Some(typed) = scalar_from_text(slot) {
                    *slot = typed;
                    continue;
                }
            }
        }
        d.error(&path, message);
        failed = true;
        // Take the offending value out and read again; a required one taken out makes the
        // next pass report it missing at its parent, which ends the loop below.
        if !remove(&mut value, e.path()) {
            return None;
        }
    }
    None
}

/// How many values of one section may be reported and taken out.
const MAX_PASSES: usize = 32;

/// Remove the value at `path` from its parent; false when there is nothing to remove (the
/// error is about the section itself).
fn remove(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = value;
    for segment in parents {
        at = match segment {
            Segment::Seq { index } => match at.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            Segment::Map { key } => match at.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Segment::Enum { .. } | Segment::Unknown => return false,
        };
    }
    match (last, at) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

/// Text from the environment as the number or boolean it spells.
fn scalar_from_text(v: &Value) -> Option<Value> {
    let s = v.as_str()?.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Value::from(n));
    }
    if let Ok(n) = s.parse::<i64>() {
        return Some(Value::from(n));
    }
    if let Some(n) = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        return Some(Value::Number(n));
    }
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(Value::Bool(true)),
        "false" | "no" | "off" => Some(Value::Bool(false)),
        _ => None,
    }
}

fn slot<'a>(value: &'a mut Value, path: &serde_path_to_error::Path) -> Option<&'a mut Value> {
    use serde_path_to_error::Segment;
    let mut at = value;
    for segment in path.iter() {
        at = match segment {
            Segment::Seq { index } => at.get_mut(*index)?,
            Segment::Map { key } => at.get_mut(key.as_str())?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    Some(at)
}

fn join_path(prefix: &str, inner: &str) -> String {
    match (prefix.is_empty(), inner.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => inner.to_string(),
        (false, false) if inner.starts_with('[') => format!("{prefix}{inner}"),
        (false, false) => format!("{prefix}.{inner}"),
    }
}

/// `serde_ignored` paths as `a.b[2].c`, matching `serde_path_to_error`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{}]", ignored_path(parent), index),
        Path::Map { parent, key } => join_key(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}
