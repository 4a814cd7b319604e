//! The gateway's once-a-second work, outside any request: the deployments' gauges, the
//! response cache's sweep, and the fleet's token reports (`fleet::tokens`). A shell calls
//! `Ticker::tick` from its timer.

use super::Stats;
use crate::config::Config;
use crate::host::Host;
use crate::metrics::Stat;
use crate::router;

/// Configs with more deployments refresh their gauges every tenth tick, not every tick:
/// each refresh reads every deployment's shared record.
const GAUGES_EVERY_TICK_UP_TO: usize = 200;

/// Cache slots each tick checks for expiry.
const CACHE_SWEEP_SLOTS: u64 = 256;

/// Calls a timer sends outside any request, their answers not read: a wasm root context's
/// `dispatch_http_call`, the native module's config-level callout.
pub trait TickCalls {
    /// Whether Envoy took the call.
    fn send(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> bool;
}

/// A report is not on any request's path: it may wait longer than an admission.
const REPORT_TIMEOUT_MS: u64 = 1_000;

/// What one timer (a wasm VM's, the native module's) remembers between ticks.
#[derive(Default)]
pub struct Ticker {
    ticks: u64,
    sweep_from: u64,
    /// Per deployment: the gauges' values last set (`None`: not yet set, limits unset).
    last: Vec<Option<router::Gauges>>,
}

impl Ticker {
    /// For a new configuration: counters of rare events exist from the start, at 0 (a
    /// counter Prometheus first sees at its first increment shows no increase for it).
    pub fn new(config: &Config, stats: &mut dyn Stats) -> Self {
        for deployment in 0..config.deployments.len() {
            stats.define(Stat::Cooldowns { deployment });
            stats.define(Stat::Failovers { deployment });
            stats.define(Stat::Fallbacks { deployment });
        }
        Ticker::default()
    }

    pub fn tick(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stats: &mut dyn Stats,
        calls: &mut dyn TickCalls,
    ) {
        let tick = self.ticks;
        self.ticks = tick.wrapping_add(1);
        if config.deployments.len() <= GAUGES_EVERY_TICK_UP_TO || tick.is_multiple_of(10) {
            self.refresh_gauges(config, host, stats);
        }
        if let Some(cache) = &config.cache {
            let from = self.sweep_from;
            crate::cache::sweep(host, cache, from, CACHE_SWEEP_SLOTS);
            let next = from + CACHE_SWEEP_SLOTS;
            self.sweep_from = if next >= cache.slots { 0 } else { next };
        }
        if let Some(service) = &config.rate_limit {
            let headers = crate::fleet::call_headers(&service.authority);
            let timeout_ms = service.timeout_ms.max(REPORT_TIMEOUT_MS);
            for frame in crate::fleet::tokens::take_reports(config, host) {
                // Not taken (no such cluster): the tokens are lost to the fleet's count and
                // stay in this Envoy's own.
                let _ = calls.send(&service.cluster, &headers, &frame, timeout_ms);
            }
        }
    }

    /// Set each deployment's timer gauges (cooling, this minute's requests and tokens) where
    /// they changed; the limits once, when first seen.
    fn refresh_gauges(&mut self, config: &Config, host: &dyn Host, stats: &mut dyn Stats) {
        if self.last.len() < config.deployments.len() {
            self.last.resize(config.deployments.len(), None);
        }
        for (deployment, slot) in self.last.iter_mut().enumerate() {
            let Some(now) = router::deployment_gauges(config, host, deployment) else {
                continue;
            };
            let gauge = |name| Stat::DeploymentGauge { deployment, name };
            let last = match slot {
                Some(last) => *last,
                None => {
                    if let Some(d) = config.deployment(deployment) {
                        for (name, limit) in [("rpm_limit", d.rpm), ("tpm_limit", d.tpm)] {
                            if let Some(limit) = limit {
                                stats.set(gauge(name), limit);
                            }
                        }
                    }
                    for name in ["cooling", "rpm_used", "tpm_used"] {
                        stats.define(gauge(name));
                    }
                    router::Gauges {
                        cooling: !now.cooling,
                        rpm_used: u64::MAX,
                        tpm_used: u64::MAX,
                    }
                }
            };
            for (name, value, before) in [
                ("cooling", u64::from(now.cooling), u64::from(last.cooling)),
                ("rpm_used", now.rpm_used, last.rpm_used),
                ("tpm_used", now.tpm_used, last.tpm_used),
            ] {
                if value != before {
                    stats.set(gauge(name), value);
                }
            }
            *slot = Some(now);
        }
    }
}
