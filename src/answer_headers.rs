//! The headers a routed answer carries: the gateway's own `x-llm-model-group` and
//! `x-llm-deployment` (the contract), and LiteLLM's `x-litellm-*`, which LiteLLM's clients,
//! dashboards and scripts read (`litellm/proxy/common_request_processing.py`'s
//! `get_custom_headers`). Decided here; the shell only sets them.

use crate::config::{Config, Deployment};
use std::borrow::Cow;

/// The gateway's version, reported where LiteLLM reports its own.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What is known of an answer when its headers go out.
#[derive(Debug, Clone, Copy)]
pub struct AnswerFacts<'a> {
    pub deployment: &'a Deployment,
    /// Attempts before the one answering (retries and fallbacks).
    pub attempted_retries: u32,
    /// Fallback groups moved to (LiteLLM's `x-litellm-attempted-fallbacks`; sent when > 0).
    pub attempted_fallbacks: u32,
    /// The retries this request was allowed.
    pub max_retries: u32,
    pub timeout_ms: u64,
    /// LiteLLM shows the deployment's `api_base`; here only the master key may see it
    /// (as on `/v1/model/info`).
    pub show_api_base: bool,
    /// Envoy's `x-request-id` of the request: LiteLLM's call id.
    pub call_id: Option<&'a str>,
    /// A key with a budget: its spend when the request came in (LiteLLM's key spend).
    pub key_spend: Option<f64>,
}

/// Whether an answer's `x-envoy-attempt-count` is worth reading (a host call): Envoy may have
/// retried on the deployment (the request allowed `envoy_retries`) and the answer reports
/// retries (`x-litellm-attempted-retries`, when LiteLLM's headers are on).
pub fn reads_attempt_count(config: &Config, envoy_retries: u32) -> bool {
    envoy_retries > 0 && config.litellm_response_headers
}

/// How a request came to its answering attempt, as the shell counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptHistory {
    /// Deployments tried through the filter's failover, the answering one included (0:
    /// no failover was possible).
    pub tried: usize,
    /// The group chain position answering, with failover (else `fallback_position`).
    pub chain_position: Option<usize>,
    /// Groups passed over before the request was sent (`mock_testing_fallbacks`).
    pub fallback_position: u32,
    /// Retries Envoy made on the deployment before this answer.
    pub envoy_retries: u32,
    /// Retries LiteLLM's `mock_testing_rate_limit_error` pretends were made.
    pub mock_retries: u32,
}

impl AttemptHistory {
    /// LiteLLM's `x-litellm-attempted-retries`: every attempt before the answering one —
    /// Envoy's same-deployment retries, the filter's failovers, mocked ones.
    pub fn attempted_retries(&self) -> u32 {
        let failovers = u32::try_from(self.tried.saturating_sub(1)).unwrap_or(u32::MAX);
        self.mock_retries
            .saturating_add(self.envoy_retries)
            .saturating_add(failovers)
    }

    /// LiteLLM's `x-litellm-attempted-fallbacks`: fallback groups moved to.
    pub fn attempted_fallbacks(&self) -> u32 {
        self.chain_position.map_or(self.fallback_position, |p| {
            u32::try_from(p).unwrap_or(u32::MAX)
        })
    }
}

/// The headers for an answer, in the order they are set.
pub fn answer_headers<'a>(
    config: &'a Config,
    facts: &AnswerFacts<'a>,
) -> Vec<(&'static str, Cow<'a, str>)> {
    let d = facts.deployment;
    let group = config
        .groups
        .get(d.group)
        .map_or("", |g| g.header_name.as_str());
    let mut out: Vec<(&'static str, Cow<'a, str>)> = Vec::with_capacity(10);
    out.push(("x-llm-model-group", Cow::Borrowed(group)));
    out.push(("x-llm-deployment", Cow::Borrowed(&d.header_id)));
    if !config.litellm_response_headers {
        return out;
    }
    out.push(("x-litellm-model-group", Cow::Borrowed(group)));
    out.push(("x-litellm-model-id", Cow::Borrowed(&d.header_id)));
    if facts.show_api_base {
        out.push((
            "x-litellm-model-api-base",
            Cow::Borrowed(&d.api_base_header),
        ));
    }
    if let Some(id) = facts.call_id {
        out.push(("x-litellm-call-id", Cow::Borrowed(id)));
    }
    out.push(("x-litellm-version", Cow::Borrowed(VERSION)));
    out.push((
        "x-litellm-attempted-retries",
        Cow::Owned(count(facts.attempted_retries)),
    ));
    out.push((
        "x-litellm-max-retries",
        Cow::Owned(count(facts.max_retries)),
    ));
    if facts.attempted_fallbacks > 0 {
        out.push((
            "x-litellm-attempted-fallbacks",
            Cow::Owned(count(facts.attempted_fallbacks)),
        ));
    }
    out.push(("x-litellm-timeout", Cow::Owned(seconds(facts.timeout_ms))));
    if let Some(spend) = facts.key_spend {
        out.push(("x-litellm-key-spend", Cow::Owned(spend.to_string())));
    }
    out
}

/// `x-litellm-response-cost` for an answer whose usage is known before its headers leave
/// (a whole JSON answer), at the deployment's `model_info` prices.
pub fn cost_header(
    config: &Config,
    deployment: &Deployment,
    usage: crate::translate::text::Usage,
) -> Option<(&'static str, String)> {
    config.litellm_response_headers.then(|| {
        (
            "x-litellm-response-cost",
            deployment.cost(usage).to_string(),
        )
    })
}

/// Milliseconds as LiteLLM writes a timeout: seconds, as a Python float (`600.0`, `0.5`,
/// `1.25`). Written from the integers (what `f64`'s shortest form of `ms / 1000` prints,
/// without float formatting's ~2k instructions on every answer).
pub fn seconds(ms: u64) -> String {
    let mut digits = [0u8; 20];
    let mut out = String::with_capacity(24);
    out.push_str(crate::json::decimal(ms / 1000, &mut digits));
    out.push('.');
    let millis = ms % 1000;
    let fraction = [millis / 100, millis / 10 % 10, millis % 10];
    let shown = match fraction {
        [_, 0, 0] => 1,
        [_, _, 0] => 2,
        _ => 3,
    };
    for d in fraction.iter().take(shown) {
        out.push(char::from(b'0' + *d as u8));
    }
    out
}

/// A small count as header text (no formatting machinery).
fn count(n: u32) -> String {
    let mut digits = [0u8; 20];
    crate::json::decimal(u64::from(n), &mut digits).to_string()
}

/// A request's `x-litellm-timeout` header (seconds, as LiteLLM reads it) in milliseconds.
pub fn request_timeout_ms(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| (t * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_envoy_retries_failovers_and_mocks() {
        let h = AttemptHistory {
            tried: 3,
            chain_position: Some(1),
            fallback_position: 0,
            envoy_retries: 2,
            mock_retries: 1,
        };
        assert_eq!((h.attempted_retries(), h.attempted_fallbacks()), (5, 1));
        let first = AttemptHistory {
            fallback_position: 1,
            ..AttemptHistory::default()
        };
        assert_eq!(
            (first.attempted_retries(), first.attempted_fallbacks()),
            (0, 1)
        );
    }
    use crate::config::parse;

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"model_list":[{{"model_name":"g","litellm_params":{{"model":"openai/m","api_base":"http://h:1/v1"}},
               "model_info":{{"id":"dep-1"}}}}]{extra}}}"#
        );
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    #[test]
    fn litellm_headers_follow_the_gateway_ones_and_can_be_turned_off() {
        let c = config("");
        let facts = AnswerFacts {
            deployment: &c.deployments[0],
            attempted_retries: 1,
            attempted_fallbacks: 1,
            max_retries: 2,
            timeout_ms: 600_000,
            show_api_base: false,
            call_id: Some("req-1"),
            key_spend: Some(0.25),
        };
        let h = answer_headers(&c, &facts);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_ref());
        assert_eq!(get("x-llm-model-group"), Some("g"));
        assert_eq!(get("x-litellm-model-id"), Some("dep-1"));
        assert_eq!(get("x-litellm-attempted-retries"), Some("1"));
        assert_eq!(get("x-litellm-max-retries"), Some("2"));
        assert_eq!(get("x-litellm-attempted-fallbacks"), Some("1"));
        assert_eq!(get("x-litellm-timeout"), Some("600.0"));
        assert_eq!(get("x-litellm-call-id"), Some("req-1"));
        assert_eq!(get("x-litellm-key-spend"), Some("0.25"));
        assert_eq!(get("x-litellm-version"), Some(VERSION));
        assert_eq!(
            get("x-litellm-model-api-base"),
            None,
            "only the master key sees it"
        );
        let master = AnswerFacts {
            show_api_base: true,
            ..facts
        };
        let h = answer_headers(&c, &master);
        assert!(h
            .iter()
            .any(|(k, v)| *k == "x-litellm-model-api-base" && v == "http://h:1/v1"));
        let off = config(r#","general_settings":{"litellm_response_headers":false}"#);
        let facts = AnswerFacts {
            deployment: &off.deployments[0],
            ..facts
        };
        let names: Vec<&str> = answer_headers(&off, &facts)
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(names, ["x-llm-model-group", "x-llm-deployment"]);
        assert_eq!(request_timeout_ms("1.5"), Some(1500));
        assert_eq!(request_timeout_ms("-1"), None);
        assert_eq!(seconds(500), "0.5");
    }

    #[test]
    fn seconds_are_written_as_the_float_would_print() {
        let float = |ms: u64| {
            let s = ms as f64 / 1000.0;
            if s.fract() == 0.0 {
                format!("{s:.1}")
            } else {
                s.to_string()
            }
        };
        let samples = (0..5000).chain([600_000, 3_600_001, 86_400_120, u64::from(u32::MAX)]);
        for ms in samples {
            assert_eq!(seconds(ms), float(ms), "{ms} ms");
        }
        assert_eq!(count(0), "0");
        assert_eq!(count(12), "12");
    }
}
