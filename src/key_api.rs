//! The key endpoints: `POST /key/generate` (master key) mints a signed key carrying its
//! claims; `GET /key/info` tells a key about itself, or the master key about any key.
//!
//! A request is refused rather than half-honoured: a setting the gateway would not enforce
//! (LiteLLM's `max_parallel_requests`, `blocked`, …) would leave a key wider than asked for.

use crate::access::spend_of;
use crate::config::Config;
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::LocalReply;
use crate::host::Host;
use crate::keys::{self, Claims, KeyGrant, Principal};
use serde_json::Value;

/// LiteLLM `/key/generate` fields that are only LiteLLM's own bookkeeping and are not
/// carried: they change nothing a key may do, so they are accepted and dropped.
/// (`metadata`, `key_name`, `user_id` and `team_id` are carried in the key and echoed.)
pub const IGNORED_FIELDS: [&str; 3] = ["organization_id", "soft_budget", "send_invite_email"];

/// LiteLLM `/key/generate` fields that would limit or change a key in ways this gateway
/// does not enforce: refused unless unset (`null`, `false`, `[]`, `{}`), so no key is
/// minted wider than its request asked.
pub const UNSUPPORTED_FIELDS: [&str; 19] = [
    "key",
    "spend",
    "budget_id",
    "model_max_budget",
    "model_rpm_limit",
    "model_tpm_limit",
    "allowed_cache_controls",
    "allowed_routes",
    "allowed_passthrough_routes",
    "blocked",
    "config",
    "permissions",
    "guardrails",
    "enforced_params",
    "tags",
    "prompts",
    "object_permission",
    "rpm_limit_type",
    "tpm_limit_type",
];

/// What `/key/generate` was asked for, checked field by field. Also the shape of
/// `litellm_settings.default_key_generate_params` and `upperbound_key_generate_params`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GenerateRequest {
    models: Vec<String>,
    /// Seconds; `None`: the key never expires (LiteLLM's rule for no or a null duration).
    duration: Option<u64>,
    key_alias: Option<String>,
    rpm_limit: Option<u64>,
    tpm_limit: Option<u64>,
    max_budget: Option<f64>,
    max_parallel_requests: Option<u64>,
    /// Seconds; the spend starts again each period.
    budget_duration: Option<u64>,
    key_name: Option<String>,
    user_id: Option<String>,
    team_id: Option<String>,
    metadata: Option<serde_json::Map<String, Value>>,
    /// LiteLLM's key `aliases`: a name this key asks for → the model it gets.
    aliases: std::collections::BTreeMap<String, String>,
}

/// The operator's policy for minted keys (LiteLLM's `litellm_settings`): defaults for what a
/// request leaves out, and upper bounds a request may not pass (a bound also fills in what
/// the request leaves out, as in LiteLLM).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyPolicy {
    pub defaults: GenerateRequest,
    pub upper: GenerateRequest,
}

impl KeyPolicy {
    /// Read from the config's two settings; an error names the field (its path is added by
    /// the caller).
    pub fn read(
        defaults: Option<&Value>,
        upper: Option<&Value>,
    ) -> Result<KeyPolicy, (&'static str, String)> {
        let read = |which: &'static str, v: Option<&Value>| match v {
            None | Some(Value::Null) => Ok(GenerateRequest::default()),
            Some(v) => parse_value(v.clone()).map_err(|e| {
                let field = e.param.clone().unwrap_or_default();
                let message = e.message.replace("/key/generate: ", "");
                (
                    which,
                    if field.is_empty() {
                        message
                    } else {
                        format!("{field}: {message}")
                    },
                )
            }),
        };
        let policy = KeyPolicy {
            defaults: read("default_key_generate_params", defaults)?,
            upper: read("upperbound_key_generate_params", upper)?,
        };
        if !policy.upper.models.is_empty() {
            return Err((
                "upperbound_key_generate_params",
                "models: has no upper bound (use default_key_generate_params)".to_string(),
            ));
        }
        Ok(policy)
    }

    /// `req` with the defaults filled in and the upper bounds applied (LiteLLM's
    /// `_enforce_upperbound_key_params`): a value over its bound is a 400 naming both.
    fn apply(&self, mut req: GenerateRequest) -> Result<GenerateRequest, GatewayError> {
        let d = &self.defaults;
        if req.models.is_empty() {
            req.models.clone_from(&d.models);
        }
        req.duration = req.duration.or(d.duration);
        req.rpm_limit = req.rpm_limit.or(d.rpm_limit);
        req.tpm_limit = req.tpm_limit.or(d.tpm_limit);
        req.max_budget = req.max_budget.or(d.max_budget);
        req.max_parallel_requests = req.max_parallel_requests.or(d.max_parallel_requests);
        req.budget_duration = req.budget_duration.or(d.budget_duration);
        req.user_id = req.user_id.take().or_else(|| d.user_id.clone());
        req.team_id = req.team_id.take().or_else(|| d.team_id.clone());
        if req.metadata.as_ref().is_none_or(|m| m.is_empty()) {
            req.metadata.clone_from(&d.metadata);
        }
        let u = &self.upper;
        fn bound<T: PartialOrd + Copy + std::fmt::Display>(
            field: &str,
            value: &mut Option<T>,
            upper: Option<T>,
        ) -> Result<(), GatewayError> {
            match (*value, upper) {
                (None, Some(max)) => *value = Some(max),
                (Some(v), Some(max)) if v > max => {
                    return Err(field_error(
                        field,
                        &format!(
                            "is over max limit set in config - user_value={v}; max_value={max}"
                        ),
                    ))
                }
                _ => {}
            }
            Ok(())
        }
        bound("duration", &mut req.duration, u.duration)?;
        bound("rpm_limit", &mut req.rpm_limit, u.rpm_limit)?;
        bound("tpm_limit", &mut req.tpm_limit, u.tpm_limit)?;
        bound("max_budget", &mut req.max_budget, u.max_budget)?;
        bound(
            "budget_duration",
            &mut req.budget_duration,
            u.budget_duration,
        )?;
        bound(
            "max_parallel_requests",
            &mut req.max_parallel_requests,
            u.max_parallel_requests,
        )?;
        Ok(req)
    }
}

fn field_error(field: &str, problem: &str) -> GatewayError {
    GatewayError::invalid_request(format!("/key/generate: `{field}` {problem}"))
        .with_param(field.to_string())
}

fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn opt_string(field: &str, v: &Value) -> Result<Option<String>, GatewayError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(field_error(field, "must be a string")),
    }
}

fn opt_count(field: &str, v: &Value) -> Result<Option<u64>, GatewayError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| field_error(field, "must be a whole number ≥ 0")),
        _ => Err(field_error(field, "must be a whole number ≥ 0")),
    }
}

fn parse_generate(body: &[u8]) -> Result<GenerateRequest, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(GenerateRequest::default());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("/key/generate: the body is not JSON ({e})"))
    })?;
    parse_value(value)
}

fn parse_value(value: Value) -> Result<GenerateRequest, GatewayError> {
    let mut req = GenerateRequest::default();
    let Value::Object(fields) = value else {
        return Err(GatewayError::invalid_request(
            "/key/generate: the body must be a JSON object",
        ));
    };
    for (name, v) in &fields {
        match name.as_str() {
            "models" => req.models = models(v)?,
            "duration" => {
                req.duration = match opt_string(name, v)? {
                    None => None,
                    Some(d) => Some(keys::parse_duration(&d).ok_or_else(|| {
                        field_error(
                            name,
                            "must look like 30s, 30m, 30h, 30d, 2w or 1mo (or null: never expires)",
                        )
                    })?),
                }
            }
            "budget_duration" => {
                req.budget_duration = match opt_string(name, v)? {
                    None => None,
                    Some(d) => Some(keys::parse_duration(&d).ok_or_else(|| {
                        field_error(name, "must look like 30s, 30m, 30h, 30d, 2w or 1mo")
                    })?),
                }
            }
            "key_alias" => req.key_alias = opt_string(name, v)?,
            "key_name" => req.key_name = opt_string(name, v)?,
            "user_id" => req.user_id = opt_string(name, v)?,
            "team_id" => req.team_id = opt_string(name, v)?,
            "metadata" => {
                req.metadata = match v {
                    Value::Null => None,
                    Value::Object(m) => Some(m.clone()),
                    _ => return Err(field_error(name, "must be an object")),
                }
            }
            "aliases" => req.aliases = aliases(v)?,
            "rpm_limit" => req.rpm_limit = opt_count(name, v)?,
            "tpm_limit" => req.tpm_limit = opt_count(name, v)?,
            "max_parallel_requests" => req.max_parallel_requests = opt_count(name, v)?,
            "max_budget" => {
                req.max_budget = match v {
                    Value::Null => None,
                    Value::Number(n) => Some(
                        n.as_f64()
                            .filter(|b| b.is_finite() && *b >= 0.0)
                            .ok_or_else(|| field_error(name, "must be a number ≥ 0"))?,
                    ),
                    _ => return Err(field_error(name, "must be a number ≥ 0")),
                }
            }
            other => check_other(other, v)?,
        }
    }
    Ok(req)
}

/// A field the gateway does not keep: LiteLLM's bookkeeping passes (with its type checked),
/// an unset LiteLLM setting passes, anything else is refused by name.
fn check_other(name: &str, v: &Value) -> Result<(), GatewayError> {
    if IGNORED_FIELDS.contains(&name) {
        let typed = match name {
            "soft_budget" => v.is_null() || v.is_number(),
            "send_invite_email" => v.is_null() || v.is_boolean(),
            _ => v.is_null() || v.is_string(),
        };
        return if typed {
            Ok(())
        } else {
            Err(field_error(
                name,
                match name {
                    "soft_budget" => "must be a number",
                    "send_invite_email" => "must be true or false",
                    _ => "must be a string",
                },
            ))
        };
    }
    if UNSUPPORTED_FIELDS.contains(&name) {
        if is_unset(v) || (name == "spend" && v.as_f64() == Some(0.0)) {
            return Ok(());
        }
        return Err(field_error(
            name,
            "is a LiteLLM key setting this gateway does not enforce; leave it out (a key is never minted wider than asked)",
        ));
    }
    let shown = crate::error::shown(name, 64);
    Err(field_error(
        &shown,
        "is not a /key/generate field (known: models, aliases, duration, key_alias, key_name, rpm_limit, tpm_limit, max_budget, budget_duration, max_parallel_requests, metadata, user_id, team_id)",
    ))
}

/// `models`: model names (empty or null: every model, as LiteLLM). As in LiteLLM a name need
/// not be in the config yet: groups, aliases, wildcard groups (`groq/*`), or names added
/// later. A name can only narrow a key: one the config does not have reaches nothing.
fn models(v: &Value) -> Result<Vec<String>, GatewayError> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(list) => list,
        _ => return Err(field_error("models", "must be a list of model names")),
    };
    list.iter()
        .map(|m| {
            let Value::String(name) = m else {
                return Err(field_error("models", "must be a list of model names"));
            };
            if name.is_empty() || name.chars().any(char::is_control) || name.len() > 256 {
                return Err(field_error(
                    "models",
                    "must hold model names (non-empty, printable, at most 256 bytes)",
                ));
            }
            Ok(name.clone())
        })
        .collect()
}

/// `aliases`: `{"name the key asks for": "model it gets"}` (LiteLLM's key-level aliases).
/// The model it gets is still checked against the key's `models`, so an alias never widens
/// a key.
fn aliases(v: &Value) -> Result<std::collections::BTreeMap<String, String>, GatewayError> {
    let fields = match v {
        Value::Null => return Ok(Default::default()),
        Value::Object(fields) => fields,
        _ => return Err(field_error("aliases", "must be an object of model names")),
    };
    let printable = |s: &str| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
    fields
        .iter()
        .map(|(from, to)| match to {
            Value::String(to) if printable(from) && printable(to) => Ok((from.clone(), to.clone())),
            _ => Err(field_error(
                "aliases",
                "must map model names to model names (non-empty, printable, at most 256 bytes)",
            )),
        })
        .collect()
}

/// `POST /key/generate` (master key): a signed key carrying its claims.
pub fn generate(
    config: &Config,
    host: &mut dyn Host,
    body: &[u8],
) -> Result<LocalReply, GatewayError> {
    let req = config.key_policy.apply(parse_generate(body)?)?;
    let now = host.now_unix_ms() / 1000;
    let claims = Claims {
        kid: keys::key_id(host.random_id()),
        alias: req.key_alias,
        models: req.models,
        iat: now,
        exp: req.duration.map(|d| now.saturating_add(d)),
        rpm: req.rpm_limit,
        tpm: req.tpm_limit,
        budget: req.max_budget,
        par: req.max_parallel_requests,
        bdur: req.budget_duration,
        name: req.key_name,
        user: req.user_id,
        team: req.team_id,
        meta: req.metadata.map(Value::Object),
        als: req.aliases,
    };
    let key = config.keys.mint(&claims)?;
    let mut body = key_fields(&claims, 0.0);
    if let Value::Object(fields) = &mut body {
        // LiteLLM names a key by its end when no key_name is given.
        if claims.name.is_none() {
            fields.insert("key_name".into(), Value::String(abbreviated(&key)));
        }
        fields.insert("key".into(), Value::String(key));
    }
    Ok(LocalReply::json(
        200,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

/// `GET /key/info[?key=K]`: the caller's own key; another key only for the master key. A
/// `K` that does not verify (unknown, badly signed, expired, revoked) is 404, as LiteLLM.
pub fn info(
    config: &Config,
    host: &dyn Host,
    principal: &Principal,
    queried: Option<&str>,
) -> Result<LocalReply, GatewayError> {
    let now = host.now_unix_ms() / 1000;
    let not_found = || {
        GatewayError::new(
            ErrorKind::NotFound,
            "no such key (or it has expired or been revoked)",
        )
        .with_param("key")
        .with_code("key_not_found")
    };
    let grant: &KeyGrant = match (principal, queried) {
        (Principal::Open, _) => {
            return Err(GatewayError::invalid_request(
                "this gateway has no keys (no master key or virtual keys are configured)",
            ))
        }
        (_, Some(key)) => {
            let asked = config
                .keys
                .authenticate(Some(key), now)
                .map_err(|_| not_found())?;
            match (principal, asked) {
                (Principal::Master, Principal::Key(g)) => {
                    return Ok(info_reply(host, &g));
                }
                (Principal::Key(own), Principal::Key(g)) if own.id == g.id => {
                    return Ok(info_reply(host, &g));
                }
                (Principal::Master, _) => {
                    return Err(GatewayError::invalid_request(
                        "that is the master key, not a virtual key",
                    )
                    .with_param("key"))
                }
                _ => return Err(GatewayError::new(
                    ErrorKind::Permission,
                    "a virtual key may only ask about itself; use the master key for other keys",
                )
                .with_param("key")),
            }
        }
        (Principal::Key(g), None) => g,
        (Principal::Master, None) => {
            return Err(GatewayError::invalid_request(
                "call /key/info with a virtual key, or with the master key and ?key=<key>",
            )
            .with_param("key"))
        }
    };
    Ok(info_reply(host, grant))
}

/// `sk-...` and the key's last four characters: how LiteLLM names a key it shows.
fn abbreviated(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// A minted key's fields as LiteLLM's `GenerateKeyResponse` / key info write them. `token`
/// is the key's id (LiteLLM's hashed token), never the key.
fn key_fields(claims: &Claims, spend: f64) -> Value {
    serde_json::json!({
        "token": claims.kid,
        "token_id": claims.kid,
        "key_name": claims.name,
        "key_alias": claims.alias,
        "models": claims.models,
        "expires": claims.exp.map(keys::rfc3339),
        "created_at": keys::rfc3339(claims.iat),
        "updated_at": keys::rfc3339(claims.iat),
        "rpm_limit": claims.rpm,
        "tpm_limit": claims.tpm,
        "max_budget": claims.budget,
        "max_parallel_requests": claims.par,
        "budget_duration": claims.bdur.map(keys::format_duration),
        "spend": spend,
        "user_id": claims.user,
        "team_id": claims.team,
        "metadata": claims.meta.clone().unwrap_or_else(|| Value::Object(Default::default())),
        "aliases": claims.als,
    })
}

fn info_reply(host: &dyn Host, grant: &KeyGrant) -> LocalReply {
    let spend = spend_of(host, grant);
    let now = host.now_unix_ms() / 1000;
    let info = match &grant.minted {
        Some(claims) => {
            let mut fields = key_fields(claims, spend);
            if let (Some(at), Value::Object(map)) = (grant.budget_reset_at(now), &mut fields) {
                map.insert("budget_reset_at".into(), Value::String(keys::rfc3339(at)));
            }
            fields
        }
        // A static key from the config: what the config says of it.
        None => serde_json::json!({
            "token": grant.id,
            "token_id": grant.id,
            "key_name": Value::Null,
            "key_alias": grant.alias,
            "models": grant.models,
            "expires": grant.expires.map(keys::rfc3339),
            "rpm_limit": grant.rpm,
            "tpm_limit": grant.tpm,
            "max_budget": grant.budget,
            "max_parallel_requests": grant.max_parallel,
            "budget_duration": grant.budget_period.map(|(d, _)| keys::format_duration(d)),
            "budget_reset_at": grant.budget_reset_at(now).map(keys::rfc3339),
            "spend": spend,
            "metadata": {},
        }),
    };
    let body = serde_json::json!({
        "key": grant.id,
        "token_id": grant.id,
        "info": info,
    });
    LocalReply::json(200, serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::host::FakeHost;

    fn config() -> Config {
        let json = r#"{"model_list":[
            {"model_name":"chat","litellm_params":{"model":"openai/c","api_base":"http://h:1"}}],
          "router_settings":{"model_group_alias":{"gpt-4o":"chat"}},
          "general_settings":{"master_key":"sk-m","virtual_keys":[{"key":"sk-static","models":["chat"]}]}}"#;
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    fn refused(c: &Config, body: &str) -> GatewayError {
        generate(c, &mut FakeHost::new(1), body.as_bytes()).unwrap_err()
    }

    fn minted(c: &Config, h: &mut FakeHost, body: &str) -> String {
        let r = generate(c, h, body.as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["key"].as_str().unwrap().to_string()
    }

    #[test]
    fn generate_refuses_what_it_cannot_honour_by_name() {
        let c = config();
        for (body, param) in [
            (r#"{"models":[""]}"#, "models"),
            (r#"{"models":"chat"}"#, "models"),
            (r#"{"models":[1]}"#, "models"),
            (r#"{"model":["chat"]}"#, "model"),
            (r#"{"duration":"forever"}"#, "duration"),
            (r#"{"duration":30}"#, "duration"),
            (r#"{"rpm_limit":"10"}"#, "rpm_limit"),
            (r#"{"tpm_limit":-1}"#, "tpm_limit"),
            (r#"{"rpm_limit":1.5}"#, "rpm_limit"),
            (r#"{"max_budget":-1}"#, "max_budget"),
            (r#"{"max_budget":"1"}"#, "max_budget"),
            (r#"{"key_alias":["a"]}"#, "key_alias"),
            (r#"{"metadata":"x"}"#, "metadata"),
            (r#"{"max_parallel_requests":-2}"#, "max_parallel_requests"),
            (r#"{"blocked":true}"#, "blocked"),
            (r#"{"spend":3}"#, "spend"),
            (r#"{"key":"sk-chosen"}"#, "key"),
        ] {
            let e = refused(&c, body);
            assert_eq!(e.status(), 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
            assert!(e.message.contains(&format!("`{param}`")), "{}", e.message);
        }
        for body in ["[]", "\"x\"", "1", "null", "{", "{\"models\":[\"chat\"]} x"] {
            assert_eq!(refused(&c, body).status(), 400, "{body}");
        }
    }

    #[test]
    fn generate_takes_litellm_bookkeeping_and_unset_settings() {
        let c = config();
        let mut h = FakeHost::new(1);
        let key = minted(
            &c,
            &mut h,
            r#"{"models":["gpt-4o"],"metadata":{"team":"x"},"team_id":"t","user_id":null,
                "key_name":"k","max_parallel_requests":null,"blocked":false,"tags":[],
                "aliases":{},"spend":0,"duration":null}"#,
        );
        let p = c.keys.authenticate(Some(&key), h.now_ms / 1000).unwrap();
        let Principal::Key(g) = p else { panic!() };
        assert_eq!(g.models, ["gpt-4o"]);
        let a = minted(&c, &mut h, "");
        let b = minted(&c, &mut h, "{}");
        assert_ne!(a, b, "every key gets its own id");
    }

    #[test]
    fn keys_without_duration_never_expire_and_echo_litellm_fields() {
        let c = config();
        let mut h = FakeHost::new(1);
        let r = generate(
            &c,
            &mut h,
            br#"{"models":["chat"],"metadata":{"allow_client_mock_response":true,"team":"x"},"user_id":"u1","team_id":"t1"}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let key = v["key"].as_str().unwrap();
        assert!(
            v["expires"].is_null(),
            "no duration: never expires, as in LiteLLM"
        );
        assert_eq!(v["token"], v["token_id"]);
        assert!(!key.contains(v["token"].as_str().unwrap()) || key.len() > 40);
        assert_eq!(v["key_name"], format!("sk-...{}", &key[key.len() - 4..]));
        assert_eq!(
            (v["user_id"].as_str(), v["team_id"].as_str()),
            (Some("u1"), Some("t1"))
        );
        assert_eq!(v["metadata"]["team"], "x");
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
        let p = c.keys.authenticate(Some(key), u64::MAX / 2).unwrap();
        let Principal::Key(g) = &p else { panic!() };
        assert!(g.expires.is_none());
        assert!(g.minted.as_ref().unwrap().allows_mock_response());
        let info: Value = serde_json::from_slice(&info(&c, &h, &p, None).unwrap().body).unwrap();
        assert_eq!(info["info"]["metadata"]["team"], "x");
        assert_eq!(info["info"]["user_id"], "u1");
    }

    #[test]
    fn operator_defaults_and_upper_bounds_apply_as_in_litellm() {
        let json = r#"{"model_list":[
            {"model_name":"chat","litellm_params":{"model":"openai/c","api_base":"http://h:1"}}],
          "litellm_settings":{
            "default_key_generate_params":{"models":["chat"],"max_budget":1.5},
            "upperbound_key_generate_params":{"duration":"30d","rpm_limit":100}},
          "general_settings":{"master_key":"sk-m"}}"#;
        let c = parse(json.as_bytes(), &|_| None, 0).unwrap().0;
        let mut h = FakeHost::new(1);
        let r = generate(&c, &mut h, b"{}").unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["models"], serde_json::json!(["chat"]));
        assert_eq!(v["max_budget"], 1.5);
        assert_eq!(v["rpm_limit"], 100, "an upper bound fills what is left out");
        let now = h.now_ms / 1000;
        assert_eq!(
            v["expires"].as_str().unwrap(),
            keys::rfc3339(now + 30 * 86_400)
        );
        let e = refused(&c, r#"{"rpm_limit":101}"#);
        assert_eq!(e.param.as_deref(), Some("rpm_limit"));
        assert!(
            e.message.contains("user_value=101; max_value=100"),
            "{}",
            e.message
        );
        assert_eq!(
            refused(&c, r#"{"duration":"31d"}"#).param.as_deref(),
            Some("duration")
        );
        // Bad policy: refused at configure time, naming the setting and field.
        let bad = json.replace(r#""30d""#, r#""ever""#);
        let (cfg, d) = crate::config::check(bad.as_bytes(), &|_| None, 0);
        assert!(cfg.is_none());
        assert_eq!(d.errors.len(), 1);
        let e = &d.errors[0];
        assert_eq!(e.path, "litellm_settings.upperbound_key_generate_params");
        assert!(e.message.starts_with("duration:"), "{}", e.message);
    }

    #[test]
    fn names_not_in_the_config_narrow_a_key_and_months_count() {
        let c = config();
        let mut h = FakeHost::new(1);
        let key = minted(
            &c,
            &mut h,
            r#"{"models":["added-later","groq/*"],"duration":"2mo"}"#,
        );
        let p = c.keys.authenticate(Some(&key), h.now_ms / 1000).unwrap();
        let scope = crate::scope::Scope::of(&c, &p);
        assert_eq!(scope.admit(&c, "chat", "model").unwrap_err().status(), 403);
        let Principal::Key(g) = &p else { panic!() };
        assert_eq!(g.expires, Some(h.now_ms / 1000 + 60 * 86_400));
    }

    #[test]
    fn info_answers_a_key_about_itself_only() {
        let c = config();
        let mut h = FakeHost::new(1);
        let mine = minted(&c, &mut h, r#"{"key_alias":"mine"}"#);
        let other = minted(&c, &mut h, r#"{"key_alias":"other"}"#);
        let now = h.now_ms / 1000;
        let me = c.keys.authenticate(Some(&mine), now).unwrap();
        let alias = |r: LocalReply| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["info"]["key_alias"].as_str().unwrap().to_string()
        };
        assert_eq!(alias(info(&c, &h, &me, None).unwrap()), "mine");
        assert_eq!(alias(info(&c, &h, &me, Some(&mine)).unwrap()), "mine");
        assert_eq!(info(&c, &h, &me, Some(&other)).unwrap_err().status(), 403);
        assert_eq!(
            info(&c, &h, &me, Some("sk-static")).unwrap_err().status(),
            403
        );
        assert_eq!(info(&c, &h, &me, Some("sk-m")).unwrap_err().status(), 403);
        for bad in ["sk-nope", "sk-lgw1_x.y", ""] {
            let e = info(&c, &h, &me, Some(bad)).unwrap_err();
            assert_eq!(e.status(), 404, "{bad}");
            let e = info(&c, &h, &Principal::Master, Some(bad)).unwrap_err();
            assert_eq!(e.status(), 404, "{bad}");
        }
        assert_eq!(
            alias(info(&c, &h, &Principal::Master, Some(&other)).unwrap()),
            "other"
        );
        assert_eq!(
            info(&c, &h, &Principal::Master, None).unwrap_err().status(),
            400
        );
        assert!(!String::from_utf8(info(&c, &h, &me, None).unwrap().body)
            .unwrap()
            .contains(&mine));
    }
}
