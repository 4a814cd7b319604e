//! Configuration in two phases: `wire` (serde shapes as users write them), then `validate`
//! into `Config`, where everything a request needs is computed once: alias table, group
//! weights, upstream paths, auth header values, templates, the `/v1/models` body.

pub mod wire;

mod build;
mod cache_settings;
mod deployments;
pub mod env;
mod fleet_settings;
mod key_settings;
mod load;
pub mod policy;
pub mod providers;
mod routing;
mod url;
#[cfg(not(target_arch = "wasm32"))]
pub mod yaml;

use cache_settings::cache_settings;
use deployments::{selection_weights, validate_deployment, DeploymentDefaults};
use key_settings::static_key;
use routing::router_settings_of;
pub use routing::{
    RetryPolicy, RouterSettings, Strategy, DEFAULT_ALLOWED_FAILS, DEFAULT_COOLDOWN_SECS,
    DEFAULT_NUM_RETRIES, MAX_FALLBACKS,
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
        /// What `GET /health` asks (vLLM: `/health`; others their model list).
        health_path: String,
        is_vllm: bool,
        /// `text-completion-openai/`: chat is sent to `completions_path` as a prompt.
        text_completion: bool,
        /// What becomes of a chat request's parameters on the way (provider table).
        params: ParamRules,
    },
    Triton {
        mode: TritonMode,
        path: String,
        stream_path: String,
        template: PromptTemplate,
    },
}

/// What becomes of a chat request's parameters on their way to an OpenAI-compatible
/// provider, decided at configure time from its table row and the deployment's settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParamRules {
    /// The provider prefix, for messages.
    pub provider: &'static str,
    /// OpenAI chat parameters the provider does not take (LiteLLM's supported lists).
    pub refused: Vec<&'static str>,
    /// `drop_params` (the deployment's, else `litellm_settings`'): refused parameters are
    /// removed instead of answered with a 400.
    pub drop_refused: bool,
    /// `litellm_params.additional_drop_params`: removed from every request.
    pub always_drop: Vec<String>,
    /// The provider takes `max_tokens` only: `max_completion_tokens` is sent as that.
    pub max_tokens_only: bool,
}

impl ParamRules {
    /// Whether a request's members need looking at (most rows: no).
    pub fn is_active(&self) -> bool {
        !self.refused.is_empty() || !self.always_drop.is_empty() || self.max_tokens_only
    }

    /// Whether the gateway may add `stream_options` to count a stream's tokens.
    pub fn takes_stream_options(&self) -> bool {
        !self.refused.contains(&"stream_options")
    }
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
    /// `api_base` made safe for a header value (LiteLLM's `x-litellm-model-api-base`).
    pub api_base_header: String,
    /// `upstream_model` as a JSON string literal, ready to splice.
    pub upstream_model_json: String,
    pub cluster: String,
    /// The shared-data key of this deployment's router state.
    pub state_key: String,
    /// The shared-data key of its cooldown marker (see `router::cooling_until`).
    pub cooldown_key: String,
    /// The shared-data keys of what waits to be reported to the fleet's rate-limit service:
    /// tokens not charged yet, and requests sent without its admission (`fleet::tokens`).
    pub fleet_tokens_key: String,
    pub fleet_unasked_key: String,
    pub authority: String,
    /// The upstream key header: (`authorization`, `Bearer <api_key>`), or Azure's
    /// (`api-key`, `<api_key>`); resolved at configure time.
    pub auth_header: Option<(&'static str, String)>,
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
    /// `litellm_params.tags`, for tag routing.
    pub tags: Vec<String>,
    /// `litellm_params.stream_timeout`: the upstream timeout of streamed requests.
    pub stream_timeout_ms: Option<u64>,
    /// `litellm_params.num_retries`: this deployment's retries (over the router's).
    pub num_retries: Option<u32>,
    /// A wildcard deployment (`model: openai/*`): the upstream model's part before `*`; the
    /// rest of the requested name completes it.
    pub wildcard: Option<String>,
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
    /// A wildcard group (`model_name: "openai/*"`): the part of the name before `*`.
    pub wildcard_prefix: Option<String>,
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
    /// `general_settings.litellm_key_header_name`, lowercased: a header the key is also
    /// read from (and removed before any upstream, like the standard ones).
    pub key_header: Option<String>,
    /// `general_settings.litellm_response_headers` (default true): LiteLLM's `x-litellm-*`.
    pub litellm_response_headers: bool,
    /// `general_settings.litellm_test_switches` (default false).
    pub litellm_test_switches: bool,
    /// `LLM_GATEWAY_TEST_PANICS=1` in the gateway's environment: `x-llm-test-panic` makes a
    /// request panic (`session::fault`; for the suite's crash tests only).
    pub test_panics: bool,
    /// `general_settings.envoy_route_defaults`: the timeout and retries the route sets.
    pub route_defaults: Option<crate::retry::RouteDefaults>,
    /// `general_settings.rate_limit_service`: limits that hold across many Envoys.
    pub rate_limit: Option<crate::fleet::Service>,
    /// LiteLLM's access groups (`model_info.access_groups`): name → the groups in it.
    pub access_groups: HashMap<String, Vec<usize>>,
    /// `litellm_settings.default_key_generate_params` / `upperbound_key_generate_params`.
    pub key_policy: crate::key_api::KeyPolicy,
    pub drop_params: bool,
    pub max_request_body_bytes: u64,
    pub router: RouterSettings,
    /// `litellm_settings.cache: true`: the response cache.
    pub cache: Option<crate::cache::CacheSettings>,
    /// Wildcard groups as (name before `*`, group), most specific (longest) first: a model
    /// name no group or alias has goes to the first that prefixes it.
    pub wildcards: Vec<(String, usize)>,
    /// The `hosted_vllm`/`vllm` deployments in config order: where `/vllm/*` goes when the
    /// body names no model (the first one the caller may use and that is usable).
    pub vllm_deployments: Vec<usize>,
    /// The `/v1/models` answer, rendered once.
    pub models_list_body: Vec<u8>,
    /// `created` for model objects: when this config was loaded.
    pub created: u64,
}

/// Everything a configuration was found to have wrong (errors: it is refused) or
/// questionable (warnings: it runs), each named by the path the user wrote.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diagnostics {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl Diagnostics {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(err(path, message));
    }

    /// One error per path: the first is the cause (a missing `os.environ/` variable, say),
    /// what follows from it at the same place would only repeat it.
    pub fn push(&mut self, e: ConfigError) {
        if !self.errors.iter().any(|x| x.path == e.path) {
            self.errors.push(e);
        }
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(err(path, message));
    }
}

/// `a.b` + `c` → `a.b.c` (a top-level key has no dot before it).
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `a.b` + 2 → `a.b[2]`.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// Read and validate a configuration tree, reporting every problem at once. `env` resolves
/// `os.environ/NAME` after the config's own `environment_variables`; `now_unix` stamps model
/// objects. The config is `Some` exactly when there is no error.
pub fn check_value(
    value: serde_json::Value,
    env: &dyn Fn(&str) -> Option<String>,
    now_unix: u64,
) -> (Option<Config>, Diagnostics) {
    let mut d = Diagnostics::default();
    let sections = load::sections(value, env, &mut d);
    caveats(&sections, &mut d);
    let mut config = build::build(sections, &mut d, now_unix);
    if let Some(config) = config
        .as_mut()
        .filter(|_| crate::session::fault::enabled(env))
    {
        config.test_panics = true;
        d.warn(
            "",
            format!(
                "{} is set: a request with {} can make the gateway panic (for tests only)",
                crate::session::fault::ENV,
                crate::session::fault::HEADER
            ),
        );
    }
    (config, d)
}

/// `check_value` on JSON bytes (what the filter receives).
pub fn check(
    json: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
    now_unix: u64,
) -> (Option<Config>, Diagnostics) {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(value) => check_value(value, env, now_unix),
        Err(e) => {
            let mut d = Diagnostics::default();
            d.error("", format!("not JSON: {e}"));
            (None, d)
        }
    }
}

/// Parse and validate; the first error, or the config with its warnings as text.
pub fn parse(
    json: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
    now_unix: u64,
) -> Result<(Config, Vec<String>), ConfigError> {
    let (config, d) = check(json, env, now_unix);
    match (config, d.errors.into_iter().next()) {
        (Some(c), None) => Ok((c, d.warnings.iter().map(ToString::to_string).collect())),
        (_, Some(e)) => Err(e),
        (None, None) => Err(err("", "invalid configuration")),
    }
}

/// LiteLLM settings accepted but honoured differently here: said once each at configure
/// time, so nobody believes a feature works as in LiteLLM when it does not.
fn caveats(s: &load::Sections, d: &mut Diagnostics) {
    let kind = s
        .litellm_settings
        .cache_params
        .as_ref()
        .and_then(|p| p.kind.as_deref());
    if kind.is_some_and(|k| k != "local") {
        d.warn(
            "litellm_settings.cache_params.type",
            "only a local cache, shared by the workers of one Envoy, exists; using it",
        );
    }
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
        self.resolve_index(name).and_then(|g| self.groups.get(g))
    }

    /// The group a requested name routes to: a group or alias of that name (they always
    /// win), else the most specific wildcard group whose prefix it extends.
    pub fn resolve_index(&self, name: &str) -> Option<usize> {
        if let Some(&g) = self.model_index.get(name) {
            return Some(g);
        }
        self.wildcards
            .iter()
            .find(|(prefix, _)| name.len() > prefix.len() && name.starts_with(prefix.as_str()))
            .map(|&(_, g)| g)
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
    fn allowed_fails_policy_is_read_and_its_4xx_kinds_are_said_to_be_ignored() {
        let (c, warnings) = load(
            r#"{"model_list":[{"model_name":"g","litellm_params":{"model":"openai/a","api_base":"http://a:1"}}],
              "router_settings":{"allowed_fails":3,"allowed_fails_policy":{
                "RateLimitErrorAllowedFails":0,"TimeoutErrorAllowedFails":9,"BadRequestErrorAllowedFails":1}}}"#,
        )
        .unwrap();
        let p = c.router.policy;
        assert_eq!(
            (
                p.allowed_fails_for(429),
                p.allowed_fails_for(504),
                p.allowed_fails_for(500)
            ),
            (0, 9, 3)
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with(
            "router_settings.allowed_fails_policy.BadRequestErrorAllowedFails: ignored"
        ));
        let typo = load(
            r#"{"model_list":[{"model_name":"g","litellm_params":{"model":"openai/a","api_base":"http://a:1"}}],
              "router_settings":{"allowed_fails_policy":{"RateLimitAllowedFails":0}}}"#,
        );
        assert!(typo.is_err(), "a misspelt kind is refused");
    }

    #[test]
    fn envoy_route_defaults_must_not_retry_on_more_than_any_request_does() {
        let with = |retry_on: &str| {
            load(&format!(
                r#"{{"model_list":[{{"model_name":"g","litellm_params":{{"model":"openai/a","api_base":"http://a:1"}}}}],
                  "general_settings":{{"envoy_route_defaults":{{"timeout_seconds":600,"num_retries":2,"retry_on":"{retry_on}"}}}}}}"#
            ))
        };
        let (c, _) = with("connect-failure,refused-stream,reset").unwrap();
        assert_eq!(
            c.route_defaults.map(|r| (r.timeout_ms, r.num_retries)),
            Some((600_000, 2))
        );
        let e = with("connect-failure,refused-stream,reset,5xx").unwrap_err();
        assert_eq!(e.path, "general_settings.envoy_route_defaults.retry_on");
    }

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
        // `environment_variables` is read (for `os.environ/`), and set_verbose is LiteLLM's
        // logging, ignored for a stated reason.
        assert_eq!(
            warnings,
            vec!["litellm_settings.set_verbose: ignored: LiteLLM's logging: the gateway logs through Envoy (access log, stats, log level)"]
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
            d.auth_header.as_ref().map(|(_, v)| v.as_str()),
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
            c.deployments[0]
                .auth_header
                .as_ref()
                .map(|(_, v)| v.as_str()),
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
