//! Configuration in two phases: `wire` (serde shapes as users write them), then `validate`
//! into `Config`, where everything a request needs is computed once: alias table, group
//! weights, upstream paths, auth header values, templates, the `/v1/models` body.

pub mod wire;

use crate::auth::KeyDigest;
use crate::template::{CustomTemplate, PromptTemplate};
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

fn cache_settings(
    l: &WireLitellmSettings,
) -> Result<Option<crate::cache::CacheSettings>, ConfigError> {
    if l.cache != Some(true) {
        return Ok(None);
    }
    let p = l.cache_params.as_ref();
    let ttl = p
        .and_then(|p| p.ttl)
        .unwrap_or(crate::cache::DEFAULT_TTL_SECS);
    if !(ttl.is_finite() && ttl > 0.0) {
        return Err(err(
            "litellm_settings.cache_params.ttl",
            "must be a positive number of seconds",
        ));
    }
    let max_bytes = p
        .and_then(|p| p.max_size_bytes)
        .unwrap_or(crate::cache::DEFAULT_MAX_BYTES);
    let max_entry_bytes = p
        .and_then(|p| p.max_entry_bytes)
        .unwrap_or(crate::cache::DEFAULT_MAX_ENTRY_BYTES)
        .min(max_bytes);
    let slots = p
        .and_then(|p| p.slots)
        .unwrap_or(crate::cache::DEFAULT_SLOTS);
    if slots == 0 || slots > 1_000_000 {
        return Err(err(
            "litellm_settings.cache_params.slots",
            "must be between 1 and 1000000",
        ));
    }
    Ok(Some(crate::cache::CacheSettings {
        ttl_ms: (ttl * 1000.0) as u64,
        max_bytes,
        max_entry_bytes,
        slots,
    }))
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

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    SimpleShuffle,
    LeastBusy,
    UsageBased,
    LatencyBased {
        /// Deployments within this fraction of the lowest latency are picked at random.
        buffer: f64,
        /// Latency samples older than this count as unmeasured.
        ttl_ms: u64,
    },
}

/// LiteLLM's defaults (`litellm/constants.py`): 3 allowed fails a minute, 5 s cooldown, and
/// the OpenAI client's 2 retries.
pub const DEFAULT_ALLOWED_FAILS: u32 = 3;
pub const DEFAULT_COOLDOWN_SECS: f64 = 5.0;
pub const DEFAULT_NUM_RETRIES: u32 = 2;
/// LiteLLM's `ROUTER_MAX_FALLBACKS`.
pub const MAX_FALLBACKS: usize = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    pub strategy: Strategy,
    pub policy: crate::state::Policy,
    pub num_retries: u32,
    /// Group → groups to try when it fails, in order.
    pub fallbacks: HashMap<usize, Vec<usize>>,
    /// Group → groups to use when a prompt is longer than the group's context window.
    pub context_window_fallbacks: HashMap<usize, Vec<usize>>,
}

fn router_settings(
    r: &WireRouterSettings,
    l: &WireLitellmSettings,
    index: &HashMap<String, usize>,
) -> Result<RouterSettings, ConfigError> {
    let args = r.routing_strategy_args.as_ref();
    let strategy = match r.routing_strategy.as_deref().unwrap_or("simple-shuffle") {
        "simple-shuffle" => Strategy::SimpleShuffle,
        "least-busy" => Strategy::LeastBusy,
        "usage-based-routing" | "usage-based-routing-v2" => Strategy::UsageBased,
        "latency-based-routing" => Strategy::LatencyBased {
            buffer: args.and_then(|a| a.lowest_latency_buffer).unwrap_or(0.0).max(0.0),
            ttl_ms: (args.and_then(|a| a.ttl).unwrap_or(3600.0).max(1.0) * 1000.0) as u64,
        },
        other => {
            return Err(err(
                "router_settings.routing_strategy",
                format!("unknown strategy \"{other}\"; use simple-shuffle, least-busy, usage-based-routing(-v2) or latency-based-routing"),
            ))
        }
    };
    let cooldown = r.cooldown_time.unwrap_or(DEFAULT_COOLDOWN_SECS);
    if !(cooldown.is_finite() && cooldown >= 0.0) {
        return Err(err(
            "router_settings.cooldown_time",
            "must be a number of seconds ≥ 0",
        ));
    }
    let fallbacks = fallback_table(
        "fallbacks",
        r.fallbacks.as_ref().or(l.fallbacks.as_ref()),
        index,
    )?;
    let context_window_fallbacks = fallback_table(
        "context_window_fallbacks",
        r.context_window_fallbacks
            .as_ref()
            .or(l.context_window_fallbacks.as_ref()),
        index,
    )?;
    Ok(RouterSettings {
        strategy,
        // `disable_cooldowns`: selection then need not read a deployment's shared record
        // unless it tracks rpm/tpm or load (see `Policy::cools_down`).
        policy: if r.disable_cooldowns.unwrap_or(false) {
            crate::state::Policy::NEVER
        } else {
            crate::state::Policy {
                allowed_fails: u64::from(r.allowed_fails.unwrap_or(DEFAULT_ALLOWED_FAILS)),
                cooldown_ms: (cooldown * 1000.0) as u64,
            }
        },
        num_retries: r
            .num_retries
            .or(l.num_retries)
            .unwrap_or(DEFAULT_NUM_RETRIES),
        fallbacks,
        context_window_fallbacks,
    })
}

/// `[{"a": ["b", "c"]}, …]` → group index table, every name checked, cycles refused (a
/// fallback chain must end).
fn fallback_table(
    key: &str,
    entries: Option<&Vec<std::collections::BTreeMap<String, Vec<String>>>>,
    index: &HashMap<String, usize>,
) -> Result<HashMap<usize, Vec<usize>>, ConfigError> {
    let mut table: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, entry) in entries.into_iter().flatten().enumerate() {
        for (from, to) in entry {
            let path = format!("router_settings.{key}[{i}].{from}");
            let &source = index
                .get(from)
                .ok_or_else(|| err(&path, format!("\"{from}\" is not a model group or alias")))?;
            let mut targets = Vec::new();
            for name in to {
                let &g = index.get(name).ok_or_else(|| {
                    err(
                        &path,
                        format!("fallback \"{name}\" is not a model group or alias"),
                    )
                })?;
                if g != source && !targets.contains(&g) {
                    targets.push(g);
                }
            }
            table.entry(source).or_default().extend(targets);
        }
    }
    // Depth-first search for a cycle through the fallback graph.
    fn visit(
        g: usize,
        table: &HashMap<usize, Vec<usize>>,
        state: &mut HashMap<usize, bool>,
    ) -> bool {
        match state.get(&g) {
            Some(true) => return true,
            Some(false) => return false,
            None => {}
        }
        state.insert(g, true);
        let cyclic = table
            .get(&g)
            .into_iter()
            .flatten()
            .any(|&n| visit(n, table, state));
        state.insert(g, false);
        cyclic
    }
    let mut state = HashMap::new();
    let mut sources: Vec<usize> = table.keys().copied().collect();
    sources.sort_unstable();
    for g in sources {
        if visit(g, &table, &mut state) {
            return Err(err(
                format!("router_settings.{key}"),
                "fallbacks form a cycle; a fallback chain must end",
            ));
        }
    }
    Ok(table)
}

fn static_key(
    i: usize,
    v: &WireVirtualKey,
    index: &HashMap<String, usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<([u8; 32], crate::keys::KeyGrant), ConfigError> {
    let path = format!("general_settings.virtual_keys[{i}]");
    let digest: [u8; 32] = match (&v.key, &v.key_sha256) {
        (Some(k), None) => {
            let k = resolve_secret(&format!("{path}.key"), k, env)?;
            if k.is_empty() {
                return Err(err(format!("{path}.key"), "must not be empty"));
            }
            *KeyDigest::of(&k).bytes()
        }
        (None, Some(hex)) => parse_sha256_hex(hex).ok_or_else(|| {
            err(
                format!("{path}.key_sha256"),
                "must be 64 hexadecimal digits",
            )
        })?,
        _ => return Err(err(&path, "give exactly one of key or key_sha256")),
    };
    for (j, m) in v.models.iter().enumerate() {
        if !index.contains_key(m) {
            return Err(err(
                format!("{path}.models[{j}]"),
                format!("\"{m}\" is not a model group or alias"),
            ));
        }
    }
    let expires = match v.expires.as_deref() {
        Some(e) => Some(crate::keys::parse_rfc3339(e).ok_or_else(|| {
            err(
                format!("{path}.expires"),
                "must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z",
            )
        })?),
        None => None,
    };
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok((
        digest,
        crate::keys::KeyGrant {
            id: format!("static-{short}"),
            alias: v.key_alias.clone(),
            models: v.models.clone(),
            expires,
            rpm: v.rpm_limit,
            tpm: v.tpm_limit,
            budget: v.max_budget,
            minted: None,
        },
    ))
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// LiteLLM's simple-shuffle rule: weights from `weight`, else `rpm`, else `tpm`, else equal.
/// Returned as running sums so a request picks with one binary search.
fn selection_weights(members: &[usize], deployments: &[Deployment]) -> Vec<f64> {
    let ds: Vec<&Deployment> = members.iter().filter_map(|&i| deployments.get(i)).collect();
    // LiteLLM looks only at the first deployment; any one setting a weight is less
    // order-dependent, and a member without one counts as weight 1.
    let raw: Vec<f64> = if ds.iter().any(|d| d.weight.is_some()) {
        ds.iter().map(|d| d.weight.unwrap_or(1.0)).collect()
    } else if ds.iter().all(|d| d.rpm.is_some()) {
        ds.iter().map(|d| d.rpm.unwrap_or(0) as f64).collect()
    } else if ds.iter().all(|d| d.tpm.is_some()) {
        ds.iter().map(|d| d.tpm.unwrap_or(0) as f64).collect()
    } else {
        vec![1.0; ds.len()]
    };
    let raw = if raw.iter().sum::<f64>() > 0.0 {
        raw
    } else {
        vec![1.0; ds.len()]
    };
    let mut total = 0.0;
    raw.iter()
        .map(|w| {
            total += w.max(0.0);
            total
        })
        .collect()
}

fn resolve_secret(
    path: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    match value.strip_prefix("os.environ/") {
        Some(name) => env(name).ok_or_else(|| {
            err(
                path,
                format!("environment variable {name} is not set in the VM (vm_config.environment_variables)"),
            )
        }),
        None => Ok(value.to_string()),
    }
}

fn validate_deployment(
    path: &str,
    index: usize,
    group: usize,
    d: WireDeployment,
    env: &dyn Fn(&str) -> Option<String>,
    default_timeout: f64,
) -> Result<Deployment, ConfigError> {
    let p = d.litellm_params;
    let model_path = format!("{path}.litellm_params.model");
    let (prefix, upstream_model) = p.model.split_once('/').ok_or_else(|| {
        err(
            &model_path,
            format!(
                "\"{}\" has no provider prefix; use triton/, hosted_vllm/, vllm/ or openai/",
                p.model
            ),
        )
    })?;
    if upstream_model.is_empty() {
        return Err(err(
            &model_path,
            "model name after the provider prefix is empty",
        ));
    }
    let base_path = format!("{path}.litellm_params.api_base");
    let api_base = p.api_base.as_deref().ok_or_else(|| {
        err(
            &base_path,
            "is required (the gateway calls no default endpoint)",
        )
    })?;
    let url = Url::parse(api_base).map_err(|m| err(&base_path, m))?;

    let template = custom_template(&p).map_or_else(
        || match p.prompt_template.as_deref() {
            Some(name) => PromptTemplate::named(name).ok_or_else(|| {
                err(
                    format!("{path}.litellm_params.prompt_template"),
                    format!("unknown template \"{name}\"; use llama3, llama2, mistral, chatml or transcript"),
                )
            }),
            None => Ok(PromptTemplate::infer_from_model_name(upstream_model)),
        },
        Ok,
    )?;

    let provider = match prefix {
        "hosted_vllm" | "vllm" | "openai" => {
            let base = url.path.trim_end_matches('/');
            let base = base.strip_suffix("/v1").unwrap_or(base);
            Provider::OpenAiCompatible {
                chat_path: format!("{base}/v1/chat/completions"),
                completions_path: format!("{base}/v1/completions"),
                embeddings_path: format!("{base}/v1/embeddings"),
                native_base_path: base.to_string(),
                is_vllm: prefix != "openai",
            }
        }
        "triton" => {
            let trimmed = url.path.trim_end_matches('/');
            let (mode, path_, stream_path) = if let Some(stem) = trimmed.strip_suffix("/generate_stream") {
                (
                    TritonMode::Generate,
                    format!("{stem}/generate"),
                    trimmed.to_string(),
                )
            } else if trimmed.ends_with("/generate") {
                (TritonMode::Generate, trimmed.to_string(), format!("{trimmed}_stream"))
            } else if trimmed.ends_with("/infer") {
                (TritonMode::Infer, trimmed.to_string(), trimmed.to_string())
            } else if trimmed.ends_with("/embeddings") {
                (TritonMode::Embeddings, trimmed.to_string(), trimmed.to_string())
            } else {
                return Err(err(
                    &base_path,
                    format!("a triton api_base must end in /generate, /infer or /embeddings (got \"{}\")", url.path),
                ));
            };
            Provider::Triton {
                mode,
                path: with_query(path_, &url.query),
                stream_path: with_query(stream_path, &url.query),
                template,
            }
        }
        other => {
            return Err(err(
                &model_path,
                format!("provider \"{other}/\" is not supported; use triton/, hosted_vllm/, vllm/ or openai/"),
            ))
        }
    };

    let authorization = match p.api_key.as_deref() {
        Some(k) => {
            let k = resolve_secret(&format!("{path}.litellm_params.api_key"), k, env)?;
            if k.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(err(
                    format!("{path}.litellm_params.api_key"),
                    "contains a control character",
                ));
            }
            (!k.is_empty()).then(|| format!("Bearer {k}"))
        }
        None => None,
    };

    let cluster = match p.cluster {
        Some(c) if is_token(&c) => c,
        Some(_) => {
            return Err(err(
                format!("{path}.litellm_params.cluster"),
                "must be a non-empty Envoy cluster name of visible ASCII characters",
            ))
        }
        None => url.host_port(),
    };
    let timeout = p.timeout.unwrap_or(default_timeout);
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(err(
            format!("{path}.litellm_params.timeout"),
            "must be a positive number of seconds",
        ));
    }
    let weight = p.weight;
    if weight.is_some_and(|w| !(w.is_finite() && w >= 0.0)) {
        return Err(err(
            format!("{path}.litellm_params.weight"),
            "must be a number ≥ 0",
        ));
    }
    let id = match d.model_info.id {
        Some(id) if !id.is_empty() => id,
        Some(_) => return Err(err(format!("{path}.model_info.id"), "must not be empty")),
        None => format!("{}/{}", d.model_name, index),
    };
    let upstream_model_json =
        serde_json::to_string(upstream_model).map_err(|e| err(&model_path, e.to_string()))?;
    Ok(Deployment {
        state_key: format!("llm_gateway.deployment.{id}"),
        cooldown_key: format!("llm_gateway.cooldown.{id}"),
        header_id: header_safe(&id),
        metric_label: crate::metrics::label(&id),
        id,
        group,
        provider,
        upstream_model: upstream_model.to_string(),
        model: p.model.clone(),
        api_base: api_base.to_string(),
        upstream_model_json,
        cluster,
        authority: url.authority(),
        authorization,
        weight,
        rpm: p.rpm,
        tpm: p.tpm,
        order: p.order.unwrap_or(0),
        timeout_ms: (timeout * 1000.0).round() as u64,
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        max_input_tokens: d.model_info.max_input_tokens,
        input_cost_per_token: d.model_info.input_cost_per_token,
        output_cost_per_token: d.model_info.output_cost_per_token,
    })
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

fn custom_template(p: &WireLitellmParams) -> Option<PromptTemplate> {
    let any = p.roles.is_some()
        || p.initial_prompt_value.is_some()
        || p.final_prompt_value.is_some()
        || p.bos_token.is_some()
        || p.eos_token.is_some();
    any.then(|| {
        PromptTemplate::Custom(CustomTemplate {
            roles: p
                .roles
                .iter()
                .flatten()
                .map(|(role, t)| {
                    (
                        role.clone(),
                        (t.pre_message.clone(), t.post_message.clone()),
                    )
                })
                .collect(),
            initial_prompt_value: p.initial_prompt_value.clone().unwrap_or_default(),
            final_prompt_value: p.final_prompt_value.clone().unwrap_or_default(),
            bos_token: p.bos_token.clone().unwrap_or_default(),
            eos_token: p.eos_token.clone().unwrap_or_default(),
        })
    })
}

/// A name as a header value: bytes outside printable ASCII, and `%`, become `%XX`, so a
/// model name with CR/LF or non-ASCII can never split or corrupt a header.
pub fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Visible ASCII with no spaces: safe as a header value and an Envoy cluster name.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub explicit_port: bool,
    pub path: String,
    pub query: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("\"{s}\" must start with http:// or https://"));
        };
        let (authority, path_query) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
            None => (rest, ""),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported; use api_key".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("\"{s}\": unclosed IPv6 bracket"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("\"{s}\" has no host"));
        }
        let host_ok = host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
        if !host_ok {
            return Err(format!(
                "\"{s}\": host contains characters not allowed in a hostname"
            ));
        }
        let (port, explicit_port) = match port {
            Some(p) => (
                p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| {
                    format!("\"{s}\": port \"{p}\" is not a number from 1 to 65535")
                })?,
                true,
            ),
            None => (if https { 443 } else { 80 }, false),
        };
        if path
            .bytes()
            .chain(query.bytes())
            .any(|b| !b.is_ascii_graphic())
        {
            return Err(format!(
                "\"{s}\": path contains spaces or control characters"
            ));
        }
        Ok(Url {
            https,
            host,
            port,
            explicit_port,
            path: path.to_string(),
            query: query.to_string(),
        })
    }

    /// The default cluster name: `host:port`, port filled from the scheme.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `:authority` as a client of this URL would send it.
    pub fn authority(&self) -> String {
        if self.explicit_port {
            self.host_port()
        } else {
            self.host.clone()
        }
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
