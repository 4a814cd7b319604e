//! Stat names for Envoy's own stats (and so Prometheus). Labels are `name.value.` segments
//! in a fixed order with the metric's name last, e.g.
//! `llm_gateway.group.chat.deployment.chat_0.key.team_a.status.2xx.requests`; the
//! `stats_tags` in the shipped Envoy configs turn each segment into a Prometheus label
//! (`llm_gateway_requests{model_group="chat",deployment="chat_0",key_alias="team_a",status_class="2xx"}`).
//! Label values are sanitised, so no model name or key alias can break a stat name.

/// A label value safe inside a stat name: ASCII letters, digits, `_` and `-`; anything else
/// becomes `_`; at most 64 characters; `none` when empty.
pub fn label(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "none".to_string()
    } else {
        cleaned
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Labels of one routed request, already sanitised.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub group: String,
    pub deployment: String,
    pub key: String,
}

impl Labels {
    /// The labels of a deployment (and a caller's key label; `none` when empty).
    pub fn of(config: &crate::config::Config, deployment: usize, key: &str) -> Labels {
        let d = config.deployment(deployment);
        Labels {
            group: d
                .and_then(|d| config.groups.get(d.group))
                .map_or_else(|| "none".into(), |g| g.metric_label.clone()),
            deployment: d.map_or_else(|| "none".into(), |d| d.metric_label.clone()),
            key: if key.is_empty() {
                "none".into()
            } else {
                key.to_string()
            },
        }
    }

    fn base(&self) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.key.{}",
            self.group, self.deployment, self.key
        )
    }

    pub fn requests(&self, status: u16) -> String {
        format!("{}.status.{}.requests", self.base(), status_class(status))
    }

    pub fn prompt_tokens(&self) -> String {
        format!("{}.prompt_tokens", self.base())
    }

    pub fn completion_tokens(&self) -> String {
        format!("{}.completion_tokens", self.base())
    }

    pub fn duration(&self) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.request_duration_ms",
            self.group, self.deployment
        )
    }

    pub fn time_to_first_token(&self) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.ttft_ms",
            self.group, self.deployment
        )
    }

    /// Times this deployment entered a cooldown (failures, or a failed health probe).
    pub fn cooldowns(&self) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.cooldowns",
            self.group, self.deployment
        )
    }

    /// Failures of this deployment the gateway failed over from (to another deployment or a
    /// fallback group).
    pub fn failovers(&self) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.failovers",
            self.group, self.deployment
        )
    }

    /// `OVER_LIMIT` answers from the fleet's rate-limit service for this deployment.
    pub fn fleet_over_limit(&self) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.fleet_over_limit",
            self.group, self.deployment
        )
    }

    /// Gauges refreshed on a timer from the deployment's shared record (see
    /// `router::deployment_gauges`): 1 while cooling, this minute's requests and tokens,
    /// and its configured limits.
    pub fn gauge(&self, name: &str) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.{name}",
            self.group, self.deployment
        )
    }

    /// Failovers from this deployment that went to another group (a fallback).
    pub fn fallbacks(&self) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.fallbacks",
            self.group, self.deployment
        )
    }

    pub fn in_flight(&self) -> String {
        format!(
            "llm_gateway.group.{}.deployment.{}.in_flight",
            self.group, self.deployment
        )
    }
}

/// One of the gateway's stats, as the core names it. Each shell maps it onto its host's
/// metrics: the wasm shell onto Envoy stats named `Stat::name` (labels parsed back out by
/// `stats_tags`), the native shell onto labelled metrics (`split_labels` of that name).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat<'a> {
    Requests {
        deployment: usize,
        key: &'a str,
        status: u16,
    },
    PromptTokens {
        deployment: usize,
        key: &'a str,
    },
    CompletionTokens {
        deployment: usize,
        key: &'a str,
    },
    /// Histograms, in milliseconds.
    Duration {
        deployment: usize,
    },
    TimeToFirstToken {
        deployment: usize,
    },
    /// A gauge: requests on their way to or from the deployment.
    InFlight {
        deployment: usize,
    },
    Cooldowns {
        deployment: usize,
    },
    Failovers {
        deployment: usize,
    },
    Fallbacks {
        deployment: usize,
    },
    /// A timer-refreshed gauge of a deployment (`Labels::gauge`).
    DeploymentGauge {
        deployment: usize,
        name: &'static str,
    },
    /// A counter named in full (errors, refusals, cache hits, key spend).
    Named(&'a str),
    /// A gauge named in full (a key's budget used).
    NamedGauge(&'a str),
}

/// How a stat's values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Counter,
    Gauge,
    Histogram,
}

impl Stat<'_> {
    pub fn kind(&self) -> StatKind {
        match self {
            Stat::Duration { .. } | Stat::TimeToFirstToken { .. } => StatKind::Histogram,
            Stat::InFlight { .. } | Stat::DeploymentGauge { .. } | Stat::NamedGauge(_) => {
                StatKind::Gauge
            }
            _ => StatKind::Counter,
        }
    }

    /// Its Envoy stat name (`llm_gateway.group.….name`).
    pub fn name(&self, config: &crate::config::Config) -> String {
        let l = |deployment: usize, key: &str| Labels::of(config, deployment, key);
        match *self {
            Stat::Requests {
                deployment,
                key,
                status,
            } => l(deployment, key).requests(status),
            Stat::PromptTokens { deployment, key } => l(deployment, key).prompt_tokens(),
            Stat::CompletionTokens { deployment, key } => l(deployment, key).completion_tokens(),
            Stat::Duration { deployment } => l(deployment, "").duration(),
            Stat::TimeToFirstToken { deployment } => l(deployment, "").time_to_first_token(),
            Stat::InFlight { deployment } => l(deployment, "").in_flight(),
            Stat::Cooldowns { deployment } => l(deployment, "").cooldowns(),
            Stat::Failovers { deployment } => l(deployment, "").failovers(),
            Stat::Fallbacks { deployment } => l(deployment, "").fallbacks(),
            Stat::DeploymentGauge { deployment, name } => l(deployment, "").gauge(name),
            Stat::Named(name) | Stat::NamedGauge(name) => name.to_string(),
        }
    }
}

/// The labels `stats_tags` reads out of a stat name, by segment name (see the shipped Envoy
/// configs): the tag each becomes in Prometheus.
const TAGS: [(&str, &str); 7] = [
    ("group", "model_group"),
    ("deployment", "deployment"),
    ("key", "key_alias"),
    ("status", "status_class"),
    ("origin", "origin"),
    ("type", "error_type"),
    ("reason", "reason"),
];

/// A stat name split as `stats_tags` splits it: the name with every `label.value.` segment
/// taken out (`llm_gateway.requests`, `llm_gateway.keys.refusals`) and the labels, in order.
/// Names that are not the gateway's come back whole, without labels.
pub fn split_labels(name: &str) -> (String, Vec<(&'static str, &str)>) {
    let Some(rest) = name.strip_prefix("llm_gateway.") else {
        return (name.to_string(), Vec::new());
    };
    let mut family = String::from("llm_gateway");
    let mut labels = Vec::new();
    let mut parts = rest.split('.');
    while let Some(part) = parts.next() {
        let tag = TAGS.iter().find(|(segment, _)| *segment == part);
        // A label segment has a value and is not the name's last part.
        let mut ahead = parts.clone();
        match (tag, ahead.next(), ahead.next()) {
            (Some((_, tag)), Some(value), Some(_)) => {
                labels.push((*tag, value));
                parts.next();
            }
            _ => {
                family.push('.');
                family.push_str(part);
            }
        }
    }
    (family, labels)
}

/// Answers served from the response cache, by model group.
pub fn cache_hits(group_label: &str) -> String {
    format!("llm_gateway.group.{group_label}.cache_hits")
}

/// Errors answered, by model group (`none` before one is known), origin (`gateway`: the
/// gateway refused or gave up itself; `upstream`: a deployment's own error) and type.
pub fn errors(group: &str, origin: &str, error_type: &str) -> String {
    format!(
        "llm_gateway.group.{}.origin.{origin}.type.{}.errors",
        label(group),
        label(error_type)
    )
}

/// Requests a key's own limits refused, by key alias (`key_label`) and reason: `rate_limit`
/// (`rpm_limit`/`tpm_limit`), `budget`, `parallel` (`max_parallel_requests`).
pub fn key_refusals(key_label: &str, reason: &str) -> String {
    format!("llm_gateway.keys.key.{key_label}.reason.{reason}.refusals")
}

/// Calls to the rate-limit service that got no usable answer, by reason: `unreachable`
/// (refused, reset, over its timeout), `error` (a gRPC or HTTP error), `malformed`.
pub fn rate_limit_service_failures(reason: &str) -> String {
    format!("llm_gateway.rate_limit_service.reason.{reason}.failures")
}

/// `OVER_LIMIT` answers for a deployment: the fleet had spent its rpm this minute.
pub fn fleet_over_limit(config: &crate::config::Config, deployment: usize) -> String {
    Labels::of(config, deployment, "").fleet_over_limit()
}

/// The share of a key's budget spent (this period), in thousandths, by key alias.
pub fn key_budget_used(key_label: &str) -> String {
    format!("llm_gateway.keys.key.{key_label}.budget_used_permille")
}

/// The timer-refreshed gauges of a deployment (`Stat::DeploymentGauge` names).
pub const DEPLOYMENT_GAUGES: [&str; 5] =
    ["cooling", "rpm_used", "tpm_used", "rpm_limit", "tpm_limit"];

/// The most labels any family has (`requests`: model_group, deployment, key_alias,
/// status_class): a shell may keep a family's label values in a fixed array of this size.
pub const MAX_LABELS: usize = 4;

/// One family of the gateway's stats as a host with labelled metrics sees it: the name
/// `split_labels` leaves, its label names in order, and how its values combine.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub labels: Vec<&'static str>,
    pub kind: StatKind,
}

/// Every family the core's stat names fall into, built from the same constructors and split
/// the same way: what the native module must define before any request (Envoy freezes metric
/// creation once the filter config is made). A stat outside these is a bug the tests catch.
pub fn families() -> Vec<Family> {
    let l = Labels {
        group: "g".into(),
        deployment: "d".into(),
        key: "k".into(),
    };
    let mut named = vec![
        (l.requests(200), StatKind::Counter),
        (l.prompt_tokens(), StatKind::Counter),
        (l.completion_tokens(), StatKind::Counter),
        (l.duration(), StatKind::Histogram),
        (l.time_to_first_token(), StatKind::Histogram),
        (l.in_flight(), StatKind::Gauge),
        (l.cooldowns(), StatKind::Counter),
        (l.failovers(), StatKind::Counter),
        (l.fallbacks(), StatKind::Counter),
        (cache_hits("g"), StatKind::Counter),
        (errors("g", "gateway", "t"), StatKind::Counter),
        (key_refusals("k", "budget"), StatKind::Counter),
        (key_budget_used("k"), StatKind::Gauge),
        (key_spend("k"), StatKind::Counter),
        (rate_limit_service_failures("r"), StatKind::Counter),
        (l.fleet_over_limit(), StatKind::Counter),
    ];
    named.extend(
        DEPLOYMENT_GAUGES
            .iter()
            .map(|name| (l.gauge(name), StatKind::Gauge)),
    );
    named
        .into_iter()
        .map(|(name, kind)| {
            let (family, labels) = split_labels(&name);
            Family {
                name: family,
                labels: labels.into_iter().map(|(tag, _)| tag).collect(),
                kind,
            }
        })
        .collect()
}

/// What a key spent, in millionths of a USD (counters are integers), by key alias.
pub fn key_spend(key_label: &str) -> String {
    format!("llm_gateway.keys.key.{key_label}.spend_micro_usd")
}

/// The access-log record of one routed request: a JSON object that the filter sets as the one
/// filter-state value `wasm.llm_gateway` (read with `%FILTER_STATE(wasm.llm_gateway:PLAIN)%`,
/// as Higress's `wasm.ai_log`). One value, not one per field: each value set costs Envoy
/// ~5k instructions, six of them were 12 % of the gateway's cost per request.
/// Tokens and cost appear once the answer's usage is known.
pub fn access_record(
    config: &crate::config::Config,
    deployment: usize,
    key_label: &str,
    requested_model: Option<&str>,
    usage: Option<crate::translate::text::Usage>,
) -> Vec<u8> {
    use crate::json::{write, write_str};
    let d = config.deployment(deployment);
    let group = d
        .and_then(|d| config.groups.get(d.group))
        .map_or("", |g| g.header_name.as_str());
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"model_group\":");
    write_str(&mut out, group);
    out.extend_from_slice(b",\"deployment\":");
    write_str(&mut out, d.map_or("", |d| d.header_id.as_str()));
    out.extend_from_slice(b",\"key_alias\":");
    write_str(
        &mut out,
        if key_label.is_empty() {
            "none"
        } else {
            key_label
        },
    );
    if let Some(model) = requested_model {
        out.extend_from_slice(b",\"requested_model\":");
        write_str(&mut out, model);
    }
    if let Some(u) = usage {
        out.extend_from_slice(b",\"prompt_tokens\":");
        write(&mut out, &u.prompt_tokens);
        out.extend_from_slice(b",\"completion_tokens\":");
        write(&mut out, &u.completion_tokens);
        if let Some(d) = d {
            out.extend_from_slice(b",\"cost\":");
            write(&mut out, &d.cost(u));
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cannot_break_stat_names() {
        assert_eq!(label("meta-llama/Llama-3.1 8B"), "meta-llama_Llama-3_1_8B");
        assert_eq!(label("a.b\r\nc"), "a_b__c");
        assert_eq!(label(""), "none");
        assert_eq!(label("é"), "_");
        assert_eq!(label(&"x".repeat(200)).len(), 64);
    }

    #[test]
    fn names_in_fixed_label_order() {
        let l = Labels {
            group: "chat".into(),
            deployment: "chat_0".into(),
            key: "none".into(),
        };
        assert_eq!(
            l.requests(503),
            "llm_gateway.group.chat.deployment.chat_0.key.none.status.5xx.requests"
        );
        assert_eq!(
            l.prompt_tokens(),
            "llm_gateway.group.chat.deployment.chat_0.key.none.prompt_tokens"
        );
        assert_eq!(
            l.time_to_first_token(),
            "llm_gateway.group.chat.deployment.chat_0.ttft_ms"
        );
        assert_eq!(
            errors("", "gateway", "rate_limit_error"),
            "llm_gateway.group.none.origin.gateway.type.rate_limit_error.errors"
        );
        assert_eq!(
            l.cooldowns(),
            "llm_gateway.group.chat.deployment.chat_0.cooldowns"
        );
        assert_eq!(
            key_refusals("team_a", "budget"),
            "llm_gateway.keys.key.team_a.reason.budget.refusals"
        );
    }

    #[test]
    fn labels_split_as_stats_tags_split_them() {
        assert_eq!(
            split_labels("llm_gateway.group.chat.deployment.chat_0.key.none.status.5xx.requests"),
            (
                "llm_gateway.requests".to_string(),
                vec![
                    ("model_group", "chat"),
                    ("deployment", "chat_0"),
                    ("key_alias", "none"),
                    ("status_class", "5xx")
                ]
            )
        );
        assert_eq!(
            split_labels("llm_gateway.keys.key.team_a.reason.budget.refusals"),
            (
                "llm_gateway.keys.refusals".to_string(),
                vec![("key_alias", "team_a"), ("reason", "budget")]
            )
        );
        assert_eq!(
            split_labels(&errors("chat", "upstream", "rate_limit_error")),
            (
                "llm_gateway.errors".to_string(),
                vec![
                    ("model_group", "chat"),
                    ("origin", "upstream"),
                    ("error_type", "rate_limit_error")
                ]
            )
        );
        // A deployment named like a label segment stays a value.
        assert_eq!(
            split_labels("llm_gateway.group.key.deployment.status.cooldowns").1,
            vec![("model_group", "key"), ("deployment", "status")]
        );
        assert_eq!(
            split_labels("other.name"),
            ("other.name".to_string(), vec![])
        );
    }

    #[test]
    fn every_stat_falls_into_a_defined_family_of_its_kind() {
        let (config, _) = crate::config::parse(
            br#"{"model_list": [{"model_name": "chat", "litellm_params": {
                "model": "openai/m", "api_base": "http://127.0.0.1:1"}}]}"#,
            &|_| None,
            0,
        )
        .unwrap();
        let families = families();
        let mut stats = vec![
            Stat::Requests {
                deployment: 0,
                key: "team",
                status: 429,
            },
            Stat::PromptTokens {
                deployment: 0,
                key: "",
            },
            Stat::CompletionTokens {
                deployment: 0,
                key: "",
            },
            Stat::Duration { deployment: 0 },
            Stat::TimeToFirstToken { deployment: 0 },
            Stat::InFlight { deployment: 0 },
            Stat::Cooldowns { deployment: 0 },
            Stat::Failovers { deployment: 0 },
            Stat::Fallbacks { deployment: 0 },
        ];
        stats.extend(DEPLOYMENT_GAUGES.iter().map(|name| Stat::DeploymentGauge {
            deployment: 0,
            name,
        }));
        let named = [
            cache_hits("chat"),
            errors("", "gateway", "auth_error"),
            key_refusals("team", "parallel"),
            key_spend("team"),
        ];
        stats.extend(named.iter().map(|n| Stat::Named(n)));
        let gauge = key_budget_used("team");
        stats.push(Stat::NamedGauge(&gauge));
        for stat in stats {
            let name = stat.name(&config);
            let (family, labels) = split_labels(&name);
            let found = families.iter().find(|f| f.name == family);
            let found = found.unwrap_or_else(|| panic!("{family} is not defined"));
            assert_eq!(found.kind, stat.kind(), "{family}");
            let names: Vec<&str> = labels.iter().map(|(tag, _)| *tag).collect();
            assert_eq!(found.labels, names, "{family}");
        }
        assert!(families.iter().all(|f| f.labels.len() <= MAX_LABELS));
        let mut names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), families.len(), "each family once");
    }

    #[test]
    fn access_record_is_one_json_object() {
        let (config, _) = crate::config::parse(
            br#"{"model_list": [{"model_name": "chat \"x\"", "litellm_params": {
                "model": "openai/m", "api_base": "http://127.0.0.1:1"},
                "model_info": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}}]}"#,
            &|_| None,
            0,
        )
        .unwrap();
        let routed: serde_json::Value =
            serde_json::from_slice(&access_record(&config, 0, "", None, None)).unwrap();
        assert_eq!(
            routed,
            serde_json::json!({"model_group": config.groups[0].header_name,
                "deployment": config.deployments[0].header_id, "key_alias": "none"})
        );
        let usage = crate::translate::text::Usage::new(5, 6);
        let done: serde_json::Value = serde_json::from_slice(&access_record(
            &config,
            0,
            "team_a",
            Some("asked"),
            Some(usage),
        ))
        .unwrap();
        assert_eq!(done["key_alias"], "team_a");
        assert_eq!(
            done["requested_model"], "asked",
            "the name a wildcard group served"
        );
        assert_eq!(done["prompt_tokens"], 5);
        assert_eq!(done["completion_tokens"], 6);
        assert!((done["cost"].as_f64().unwrap() - 0.017).abs() < 1e-12);
        // A deployment index from nowhere still makes a record, not a panic.
        let nowhere: serde_json::Value =
            serde_json::from_slice(&access_record(&config, 99, "k", None, Some(usage))).unwrap();
        assert_eq!(nowhere["model_group"], "");
        assert!(nowhere.get("cost").is_none());
    }
}
