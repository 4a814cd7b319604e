//! The upstream's answer: its head (failover, the answer's headers, how to read the body),
//! its body (translated, observed, cached), and the stream's end (settled and recorded once).

use super::{Attempt, Flow, LogLevel, Routed, Session, State, Stream, Timing};
use crate::access::{self, KeyCharge};
use crate::answer_headers::{answer_headers, cost_header, AnswerFacts, AttemptHistory};
use crate::config::Config;
use crate::gateway;
use crate::host::Host;
use crate::metrics::Stat;
use crate::router;
use crate::translate::{BodyMode, BodyOutput};

impl Session {
    pub fn on_response_headers(
        &mut self,
        config: Option<&Config>,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        end_of_stream: bool,
    ) -> Flow {
        super::fault::check(&mut self.panic_at, super::fault::PanicAt::ResponseHeaders);
        let (Some(config), State::Routed(routed)) = (config, &mut self.state) else {
            return Flow::Continue;
        };
        // Each header read may be a host call: only what is wanted is asked for (a
        // translator reading the content type; Envoy's attempt count where it may have
        // retried and the answer reports it).
        let wants_attempts = crate::answer_headers::reads_attempt_count(config, routed.max_retries);
        let wants_type = routed.current.response.reads_content_type();
        let mut names = [":status", "", ""];
        let mut wanted = 1;
        for (name, wants) in [
            ("content-type", wants_type),
            ("x-envoy-attempt-count", wants_attempts),
        ] {
            if let (true, Some(slot)) = (wants, names.get_mut(wanted)) {
                *slot = name;
                wanted += 1;
            }
        }
        let mut values: [Option<String>; 3] = [None, None, None];
        let names = names.get(..wanted).unwrap_or_default();
        stream.response_headers(names, values.get_mut(..wanted).unwrap_or_default());
        let value_of = |name: &str| -> Option<&str> {
            let at = names.iter().position(|n| *n == name)?;
            values.get(at)?.as_deref()
        };
        if wants_attempts {
            routed.envoy_retries_taken = value_of("x-envoy-attempt-count")
                .and_then(|v| v.parse::<u32>().ok())
                .map_or(0, |n| n.saturating_sub(1));
        }
        let status = value_of(":status")
            .and_then(|v| v.parse::<u16>().ok())
            .unwrap_or(502);
        let content_type = value_of("content-type").map(str::to_string);
        routed.current.status = Some(status);
        routed.current.first_byte_ms = Some(host.now_unix_ms());
        routed.response_complete = end_of_stream;
        if gateway::is_deployment_failure(status) && routed.replay.is_some() {
            settle(config, host, stream, &mut routed.current);
            let failed = routed.current.deployment;
            if start_failover(config, host, stream, routed, status) {
                count_failover(config, stream, failed, routed);
                // Hold this failed answer; the failover's answer replaces it.
                return Flow::Pause;
            }
        }
        let call_id = self.client.request_id.as_deref();
        if let Some(facts) = answer_facts(config, routed.current.deployment, routed, call_id) {
            for (name, value) in answer_headers(config, &facts) {
                stream.set_response_header(name, Some(&value));
            }
        }
        routed.mode = routed
            .current
            .response
            .on_headers(status, content_type.as_deref());
        if routed.cache.is_some() {
            stream.set_response_header("x-llm-cache", Some("miss"));
            if status != 200 {
                routed.cache = None;
            }
        }
        match &routed.mode {
            BodyMode::PassThrough | BodyMode::Observe => Flow::Continue,
            BodyMode::Stream {
                content_type: stream_type,
            } => {
                stream.set_response_header("content-length", None);
                stream.set_response_header("content-encoding", None);
                if content_type.as_deref() != Some(*stream_type) {
                    stream.set_response_header("content-type", Some(stream_type));
                }
                Flow::Continue
            }
            // A response without a body has no buffer to replace: it passes as it is.
            BodyMode::Buffer if end_of_stream => Flow::Continue,
            BodyMode::Buffer => Flow::Pause,
        }
    }

    pub fn on_response_body(
        &mut self,
        config: Option<&Config>,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        super::fault::check(&mut self.panic_at, super::fault::PanicAt::ResponseBody);
        let State::Routed(routed) = &mut self.state else {
            return Flow::Continue;
        };
        if routed.failover.is_some() {
            // The failed attempt's body waits (and is dropped) while the failover runs.
            return Flow::Pause;
        }
        if routed.discarding {
            stream.replace_response_body(body_size, &[]);
            return Flow::Continue;
        }
        if body_size > 0 && routed.first_body_ms.is_none() {
            routed.first_body_ms = Some(host.now_unix_ms());
        }
        let cache_limit = config
            .and_then(|c| c.cache)
            .map_or(0, |c| c.max_entry_bytes) as usize;
        let response = &mut routed.current.response;
        let flow = match routed.mode {
            BodyMode::PassThrough => Flow::Continue,
            BodyMode::Observe => {
                if let Some(chunk) = stream.response_body(body_size) {
                    response.on_body(&chunk, end_of_stream);
                    keep_for_cache(cache_limit, &mut routed.cache, &chunk);
                } else if end_of_stream {
                    response.on_body(&[], true);
                }
                Flow::Continue
            }
            BodyMode::Stream { .. } => {
                let chunk = stream.response_body(body_size).unwrap_or_default();
                match response.on_body(&chunk, end_of_stream) {
                    BodyOutput::Unchanged => {}
                    BodyOutput::Replace(out) | BodyOutput::Complete { body: out, .. } => {
                        stream.replace_response_body(body_size, &out);
                    }
                }
                Flow::Continue
            }
            BodyMode::Buffer => {
                if body_size > super::MAX_BUFFERED_RESPONSE_BYTES {
                    let out = response.on_overflow();
                    apply_complete(stream, out, body_size, routed.current.status);
                    routed.discarding = !end_of_stream;
                    return Flow::Continue;
                }
                if !end_of_stream {
                    return Flow::Pause;
                }
                let body = stream.response_body(body_size).unwrap_or_default();
                let out = response.on_body(&body, true);
                match &out {
                    BodyOutput::Complete {
                        status: 200, body, ..
                    } => keep_for_cache(cache_limit, &mut routed.cache, body),
                    BodyOutput::Unchanged if routed.current.status == Some(200) => {
                        keep_for_cache(cache_limit, &mut routed.cache, &body)
                    }
                    _ => routed.cache = None,
                }
                apply_complete(stream, out, body_size, routed.current.status);
                // The headers waited for this whole answer: its cost can go in them.
                if let (Some(config), Some(200)) = (config, routed.current.status) {
                    let cost = config
                        .deployment(routed.current.deployment)
                        .zip(response.usage())
                        .and_then(|(d, usage)| cost_header(config, d, usage));
                    if let Some((name, value)) = cost {
                        stream.set_response_header(name, Some(&value));
                    }
                }
                Flow::Continue
            }
        };
        if end_of_stream {
            routed.response_complete = true;
            if let Some(config) = config {
                if let (Some(settings), Some((plan, Some(answer)))) =
                    (&config.cache, routed.cache.take())
                {
                    crate::cache::put(host, settings, &plan, &answer);
                }
            }
        }
        flow
    }

    /// The stream is over (answered, failed, or abandoned): settle what is not yet settled.
    pub fn on_log(
        &mut self,
        config: Option<&Config>,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
    ) {
        let Some(config) = config else {
            return;
        };
        if let State::FanOut(fan) = &mut self.state {
            fan.abandon(config, host, stream);
            return;
        }
        if let State::Admitting(admitting) = &self.state {
            // The client left while the rate-limit service was asked: nothing was sent.
            admitting.abandon(config, host);
            return;
        }
        if let State::AdmittingFanOut(waiting) = &self.state {
            waiting.abandon(config, host);
            return;
        }
        let State::Routed(routed) = &mut self.state else {
            return;
        };
        // An upstream that breaks off after its headers leaves a 2xx status behind; Envoy's
        // response details tell, and it counts as the deployment's failure.
        let broke_off = !routed.response_complete
            && stream
                .response_code_details()
                .is_some_and(|d| gateway::is_reset_after_headers(&d));
        if broke_off && !routed.failover_answered {
            routed.current.status = Some(502);
        }
        settle(config, host, stream, &mut routed.current);
        if let Some((_, attempt)) = routed.failover.as_mut() {
            settle(config, host, stream, attempt);
        }
        settle_key(
            config,
            host,
            stream,
            &mut routed.key_charge,
            &routed.current,
            &routed.key_label,
        );
        if !routed.failover_answered {
            // The upstream's own answer went to the client (no failover answered). Envoy's
            // access loggers run after this event and see the record.
            expose_record(config, stream, &routed.current, &routed.key_label);
            let status = routed.current.status.unwrap_or(0);
            let timing = Timing {
                started_ms: self.started_ms,
                first_body_ms: routed.first_body_ms,
                now_ms: host.now_unix_ms(),
            };
            record_answer(
                config,
                stream,
                &routed.key_label,
                &routed.current,
                status,
                timing,
            );
        }
        if let Some(deployment) = routed.in_flight.take() {
            stream.add(Stat::InFlight { deployment }, -1);
        }
    }
}

/// What the answer's headers need to know (see `answer_headers`).
pub(super) fn answer_facts<'a>(
    config: &'a Config,
    deployment: usize,
    routed: &Routed,
    call_id: Option<&'a str>,
) -> Option<AnswerFacts<'a>> {
    let history = AttemptHistory {
        tried: routed.replay.as_ref().map_or(0, |r| r.tried.len()),
        chain_position: routed.replay.as_ref().map(|r| r.position),
        fallback_position: routed.fallback_position,
        envoy_retries: routed.envoy_retries_taken,
        mock_retries: routed.mock_retries,
    };
    Some(AnswerFacts {
        deployment: config.deployment(deployment)?,
        attempted_retries: history.attempted_retries(),
        attempted_fallbacks: history.attempted_fallbacks(),
        max_retries: routed.max_retries,
        timeout_ms: routed.timeout_ms,
        show_api_base: routed.show_api_base,
        call_id,
        key_spend: routed.key_charge.as_ref().and_then(|c| c.spend_before),
    })
}

/// Settle an attempt on the router once: failure, tokens, latency.
pub(super) fn settle(
    config: &Config,
    host: &mut dyn Host,
    stats: &mut dyn Stream,
    attempt: &mut Attempt,
) {
    if attempt.settled {
        return;
    }
    attempt.settled = true;
    let reservation = &attempt.reservation;
    let failure = attempt
        .status
        .filter(|&s| gateway::is_deployment_failure(s));
    let latency = attempt
        .first_byte_ms
        .map(|t| t.saturating_sub(reservation.started_ms));
    let began_cooling = router::settle(
        config,
        host,
        reservation,
        failure,
        attempt.response.usage().map(|u| u.total_tokens),
        latency,
    );
    if began_cooling {
        let deployment = reservation.deployment;
        stats.add(Stat::Cooldowns { deployment }, 1);
    }
}

/// Settle the key's charge with the attempt that answered.
pub(super) fn settle_key(
    config: &Config,
    host: &mut dyn Host,
    stats: &mut dyn Stream,
    charge: &mut Option<KeyCharge>,
    attempt: &Attempt,
    key_label: &str,
) {
    let Some(charge) = charge.take() else {
        return;
    };
    let settled = access::settle(
        host,
        &charge,
        attempt.response.usage(),
        config.deployment(attempt.deployment),
    );
    if let Some(u) = attempt.response.usage() {
        let fleet_tokens = charge.fleet_tokens;
        crate::fleet::tokens::report_key(config, host, &charge.grant, fleet_tokens, u.total_tokens);
    }
    crate::fleet::budget::report(
        config,
        host,
        &charge.grant,
        charge.fleet_budget_units,
        settled.cost,
    );
    let micro_usd = (settled.cost * 1e6).round() as i64;
    if micro_usd > 0 {
        stats.add(
            Stat::Named(&crate::metrics::key_spend(key_label)),
            micro_usd,
        );
    }
    if let Some(used) = settled.budget_used {
        let name = crate::metrics::key_budget_used(key_label);
        stats.set(Stat::NamedGauge(&name), (used * 1000.0).round() as u64);
    }
}

/// Stats for the answer the client got: requests by status class, tokens, duration, TTFT,
/// and errors by type.
pub(super) fn record_answer(
    config: &Config,
    stats: &mut dyn Stream,
    key_label: &str,
    attempt: &Attempt,
    status: u16,
    t: Timing,
) {
    let deployment = attempt.deployment;
    let key = if key_label.is_empty() {
        "none"
    } else {
        key_label
    };
    stats.add(
        Stat::Requests {
            deployment,
            key,
            status,
        },
        1,
    );
    if let Some(u) = attempt.response.usage() {
        // Added even at 0: the counter then exists for the key.
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let prompt = count(u.prompt_tokens);
        stats.add(Stat::PromptTokens { deployment, key }, prompt);
        let completion = count(u.completion_tokens);
        stats.add(Stat::CompletionTokens { deployment, key }, completion);
    }
    let duration = t.now_ms.saturating_sub(t.started_ms);
    stats.record(Stat::Duration { deployment }, duration);
    if let Some(first) = t.first_body_ms {
        let ttft = first.saturating_sub(t.started_ms);
        stats.record(Stat::TimeToFirstToken { deployment }, ttft);
    }
    if status >= 400 || status == 0 {
        let group = crate::metrics::Labels::of(config, deployment, key_label).group;
        let error_type = crate::error::upstream_error_type(status);
        let name = crate::metrics::errors(&group, "upstream", error_type);
        stats.add(Stat::Named(&name), 1);
    }
}

/// A failover from `failed` began: counted, and as a fallback when it left the group.
pub(super) fn count_failover(
    config: &Config,
    stats: &mut dyn Stream,
    failed: usize,
    routed: &Routed,
) {
    stats.add(Stat::Failovers { deployment: failed }, 1);
    let group_of = |i: usize| config.deployment(i).map(|d| d.group);
    let next = routed.failover.as_ref().map(|(_, a)| a.deployment);
    if next.is_some_and(|n| group_of(n) != group_of(failed)) {
        stats.add(Stat::Fallbacks { deployment: failed }, 1);
    }
}

/// Start the next failover attempt after a failure with `status`, if any is left; true
/// when a call is in flight.
pub(super) fn start_failover(
    config: &Config,
    host: &mut dyn Host,
    stream: &mut dyn Stream,
    routed: &mut Routed,
    status: u16,
) -> bool {
    let Some(replay) = routed.replay.as_mut() else {
        return false;
    };
    routed.failover = super::callout::next_call(config, host, stream, replay, status);
    routed.failover.is_some()
}

/// Keep a copy of the answer for the cache, giving up once it outgrows an entry.
fn keep_for_cache(
    limit: usize,
    cache: &mut Option<(crate::cache::Plan, Option<Vec<u8>>)>,
    chunk: &[u8],
) {
    if let Some((_, Some(buf))) = cache {
        if buf.len() + chunk.len() > limit {
            if let Some((_, kept)) = cache {
                *kept = None;
            }
        } else {
            buf.extend_from_slice(chunk);
        }
    }
}

/// The request's access-log record, set once per request.
pub(super) fn expose_record(
    config: &Config,
    stream: &mut dyn Stream,
    attempt: &Attempt,
    key_label: &str,
) {
    let record = crate::metrics::access_record(
        config,
        attempt.deployment,
        key_label,
        attempt.requested_model.as_deref(),
        attempt.response.usage(),
    );
    stream.set_access_record(&record);
}

/// Replace a held response: status, content type, length and body together.
/// `upstream_status` is what the upstream sent: a status already right is not written again.
/// (The content type is written: reading the upstream's to compare would cost more.)
fn apply_complete(
    stream: &mut dyn Stream,
    out: BodyOutput,
    replaced: usize,
    upstream_status: Option<u16>,
) {
    let mut digits = [0u8; 20];
    match out {
        BodyOutput::Complete {
            status,
            content_type,
            body,
        } => {
            if upstream_status != Some(status) {
                let status = crate::json::decimal(u64::from(status), &mut digits);
                stream.set_response_header(":status", Some(status));
            }
            stream.set_response_header("content-type", Some(content_type));
            let length = crate::json::decimal(body.len() as u64, &mut digits);
            stream.set_response_header("content-length", Some(length));
            stream.set_response_header("content-encoding", None);
            if !stream.replace_response_body(replaced, &body) {
                stream.log(LogLevel::Warn, "could not replace the response body");
            }
        }
        BodyOutput::Replace(body) => {
            stream.set_response_header("content-encoding", None);
            let length = crate::json::decimal(body.len() as u64, &mut digits);
            stream.set_response_header("content-length", Some(length));
            stream.replace_response_body(replaced, &body);
        }
        BodyOutput::Unchanged => {}
    }
}
