//! Admission by the fleet's rate-limit service (`crate::fleet`): a request for a deployment
//! with `rpm` waits for one `ShouldRateLimit` answer before it is sent; `OVER_LIMIT` fills
//! the deployment here and the request is routed again (the router skips it now); no answer
//! applies the configured failure mode.

use super::{CalloutAnswer, Flow, LogLevel, Session, State, Stream};
use crate::config::Config;
use crate::error::{ErrorKind, GatewayError};
use crate::fleet::{self, Admission, FailureMode, Transition, Verdict};
use crate::gateway::{self, BodyAction, Forward, Pending};
use crate::host::Host;
use crate::metrics::Stat;

/// Calls one request may make before the failure mode decides without asking: one per
/// deployment it could spill to, and then some.
const MAX_ASKS: u32 = 8;

/// What it takes to route a request again, and the calls it has made so far.
pub(super) struct Replan {
    pub pending: Pending,
    pub body: Vec<u8>,
    pub body_size: usize,
    pub asks: u32,
}

/// A request waiting for the service's answer.
pub(super) struct Admitting {
    token: u32,
    forward: Box<Forward>,
    replan: Replan,
}

impl Admitting {
    pub(super) fn abandon(&self, config: &Config, host: &mut dyn Host) {
        drop_unsent(config, host, &self.forward);
    }
}

fn service_unavailable() -> GatewayError {
    GatewayError::new(
        ErrorKind::ServiceUnavailable,
        "the rate-limit service does not answer and its failure_mode is deny",
    )
    .with_code("rate_limit_service_unavailable")
}

impl Session {
    /// Send `forward`, once the fleet's service has admitted it where it must.
    pub(super) fn admit(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        forward: Box<Forward>,
        mut replan: Replan,
    ) -> Flow {
        let body_size = replan.body_size;
        let admission = if replan.asks < MAX_ASKS {
            fleet::admission(config, host, forward.deployment())
        } else {
            Admission::Go
        };
        let frame = match admission {
            Admission::Go => return self.forward(config, stream, *forward, Some(body_size)),
            Admission::Refuse => {
                drop_unsent(config, host, &forward);
                return self.reply(stream, service_unavailable().into());
            }
            Admission::Ask(frame) => frame,
        };
        let Some(service) = &config.rate_limit else {
            return self.forward(config, stream, *forward, Some(body_size));
        };
        let headers = fleet::call_headers(&service.authority);
        let token = stream.call(&service.cluster, &headers, Some(frame), service.timeout_ms);
        replan.asks += 1;
        let admitting = Admitting {
            token: token.unwrap_or(0),
            forward,
            replan,
        };
        match token {
            Some(_) => {
                self.state = State::Admitting(Box::new(admitting));
                Flow::Pause
            }
            // Envoy could not send it (no such cluster): as if the service had not answered.
            None => self.decide(
                config,
                host,
                stream,
                admitting,
                Verdict::Unanswered("unreachable"),
            ),
        }
    }

    /// The service's answer to an admission call. `Continue` once the request may go on
    /// (the shell resumes it); `Pause` when it waits again or was answered here.
    pub(super) fn on_admission_answer(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        token: u32,
        answer: &CalloutAnswer<'_>,
    ) -> Option<Flow> {
        let State::Admitting(admitting) = &self.state else {
            return None;
        };
        if admitting.token != token {
            return None;
        }
        let State::Admitting(admitting) = std::mem::replace(&mut self.state, State::Head) else {
            return None;
        };
        let verdict = fleet::verdict(answer.status, &answer.body);
        Some(self.decide(config, host, stream, *admitting, verdict))
    }

    fn decide(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        admitting: Admitting,
        verdict: Verdict,
    ) -> Flow {
        let answered = !matches!(verdict, Verdict::Unanswered(_));
        let transition = fleet::record_answer(host, answered);
        if let (Some(t), Some(service)) = (transition, &config.rate_limit) {
            let message = match (t, verdict) {
                (Transition::WentDown, Verdict::Unanswered(reason)) => format!(
                    "rate-limit service {} does not answer ({reason}): failure_mode {:?} until it does",
                    service.cluster, service.failure_mode
                ),
                _ => format!(
                    "rate-limit service {} answers again: fleet-wide limits are exact again",
                    service.cluster
                ),
            };
            // Both transitions at warn: an operator running Envoy at `-l warning` sees the
            // service come back as well as go.
            stream.log(LogLevel::Warn, &message);
        }
        let Admitting {
            forward, replan, ..
        } = admitting;
        let body_size = replan.body_size;
        match verdict {
            Verdict::Admitted => self.forward(config, stream, *forward, Some(body_size)),
            Verdict::Full => {
                let name = crate::metrics::fleet_over_limit(config, forward.deployment());
                stream.add(Stat::Named(&name), 1);
                // Released first: filling the record after leaves it full.
                drop_unsent(config, host, &forward);
                crate::router::mark_full(config, host, forward.deployment());
                self.route_again(config, host, stream, replan)
            }
            Verdict::Unanswered(reason) => {
                let name = crate::metrics::rate_limit_service_failures(reason);
                stream.add(Stat::Named(&name), 1);
                let mode = config
                    .rate_limit
                    .as_ref()
                    .map_or(FailureMode::Allow, |s| s.failure_mode);
                match mode {
                    FailureMode::Allow => self.forward(config, stream, *forward, Some(body_size)),
                    FailureMode::Deny => {
                        drop_unsent(config, host, &forward);
                        self.reply(stream, service_unavailable().into())
                    }
                    // The service is now down for this Envoy: routed again, the request is
                    // held to `rpm / instances` here.
                    FailureMode::Local => {
                        drop_unsent(config, host, &forward);
                        self.route_again(config, host, stream, replan)
                    }
                }
            }
        }
    }

    /// Decide the request anew, with what the service said now in the router's records.
    fn route_again(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        replan: Replan,
    ) -> Flow {
        match gateway::on_request_body(config, host, &replan.pending, &replan.body) {
            BodyAction::Forward(forward) => self.admit(config, host, stream, forward, replan),
            BodyAction::Reply(reply) => self.reply(stream, reply),
            BodyAction::FanOut(plan) => self.fan_out(config, host, stream, plan),
        }
    }
}

/// A request that will not be sent as planned: its deployment and the caller's key get back
/// what they were charged.
fn drop_unsent(config: &Config, host: &mut dyn Host, forward: &Forward) {
    crate::router::release(config, host, &forward.reservation);
    if let Some(charge) = &forward.key_charge {
        crate::access::refund(host, charge);
    }
}
