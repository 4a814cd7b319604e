//! The gateway's stats as the module's own labelled metrics: each family of
//! `metrics::families()` defined once in `on_http_filter_config_new` (Envoy freezes metric
//! creation after it), each `Stat` split by `metrics::split_labels` into its family and
//! label values, so Prometheus sees `model_group`, `deployment`, `key_alias`, … without the
//! `stats_tags` the wasm build needs.

use super::abi::{self, ConfigEnvoy, FilterEnvoy, ModuleBuffer};
use crate::config::Config;
use crate::metrics::{self, Stat, StatKind};
use crate::session::Stats;
use std::collections::HashMap;

/// The families Envoy accepted, by family name: (metric id, kind, number of labels).
#[derive(Default)]
pub(super) struct Families {
    by_name: HashMap<String, (usize, StatKind, usize)>,
}

impl Families {
    /// Define every family on `config_envoy`; those Envoy refuses are named in the result.
    pub(super) fn define(config_envoy: ConfigEnvoy) -> (Families, Vec<String>) {
        let mut families = Families::default();
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
    fn apply(&self, stat: Stat<'_>, op: Op, value: u64) {
        let name = stat.name(self.config);
        let (family, labels) = metrics::split_labels(&name);
        let Some(&(id, kind, label_count)) = self.families.by_name.get(&family) else {
            return;
        };
        if labels.len() != label_count {
            return;
        }
        let mut values: Vec<ModuleBuffer> = labels
            .iter()
            .map(|(_, v)| ModuleBuffer::of(v.as_bytes()))
            .collect();
        let (ptr, len) = (values.as_mut_ptr(), values.len());
        // SAFETY: pointers Envoy handed the current hook; label buffers outlive each call,
        // and their number is the family's (checked above).
        unsafe {
            match (self.target, kind, op) {
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
