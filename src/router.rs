//! Deployment selection with shared state: `order` tiers, the routing strategy within a tier,
//! and an atomic reservation (compare-and-swap on the deployment's shared record) before a
//! request is sent, so no deployment takes more than its `rpm` in a minute, whatever the
//! number of workers and concurrent requests.
//!
//! Cheap by default: with simple-shuffle and no rpm/tpm on a deployment, a request costs one
//! shared read (its cooldown marker, empty unless it is cooling down) and no write unless it
//! fails.

use crate::config::{Config, Deployment, ModelGroup, Strategy};
use crate::error::{ErrorKind, GatewayError};
use crate::host::Host;
use crate::scope::Target;
use crate::state::{minute_of, DeploymentState, Outcome, Unusable};

/// A request counted against a deployment, to be settled when it finishes. Only the router
/// makes one, and only for a [`Target`]: holding a reservation means the caller may use the
/// deployment's group.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub deployment: usize,
    /// The group the caller was allowed (the deployment's own). Private, so no other module
    /// can write a reservation literal.
    target: Target,
    /// The shared record was written at send time (limits or strategy need it).
    pub tracked: bool,
    pub in_flight: bool,
    pub reserved_tokens: u64,
    /// Tokens the fleet's rate-limit service was charged when it admitted the request (its
    /// prompt estimate); the rest of the real count is reported after the answer.
    pub fleet_tokens: u64,
    pub minute: u64,
    pub started_ms: u64,
}

impl Reservation {
    pub fn target(&self) -> Target {
        self.target
    }
}

fn tracking(strategy: Strategy, d: &Deployment) -> (bool, bool) {
    let in_flight = strategy == Strategy::LeastBusy;
    let tracked =
        in_flight || strategy == Strategy::UsageBased || d.rpm.is_some() || d.tpm.is_some();
    (tracked, in_flight)
}

fn read_state(host: &dyn Host, d: &Deployment) -> DeploymentState {
    host.shared_get(&d.state_key)
        .map(|(bytes, _)| DeploymentState::decode(&bytes))
        .unwrap_or_default()
}

/// Until when a deployment is cooling down (0: it is not), from its marker: a separate
/// shared value that holds `cooldown_until_ms` while a cooldown lasts and is empty
/// otherwise. Reading an empty value is a host call that copies nothing back — no
/// allocation inside the module, which makes it several times cheaper than reading the
/// 72-byte record. The record keeps its own `cooldown_until_ms` for the paths that read it
/// anyway (limits, strategies, readiness).
fn cooling_until(host: &mut dyn Host, d: &Deployment, now: u64) -> u64 {
    let Some((bytes, cas)) = host.shared_get(&d.cooldown_key) else {
        return 0;
    };
    let until = <[u8; 8]>::try_from(bytes.as_slice()).map_or(0, u64::from_le_bytes);
    if until != 0 && until <= now {
        // Over: empty the marker so later reads are cheap again. The compare-and-swap
        // leaves a cooldown another worker has just started in place.
        host.shared_set(&d.cooldown_key, &[], Some(cas));
    }
    until
}

/// After a cooldown started in `state`, publish it in the deployment's marker.
fn mark_cooldown(
    host: &mut dyn Host,
    d: &Deployment,
    state: Result<DeploymentState, Unusable>,
    now: u64,
) {
    if let Ok(s) = state {
        if s.cooldown_until_ms > now {
            host.shared_set(&d.cooldown_key, &s.cooldown_until_ms.to_le_bytes(), None);
        }
    }
}

/// Whether `after` is a cooldown that `before` was not (the transition a metric counts).
fn began_cooling(before: &DeploymentState, after: &DeploymentState, now: u64) -> bool {
    after.cooldown_until_ms > now && before.cooldown_until_ms <= now
}

/// Apply `f` to a deployment's shared record atomically; `f`'s refusal is passed on.
fn update(
    host: &mut dyn Host,
    key: &str,
    f: &dyn Fn(DeploymentState) -> Result<DeploymentState, Unusable>,
) -> Result<DeploymentState, Unusable> {
    let mut apply = |bytes: Option<&[u8]>| {
        f(DeploymentState::decode(bytes.unwrap_or_default())).map(|s| s.encode().to_vec())
    };
    match crate::host::update_shared(host, key, &mut apply) {
        Ok(bytes) => Ok(DeploymentState::decode(&bytes)),
        Err(Some(refusal)) => Err(refusal),
        // Never send a request we could not count: better a retry than an rpm overshoot.
        Err(None) => Err(Unusable::RateLimited {
            retry_after_secs: 1,
        }),
    }
}

/// Create every deployment's record once, so later writes can always compare-and-swap.
pub fn precreate(config: &Config, host: &mut dyn Host) {
    crate::host::precreate_create_lock(host);
    for d in &config.deployments {
        if host.shared_get(&d.state_key).is_none() {
            host.shared_set(&d.state_key, &DeploymentState::default().encode(), None);
        }
    }
    crate::key_table::precreate(host);
    crate::fleet::tokens::precreate(config, host);
    if let Some(cache) = &config.cache {
        crate::cache::precreate(host, cache);
    }
}

/// Whether any deployment could take a request now (readiness).
pub fn any_usable(config: &Config, host: &dyn Host) -> bool {
    if !config.router.policy.cools_down() {
        return !config.deployments.is_empty();
    }
    let now = host.now_unix_ms();
    config
        .deployments
        .iter()
        .any(|d| read_state(host, d).cooldown_until_ms <= now)
}

/// Pick and reserve a deployment of `target`'s group, skipping `exclude` (already tried).
pub fn pick(
    config: &Config,
    host: &mut dyn Host,
    target: Target,
    estimated_tokens: u64,
    exclude: &[usize],
) -> Result<Reservation, GatewayError> {
    let Some(group) = config.groups.get(target.group()) else {
        return Err(no_deployment("", &[]));
    };
    let strategy = config.router.strategy;
    // Read once per pick, not per candidate (a shared read when a rate-limit service is set).
    let rpm_share = crate::fleet::rpm_share(config, host);
    let mut refusals: Vec<Unusable> = Vec::new();
    for &order in &group.orders {
        let mut candidates: Vec<usize> = group
            .deployments
            .iter()
            .copied()
            .filter(|i| !exclude.contains(i))
            .filter(|&i| config.deployment(i).is_some_and(|d| d.order == order))
            .collect();
        let whole_group = candidates.len() == group.deployments.len();
        while !candidates.is_empty() {
            let now = host.now_unix_ms();
            let choice = match strategy {
                Strategy::SimpleShuffle => {
                    let sample = host.random_unit();
                    if whole_group && candidates.len() == group.deployments.len() {
                        crate::select::weighted_pick(group, sample)
                    } else {
                        weighted_among(config, group, &candidates, sample)
                    }
                }
                _ => {
                    let states: Vec<(usize, DeploymentState)> = candidates
                        .iter()
                        .filter_map(|&i| config.deployment(i).map(|d| (i, read_state(host, d))))
                        .collect();
                    let usable: Vec<(usize, DeploymentState)> = states
                        .into_iter()
                        .filter(|(i, s)| match config.deployment(*i) {
                            Some(d) => match s.check(
                                now,
                                crate::fleet::rpm_at_share(d, rpm_share),
                                crate::fleet::tpm_at_share(d, rpm_share),
                                estimated_tokens,
                            ) {
                                Ok(()) => true,
                                Err(u) => {
                                    refusals.push(u);
                                    false
                                }
                            },
                            None => false,
                        })
                        .collect();
                    if usable.is_empty() {
                        break;
                    }
                    let sample = host.random_unit();
                    best_by_strategy(config, strategy, &usable, now, sample)
                }
            };
            let Some(index) = choice else { break };
            let Some(d) = config.deployment(index) else {
                break;
            };
            match reserve(config, host, target, d, index, estimated_tokens, now) {
                Ok(r) => return Ok(r),
                Err(u) => {
                    refusals.push(u);
                    candidates.retain(|&c| c != index);
                }
            }
        }
    }
    Err(no_deployment(&group.name, &refusals))
}

/// Reserve one given deployment of `target`'s group (a pass-through request that names no
/// model goes to a particular server): its limits and cooldown hold as for a pick.
pub fn reserve_deployment(
    config: &Config,
    host: &mut dyn Host,
    target: Target,
    index: usize,
    estimated_tokens: u64,
) -> Result<Reservation, GatewayError> {
    let group = config.groups.get(target.group());
    let (Some(group), Some(d)) = (group, config.deployment(index)) else {
        return Err(no_deployment("", &[]));
    };
    if d.group != target.group() {
        return Err(no_deployment(&group.name, &[]));
    }
    let now = host.now_unix_ms();
    reserve(config, host, target, d, index, estimated_tokens, now)
        .map_err(|u| no_deployment(&group.name, &[u]))
}

fn reserve(
    config: &Config,
    host: &mut dyn Host,
    target: Target,
    d: &Deployment,
    index: usize,
    tokens: u64,
    now: u64,
) -> Result<Reservation, Unusable> {
    let (tracked, in_flight) = tracking(config.router.strategy, d);
    if tracked {
        let share = match (d.rpm, d.tpm) {
            (None, None) => 1,
            _ => crate::fleet::rpm_share(config, host),
        };
        let (rpm, tpm) = (
            crate::fleet::rpm_at_share(d, share),
            crate::fleet::tpm_at_share(d, share),
        );
        update(host, &d.state_key, &|s| {
            s.reserve(now, rpm, tpm, tokens, in_flight)
        })?;
    } else if config.router.policy.cools_down() {
        let until = cooling_until(host, d, now);
        if until > now {
            return Err(Unusable::CoolingDown {
                retry_after_secs: (until - now).div_ceil(1000).max(1),
            });
        }
    }
    Ok(Reservation {
        deployment: index,
        target,
        tracked,
        in_flight,
        reserved_tokens: if tracked { tokens } else { 0 },
        fleet_tokens: 0,
        minute: minute_of(now),
        started_ms: now,
    })
}

/// 429 when deployments are at their limits (they free up next minute), 503 when every one
/// is cooling down; `retry-after` either way.
fn no_deployment(group: &str, refusals: &[Unusable]) -> GatewayError {
    let limited = refusals
        .iter()
        .any(|u| matches!(u, Unusable::RateLimited { .. }));
    let retry = refusals
        .iter()
        .map(|u| u.retry_after_secs())
        .min()
        .unwrap_or(1);
    let shown = crate::error::shown(group, 128);
    let mut e = if limited {
        GatewayError::new(
            ErrorKind::RateLimited,
            format!("every deployment of model group `{shown}` is at its rate limit"),
        )
        .with_code("rate_limit_exceeded")
    } else {
        GatewayError::new(
            ErrorKind::ServiceUnavailable,
            format!("no deployment of model group `{shown}` is available (all cooling down after failures)"),
        )
    };
    e.retry_after = Some(retry);
    e
}

fn weighted_among(
    config: &Config,
    group: &ModelGroup,
    candidates: &[usize],
    sample: f64,
) -> Option<usize> {
    let weight_of = |i: usize| -> f64 {
        group
            .deployments
            .iter()
            .position(|&m| m == i)
            .and_then(|p| group.weights.get(p))
            .copied()
            .unwrap_or(0.0)
    };
    let total: f64 = candidates.iter().map(|&i| weight_of(i)).sum();
    if total <= 0.0 {
        // Only zero-weight members left: they still serve rather than fail the request.
        let slot =
            ((sample * candidates.len() as f64) as usize).min(candidates.len().saturating_sub(1));
        return candidates.get(slot).copied();
    }
    let mut target = sample * total;
    let _ = config;
    for &i in candidates {
        let w = weight_of(i);
        if target < w {
            return Some(i);
        }
        target -= w;
    }
    candidates.last().copied()
}

/// Lowest score wins; ties (and, for latency, everything within the buffer) are broken at
/// random so equal deployments share the load.
fn best_by_strategy(
    config: &Config,
    strategy: Strategy,
    usable: &[(usize, DeploymentState)],
    now: u64,
    sample: f64,
) -> Option<usize> {
    let score = |i: usize, s: &DeploymentState| -> f64 {
        let s = s.rolled(now);
        match strategy {
            Strategy::LeastBusy => s.in_flight as f64,
            Strategy::UsageBased => {
                let d = config.deployment(i);
                let rpm = d.and_then(|d| d.rpm);
                let tpm = d.and_then(|d| d.tpm);
                let by_rpm = rpm.map(|r| s.requests as f64 / r.max(1) as f64);
                let by_tpm = tpm.map(|t| s.tokens as f64 / t.max(1) as f64);
                match (by_rpm, by_tpm) {
                    (None, None) => s.tokens as f64 / 1_000_000.0,
                    (a, b) => a.unwrap_or(0.0).max(b.unwrap_or(0.0)),
                }
            }
            Strategy::LatencyBased { ttl_ms, .. } => {
                if s.latency_us == 0 || now.saturating_sub(s.latency_at_ms) > ttl_ms {
                    0.0 // unmeasured (or stale): try it, so it gets measured
                } else {
                    s.latency_us as f64
                }
            }
            Strategy::SimpleShuffle => 0.0,
        }
    };
    let scored: Vec<(usize, f64)> = usable.iter().map(|(i, s)| (*i, score(*i, s))).collect();
    let best = scored.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
    let limit = match strategy {
        Strategy::LatencyBased { buffer, .. } => best * (1.0 + buffer),
        _ => best,
    };
    let near: Vec<usize> = scored
        .iter()
        .filter(|(_, v)| *v <= limit)
        .map(|(i, _)| *i)
        .collect();
    let slot = ((sample * near.len() as f64) as usize).min(near.len().saturating_sub(1));
    near.get(slot).copied()
}

/// Settle a finished request on the deployment's shared record; true when this failure
/// began a cooldown.
pub fn settle(
    config: &Config,
    host: &mut dyn Host,
    r: &Reservation,
    failure: Option<u16>,
    actual_tokens: Option<u64>,
    latency_ms: Option<u64>,
) -> bool {
    let Some(d) = config.deployment(r.deployment) else {
        return false;
    };
    let latency_matters = matches!(config.router.strategy, Strategy::LatencyBased { .. });
    let failed = failure.is_some();
    if !(r.tracked || (failed && config.router.policy.cools_down()) || latency_matters) {
        return false;
    }
    let now = host.now_unix_ms();
    let outcome = Outcome {
        failure,
        reserved_tokens: r.reserved_tokens,
        actual_tokens: if r.tracked { actual_tokens } else { None },
        reserved_minute: r.minute,
        latency_ms: if latency_matters { latency_ms } else { None },
        counted_in_flight: r.in_flight,
    };
    let policy = config.router.policy;
    let began = std::cell::Cell::new(false);
    let settled = update(host, &d.state_key, &|s| {
        let next = s.finish(now, &outcome, &policy);
        began.set(began_cooling(&s, &next, now));
        Ok(next)
    });
    if failed {
        mark_cooldown(host, d, settled, now);
    }
    if let (Some(tokens), Some(_)) = (actual_tokens, d.tpm) {
        crate::fleet::tokens::report(config, host, r, tokens, now);
    }
    began.get()
}

/// The fleet's rate-limit service answered `OVER_LIMIT` for the deployment: this Envoy
/// counts it full for the rest of the minute (no more calls for it until then).
pub fn mark_full(config: &Config, host: &mut dyn Host, deployment: usize) {
    let Some(d) = config.deployment(deployment) else {
        return;
    };
    let Some(rpm) = d.rpm else {
        return;
    };
    let now = host.now_unix_ms();
    // Losing every race leaves the record as it was: the next request asks again.
    let _ = update(host, &d.state_key, &|s| Ok(s.filled(now, rpm)));
}

/// The fleet's service answered `OVER_LIMIT` for the deployment's tokens: this Envoy counts
/// its `tpm` spent for the rest of the minute.
pub fn mark_tokens_spent(config: &Config, host: &mut dyn Host, deployment: usize) {
    let Some(d) = config.deployment(deployment) else {
        return;
    };
    let Some(tpm) = d.tpm else {
        return;
    };
    let now = host.now_unix_ms();
    let _ = update(host, &d.state_key, &|s| Ok(s.filled_tokens(now, tpm)));
}

/// A reservation whose request was never sent (the fleet refused it, or the service's
/// failure mode re-routes it): take its request and tokens back.
pub fn release(config: &Config, host: &mut dyn Host, r: &Reservation) {
    let Some(d) = config.deployment(r.deployment) else {
        return;
    };
    if !r.tracked {
        return;
    }
    let now = host.now_unix_ms();
    let (minute, tokens, in_flight) = (r.minute, r.reserved_tokens, r.in_flight);
    let _ = update(host, &d.state_key, &|s| {
        Ok(s.released(now, minute, tokens, in_flight))
    });
}

/// What a deployment's gauges show now: whether it is cooling down, and this minute's
/// requests and tokens (read from its shared record; off the request path, on a timer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gauges {
    pub cooling: bool,
    pub rpm_used: u64,
    pub tpm_used: u64,
}

pub fn deployment_gauges(config: &Config, host: &dyn Host, deployment: usize) -> Option<Gauges> {
    let d = config.deployment(deployment)?;
    let now = host.now_unix_ms();
    if d.rpm.is_none() && d.tpm.is_none() {
        // Nothing to count this minute: the cooldown marker says all, and reading it is
        // cheap while it is empty (no cooldown).
        let until = host
            .shared_get(&d.cooldown_key)
            .and_then(|(b, _)| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_le_bytes);
        return Some(Gauges {
            cooling: until > now,
            ..Gauges::default()
        });
    }
    let (bytes, _) = host.shared_get(&d.state_key)?;
    let s = DeploymentState::decode(&bytes);
    let this_minute = s.minute == crate::state::minute_of(now);
    Some(Gauges {
        cooling: s.cooldown_until_ms > now,
        rpm_used: if this_minute { s.requests } else { 0 },
        tpm_used: if this_minute { s.tokens } else { 0 },
    })
}

/// A deployment that failed its health probe is cooled down at once; true when that began
/// a cooldown.
pub fn cool_down(config: &Config, host: &mut dyn Host, deployment: usize) -> bool {
    let Some(d) = config
        .deployment(deployment)
        .filter(|_| config.router.policy.cools_down())
    else {
        return false;
    };
    let now = host.now_unix_ms();
    let policy = config.router.policy;
    let began = std::cell::Cell::new(false);
    let cooled = update(host, &d.state_key, &|s| {
        let next = s.cool_down(now, &policy);
        began.set(began_cooling(&s, &next, now));
        Ok(next)
    });
    mark_cooldown(host, d, cooled, now);
    began.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::host::FakeHost;

    fn config(strategy: &str, members: &str) -> Config {
        let json = format!(
            r#"{{"model_list":[{members}],"router_settings":{{"routing_strategy":"{strategy}","allowed_fails":1,"cooldown_time":10}}}}"#
        );
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    fn member(name: &str, extra: &str) -> String {
        format!(
            r#"{{"model_name":"g","litellm_params":{{"model":"openai/m","api_base":"http://{name}:1"{extra}}},"model_info":{{"id":"{name}"}}}}"#
        )
    }

    fn host(c: &Config) -> FakeHost {
        let mut h = FakeHost::new(7);
        precreate(c, &mut h);
        h
    }

    /// A reservation on a deployment without rpm/tpm tracking, as simple-shuffle makes.
    fn untracked(deployment: usize) -> Reservation {
        Reservation {
            deployment,
            target: g0(),
            tracked: false,
            in_flight: false,
            reserved_tokens: 0,
            fleet_tokens: 0,
            minute: 0,
            started_ms: 0,
        }
    }

    /// The (only) group of the test configs, as an unrestricted caller is allowed it.
    fn g0() -> Target {
        crate::scope::Scope::of(
            &config("simple-shuffle", &member("a", "")),
            &crate::keys::Principal::Master,
        )
        .admit_group(0)
        .unwrap()
    }

    fn pick_id(c: &Config, h: &mut FakeHost, tokens: u64) -> Result<String, GatewayError> {
        pick(c, h, g0(), tokens, &[]).map(|r| c.deployments[r.deployment].id.clone())
    }

    #[test]
    fn gauges_show_this_minutes_use_and_cooldowns() {
        let c = config(
            "simple-shuffle",
            &[
                member("a", r#","rpm":5,"weight":100"#),
                member("b", r#","weight":0"#),
            ]
            .join(","),
        );
        let mut h = host(&c);
        for _ in 0..3 {
            assert_eq!(pick_id(&c, &mut h, 0).unwrap(), "a");
        }
        let a = deployment_gauges(&c, &h, 0).unwrap();
        assert_eq!((a.rpm_used, a.cooling), (3, false));
        assert!(!deployment_gauges(&c, &h, 1).unwrap().cooling);
        assert!(cool_down(&c, &mut h, 1), "a cooldown began");
        assert!(!cool_down(&c, &mut h, 1), "it was already cooling");
        assert!(deployment_gauges(&c, &h, 1).unwrap().cooling);
        h.now_ms += 60_000;
        let a = deployment_gauges(&c, &h, 0).unwrap();
        assert_eq!(a.rpm_used, 0, "a new minute");
        assert!(
            !deployment_gauges(&c, &h, 1).unwrap().cooling,
            "the cooldown is over"
        );
    }

    #[test]
    fn rpm_limit_holds_and_spills_to_the_sibling() {
        let c = config(
            "simple-shuffle",
            &[member("a", r#","rpm":5,"weight":100"#), member("b", "")].join(","),
        );
        let mut h = host(&c);
        let mut to_a = 0;
        for _ in 0..200 {
            if pick_id(&c, &mut h, 0).unwrap() == "a" {
                to_a += 1;
            }
        }
        assert_eq!(to_a, 5, "a takes exactly its rpm, the rest spills to b");
        h.now_ms += 60_000;
        assert_eq!(
            pick_id(&c, &mut h, 0).unwrap(),
            "a",
            "the next minute a is back"
        );
    }

    #[test]
    fn every_deployment_limited_is_429_with_retry_after() {
        let c = config("simple-shuffle", &member("a", r#","rpm":2"#));
        let mut h = host(&c);
        h.now_ms = 1_700_000_010_000; // 30 s into a minute
        pick_id(&c, &mut h, 0).unwrap();
        pick_id(&c, &mut h, 0).unwrap();
        let e = pick_id(&c, &mut h, 0).unwrap_err();
        assert_eq!(e.status(), 429);
        assert_eq!(e.retry_after, Some(30));
    }

    #[test]
    fn lost_races_are_retried_and_counts_stay_exact() {
        let c = config("simple-shuffle", &member("a", r#","rpm":3"#));
        let mut h = host(&c);
        h.lose_races = 5;
        for _ in 0..3 {
            pick_id(&c, &mut h, 0).unwrap();
        }
        assert_eq!(pick_id(&c, &mut h, 0).unwrap_err().status(), 429);
    }

    #[test]
    fn failures_cool_down_then_traffic_returns() {
        let c = config(
            "simple-shuffle",
            &[member("a", ""), member("b", "")].join(","),
        );
        let mut h = host(&c);
        // allowed_fails 1: the second failure in a minute cools `a` down for 10 s.
        let a = untracked(0);
        settle(&c, &mut h, &a, Some(500), None, None);
        settle(&c, &mut h, &a, Some(500), None, None);
        for _ in 0..50 {
            assert_eq!(pick_id(&c, &mut h, 0).unwrap(), "b");
        }
        h.now_ms += 10_000;
        let picks: Vec<String> = (0..50).map(|_| pick_id(&c, &mut h, 0).unwrap()).collect();
        assert!(
            picks.iter().any(|p| p == "a"),
            "a is back after cooldown_time"
        );
        // Everything cooling down: 503.
        let b = untracked(1);
        for r in [&a, &a, &b, &b] {
            settle(&c, &mut h, r, Some(500), None, None);
        }
        let e = pick_id(&c, &mut h, 0).unwrap_err();
        assert_eq!(e.status(), 503);
        assert_eq!(e.retry_after, Some(10));
    }

    #[test]
    fn order_tiers_are_used_lowest_first() {
        let c = config(
            "simple-shuffle",
            &[
                member("low", r#","order":2"#),
                member("high", r#","order":1,"rpm":1"#),
            ]
            .join(","),
        );
        let mut h = host(&c);
        assert_eq!(pick_id(&c, &mut h, 0).unwrap(), "high");
        assert_eq!(
            pick_id(&c, &mut h, 0).unwrap(),
            "low",
            "order 2 only once order 1 is unusable"
        );
    }

    #[test]
    fn least_busy_prefers_fewest_in_flight() {
        let c = config("least-busy", &[member("a", ""), member("b", "")].join(","));
        let mut h = host(&c);
        let first = pick(&c, &mut h, g0(), 0, &[]).unwrap();
        let second = pick(&c, &mut h, g0(), 0, &[]).unwrap();
        assert_ne!(
            first.deployment, second.deployment,
            "the idle one is chosen"
        );
        settle(&c, &mut h, &first, None, None, Some(10));
        let third = pick(&c, &mut h, g0(), 0, &[]).unwrap();
        assert_eq!(
            third.deployment, first.deployment,
            "first finished, so it is the idle one"
        );
    }

    #[test]
    fn usage_based_balances_tokens_and_respects_tpm() {
        let c = config(
            "usage-based-routing-v2",
            &[member("a", r#","tpm":1000"#), member("b", r#","tpm":1000"#)].join(","),
        );
        let mut h = host(&c);
        let r = pick(&c, &mut h, g0(), 400, &[]).unwrap();
        settle(&c, &mut h, &r, None, Some(400), None);
        let next = pick(&c, &mut h, g0(), 400, &[]).unwrap();
        assert_ne!(next.deployment, r.deployment, "the less used one");
        pick(&c, &mut h, g0(), 500, &[]).unwrap();
        pick(&c, &mut h, g0(), 500, &[]).unwrap();
        // 900 tokens counted on each now: a 400-token request fits nowhere.
        assert_eq!(pick(&c, &mut h, g0(), 400, &[]).unwrap_err().status(), 429);
    }

    #[test]
    fn latency_based_prefers_fast_and_explores_unmeasured() {
        let c = config(
            "latency-based-routing",
            &[member("fast", ""), member("slow", "")].join(","),
        );
        let mut h = host(&c);
        let fast = untracked(0);
        settle(&c, &mut h, &fast, None, None, Some(50));
        assert_eq!(
            pick_id(&c, &mut h, 0).unwrap(),
            "slow",
            "unmeasured gets measured first"
        );
        let slow = Reservation {
            deployment: 1,
            ..fast.clone()
        };
        settle(&c, &mut h, &slow, None, None, Some(500));
        for _ in 0..20 {
            assert_eq!(pick_id(&c, &mut h, 0).unwrap(), "fast");
        }
    }

    #[test]
    fn excluded_deployments_are_skipped() {
        let c = config(
            "simple-shuffle",
            &[member("a", ""), member("b", "")].join(","),
        );
        let mut h = host(&c);
        for _ in 0..20 {
            assert_eq!(pick(&c, &mut h, g0(), 0, &[0]).unwrap().deployment, 1);
        }
        assert_eq!(
            pick(&c, &mut h, g0(), 0, &[0, 1]).unwrap_err().status(),
            503
        );
    }

    #[test]
    fn disable_cooldowns_keeps_failing_deployments_and_reads_nothing() {
        let json = format!(
            r#"{{"model_list":[{}],"router_settings":{{"allowed_fails":1,"cooldown_time":10,"disable_cooldowns":true}}}}"#,
            [member("a", ""), member("b", "")].join(",")
        );
        let (c, warnings) = parse(json.as_bytes(), &|_| None, 0).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut h = host(&c);
        let before = h.shared.clone();
        let a = untracked(0);
        for _ in 0..5 {
            settle(&c, &mut h, &a, Some(500), None, None);
        }
        cool_down(&c, &mut h, 0);
        assert_eq!(h.shared, before, "failures and probes write nothing");
        h.reads.set(0);
        let picks: Vec<String> = (0..50).map(|_| pick_id(&c, &mut h, 0).unwrap()).collect();
        assert!(picks.iter().any(|p| p == "a") && picks.iter().any(|p| p == "b"));
        assert_eq!(h.reads.get(), 0, "no deployment record is read");
        assert!(any_usable(&c, &h));
    }

    #[test]
    fn default_path_writes_nothing_on_success() {
        let c = config(
            "simple-shuffle",
            &[member("a", ""), member("b", "")].join(","),
        );
        let mut h = host(&c);
        let before = h.shared.clone();
        h.reads.set(0);
        h.copies.set(0);
        let r = pick(&c, &mut h, g0(), 0, &[]).unwrap();
        settle(&c, &mut h, &r, None, Some(10), Some(10));
        assert_eq!(h.shared, before);
        assert_eq!(
            h.reads.get(),
            1,
            "one read: the chosen deployment's cooldown marker"
        );
        assert_eq!(h.copies.get(), 0, "which is empty: nothing copied back");
    }

    #[test]
    fn the_cooldown_marker_is_set_while_cooling_and_emptied_after() {
        let c = config("simple-shuffle", &member("a", ""));
        let mut h = host(&c);
        let key = c.deployments[0].cooldown_key.clone();
        let a = untracked(0);
        settle(&c, &mut h, &a, Some(500), None, None);
        assert!(!h.shared.contains_key(&key), "one failure is allowed");
        settle(&c, &mut h, &a, Some(500), None, None);
        let until = h.now_ms + 10_000;
        assert_eq!(h.shared[&key].0, until.to_le_bytes());
        assert_eq!(pick_id(&c, &mut h, 0).unwrap_err().status(), 503);
        h.now_ms = until;
        assert_eq!(pick_id(&c, &mut h, 0).unwrap(), "a");
        assert!(h.shared[&key].0.is_empty(), "emptied once over");
        // A failed health probe marks it at once.
        cool_down(&c, &mut h, 0);
        assert_eq!(h.shared[&key].0, (h.now_ms + 10_000).to_le_bytes());
        assert_eq!(pick_id(&c, &mut h, 0).unwrap_err().status(), 503);
        // Emptying an expired marker never erases a cooldown another worker just started.
        h.now_ms += 10_000;
        h.lose_races = 1;
        assert_eq!(pick_id(&c, &mut h, 0).unwrap(), "a");
        assert!(!h.shared[&key].0.is_empty());
    }
}
