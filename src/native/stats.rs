//! The gateway's stats as the module's own labelled metrics: each family of
//! `metrics::families()` defined once in `on_http_filter_config_new` (Envoy freezes metric
//! creation after it), each `Stat` split by `metrics::split_labels` into its family and
//! label values, so Prometheus sees `model_group`, `deployment`, `key_alias`, … without the
//! `stats_tags` the wasm build needs.
//!
//! Naming and splitting a stat allocates; each worker does it once per stat and keeps the
//! result (`Resolved`) in a thread-local cache keyed by the stat's shape.
//!
//! Envoy resolves a labelled metric's label values on every update (~5k instructions each,
//! measured), and a chat request makes seven. So a request's counter and gauge updates are
//! summed in the module (`Pending`, atomics shared by every worker) and handed to Envoy by
//! `Families::flush` from the main thread every `FLUSH_INTERVAL`: one call per changed stat
//! per flush, however many requests. Histograms keep every value, so they still go to Envoy
//! at once. A stat's first update on a worker also goes at once, at 0, so the stat exists from
//! its first request. The cost: counters and gauges lag Envoy's view by up to a flush (and a
//! configuration replaced loses what its last flush had not sent).

use super::abi::{self, ConfigEnvoy, FilterEnvoy, ModuleBuffer};
use crate::config::Config;
use crate::fast_hash::FxHashMap as HashMap;
use crate::metrics::{self, Stat, StatKind};
use crate::session::Stats;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the main thread hands Envoy what counters and gauges have summed.
pub(super) const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

use metrics::MAX_LABELS;

/// The families Envoy accepted, by family name: (metric id, kind, number of labels).
#[derive(Default)]
pub(super) struct Families {
    by_name: HashMap<String, (usize, StatKind, usize)>,
    /// Which configuration these ids belong to: a worker's cache of another one is dropped.
    generation: u64,
    /// Every worker's summed counter and gauge updates, for `flush`.
    pending: Mutex<Vec<Arc<Pending>>>,
}

/// A stat as one configuration's metrics know it.
struct Resolved {
    id: usize,
    kind: StatKind,
    values: Vec<String>,
    /// For a counter or gauge updated from a stream: where its updates are summed.
    pending: Option<Arc<Pending>>,
}

/// A counter's or gauge's updates not yet handed to Envoy (one per stat per worker).
struct Pending {
    id: usize,
    kind: StatKind,
    values: Vec<String>,
    added: AtomicU64,
    subtracted: AtomicU64,
    set: AtomicU64,
    is_set: AtomicBool,
}

/// A stat's shape: its variant, deployment, status class or gauge name; with the text it
/// carries (a key alias, a full name) it picks one stat.
type Shape = (u8, usize, &'static str);

fn shape<'a>(stat: &Stat<'a>) -> (Shape, &'a str) {
    match *stat {
        Stat::Requests {
            deployment,
            key,
            status,
        } => ((0, deployment, metrics::status_class(status)), key),
        Stat::PromptTokens { deployment, key } => ((1, deployment, ""), key),
        Stat::CompletionTokens { deployment, key } => ((2, deployment, ""), key),
        Stat::Duration { deployment } => ((3, deployment, ""), ""),
        Stat::TimeToFirstToken { deployment } => ((4, deployment, ""), ""),
        Stat::InFlight { deployment } => ((5, deployment, ""), ""),
        Stat::Cooldowns { deployment } => ((6, deployment, ""), ""),
        Stat::Failovers { deployment } => ((7, deployment, ""), ""),
        Stat::Fallbacks { deployment } => ((8, deployment, ""), ""),
        Stat::DeploymentGauge { deployment, name } => ((9, deployment, name), ""),
        Stat::Named(name) => ((10, 0, ""), name),
        Stat::NamedGauge(name) => ((11, 0, ""), name),
    }
}

#[derive(Default)]
struct Cache {
    generation: u64,
    /// `None`: the stat has no defined family (never expected; kept so it is not retried).
    by_shape: HashMap<Shape, HashMap<String, Option<Resolved>>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Configurations defined so far, numbering each one's `Families`.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Families {
    /// Define every family on `config_envoy`; those Envoy refuses are named in the result.
    pub(super) fn define(config_envoy: ConfigEnvoy) -> (Families, Vec<String>) {
        let mut families = Families {
            by_name: HashMap::default(),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            pending: Mutex::new(Vec::new()),
        };
        let mut refused = Vec::new();
        for family in metrics::families() {
            let mut labels: Vec<ModuleBuffer> = family
                .labels
                .iter()
                .map(|l| ModuleBuffer::of(l.as_bytes()))
                .collect();
            let define = match family.kind {
                StatKind::Counter => {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_counter
                }
                StatKind::Gauge => {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_gauge
                }
                StatKind::Histogram => {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_histogram
                }
            };
            let mut id = 0usize;
            // SAFETY: the config pointer is the one Envoy handed this hook; the name and
            // label buffers outlive the call; `id` is a valid out pointer.
            let result = unsafe {
                define(
                    config_envoy,
                    ModuleBuffer::of(family.name.as_bytes()),
                    labels.as_mut_ptr(),
                    labels.len(),
                    &mut id,
                )
            };
            if result == abi::METRICS_SUCCESS {
                families
                    .by_name
                    .insert(family.name, (id, family.kind, family.labels.len()));
            } else {
                refused.push(format!("{} (result {result})", family.name));
            }
        }
        (families, refused)
    }

    /// Hand Envoy what every worker's counters and gauges summed since the last flush, on the
    /// filter config (main thread, the config scheduler's event).
    pub(super) fn flush(&self, config_envoy: ConfigEnvoy) {
        let Ok(pending) = self.pending.lock() else {
            return;
        };
        for p in pending.iter() {
            let added = p.added.swap(0, Ordering::Relaxed);
            let subtracted = p.subtracted.swap(0, Ordering::Relaxed);
            let set = p
                .is_set
                .swap(false, Ordering::Relaxed)
                .then(|| p.set.load(Ordering::Relaxed));
            let resolved = Resolved {
                id: p.id,
                kind: p.kind,
                values: Vec::new(),
                pending: None,
            };
            let call = |op, value| {
                call(
                    &resolved,
                    &p.values,
                    Target::Config(config_envoy),
                    op,
                    value,
                )
            };
            if let Some(value) = set {
                call(Op::Set, value);
            }
            if added > subtracted {
                call(Op::Increment, added - subtracted);
            } else if subtracted > added {
                call(Op::Decrement, subtracted - added);
            }
        }
    }
}

/// Where a value goes: a stream's filter (request events) or the filter config (the tick).
#[derive(Clone, Copy)]
pub(super) enum Target {
    Filter(FilterEnvoy),
    Config(ConfigEnvoy),
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Increment,
    Decrement,
    Set,
    Record,
}

pub(super) struct NativeStats<'a> {
    pub(super) families: &'a Families,
    pub(super) config: &'a Config,
    pub(super) target: Target,
}

impl NativeStats<'_> {
    /// The stat's family and label values, named and split once per worker.
    fn resolve(&self, stat: &Stat<'_>) -> Option<Resolved> {
        let name = stat.name(self.config);
        let (family, labels) = metrics::split_labels(&name);
        let &(id, kind, label_count) = self.families.by_name.get(&family)?;
        if labels.len() != label_count || labels.len() > MAX_LABELS {
            return None;
        }
        let values: Vec<String> = labels.iter().map(|(_, v)| v.to_string()).collect();
        let batched = matches!(self.target, Target::Filter(_)) && kind != StatKind::Histogram;
        let pending = batched.then(|| {
            let p = Arc::new(Pending {
                id,
                kind,
                values: values.clone(),
                added: AtomicU64::new(0),
                subtracted: AtomicU64::new(0),
                set: AtomicU64::new(0),
                is_set: AtomicBool::new(false),
            });
            if let Ok(mut all) = self.families.pending.lock() {
                all.push(Arc::clone(&p));
            }
            p
        });
        let resolved = Resolved {
            id,
            kind,
            values,
            pending,
        };
        if resolved.pending.is_some() {
            // The stat exists (at 0) from its first update, not from the first flush.
            call(&resolved, &resolved.values, self.target, Op::Increment, 0);
        }
        Some(resolved)
    }

    fn apply(&self, stat: Stat<'_>, op: Op, value: u64) {
        let (shape, text) = shape(&stat);
        CACHE.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return;
            };
            if cache.generation != self.families.generation {
                cache.by_shape.clear();
                cache.generation = self.families.generation;
            }
            let texts = cache.by_shape.entry(shape).or_default();
            // One lookup when the stat was seen before (every request but the first).
            let resolved = match texts.get(text) {
                Some(found) => found,
                None => texts
                    .entry(text.to_string())
                    .or_insert_with(|| self.resolve(&stat)),
            };
            match resolved {
                Some(Resolved {
                    pending: Some(p), ..
                }) => match op {
                    Op::Increment => {
                        p.added.fetch_add(value, Ordering::Relaxed);
                    }
                    Op::Decrement => {
                        p.subtracted.fetch_add(value, Ordering::Relaxed);
                    }
                    Op::Set => {
                        p.set.store(value, Ordering::Relaxed);
                        p.is_set.store(true, Ordering::Relaxed);
                    }
                    Op::Record => {}
                },
                // Envoy reads the label texts during the call; they stay borrowed from the
                // cache until it returns.
                Some(resolved) => call(resolved, &resolved.values, self.target, op, value),
                None => {}
            }
        });
    }
}

/// One update of a defined metric, on a stream's filter or the filter config.
fn call(resolved: &Resolved, values: &[String], target: Target, op: Op, value: u64) {
    {
        let mut buffers = [ModuleBuffer::NULL; MAX_LABELS];
        for (slot, v) in buffers.iter_mut().zip(values) {
            *slot = ModuleBuffer::of(v.as_bytes());
        }
        let (id, kind, len) = (resolved.id, resolved.kind, values.len().min(MAX_LABELS));
        let ptr = buffers.as_mut_ptr();
        // SAFETY: pointers Envoy handed the current hook (or the config's, on the main
        // thread); the label buffers point into `values`, borrowed for the whole call; their
        // number is the family's (checked in `resolve`, at most MAX_LABELS).
        unsafe {
            match (target, kind, op) {
                (Target::Filter(f), StatKind::Counter, Op::Increment) => {
                    abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                        f, id, ptr, len, value,
                    );
                }
                (Target::Filter(f), StatKind::Gauge, Op::Increment) => {
                    abi::envoy_dynamic_module_callback_http_filter_increment_gauge(
                        f, id, ptr, len, value,
                    );
                }
                (Target::Filter(f), StatKind::Gauge, Op::Decrement) => {
                    abi::envoy_dynamic_module_callback_http_filter_decrement_gauge(
                        f, id, ptr, len, value,
                    );
                }
                (Target::Filter(f), StatKind::Gauge, Op::Set) => {
                    abi::envoy_dynamic_module_callback_http_filter_set_gauge(
                        f, id, ptr, len, value,
                    );
                }
                (Target::Filter(f), StatKind::Histogram, Op::Record) => {
                    abi::envoy_dynamic_module_callback_http_filter_record_histogram_value(
                        f, id, ptr, len, value,
                    );
                }
                (Target::Config(c), StatKind::Counter, Op::Increment) => {
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        c, id, ptr, len, value,
                    );
                }
                (Target::Config(c), StatKind::Gauge, Op::Increment) => {
                    abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge(
                        c, id, ptr, len, value,
                    );
                }
                (Target::Config(c), StatKind::Gauge, Op::Decrement) => {
                    abi::envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
                        c, id, ptr, len, value,
                    );
                }
                (Target::Config(c), StatKind::Gauge, Op::Set) => {
                    abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                        c, id, ptr, len, value,
                    );
                }
                (Target::Config(c), StatKind::Histogram, Op::Record) => {
                    abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
                        c, id, ptr, len, value,
                    );
                }
                // An operation the stat's kind does not have (the core never asks for one).
                _ => {}
            }
        }
    }
}

impl Stats for NativeStats<'_> {
    fn add(&mut self, stat: Stat<'_>, by: i64) {
        if by < 0 {
            self.apply(stat, Op::Decrement, by.unsigned_abs());
        } else {
            self.apply(stat, Op::Increment, by.unsigned_abs());
        }
    }
    fn set(&mut self, stat: Stat<'_>, value: u64) {
        self.apply(stat, Op::Set, value);
    }
    fn record(&mut self, stat: Stat<'_>, value: u64) {
        self.apply(stat, Op::Record, value);
    }
    /// Counters and gauges come into being at 0 (an increment by 0); a histogram's first
    /// value defines it.
    fn define(&mut self, stat: Stat<'_>) {
        if stat.kind() != StatKind::Histogram {
            self.apply(stat, Op::Increment, 0);
        }
    }
}
