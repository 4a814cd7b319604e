//! `router_settings` (and what LiteLLM also reads from `litellm_settings`): the strategy,
//! cooldowns, retries and fallback tables.

use super::*;

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
    /// LiteLLM's `retry_policy`: retries by the kind of failure, else `num_retries`.
    pub retry_policy: RetryPolicy,
    /// LiteLLM's `model_group_retry_policy`: a group's own policy, in place of `retry_policy`.
    pub group_retry_policy: HashMap<usize, RetryPolicy>,
    /// Group → groups to try when it fails, in order (`default_fallbacks` filled in for
    /// groups without an entry of their own).
    pub fallbacks: HashMap<usize, Vec<usize>>,
    /// Group → groups to use when a prompt is longer than the group's context window.
    pub context_window_fallbacks: HashMap<usize, Vec<usize>>,
    /// `enable_tag_filtering`: requests' tags pick among a group's deployments.
    pub tag_filtering: bool,
    /// `tag_filtering_match_any` (LiteLLM's default true): one tag in common suffices;
    /// false: the deployment must have every tag of the request.
    pub tag_match_any: bool,
}

/// Retries after a failure of one kind (`None`: `num_retries`). Only failures that move a
/// request to another attempt have a use here: client errors (400, 401) are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryPolicy {
    pub timeout: Option<u32>,
    pub rate_limit: Option<u32>,
    pub internal_server: Option<u32>,
}

impl RouterSettings {
    /// The retry policy for failures of `group`'s deployments: its own, else the router's.
    pub fn retry_policy_of(&self, group: usize) -> &RetryPolicy {
        self.group_retry_policy
            .get(&group)
            .unwrap_or(&self.retry_policy)
    }

    /// The most retries any failure anywhere may allow (whether a request's body is worth
    /// keeping for a retry).
    pub fn most_retries(&self) -> u32 {
        self.group_retry_policy
            .values()
            .chain(std::iter::once(&self.retry_policy))
            .filter_map(RetryPolicy::most)
            .max()
            .unwrap_or(0)
            .max(self.num_retries)
    }
}

impl RetryPolicy {
    /// The kinds that move a request to another attempt; client errors are never retried.
    fn of(p: &WireRetryPolicy) -> RetryPolicy {
        RetryPolicy {
            timeout: p.timeout,
            rate_limit: p.rate_limit,
            internal_server: p.internal_server,
        }
    }

    /// The retries allowed after an upstream answered `status` (0: no answer at all).
    pub fn for_status(&self, status: u16) -> Option<u32> {
        match crate::state::FailureKind::of(status) {
            crate::state::FailureKind::RateLimit => self.rate_limit,
            crate::state::FailureKind::Timeout => self.timeout,
            crate::state::FailureKind::InternalServer => self.internal_server,
        }
    }

    pub fn most(&self) -> Option<u32> {
        [self.timeout, self.rate_limit, self.internal_server]
            .into_iter()
            .flatten()
            .max()
    }
}

/// A setting LiteLLM reads from `router_settings` or `litellm_settings`: the first one
/// written, with the path where it was written (for messages).
fn either<'a, T>(
    key: &'static str,
    router: &'a Option<T>,
    litellm: &'a Option<T>,
) -> Option<(String, &'a T)> {
    match (router, litellm) {
        (Some(v), _) => Some((format!("router_settings.{key}"), v)),
        (None, Some(v)) => Some((format!("litellm_settings.{key}"), v)),
        (None, None) => None,
    }
}

/// The upstream timeout for deployments that set none: `router_settings.timeout`, its
/// `request_timeout`, then `litellm_settings.request_timeout` or `timeout`, else 600 s.
pub(super) fn default_timeout(
    r: &WireRouterSettings,
    l: &WireLitellmSettings,
    d: &mut Diagnostics,
) -> f64 {
    let written = [
        ("router_settings.timeout", r.timeout),
        ("router_settings.request_timeout", r.request_timeout),
        ("litellm_settings.request_timeout", l.request_timeout),
        ("litellm_settings.timeout", l.timeout),
    ]
    .into_iter()
    .find_map(|(path, v)| v.map(|v| (path, v)));
    match written {
        Some((path, t)) if !(t.is_finite() && t > 0.0) => {
            d.error(path, "must be a positive number of seconds");
            DEFAULT_TIMEOUT_SECS
        }
        Some((_, t)) => t,
        None => DEFAULT_TIMEOUT_SECS,
    }
}

pub(super) fn router_settings_of(
    r: &WireRouterSettings,
    l: &WireLitellmSettings,
    index: &HashMap<String, usize>,
    d: &mut Diagnostics,
) -> RouterSettings {
    let args = r.routing_strategy_args.as_ref();
    let strategy = match r.routing_strategy.as_deref().unwrap_or("simple-shuffle") {
        "simple-shuffle" => Strategy::SimpleShuffle,
        "least-busy" => Strategy::LeastBusy,
        "usage-based-routing" | "usage-based-routing-v2" => Strategy::UsageBased,
        "latency-based-routing" => Strategy::LatencyBased {
            buffer: args
                .and_then(|a| a.lowest_latency_buffer)
                .unwrap_or(0.0)
                .max(0.0),
            ttl_ms: (args.and_then(|a| a.ttl).unwrap_or(3600.0).max(1.0) * 1000.0) as u64,
        },
        other => {
            d.error(
                "router_settings.routing_strategy",
                format!("unknown strategy \"{other}\"; use simple-shuffle, least-busy, usage-based-routing(-v2) or latency-based-routing"),
            );
            Strategy::SimpleShuffle
        }
    };
    let cooldown = match either("cooldown_time", &r.cooldown_time, &l.cooldown_time) {
        Some((path, &c)) if !(c.is_finite() && c >= 0.0) => {
            d.error(path, "must be a number of seconds ≥ 0");
            DEFAULT_COOLDOWN_SECS
        }
        Some((_, &c)) => c,
        None => DEFAULT_COOLDOWN_SECS,
    };
    let allowed_fails = either("allowed_fails", &r.allowed_fails, &l.allowed_fails)
        .map_or(DEFAULT_ALLOWED_FAILS, |(_, &v)| v);
    let disable_cooldowns = either(
        "disable_cooldowns",
        &r.disable_cooldowns,
        &l.disable_cooldowns,
    )
    .is_some_and(|(_, &v)| v);
    let (fallbacks_path, fallbacks) = either("fallbacks", &r.fallbacks, &l.fallbacks)
        .map_or((String::new(), None), |(p, v)| (p, Some(v)));
    let mut fallbacks = fallback_table(&fallbacks_path, fallbacks, index, d);
    if let Some((path, names)) = either(
        "default_fallbacks",
        &r.default_fallbacks,
        &l.default_fallbacks,
    ) {
        let mut defaults = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match index.get(name) {
                Some(&g) if !defaults.contains(&g) => defaults.push(g),
                Some(_) => {}
                None => d.error(
                    format!("{path}[{i}]"),
                    format!("\"{name}\" is not a model group or alias"),
                ),
            }
        }
        let groups: std::collections::BTreeSet<usize> = index.values().copied().collect();
        for g in groups {
            fallbacks
                .entry(g)
                .or_insert_with(|| defaults.iter().copied().filter(|&f| f != g).collect());
        }
    }
    let (cw_path, cw) = either(
        "context_window_fallbacks",
        &r.context_window_fallbacks,
        &l.context_window_fallbacks,
    )
    .map_or((String::new(), None), |(p, v)| (p, Some(v)));
    let context_window_fallbacks = fallback_table(&cw_path, cw, index, d);
    let retry_policy = either("retry_policy", &r.retry_policy, &l.retry_policy)
        .map(|(_, p)| RetryPolicy::of(p))
        .unwrap_or_default();
    let mut group_retry_policy = HashMap::new();
    for (name, p) in r.model_group_retry_policy.iter().flatten() {
        match index.get(name) {
            Some(&g) => {
                group_retry_policy.insert(g, RetryPolicy::of(p));
            }
            None => d.error(
                format!("router_settings.model_group_retry_policy.{name}"),
                format!("\"{name}\" is not a model group or alias"),
            ),
        }
    }
    let by_kind = match either(
        "allowed_fails_policy",
        &r.allowed_fails_policy,
        &l.allowed_fails_policy,
    ) {
        Some((path, p)) => {
            for (field, v) in [
                ("BadRequestErrorAllowedFails", p.bad_request),
                ("AuthenticationErrorAllowedFails", p.authentication),
                ("ContentPolicyViolationErrorAllowedFails", p.content_policy),
            ] {
                if v.is_some() {
                    d.warn(
                        format!("{path}.{field}"),
                        "ignored: an upstream's 4xx answer (other than 429) goes to the client and never counts as the deployment's failure here",
                    );
                }
            }
            crate::state::AllowedFailsByKind {
                rate_limit: p.rate_limit.map(u64::from),
                timeout: p.timeout.map(u64::from),
                internal_server: p.internal_server.map(u64::from),
            }
        }
        None => crate::state::AllowedFailsByKind::default(),
    };
    RouterSettings {
        strategy,
        // `disable_cooldowns`: selection then need not read a deployment's shared record
        // unless it tracks rpm/tpm or load (see `Policy::cools_down`).
        policy: if disable_cooldowns {
            crate::state::Policy::NEVER
        } else {
            crate::state::Policy {
                allowed_fails: u64::from(allowed_fails),
                cooldown_ms: (cooldown * 1000.0) as u64,
                allowed_fails_by_kind: by_kind,
            }
        },
        num_retries: either("num_retries", &r.num_retries, &l.num_retries)
            .map_or(DEFAULT_NUM_RETRIES, |(_, &v)| v),
        retry_policy,
        group_retry_policy,
        fallbacks,
        context_window_fallbacks,
        tag_filtering: r.enable_tag_filtering.unwrap_or(false),
        tag_match_any: r.tag_filtering_match_any.unwrap_or(true),
    }
}

/// `[{"a": ["b", "c"]}, …]` → group index table, every name checked, cycles refused (a
/// fallback chain must end).
fn fallback_table(
    section: &str,
    entries: Option<&Vec<std::collections::BTreeMap<String, Vec<String>>>>,
    index: &HashMap<String, usize>,
    d: &mut Diagnostics,
) -> HashMap<usize, Vec<usize>> {
    let mut table: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, entry) in entries.into_iter().flatten().enumerate() {
        for (from, to) in entry {
            let path = format!("{section}[{i}].{from}");
            let Some(&source) = index.get(from) else {
                d.error(&path, format!("\"{from}\" is not a model group or alias"));
                continue;
            };
            let mut targets = Vec::new();
            for name in to {
                match index.get(name) {
                    Some(&g) if g != source && !targets.contains(&g) => targets.push(g),
                    Some(_) => {}
                    None => d.error(
                        &path,
                        format!("fallback \"{name}\" is not a model group or alias"),
                    ),
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
            d.error(section, "fallbacks form a cycle; a fallback chain must end");
            return table;
        }
    }
    table
}
