//! Configuration in two phases: `wire` (serde shapes as users write them), then `validate`
//! into `Config`, where everything a request needs is computed once: alias table, group
//! weights, upstream paths, auth header values, templates, the `/v1/models` body.

pub mod wire;

mod cache_settings;
mod deployments;
mod key_settings;
mod routing;
mod url;

use cache_settings::cache_settings;
use deployments::{resolve_secret, selection_weights, validate_deployment};
use key_settings::static_key;
use routing::router_settings;
pub use routing::{
    RouterSettings, Strategy, DEFAULT_ALLOWED_FAILS, DEFAULT_COOLDOWN_SECS, DEFAULT_NUM_RETRIES,
    MAX_FALLBACKS,
};
pub use url::{header_safe, is_token, Url};

use crate::template::PromptTemplate;
use std::collections::HashMap;
use wire::*;

/// Default body limit: large enough for long prompts, below Envoy buffer limits we ship.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// LiteLLM's default request timeout, seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 600.0;
/// Completion budget for text backends when neither the request nor the deployment sets one.
pub const DEFAULT_TRITON_MAX_TOKENS: u32 = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TritonMode {
    /// `/generate`, streaming on `/generate_stream`.
    Generate,
    /// KServe v2 `/infer`: text in, text out; or embeddings.
    Infer,
    /// LiteLLM's `/embeddings` URL: a KServe v2 body posted as is.
    Embeddings,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// `hosted_vllm/`, `vllm/`, `openai/`: the OpenAI endpoints below `base_path`.
    OpenAiCompatible {
        chat_path: String,
        completions_path: String,
        embeddings_path: String,
        /// `<api_base without /v1>`, for `/vllm/*` pass-through.
        native_base_path: String,
        is_vllm: bool,
    },
    Triton {
        mode: TritonMode,
        path: String,
        stream_path: String,
        template: PromptTemplate,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// `model_info.id`, else `<model_name>/<index>`.
    pub id: String,
    /// `id` made safe for a header value.
    pub header_id: String,
    /// `id` as a stat label.
    pub metric_label: String,
    pub group: usize,
    pub provider: Provider,
    /// The model name sent upstream (after the provider prefix).
    pub upstream_model: String,
    /// `litellm_params.model` and `api_base` as configured, for the info endpoints.
    pub model: String,
    pub api_base: String,
    /// `upstream_model` as a JSON string literal, ready to splice.
    pub upstream_model_json: String,
    pub cluster: String,
    /// The shared-data key of this deployment's router state.
    pub state_key: String,
    /// The shared-data key of its cooldown marker (see `router::cooling_until`).
    pub cooldown_key: String,
    pub authority: String,
    /// `Bearer <api_key>`, resolved at configure time.
    pub authorization: Option<String>,
    /// `weight` as configured; `None` when the user set none.
    pub weight: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub order: u32,
    pub timeout_ms: u64,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_input_tokens: Option<u64>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
}

impl Deployment {
    /// What `usage` cost in USD at this deployment's `model_info` prices (0 when unpriced).
    pub fn cost(&self, usage: crate::translate::text::Usage) -> f64 {
        usage.prompt_tokens as f64 * self.input_cost_per_token.unwrap_or(0.0)
            + usage.completion_tokens as f64 * self.output_cost_per_token.unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelGroup {
    pub name: String,
    /// `name` made safe for a header value (see `header_safe`).
    pub header_name: String,
    /// `name` as a stat label (see `metrics::label`).
    pub metric_label: String,
    pub deployments: Vec<usize>,
    /// Running sums of the selection weights, for a binary search per request.
    pub cumulative_weights: Vec<f64>,
    /// Each member's own selection weight (same order as `deployments`).
    pub weights: Vec<f64>,
    /// Distinct `order` values of the members, lowest first.
    pub orders: Vec<u32>,
}

#[derive(Debug)]
pub struct Config {
    pub deployments: Vec<Deployment>,
    pub groups: Vec<ModelGroup>,
    /// Group names and aliases (hidden ones too) → group index.
    pub model_index: HashMap<String, usize>,
    /// Every visible model name (groups, then non-hidden aliases), in config order.
    pub visible_models: Vec<String>,
    /// Master key, static virtual keys, the minted-key signing secret, revocations.
    pub keys: crate::keys::KeyRing,
    pub drop_params: bool,
    pub max_request_body_bytes: u64,
    pub router: RouterSettings,
    /// `litellm_settings.cache: true`: the response cache.
    pub cache: Option<crate::cache::CacheSettings>,
    /// The `hosted_vllm`/`vllm` deployments in config order: where `/vllm/*` goes when the
    /// body names no model (the first one the caller may use and that is usable).
    pub vllm_deployments: Vec<usize>,
    /// The `/v1/models` answer, rendered once.
    pub models_list_body: Vec<u8>,
    /// `created` for model objects: when this config was loaded.
    pub created: u64,
}

/// Parse and validate. `env` resolves `os.environ/NAME`; `now_unix` stamps model objects.
/// Returns the config and one warning per ignored key.
pub fn parse(
    json: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
    now_unix: u64,
) -> Result<(Config, Vec<String>), ConfigError> {
    let mut ignored = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(json);
    let wire: WireConfig = {
        let mut on_ignored = |path: serde_ignored::Path<'_>| {
            ignored.push(format!("{}: unknown key, ignored", json_path(&path)));
        };
        let tracked = serde_ignored::Deserializer::new(&mut de, &mut on_ignored);
        serde_path_to_error::deserialize(tracked).map_err(|e| {
            let path = e.path().to_string();
            err(
                if path == "." { String::new() } else { path },
                e.inner().to_string(),
            )
        })?
    };
    de.end().map_err(|e| err("", e.to_string()))?;
    let mut warnings = caveats(&wire);
    let config = validate(wire, env, now_unix)?;
    warnings.extend(ignored);
    Ok((config, warnings))
}

/// `serde_ignored` paths as `a.b[2].c`, matching `serde_path_to_error`.
fn json_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{}]", json_path(parent), index),
        Path::Map { parent, key } => {
            let p = json_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => json_path(parent),
    }
}

/// LiteLLM settings accepted but honoured differently here: said once each at configure
/// time, so nobody believes a feature works as in LiteLLM when it does not.
fn caveats(wire: &WireConfig) -> Vec<String> {
    let mut out = Vec::new();
    let kind = wire
        .litellm_settings
        .cache_params
        .as_ref()
        .and_then(|p| p.kind.as_deref());
    if kind.is_some_and(|k| k != "local") {
        out.push(
            "litellm_settings.cache_params.type: only a local cache, shared by the workers of one Envoy, exists; using it"
                .to_string(),
        );
    }
    out
}

pub fn validate(
    mut wire: WireConfig,
    env: &dyn Fn(&str) -> Option<String>,
    now_unix: u64,
) -> Result<Config, ConfigError> {
    if wire.model_list.is_empty() {
        return Err(err("model_list", "must list at least one deployment"));
    }
    let default_timeout = wire
        .router_settings
        .timeout
        .or(wire.litellm_settings.request_timeout)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    if !(default_timeout.is_finite() && default_timeout > 0.0) {
        return Err(err(
            "router_settings.timeout",
            "must be a positive number of seconds",
        ));
    }

    let mut groups: Vec<ModelGroup> = Vec::new();
    let mut model_index: HashMap<String, usize> = HashMap::new();
    let mut visible_models = Vec::new();
    let mut deployments = Vec::with_capacity(wire.model_list.len());
    let mut ids: HashMap<String, usize> = HashMap::new();

    for (i, d) in wire.model_list.into_iter().enumerate() {
        let path = format!("model_list[{i}]");
        if d.model_name.is_empty() {
            return Err(err(format!("{path}.model_name"), "must not be empty"));
        }
        let group = match model_index.get(&d.model_name) {
            Some(&g) => g,
            None => {
                groups.push(ModelGroup {
                    name: d.model_name.clone(),
                    header_name: header_safe(&d.model_name),
                    metric_label: crate::metrics::label(&d.model_name),
                    deployments: Vec::new(),
                    cumulative_weights: Vec::new(),
                    weights: Vec::new(),
                    orders: Vec::new(),
                });
                let g = groups.len() - 1;
                model_index.insert(d.model_name.clone(), g);
                visible_models.push(d.model_name.clone());
                g
            }
        };
        let deployment = validate_deployment(&path, i, group, d, env, default_timeout)?;
        if let Some(previous) = ids.insert(deployment.id.clone(), i) {
            return Err(err(
                format!("{path}.model_info.id"),
                format!(
                    "\"{}\" is already the id of model_list[{previous}]",
                    deployment.id
                ),
            ));
        }
        if let Some(g) = groups.get_mut(group) {
            g.deployments.push(deployments.len());
        }
        deployments.push(deployment);
    }

    let aliases = std::mem::take(&mut wire.router_settings.model_group_alias);
    for (alias, target) in aliases {
        let path = format!("router_settings.model_group_alias.{alias}");
        let (target, hidden) = match target {
            WireAlias::Group(g) => (g, false),
            WireAlias::Detailed { model, hidden } => (model, hidden),
        };
        if alias.is_empty() {
            return Err(err(path, "alias must not be empty"));
        }
        let Some(&g) = model_index.get(&target) else {
            return Err(err(
                path,
                format!("names model group \"{target}\", which no model_list entry defines"),
            ));
        };
        if groups.get(g).map(|grp| grp.name == alias).unwrap_or(false) {
            continue;
        }
        if model_index.contains_key(&alias) {
            return Err(err(path, "alias is already a model group name"));
        }
        model_index.insert(alias.clone(), g);
        if !hidden {
            visible_models.push(alias);
        }
    }

    for g in &mut groups {
        g.cumulative_weights = selection_weights(&g.deployments, &deployments);
        let mut previous = 0.0;
        g.weights = g
            .cumulative_weights
            .iter()
            .map(|&c| {
                let w = c - previous;
                previous = c;
                w
            })
            .collect();
        let mut orders: Vec<u32> = g
            .deployments
            .iter()
            .filter_map(|&i| deployments.get(i).map(|d| d.order))
            .collect();
        orders.sort_unstable();
        orders.dedup();
        g.orders = orders;
    }

    let router = router_settings(&wire.router_settings, &wire.litellm_settings, &model_index)?;
    let general = wire.general_settings;
    let master_key = match general.master_key.as_deref() {
        Some(k) => {
            let k = resolve_secret("general_settings.master_key", k, env)?;
            if k.is_empty() {
                return Err(err("general_settings.master_key", "must not be empty"));
            }
            Some(k)
        }
        None => None,
    };
    let signing_secret = match general.key_signing_secret.as_deref() {
        Some(s) => Some(resolve_secret(
            "general_settings.key_signing_secret",
            s,
            env,
        )?)
        .filter(|s| !s.is_empty()),
        None => None,
    };
    let statics = general
        .virtual_keys
        .iter()
        .enumerate()
        .map(|(i, v)| static_key(i, v, &model_index, env))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = crate::keys::KeyRing::new(
        master_key.as_deref(),
        signing_secret.as_deref(),
        statics,
        general.revoked_keys.clone(),
    );
    let max_request_body_bytes = general
        .max_request_body_bytes
        .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES);
    if max_request_body_bytes == 0 {
        return Err(err(
            "general_settings.max_request_body_bytes",
            "must be greater than 0",
        ));
    }

    let models_list_body = render_models_list(&visible_models, now_unix);
    let vllm_deployments = deployments
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d.provider, Provider::OpenAiCompatible { is_vllm: true, .. }))
        .map(|(i, _)| i)
        .collect();
    Ok(Config {
        vllm_deployments,
        deployments,
        groups,
        model_index,
        visible_models,
        keys,
        drop_params: wire.litellm_settings.drop_params.unwrap_or(false),
        router,
        cache: cache_settings(&wire.litellm_settings)?,
        max_request_body_bytes,
        models_list_body,
        created: now_unix,
    })
}

#[derive(serde::Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

pub fn render_model_object(id: &str, created: u64) -> Vec<u8> {
    serde_json::to_vec(&ModelObject {
        id,
        object: "model",
        created,
        owned_by: "llm-gateway",
    })
    .unwrap_or_default()
}

pub fn render_models_list<S: AsRef<str>>(models: &[S], created: u64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<ModelObject<'a>>,
    }
    serde_json::to_vec(&List {
        object: "list",
        data: models
            .iter()
            .map(|m| ModelObject {
                id: m.as_ref(),
                object: "model",
                created,
                owned_by: "llm-gateway",
            })
            .collect(),
    })
    .unwrap_or_default()
}

impl Config {
    pub fn resolve_model(&self, name: &str) -> Option<&ModelGroup> {
        self.model_index.get(name).and_then(|&g| self.groups.get(g))
    }

    pub fn deployment(&self, index: usize) -> Option<&Deployment> {
        self.deployments.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load(json: &str) -> Result<(Config, Vec<String>), ConfigError> {
        parse(json.as_bytes(), &no_env, 1_700_000_000)
    }

    const CONTRACT_EXAMPLE: &str = r#"{
      "model_list": [
        {"model_name": "llama-3",
         "litellm_params": {"model": "triton/llama-3-8b-instruct",
                            "api_base": "http://127.0.0.1:8000/v2/models/llama/generate",
                            "rpm": 600, "tpm": 100000, "weight": 2, "order": 1, "timeout": 60,
                            "api_key": "optional upstream key", "cluster": "optional_envoy_cluster",
                            "prompt_template": "llama3",
                            "max_tokens": 512, "temperature": 0.7},
         "model_info": {"id": "triton-a", "max_input_tokens": 8192,
                        "input_cost_per_token": 0.0000002, "output_cost_per_token": 0.0000006}},
        {"model_name": "mistral",
         "litellm_params": {"model": "hosted_vllm/mistralai/Mistral-7B", "api_base": "http://10.0.0.5:8001/v1"}},
        {"model_name": "llama-3-long",
         "litellm_params": {"model": "openai/llama-long", "api_base": "https://llm.example.com"}}
      ],
      "router_settings": {
        "routing_strategy": "simple-shuffle",
        "model_group_alias": {"gpt-4": "llama-3", "GPT-4": {"model": "llama-3", "hidden": true}},
        "num_retries": 2, "timeout": 600, "allowed_fails": 3, "cooldown_time": 30,
        "fallbacks": [{"llama-3": ["mistral"]}],
        "context_window_fallbacks": [{"llama-3": ["llama-3-long"]}]
      },
      "litellm_settings": {"drop_params": true, "num_retries": 2, "request_timeout": 600,
                           "fallbacks": [], "cache": true, "set_verbose": true},
      "general_settings": {"master_key": "sk-1234"},
      "environment_variables": {"X": "1"}
    }"#;

    #[test]
    fn contract_example_is_accepted() {
        let (c, warnings) = load(CONTRACT_EXAMPLE).unwrap();
        assert_eq!(c.groups.len(), 3);
        assert_eq!(
            c.visible_models,
            vec!["llama-3", "mistral", "llama-3-long", "gpt-4"]
        );
        assert_eq!(c.resolve_model("GPT-4").unwrap().name, "llama-3");
        assert!(c.resolve_model("gpt-4o").is_none());
        assert!(c.drop_params);
        let ignored: Vec<&String> = warnings
            .iter()
            .filter(|w| w.ends_with("unknown key, ignored"))
            .collect();
        assert_eq!(
            ignored,
            vec![
                "litellm_settings.set_verbose: unknown key, ignored",
                "environment_variables: unknown key, ignored"
            ]
        );
        assert!(
            c.cache.is_some(),
            "litellm_settings.cache: true turns the cache on"
        );
        assert_eq!(c.router.num_retries, 2);
        assert_eq!(c.router.policy.allowed_fails, 3);
        assert_eq!(c.router.policy.cooldown_ms, 30_000);
        assert_eq!(c.router.fallbacks.get(&0), Some(&vec![1]));
        assert_eq!(c.router.context_window_fallbacks.get(&0), Some(&vec![2]));
        let d = &c.deployments[0];
        assert_eq!(d.id, "triton-a");
        assert_eq!(d.cluster, "optional_envoy_cluster");
        assert_eq!(
            d.authorization.as_deref(),
            Some("Bearer optional upstream key")
        );
        assert_eq!(d.timeout_ms, 60_000);
        assert!(matches!(
            &d.provider,
            Provider::Triton { mode: TritonMode::Generate, path, stream_path, template: PromptTemplate::Llama3 }
                if path == "/v2/models/llama/generate" && stream_path == "/v2/models/llama/generate_stream"
        ));
        let m = &c.deployments[1];
        assert_eq!(m.id, "mistral/1");
        assert_eq!(m.cluster, "10.0.0.5:8001");
        assert_eq!(m.authority, "10.0.0.5:8001");
        assert_eq!(m.upstream_model, "mistralai/Mistral-7B");
        assert!(
            matches!(&m.provider, Provider::OpenAiCompatible { chat_path, native_base_path, .. }
            if chat_path == "/v1/chat/completions" && native_base_path.is_empty())
        );
        let l = &c.deployments[2];
        assert_eq!(l.cluster, "llm.example.com:443");
        assert_eq!(l.authority, "llm.example.com");
    }

    #[test]
    fn errors_name_the_json_path() {
        let e = load(r#"{"model_list":[{"model_name":"a","litellm_params":{"model":"openai/x","api_base":"http://h:1"}},
                         {"model_name":"b","litellm_params":{"model":"openai/x","api_base":"ftp://h"}}]}"#)
            .unwrap_err();
        assert_eq!(e.path, "model_list[1].litellm_params.api_base");
        assert!(e.message.contains("http://"), "{e}");

        let e = load(r#"{"model_list":[{"model_name":"a","litellm_params":{"model":"openai/x","api_base":"http://h:1","rpm":"many"}}]}"#)
            .unwrap_err();
        assert_eq!(e.path, "model_list[0].litellm_params.rpm");

        let e = load(r#"{"model_list":[{"model_name":"a","litellm_params":{"model":"bedrock/x","api_base":"http://h:1"}}]}"#)
            .unwrap_err();
        assert_eq!(e.path, "model_list[0].litellm_params.model");

        let e = load(r#"{"model_list":[{"model_name":"a","litellm_params":{"model":"triton/x","api_base":"http://h:1/v2/models/x"}}]}"#)
            .unwrap_err();
        assert!(
            e.message.contains("/generate, /infer or /embeddings"),
            "{e}"
        );

        let e = load(r#"{"model_list":[{"model_name":"a","litellm_params":{"model":"openai/x","api_base":"http://h:1"}}],
                         "router_settings":{"model_group_alias":{"b":"nope"}}}"#)
            .unwrap_err();
        assert_eq!(e.path, "router_settings.model_group_alias.b");

        let e = load(r#"{"model_list":[]}"#).unwrap_err();
        assert_eq!(e.path, "model_list");
        let e = load("not json").unwrap_err();
        assert!(!e.message.is_empty());
    }

    #[test]
    fn router_settings_are_validated() {
        let base = |router: &str| {
            format!(
                r#"{{"model_list":[{{"model_name":"a","litellm_params":{{"model":"openai/x","api_base":"http://h:1"}}}},
                                  {{"model_name":"b","litellm_params":{{"model":"openai/x","api_base":"http://h:1"}}}}],
                   "router_settings":{router}}}"#
            )
        };
        let e = load(&base(r#"{"fallbacks":[{"a":["b"]},{"b":["a"]}]}"#)).unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
        let e = load(&base(r#"{"fallbacks":[{"a":["nope"]}]}"#)).unwrap_err();
        assert_eq!(e.path, "router_settings.fallbacks[0].a");
        let e = load(&base(r#"{"routing_strategy":"cost-based"}"#)).unwrap_err();
        assert_eq!(e.path, "router_settings.routing_strategy");
        let (c, _) = load(&base(r#"{"routing_strategy":"latency-based-routing","routing_strategy_args":{"lowest_latency_buffer":0.5,"ttl":10}}"#)).unwrap();
        assert_eq!(
            c.router.strategy,
            Strategy::LatencyBased {
                buffer: 0.5,
                ttl_ms: 10_000
            }
        );
        let (c, _) = load(&base("{}")).unwrap();
        assert_eq!(
            c.router.policy.cooldown_ms, 5_000,
            "LiteLLM's default cooldown"
        );
    }

    #[test]
    fn api_key_from_environment() {
        let env = |name: &str| (name == "VLLM_KEY").then(|| "secret".to_string());
        let json = r#"{"model_list":[{"model_name":"a","litellm_params":{"model":"openai/x","api_base":"http://h:1","api_key":"os.environ/VLLM_KEY"}}]}"#;
        let (c, _) = parse(json.as_bytes(), &env, 0).unwrap();
        assert_eq!(
            c.deployments[0].authorization.as_deref(),
            Some("Bearer secret")
        );
        let e = load(json).unwrap_err();
        assert!(e.message.contains("VLLM_KEY"));
    }

    #[test]
    fn weights_follow_litellm_rule() {
        let mk = |params: &str| {
            let json = format!(
                r#"{{"model_list":[
                {{"model_name":"g","litellm_params":{{"model":"openai/a","api_base":"http://a:1"{params}}}}},
                {{"model_name":"g","litellm_params":{{"model":"openai/b","api_base":"http://b:1","rpm":30,"weight":3}}}}]}}"#
            );
            load(&json).unwrap().0.groups[0].cumulative_weights.clone()
        };
        assert_eq!(mk(r#","rpm":10,"weight":1"#), vec![1.0, 4.0]);
        assert_eq!(mk(r#","rpm":10"#), vec![1.0, 4.0]);
    }

    #[test]
    fn header_safe_escapes_control_and_non_ascii() {
        assert_eq!(header_safe("llama-3 8b"), "llama-3 8b");
        assert_eq!(header_safe("a\r\nX: y"), "a%0D%0AX: y");
        assert_eq!(header_safe("é%"), "%C3%A9%25");
    }

    #[test]
    fn url_parsing() {
        let u = Url::parse("http://[::1]:8080/v1?x=1").unwrap();
        assert_eq!(u.host_port(), "[::1]:8080");
        assert_eq!(u.path, "/v1");
        assert_eq!(u.query, "x=1");
        assert!(Url::parse("http://h:99999").is_err());
        assert!(Url::parse("http://h/a b").is_err());
        assert!(Url::parse("http://user:pw@h").is_err());
        assert_eq!(Url::parse("http://h").unwrap().host_port(), "h:80");
    }

    #[test]
    fn models_list_is_prerendered() {
        let (c, _) = load(CONTRACT_EXAMPLE).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&c.models_list_body).unwrap();
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["llama-3", "mistral", "llama-3-long", "gpt-4"]);
        assert_eq!(v["data"][0]["object"], "model");
    }
}
