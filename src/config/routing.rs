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
    /// Group → groups to try when it fails, in order.
    pub fallbacks: HashMap<usize, Vec<usize>>,
    /// Group → groups to use when a prompt is longer than the group's context window.
    pub context_window_fallbacks: HashMap<usize, Vec<usize>>,
}

pub(super) fn router_settings(
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
