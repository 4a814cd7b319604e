//! The gateway's stats as Envoy stats of the wasm host: each `Stat` by its name
//! (`Stat::name`), defined on first use; `stats_tags` turn the names' segments into labels.
//! Ids are interned per deployment (and key) so a request formats no stat name and hashes no
//! long one.

use crate::config::Config;
use crate::fast_hash::FxHashMap as HashMap;
use crate::metrics::{Stat, StatKind};
use crate::session::Stats;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;

/// Envoy stats by name, defined once per VM (per configuration) on first use.
#[derive(Default)]
pub(super) struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
    /// Per deployment of the configuration these metrics belong to.
    routes: RefCell<Vec<RouteStats>>,
}

#[derive(Default)]
struct RouteStats {
    /// Duration, time to first token, in flight.
    own: [Option<u32>; 3],
    by_key: HashMap<String, KeyStats>,
}

/// Requests by status class, prompt tokens, completion tokens.
#[derive(Default, Clone, Copy)]
struct KeyStats([Option<u32>; 7]);

fn metric_type(kind: StatKind) -> MetricType {
    match kind {
        StatKind::Counter => MetricType::Counter,
        StatKind::Gauge => MetricType::Gauge,
        StatKind::Histogram => MetricType::Histogram,
    }
}

/// Where an interned stat's id lives: (deployment, key, slot).
fn interned<'a>(stat: &Stat<'a>) -> Option<(usize, Option<&'a str>, usize)> {
    let status_class = |status: u16| usize::from((status / 100).clamp(1, 5) - 1);
    Some(match *stat {
        Stat::Duration { deployment } => (deployment, None, 0),
        Stat::TimeToFirstToken { deployment } => (deployment, None, 1),
        Stat::InFlight { deployment } => (deployment, None, 2),
        Stat::Requests {
            deployment,
            key,
            status,
        } => (deployment, Some(key), status_class(status)),
        Stat::PromptTokens { deployment, key } => (deployment, Some(key), 5),
        Stat::CompletionTokens { deployment, key } => (deployment, Some(key), 6),
        _ => return None,
    })
}

impl Metrics {
    fn by_name(&self, kind: StatKind, name: &str) -> Option<u32> {
        if let Some(&id) = self.ids.borrow().get(name) {
            return Some(id);
        }
        let id = hostcalls::define_metric(metric_type(kind), name).ok()?;
        self.ids.borrow_mut().insert(name.to_string(), id);
        Some(id)
    }

    /// The stat's id, defined on first use (`None`: the host refused it).
    fn id(&self, config: Option<&Config>, stat: Stat<'_>) -> Option<u32> {
        let kind = stat.kind();
        match (stat, interned(&stat)) {
            (Stat::Named(name) | Stat::NamedGauge(name), _) => self.by_name(kind, name),
            (_, Some((deployment, key, at))) => {
                let mut routes = self.routes.borrow_mut();
                if routes.len() <= deployment {
                    routes.resize_with(deployment + 1, RouteStats::default);
                }
                let route = routes.get_mut(deployment)?;
                let slot = match key {
                    None => route.own.get_mut(at)?,
                    Some(key) => {
                        if !route.by_key.contains_key(key) {
                            route.by_key.insert(key.to_string(), KeyStats::default());
                        }
                        route.by_key.get_mut(key)?.0.get_mut(at)?
                    }
                };
                if slot.is_none() {
                    *slot = hostcalls::define_metric(metric_type(kind), &stat.name(config?)).ok();
                }
                *slot
            }
            (_, None) => self.by_name(kind, &stat.name(config?)),
        }
    }
}

/// `Stats` over one VM's `Metrics`, naming stats against one configuration.
pub(super) struct WasmStats<'a> {
    metrics: &'a Metrics,
    config: Option<&'a Config>,
}

impl<'a> WasmStats<'a> {
    pub(super) fn new(metrics: &'a Metrics, config: &'a Config) -> Self {
        WasmStats {
            metrics,
            config: Some(config),
        }
    }

    /// Without a configuration only stats named in full can be recorded.
    pub(super) fn maybe(metrics: &'a Metrics, config: Option<&'a Config>) -> Self {
        WasmStats { metrics, config }
    }
}

impl Stats for WasmStats<'_> {
    fn add(&mut self, stat: Stat<'_>, by: i64) {
        if let Some(id) = self.metrics.id(self.config, stat) {
            if by != 0 {
                let _ = hostcalls::increment_metric(id, by);
            }
        }
    }
    fn set(&mut self, stat: Stat<'_>, value: u64) {
        if let Some(id) = self.metrics.id(self.config, stat) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
    fn record(&mut self, stat: Stat<'_>, value: u64) {
        self.set(stat, value)
    }
    fn define(&mut self, stat: Stat<'_>) {
        let _ = self.metrics.id(self.config, stat);
    }
}
