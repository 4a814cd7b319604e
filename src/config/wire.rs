//! The configuration as users write it: LiteLLM's proxy `config.yaml`, as JSON.
//!
//! These types only describe the shape; `super::validate` turns them into the runtime config.
//! Keys we do not know are reported (with their path) by `serde_ignored`; `super::policy`
//! says which of those are refused (security or routing the gateway cannot honour) and why
//! the others may be ignored.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
pub struct WireConfig {
    #[serde(default)]
    pub model_list: Vec<WireDeployment>,
    #[serde(default)]
    pub router_settings: WireRouterSettings,
    #[serde(default)]
    pub litellm_settings: WireLitellmSettings,
    #[serde(default)]
    pub general_settings: WireGeneralSettings,
    /// LiteLLM's values for `os.environ/NAME` (resolved before anything else is read).
    #[serde(default)]
    pub environment_variables: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct WireDeployment {
    pub model_name: String,
    pub litellm_params: WireLitellmParams,
    #[serde(default)]
    pub model_info: WireModelInfo,
    /// LiteLLM's load-balancing docs write the limits on the entry itself; they win over
    /// `litellm_params` (as in LiteLLM's router).
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
pub struct WireLitellmParams {
    pub model: String,
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub cluster: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub weight: Option<f64>,
    pub order: Option<u32>,
    pub timeout: Option<f64>,
    pub stream_timeout: Option<f64>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub prompt_template: Option<String>,
    pub roles: Option<BTreeMap<String, WireRoleTemplate>>,
    pub initial_prompt_value: Option<String>,
    pub final_prompt_value: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Tag routing (`router_settings.enable_tag_filtering`).
    pub tags: Option<Vec<String>>,
    /// The OpenAI client's own retries in LiteLLM: warned, not used.
    pub max_retries: Option<u32>,
    /// LiteLLM's per-deployment retries (wins over the router's; the request's wins over it).
    pub num_retries: Option<u32>,
    /// Azure's API version (`azure/`, `azure_ai/`); meaningless elsewhere: warned.
    pub api_version: Option<String>,
    /// LiteLLM's per-deployment `drop_params` (wins over `litellm_settings.drop_params`).
    pub drop_params: Option<bool>,
    /// Parameters removed from every request to this deployment.
    pub additional_drop_params: Option<Vec<String>>,
    /// LiteLLM also takes prices here; `model_info` wins.
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct WireRoleTemplate {
    #[serde(default)]
    pub pre_message: String,
    #[serde(default)]
    pub post_message: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct WireModelInfo {
    pub id: Option<String>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub mode: Option<String>,
    /// LiteLLM's access groups: a key naming one may use this deployment's group.
    pub access_groups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct WireRouterSettings {
    pub routing_strategy: Option<String>,
    #[serde(default)]
    pub model_group_alias: BTreeMap<String, WireAlias>,
    pub num_retries: Option<u32>,
    pub timeout: Option<f64>,
    pub allowed_fails: Option<u32>,
    pub cooldown_time: Option<f64>,
    pub fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub context_window_fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub routing_strategy_args: Option<WireStrategyArgs>,
    /// LiteLLM's `disable_cooldowns`: never take a deployment out of rotation.
    pub disable_cooldowns: Option<bool>,
    pub request_timeout: Option<f64>,
    pub retry_policy: Option<WireRetryPolicy>,
    /// LiteLLM's `model_group_retry_policy`: a group's own `retry_policy`.
    pub model_group_retry_policy: Option<BTreeMap<String, WireRetryPolicy>>,
    pub allowed_fails_policy: Option<WireAllowedFailsPolicy>,
    /// Groups every group falls back to when it has no `fallbacks` entry of its own.
    pub default_fallbacks: Option<Vec<String>>,
    pub enable_tag_filtering: Option<bool>,
    /// Tag matching: any tag in common (LiteLLM's default), or every request tag.
    pub tag_filtering_match_any: Option<bool>,
}

/// LiteLLM's `RetryPolicy`: retries by the kind of failure.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireRetryPolicy {
    #[serde(rename = "BadRequestErrorRetries")]
    pub bad_request: Option<u32>,
    #[serde(rename = "AuthenticationErrorRetries")]
    pub authentication: Option<u32>,
    #[serde(rename = "TimeoutErrorRetries")]
    pub timeout: Option<u32>,
    #[serde(rename = "RateLimitErrorRetries")]
    pub rate_limit: Option<u32>,
    #[serde(rename = "ContentPolicyViolationErrorRetries")]
    pub content_policy: Option<u32>,
    #[serde(rename = "InternalServerErrorRetries")]
    pub internal_server: Option<u32>,
}

/// LiteLLM's `AllowedFailsPolicy`: failures a minute allowed before a cooldown, by kind.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireAllowedFailsPolicy {
    #[serde(rename = "BadRequestErrorAllowedFails")]
    pub bad_request: Option<u32>,
    #[serde(rename = "AuthenticationErrorAllowedFails")]
    pub authentication: Option<u32>,
    #[serde(rename = "TimeoutErrorAllowedFails")]
    pub timeout: Option<u32>,
    #[serde(rename = "RateLimitErrorAllowedFails")]
    pub rate_limit: Option<u32>,
    #[serde(rename = "ContentPolicyViolationErrorAllowedFails")]
    pub content_policy: Option<u32>,
    #[serde(rename = "InternalServerErrorAllowedFails")]
    pub internal_server: Option<u32>,
}

/// LiteLLM's `routing_strategy_args` for latency-based routing.
#[derive(Debug, Deserialize, Default)]
pub struct WireStrategyArgs {
    /// Pick at random among deployments within this fraction of the lowest latency.
    pub lowest_latency_buffer: Option<f64>,
    /// Seconds a latency sample stays relevant.
    pub ttl: Option<f64>,
}

/// `model_group_alias` values: a group name, or `{model, hidden}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WireAlias {
    Group(String),
    Detailed {
        model: String,
        #[serde(default)]
        hidden: bool,
    },
}

#[derive(Debug, Deserialize, Default)]
pub struct WireLitellmSettings {
    pub drop_params: Option<bool>,
    pub num_retries: Option<u32>,
    pub request_timeout: Option<f64>,
    pub timeout: Option<f64>,
    pub allowed_fails: Option<u32>,
    pub cooldown_time: Option<f64>,
    pub disable_cooldowns: Option<bool>,
    pub retry_policy: Option<WireRetryPolicy>,
    pub allowed_fails_policy: Option<WireAllowedFailsPolicy>,
    pub default_fallbacks: Option<Vec<String>>,
    pub fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub context_window_fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub cache: Option<bool>,
    pub cache_params: Option<WireCacheParams>,
    /// `/key/generate` defaults and upper bounds (checked as its body is).
    pub default_key_generate_params: Option<serde_json::Value>,
    pub upperbound_key_generate_params: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Default)]
pub struct WireCacheParams {
    /// LiteLLM's cache backend; only a local (per Envoy) cache exists here.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Seconds an answer stays cached.
    pub ttl: Option<f64>,
    /// Bound on all cached answers together, bytes (ours).
    pub max_size_bytes: Option<u64>,
    /// Bound on one cached answer, bytes (ours).
    pub max_entry_bytes: Option<u64>,
    /// Cache slots (ours).
    pub slots: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
pub struct WireGeneralSettings {
    pub master_key: Option<String>,
    pub max_request_body_bytes: Option<u64>,
    /// Signs minted keys; derived from `master_key` when absent.
    pub key_signing_secret: Option<String>,
    #[serde(default)]
    pub virtual_keys: Vec<WireVirtualKey>,
    /// Key ids (`token_id` from `/key/generate`) no longer accepted.
    #[serde(default)]
    pub revoked_keys: Vec<String>,
    /// LiteLLM's custom header for the key (read besides the standard ones).
    pub litellm_key_header_name: Option<String>,
    /// Send LiteLLM's `x-litellm-*` headers on routed answers (default true).
    pub litellm_response_headers: Option<bool>,
    /// Honour LiteLLM's request test switches (`mock_testing_fallbacks`, `mock_timeout`);
    /// off by default: a client could force failovers and timeouts.
    pub litellm_test_switches: Option<bool>,
    /// What the Envoy route already sets (written by `render`): the filter sends a timeout or
    /// retry header only where a request differs.
    pub envoy_route_defaults: Option<WireRouteDefaults>,
    /// Envoy's global rate-limit service, for limits that hold across many Envoys.
    pub rate_limit_service: Option<WireRateLimitService>,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireRateLimitService {
    /// `host:port` of the service (gRPC, plaintext HTTP/2).
    pub address: String,
    pub domain: Option<String>,
    pub timeout_ms: Option<u64>,
    /// `local` (default), `allow` or `deny`.
    pub failure_mode: Option<String>,
    /// How many Envoys share the limits (`local` mode's divisor); default 1.
    pub instances: Option<u64>,
    /// The Envoy cluster name, when not `host:port`.
    pub cluster: Option<String>,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireRouteDefaults {
    pub timeout_seconds: f64,
    pub retry_on: String,
    pub num_retries: u32,
}

#[derive(Debug, Deserialize, Default)]
pub struct WireVirtualKey {
    pub key: Option<String>,
    /// Hex SHA-256 of the key, so the config need not hold the secret.
    pub key_sha256: Option<String>,
    pub key_alias: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    /// RFC 3339.
    pub expires: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_budget: Option<f64>,
    /// Requests in flight at once for this key, across workers.
    pub max_parallel_requests: Option<u64>,
    /// The spend starts again every period (`30d`, `1mo`, …).
    pub budget_duration: Option<String>,
}
