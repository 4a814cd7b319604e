//! The configuration as users write it: LiteLLM's proxy `config.yaml`, as JSON.
//!
//! These types only describe the shape; `super::validate` turns them into the runtime config.
//! Keys we do not know are reported (with their path) by `serde_ignored`, never refused.

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
}

#[derive(Debug, Deserialize)]
pub struct WireDeployment {
    pub model_name: String,
    pub litellm_params: WireLitellmParams,
    #[serde(default)]
    pub model_info: WireModelInfo,
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
    pub fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub context_window_fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub cache: Option<bool>,
    pub cache_params: Option<WireCacheParams>,
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
}
