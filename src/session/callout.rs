//! Requests the session sends itself, as Envoy callouts: failover attempts, `/health` probes
//! (and a fan-out's arms, `fan_out.rs`), and what their answers do.

use super::response::{
    answer_facts, count_failover, expose_record, record_answer, settle, settle_key, start_failover,
};
use super::{attempt_of, Attempt, CalloutAnswer, Flow, LogLevel, Session, State, Stream, Timing};
use crate::answer_headers::answer_headers;
use crate::config::Config;
use crate::gateway::{self, Forward, Replay};
use crate::host::Host;
use crate::translate::{BodyMode, BodyOutput};

impl Session {
    /// Send every health probe through Envoy; answer once all are back.
    pub(super) fn probe(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        probes: Vec<gateway::Probe>,
    ) -> Flow {
        let mut pending = Vec::new();
        let mut results = Vec::new();
        for p in probes {
            let Some(d) = config.deployment(p.deployment) else {
                continue;
            };
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", "GET"),
                (":path", &p.path),
                (":authority", &d.authority),
            ];
            if let Some((name, value)) = &d.auth_header {
                headers.push((name, value.as_str()));
            }
            let timeout = gateway::HEALTH_PROBE_TIMEOUT_MS;
            match stream.call(&d.cluster, &headers, None, timeout) {
                Some(token) => pending.push((token, p.deployment)),
                None => results.push((
                    p.deployment,
                    Err(format!("no Envoy cluster `{}`", d.cluster)),
                )),
            }
        }
        if pending.is_empty() {
            let reply = gateway::health_report(config, host, &results);
            return self.reply(stream, reply);
        }
        self.state = State::Probing { pending, results };
        Flow::Pause
    }

    /// A callout answered: a probe's result, a fan-out arm's answer, or a failover attempt's
    /// (try the next one, or send its translated answer).
    pub fn on_callout(
        &mut self,
        config: Option<&Config>,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        token: u32,
        answer: CalloutAnswer<'_>,
    ) {
        let Some(config) = config else {
            return;
        };
        if let Some(flow) = self.on_admission_answer(config, host, stream, token, &answer) {
            if flow == Flow::Continue {
                stream.resume_request();
            }
            return;
        }
        if self
            .on_fan_out_admission_answer(config, host, stream, token, &answer)
            .is_some()
        {
            // A fan-out is answered by the gateway, never resumed.
            return;
        }
        if let State::FanOut(fan) = &mut self.state {
            if let Some(reply) = fan.answered(config, host, stream, token, answer) {
                // The fastest model answered: the others' answers will never be read.
                fan.abandon(config, host, stream);
                self.reply(stream, reply);
            }
            return;
        }
        if let State::Probing { pending, results } = &mut self.state {
            let Some(at) = pending.iter().position(|(t, _)| *t == token) else {
                return;
            };
            let (_, deployment) = pending.swap_remove(at);
            let result = answer
                .status
                .ok_or_else(|| "no answer (connection failed or timed out)".to_string());
            results.push((deployment, result));
            if pending.is_empty() {
                let results = std::mem::take(results);
                let reply = gateway::health_report(config, host, &results);
                self.reply(stream, reply);
            }
            return;
        }
        let State::Routed(routed) = &mut self.state else {
            return;
        };
        let Some((in_flight, mut attempt)) = routed.failover.take() else {
            return;
        };
        if in_flight != token {
            routed.failover = Some((in_flight, attempt));
            return;
        }
        let status = answer.status.unwrap_or(503);
        attempt.status = Some(status);
        attempt.first_byte_ms = Some(host.now_unix_ms());
        if gateway::is_deployment_failure(status) {
            settle(config, host, stream, &mut attempt);
            if start_failover(config, host, stream, routed, status) {
                count_failover(config, stream, attempt.deployment, routed);
                return;
            }
        }
        let (status, content_type, body) = call_answer(&mut attempt, status, answer);
        settle(config, host, stream, &mut attempt);
        settle_key(
            config,
            host,
            stream,
            &mut routed.key_charge,
            &attempt,
            &routed.key_label,
        );
        let now = host.now_unix_ms();
        let timing = Timing {
            started_ms: self.started_ms,
            first_body_ms: Some(*routed.first_body_ms.get_or_insert(now)),
            now_ms: now,
        };
        routed.failover_answered = true;
        expose_record(config, stream, &attempt, &routed.key_label);
        record_answer(config, stream, &routed.key_label, &attempt, status, timing);
        let mut headers: Vec<(&str, std::borrow::Cow<'_, str>)> =
            vec![("content-type", content_type.as_str().into())];
        let call_id = self.client.request_id.as_deref();
        if let Some(facts) = answer_facts(config, attempt.deployment, routed, call_id) {
            headers.extend(answer_headers(config, &facts));
        }
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        // The stream ends as a local reply: `on_log` will not see this request as routed.
        if let Some(deployment) = routed.in_flight.take() {
            stream.add(crate::metrics::Stat::InFlight { deployment }, -1);
        }
        let sent = stream.send_reply(status, &pairs, &body);
        self.state = State::Replied;
        if !sent {
            stream.log(LogLevel::Error, "could not send the failover answer");
        }
    }
}

/// The next attempt `replay` offers after a failure with `status`, sent as a callout;
/// attempts Envoy cannot send are settled as 503s and passed over.
pub(super) fn next_call(
    config: &Config,
    host: &mut dyn Host,
    stream: &mut dyn Stream,
    replay: &mut Replay,
    mut status: u16,
) -> Option<(u32, Attempt)> {
    while let Some(forward) = gateway::failover(config, host, replay, status) {
        match call(config, host, stream, forward) {
            Ok(call) => return Some(call),
            Err(()) => status = 503,
        }
    }
    None
}

/// Send `forward` to its deployment as a callout: its token and attempt, or (the attempt
/// settled as a 503) `Err` when Envoy could not send it.
pub(super) fn call(
    config: &Config,
    host: &mut dyn Host,
    stream: &mut dyn Stream,
    mut forward: Forward,
) -> Result<(u32, Attempt), ()> {
    let token = config.deployment(forward.deployment()).and_then(|d| {
        let mut digits = [0u8; 20];
        let timeout = crate::json::decimal(forward.timeout_ms, &mut digits);
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "POST"),
            (":path", &forward.path),
            (":authority", &d.authority),
            ("content-type", "application/json"),
            ("x-envoy-upstream-rq-timeout-ms", timeout),
        ];
        if let Some((name, value)) = &d.auth_header {
            headers.push((name, value.as_str()));
        }
        let body = forward.body.take().unwrap_or_default();
        stream.call(&d.cluster, &headers, Some(&body), forward.timeout_ms)
    });
    let mut attempt = attempt_of(
        forward.response,
        forward.reservation,
        forward.requested_model,
    );
    match token {
        Some(token) => {
            // Sent without the fleet's admission: its rpm is counted there after the fact.
            crate::fleet::tokens::report_unasked(config, host, attempt.deployment);
            Ok((token, attempt))
        }
        None => {
            attempt.status = Some(503);
            settle(config, host, stream, &mut attempt);
            Err(())
        }
    }
}

/// A callout's answer through its attempt's translator: status, content type and body as
/// the client gets them.
pub(super) fn call_answer(
    attempt: &mut Attempt,
    status: u16,
    answer: CalloutAnswer<'_>,
) -> (u16, String, Vec<u8>) {
    let content_type = answer.content_type;
    let mode = attempt.response.on_headers(status, content_type);
    match attempt.response.on_body(&answer.body, true) {
        BodyOutput::Complete {
            status,
            content_type,
            body,
        } => (status, content_type.to_string(), body),
        BodyOutput::Replace(out) => {
            let ct = match mode {
                BodyMode::Stream { content_type } => content_type.to_string(),
                _ => content_type.unwrap_or("application/json").to_string(),
            };
            (status, ct, out)
        }
        BodyOutput::Unchanged => (
            status,
            content_type.unwrap_or("application/json").to_string(),
            answer.body,
        ),
    }
}
