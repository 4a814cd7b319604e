//! LiteLLM's `config.yaml` read the way LiteLLM reads it (PyYAML's `safe_load`, YAML 1.1):
//! `20_000` and `0x1F` are numbers, `yes`/`no`/`on`/`off` booleans, `<<: *defaults` merges,
//! a key written twice keeps its last value (with a warning naming both lines), and
//! `include: [file.yaml]` pulls other files in (lists extend, other keys are set). Every
//! value keeps the file, line and column it came from, so messages point into the user's
//! file. Host side only: the filter receives JSON.

use super::{join_index, join_key};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::path::Path;

/// Where a value was written: file, line (1-based), column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A loaded config: the JSON tree, where each path was written, and what the reading found
/// questionable (path, message).
#[derive(Debug, Default)]
pub struct Loaded {
    pub value: Value,
    pub positions: HashMap<String, Position>,
    pub warnings: Vec<(String, String)>,
}

impl Loaded {
    /// Where `path` (or the nearest enclosing path) was written.
    pub fn position(&self, path: &str) -> Option<&Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = p.get(..cut)?;
        }
    }
}

/// Read a config file and the files it includes.
pub fn load_file(path: &Path) -> Result<Loaded, String> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{label}: {e}"))?;
    let mut loaded = load_str(&text, &label)?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    resolve_includes(&mut loaded, base)?;
    Ok(loaded)
}

/// Read one YAML (or JSON) document.
pub fn load_str(text: &str, file: &str) -> Result<Loaded, String> {
    let mut events = Parser::new_from_str(text).peekable();
    let mut reader = Reader {
        file,
        anchors: HashMap::new(),
    };
    let mut root = None;
    while let Some(next) = events.next() {
        let (event, span) = next.map_err(|e| {
            format!(
                "{file}:{}:{}: not YAML: {}",
                e.marker().line(),
                e.marker().col() + 1,
                e.info()
            )
        })?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                if root.is_some() {
                    return Err(format!(
                        "{file}:{}: a second YAML document; the config is one document",
                        span.start.line()
                    ));
                }
                root = Some(reader.node(&mut events)?);
            }
            _ => {}
        }
    }
    let mut loaded = Loaded::default();
    if let Some(node) = root {
        loaded.value = to_json(&node, "", &mut loaded, file)?;
    }
    Ok(loaded)
}

/// A parsed node, before YAML 1.1 scalars are resolved and merge keys applied.
#[derive(Debug, Clone)]
enum Node {
    Scalar {
        text: String,
        plain: bool,
        tag: Option<String>,
        span: Span,
    },
    Seq {
        items: Vec<Node>,
        span: Span,
    },
    Map {
        entries: Vec<(Node, Node)>,
        span: Span,
    },
}

impl Node {
    fn span(&self) -> Span {
        match self {
            Node::Scalar { span, .. } | Node::Seq { span, .. } | Node::Map { span, .. } => *span,
        }
    }
}

type Events<'a> = std::iter::Peekable<Parser<'a, saphyr_parser::StrInput<'a>>>;

struct Reader<'f> {
    file: &'f str,
    anchors: HashMap<usize, Node>,
}

impl Reader<'_> {
    fn node(&mut self, events: &mut Events<'_>) -> Result<Node, String> {
        let (event, span) = self.next(events)?;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => (
                Node::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                    tag: tag.map(|t| t.suffix.clone()),
                    span,
                },
                anchor,
            ),
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                while !matches!(events.peek(), Some(Ok((Event::SequenceEnd, _)))) {
                    items.push(self.node(events)?);
                }
                self.next(events)?;
                (Node::Seq { items, span }, anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries = Vec::new();
                while !matches!(events.peek(), Some(Ok((Event::MappingEnd, _)))) {
                    let key = self.node(events)?;
                    let value = self.node(events)?;
                    entries.push((key, value));
                }
                self.next(events)?;
                (Node::Map { entries, span }, anchor)
            }
            Event::Alias(id) => {
                return self.anchors.get(&id).cloned().ok_or_else(|| {
                    format!(
                        "{}:{}: an alias to an unknown anchor",
                        self.file,
                        span.start.line()
                    )
                })
            }
            other => {
                return Err(format!(
                    "{}:{}: unexpected YAML event {other:?}",
                    self.file,
                    span.start.line()
                ))
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn next<'a>(&self, events: &mut Events<'a>) -> Result<(Event<'a>, Span), String> {
        match events.next() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(format!(
                "{}:{}:{}: not YAML: {}",
                self.file,
                e.marker().line(),
                e.marker().col() + 1,
                e.info()
            )),
            None => Err(format!("{}: the YAML ends too early", self.file)),
        }
    }
}

fn position(file: &str, span: Span) -> Position {
    Position {
        file: file.to_string(),
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

fn to_json(node: &Node, path: &str, out: &mut Loaded, file: &str) -> Result<Value, String> {
    out.positions
        .entry(path.to_string())
        .or_insert_with(|| position(file, node.span()));
    match node {
        Node::Scalar {
            text, plain, tag, ..
        } => scalar(text, *plain, tag.as_deref()).map_err(|m| {
            let at = position(file, node.span());
            format!("{at}: {m}")
        }),
        Node::Seq { items, .. } => items
            .iter()
            .enumerate()
            .map(|(i, item)| to_json(item, &join_index(path, i), out, file))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Node::Map { entries, .. } => {
            let mut map = Map::new();
            let mut lines: HashMap<String, usize> = HashMap::new();
            let mut merged: Vec<&Node> = Vec::new();
            for (key, value) in entries {
                let name = key_text(key);
                if name == "<<" && matches!(key, Node::Scalar { plain: true, .. }) {
                    merged.push(value);
                    continue;
                }
                let line = key.span().start.line();
                let child = join_key(path, &name);
                if let Some(first) = lines.insert(name.clone(), line) {
                    out.warnings.push((
                        child.clone(),
                        format!("written twice (lines {first} and {line}); the last one is used, as LiteLLM's YAML reader does"),
                    ));
                    out.positions.remove(&child);
                    let prefix_dot = format!("{child}.");
                    let prefix_index = format!("{child}[");
                    out.positions.retain(|p, _| {
                        !p.starts_with(&prefix_dot) && !p.starts_with(&prefix_index)
                    });
                }
                out.positions
                    .insert(child.clone(), position(file, key.span()));
                let v = to_json(value, &child, out, file)?;
                map.insert(name, v);
            }
            // `<<: *a` or `<<: [*a, *b]`: keys written here win, then earlier merged maps.
            for source in merged {
                let sources: Vec<&Node> = match source {
                    Node::Seq { items, .. } => items.iter().collect(),
                    other => vec![other],
                };
                for s in sources {
                    let Node::Map { .. } = s else {
                        let at = position(file, s.span());
                        return Err(format!("{at}: `<<` merges mappings only"));
                    };
                    let Value::Object(from) = to_json(s, &format!("{path}.<<"), out, file)? else {
                        continue;
                    };
                    for (k, v) in from {
                        if !map.contains_key(&k) {
                            let from_path = format!("{path}.<<.{k}");
                            if let Some(p) = out.positions.get(&from_path).cloned() {
                                out.positions.insert(join_key(path, &k), p);
                            }
                            map.insert(k, v);
                        }
                    }
                }
            }
            if !path.contains(".<<") {
                out.positions.retain(|p, _| !p.contains(".<<"));
            }
            Ok(Value::Object(map))
        }
    }
}

fn key_text(key: &Node) -> String {
    match key {
        Node::Scalar { text, .. } => text.clone(),
        _ => "?".to_string(),
    }
}

/// A scalar as PyYAML's YAML 1.1 resolver reads it. Quoted scalars are strings.
fn scalar(text: &str, plain: bool, tag: Option<&str>) -> Result<Value, String> {
    match tag {
        Some("str") => return Ok(Value::String(text.to_string())),
        Some("int") | Some("float") | Some("bool") | Some("null") => {
            return resolve_plain(text)
                .ok_or_else(|| format!("`{text}` is not a {}", tag.unwrap_or("")));
        }
        _ => {}
    }
    if !plain {
        return Ok(Value::String(text.to_string()));
    }
    Ok(resolve_plain(text).unwrap_or_else(|| Value::String(text.to_string())))
}

fn resolve_plain(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Some(Value::Bool(true))
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Some(Value::Bool(false))
        }
        _ => {}
    }
    match int(text) {
        Some(i) => u64::try_from(i)
            .map(Value::from)
            .or_else(|_| i64::try_from(i).map(Value::from))
            .ok(),
        None => float(text),
    }
}

/// YAML 1.1 integers: decimal with `_`, `0x`, `0o`-less octal (`017`), `0b`.
fn int(text: &str) -> Option<i128> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, text.get(1..)?),
        b'+' => (false, text.get(1..)?),
        _ => (false, text),
    };
    if body.is_empty() || body.starts_with('_') {
        return None;
    }
    let digits: String = body.chars().filter(|&c| c != '_').collect();
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i128::from_str_radix(bin, 2).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i128::from_str_radix(&digits, 8).ok()?
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

/// YAML 1.1 floats as PyYAML reads them: a dot is required (`1e3` is a string there), `_`
/// allowed; `.inf`/`.nan` are refused (JSON has no such numbers).
fn float(text: &str) -> Option<Value> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !body.contains('.')
        || !body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
    {
        return None;
    }
    let ok = body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'e' | b'E' | b'+' | b'-'));
    if !ok || body.matches('.').count() != 1 {
        return None;
    }
    let cleaned: String = text.chars().filter(|&c| c != '_').collect();
    let v: f64 = cleaned.parse().ok()?;
    Number::from_f64(v).map(Value::Number)
}

/// `include: [a.yaml, b.yaml]` (or one name): each file's lists extend the config's, other
/// keys are set, as LiteLLM's proxy does. Paths are relative to the including file.
fn resolve_includes(loaded: &mut Loaded, base: &Path) -> Result<(), String> {
    let Some(top) = loaded.value.as_object_mut() else {
        return Ok(());
    };
    let Some(include) = top.remove("include") else {
        return Ok(());
    };
    let files: Vec<String> = match include {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err("include: must be a file name or a list of file names".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("include: must be a file name or a list of file names".into()),
    };
    for name in files {
        let path = base.join(&name);
        let label = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("include: {label}: {e}"))?;
        let included = load_str(&text, &label)?;
        let Value::Object(map) = included.value else {
            return Err(format!(
                "include: {label}: must be a mapping like the config itself"
            ));
        };
        if map.contains_key("include") {
            return Err(format!("include: {label}: includes nested in an included file are not read (LiteLLM reads one level)"));
        }
        let top = loaded
            .value
            .as_object_mut()
            .ok_or("the config must be a mapping")?;
        for (key, value) in map {
            let offset = match (top.get_mut(&key), value) {
                (Some(Value::Array(mine)), Value::Array(theirs)) => {
                    let offset = mine.len();
                    mine.extend(theirs);
                    Some(offset)
                }
                (existing, value) => {
                    if existing.is_some() {
                        loaded.warnings.push((
                            key.clone(),
                            format!("set again by the included {label}; its value is used"),
                        ));
                    }
                    top.insert(key.clone(), value);
                    None
                }
            };
            // Positions of the included part, renumbered where a list was extended.
            for (p, pos) in &included.positions {
                let Some(rest) = p.strip_prefix(key.as_str()) else {
                    continue;
                };
                let renamed = match (offset, rest.strip_prefix('[')) {
                    (Some(offset), Some(index_rest)) => {
                        let (index, tail) = index_rest.split_once(']').unwrap_or((index_rest, ""));
                        match index.parse::<usize>() {
                            Ok(i) => format!("{key}[{}]{tail}", i + offset),
                            Err(_) => continue,
                        }
                    }
                    (Some(_), None) if !rest.is_empty() => continue,
                    (Some(_), None) => continue,
                    _ if rest.is_empty() || rest.starts_with('.') || rest.starts_with('[') => {
                        p.clone()
                    }
                    _ => continue,
                };
                loaded.positions.insert(renamed, pos.clone());
            }
        }
        loaded.warnings.extend(
            included
                .warnings
                .into_iter()
                .map(|(p, m)| (p, format!("{m} (in {label})"))),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_1_1_scalars_as_pyyaml_reads_them() {
        let l = load_str(
            "a: 20_000\nb: 0x1F\nc: yes\nd: off\ne: 017\nf: 1.5\ng: 1e3\nh: '20_000'\ni: ~\nj: 0.000_1\nk: -3\nl: 0b101\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            l.value,
            json!({"a": 20000, "b": 31, "c": true, "d": false, "e": 15, "f": 1.5,
                   "g": "1e3", "h": "20_000", "i": null, "j": 0.0001, "k": -3, "l": 5})
        );
    }

    #[test]
    fn merge_keys_anchors_and_positions() {
        let text = "defaults: &d\n  api_base: http://h:1\n  rpm: 5\nmodel_list:\n  - model_name: a\n    litellm_params:\n      <<: *d\n      model: openai/a\n      rpm: 9\n";
        let l = load_str(text, "c.yaml").unwrap();
        assert_eq!(
            l.value["model_list"][0]["litellm_params"],
            json!({"model": "openai/a", "rpm": 9, "api_base": "http://h:1"})
        );
        let pos = l.position("model_list[0].litellm_params.rpm").unwrap();
        assert_eq!((pos.line, pos.col), (9, 7));
        let pos = l.position("model_list[0].litellm_params.api_base").unwrap();
        assert_eq!(pos.line, 2, "a merged key points where it was written");
        let pos = l
            .position("model_list[0].litellm_params.nothing_here")
            .unwrap();
        assert_eq!(pos.line, 6, "the nearest enclosing path");
    }

    #[test]
    fn a_key_written_twice_keeps_the_last_with_a_warning() {
        let l = load_str(
            "router_settings:\n  num_retries: 1\n  num_retries: 3\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(l.value["router_settings"]["num_retries"], 3);
        assert_eq!(l.warnings.len(), 1);
        assert_eq!(l.warnings[0].0, "router_settings.num_retries");
        assert!(l.warnings[0].1.contains("lines 2 and 3"));
        assert_eq!(l.position("router_settings.num_retries").unwrap().line, 3);
    }

    #[test]
    fn errors_say_where() {
        let e = load_str("a: [1, 2\nb: c\n", "bad.yaml").unwrap_err();
        assert!(e.starts_with("bad.yaml:"), "{e}");
        assert!(load_str("a: 1\n---\nb: 2\n", "two.yaml").is_err());
        let json = load_str(r#"{"model_list": [{"model_name": "x"}], "n": 5}"#, "c.json").unwrap();
        assert_eq!(json.value["n"], 5, "JSON is YAML");
    }

    #[test]
    fn includes_extend_lists_and_keep_positions() {
        let dir = std::env::temp_dir().join(format!("llm-gw-yaml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("models.yaml"),
            "model_list:\n  - model_name: b\n    litellm_params: {model: openai/b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            "include:\n  - models.yaml\nmodel_list:\n  - model_name: a\n    litellm_params: {model: openai/a}\n",
        )
        .unwrap();
        let l = load_file(&dir.join("config.yaml")).unwrap();
        let names: Vec<&str> = l.value["model_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["model_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(l.value.get("include").is_none());
        let pos = l.position("model_list[1].litellm_params").unwrap();
        assert!(pos.file.ends_with("models.yaml") && pos.line == 3, "{pos}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
