//! Admission by the fleet's rate-limit service (`crate::fleet`): a request waits for
//! `ShouldRateLimit` answers before it is sent — first, once, on its key's descriptor when
//! the key has `rpm_limit` (`OVER_LIMIT`: 429, the key is full here for the minute), then on
//! its deployment's when the deployment has `rpm` (`OVER_LIMIT` fills the deployment here
//! and the request is routed again: the router skips it now). No answer applies the
//! configured failure mode.
//!
//! Two calls, not one with both descriptors: envoyproxy/ratelimit counts every descriptor of
//! a call even when one is over, so a shared call refused for its deployment would charge the
//! key again on each spill, and one refused for its key would spend a deployment's slot.

use std::borrow::Cow;

use super::{CalloutAnswer, Flow, LogLevel, Session, State, Stream};
use crate::config::Config;
use crate::error::{ErrorKind, GatewayError};
use crate::fleet::{self, Admission, FailureMode, Transition, Verdict};
use crate::gateway::{self, BodyAction, Forward, Pending};
use crate::host::Host;
use crate::keys::Principal;
use crate::metrics::Stat;

/// Calls one request may make (its key's and one per deployment it spills to). A request
/// that would need more gets 429, as if every deployment were full: sending it unasked could
/// break the fleet's limit.
const MAX_ASKS: u32 = 8;

/// What it takes to route a request again, and the calls it has made so far.
pub(super) struct Replan {
    /// The request's head and body, to route it again; `None` for a request forwarded from
    /// its head (a body-less pass-through), which is admitted on its key only.
    pub routed: Option<(Pending, Vec<u8>)>,
    /// The body's size as buffered (`None` without a body).
    pub body_size: Option<usize>,
    pub asks: u32,
    /// The key's descriptors were counted (or need no call): a spill does not count them
    /// again.
    pub key_admitted: bool,
    pub key_tokens_admitted: bool,
    pub key_budget_admitted: bool,
    /// What the fleet charged the key's tokens: a spill's new key charge carries it too.
    pub key_fleet_tokens: u64,
    /// Units the fleet charged the key's budget (carried the same way).
    pub key_budget_units: u64,
}

impl Replan {
    /// `stage` needs no more asking for this request: a key's stages hold across spills.
    fn passed(&mut self, stage: Asked) {
        match stage {
            Asked::Key => self.key_admitted = true,
            Asked::KeyTokens => self.key_tokens_admitted = true,
            Asked::KeyBudget => self.key_budget_admitted = true,
            Asked::Deployment | Asked::Tokens => {}
        }
    }
}

/// Which descriptor a call asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// The key's `rpm_limit`.
    Key,
    /// The key's `tpm_limit` (charged the prompt estimate).
    KeyTokens,
    /// The key's `max_budget` (charged one unit, `fleet::budget`).
    KeyBudget,
    /// The deployment's `rpm`.
    Deployment,
    /// The deployment's `tpm` (charged the prompt estimate).
    Tokens,
}

impl Asked {
    /// What is asked after this; a request that cannot be routed again (forwarded from its
    /// head) is asked about its key only.
    fn next(self, routed: bool) -> Option<Asked> {
        match self {
            Asked::Key => Some(Asked::KeyTokens),
            Asked::KeyTokens => Some(Asked::KeyBudget),
            Asked::KeyBudget if routed => Some(Asked::Deployment),
            Asked::Deployment => Some(Asked::Tokens),
            _ => None,
        }
    }
}

/// A request waiting for the service's answer.
pub(super) struct Admitting {
    token: u32,
    asked: Asked,
    /// The tokens a `Tokens` or `KeyTokens` call charged, the units a `KeyBudget` call did.
    hits: u64,
    forward: Box<Forward>,
    replan: Replan,
}

impl Admitting {
    pub(super) fn abandon(&self, config: &Config, host: &mut dyn Host) {
        drop_unsent(config, host, &self.forward);
    }
}

/// The key's `rpm_limit` is used up across the fleet this minute (LiteLLM's key limiter
/// answers 429 the same way).
pub(super) fn key_over_limit(now_ms: u64, limit: &str) -> GatewayError {
    let mut e = GatewayError::new(
        ErrorKind::RateLimited,
        format!(
            "this key is over its rate limit for this minute ({limit}, across the gateway fleet)"
        ),
    )
    .with_code("rate_limit_exceeded");
    e.retry_after = Some(crate::state::secs_to_next_minute(now_ms));
    e
}

/// The key's `max_budget` is spent across the fleet this budget period (LiteLLM's
/// BudgetExceededError, as its proxy answers it: 400, code "400").
pub(super) fn budget_spent(budget: f64) -> GatewayError {
    GatewayError::new(
        ErrorKind::BudgetExceeded,
        format!("Budget has been exceeded across the gateway fleet! Max budget: {budget}"),
    )
    .with_code("400")
}

/// More spills than a request may ask about: every deployment it tried was full.
fn too_many_asks(now_ms: u64) -> GatewayError {
    let mut e = GatewayError::new(
        ErrorKind::RateLimited,
        "every deployment tried for this request is at its rate limit across the gateway fleet",
    )
    .with_code("rate_limit_exceeded");
    e.retry_after = Some(crate::state::secs_to_next_minute(now_ms));
    e
}

pub(super) fn service_unavailable() -> GatewayError {
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
        replan: Replan,
    ) -> Flow {
        self.admit_from(config, host, stream, forward, replan, Asked::Key)
    }

    /// `admit`, from one descriptor on: the key's (once per request), the deployment's
    /// requests, then its tokens; the first that needs the service is asked.
    fn admit_from(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        mut forward: Box<Forward>,
        mut replan: Replan,
        from: Asked,
    ) -> Flow {
        let body_size = replan.body_size;
        if let Some(charge) = forward.key_charge.as_mut() {
            charge.fleet_tokens = replan.key_fleet_tokens;
            charge.fleet_budget_units = replan.key_budget_units;
        }
        let mut stage = from;
        let mut hits = 0;
        let (asked, frame) = loop {
            let admission = match stage {
                Asked::Key => match (&forward.key_charge, replan.key_admitted) {
                    (Some(charge), false) => {
                        fleet::key_admission(config, host, &charge.grant).map(Cow::Owned)
                    }
                    _ => Admission::Go,
                },
                Asked::KeyTokens => match (&forward.key_charge, replan.key_tokens_admitted) {
                    (Some(charge), false) => {
                        let (a, charged) = fleet::tokens::key_admission(config, host, charge);
                        hits = charged;
                        a.map(Cow::Owned)
                    }
                    _ => Admission::Go,
                },
                Asked::KeyBudget => match (&forward.key_charge, replan.key_budget_admitted) {
                    (Some(charge), false) => {
                        let deployment = config.deployment(forward.deployment());
                        let (a, charged) =
                            fleet::budget::admission(config, host, charge, deployment);
                        hits = charged;
                        a.map(Cow::Owned)
                    }
                    _ => Admission::Go,
                },
                Asked::Deployment => {
                    fleet::admission(config, host, forward.deployment()).map(Cow::Borrowed)
                }
                Asked::Tokens => {
                    let (a, charged) = fleet::tokens::admission(config, host, &forward.reservation);
                    hits = charged;
                    a.map(Cow::Owned)
                }
            };
            match admission {
                Admission::Go => {
                    replan.passed(stage);
                    match stage.next(replan.routed.is_some()) {
                        Some(next) => stage = next,
                        None => return self.forward(config, stream, *forward, body_size),
                    }
                }
                Admission::Refuse => {
                    drop_unsent(config, host, &forward);
                    return self.reply(stream, service_unavailable().into());
                }
                Admission::Ask(frame) => break (stage, frame),
            }
        };
        let Some(service) = &config.rate_limit else {
            return self.forward(config, stream, *forward, body_size);
        };
        if replan.asks >= MAX_ASKS {
            drop_unsent(config, host, &forward);
            let now = host.now_unix_ms();
            return self.reply(stream, too_many_asks(now).into());
        }
        let headers = fleet::call_headers(&service.authority);
        let token = stream.call(&service.cluster, &headers, Some(&frame), service.timeout_ms);
        replan.asks += 1;
        let admitting = Admitting {
            token: token.unwrap_or(0),
            asked,
            hits,
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
        note_answer(config, host, stream, verdict);
        let Admitting {
            asked,
            hits,
            mut forward,
            mut replan,
            ..
        } = admitting;
        let body_size = replan.body_size;
        match (asked, verdict) {
            (Asked::Key, Verdict::Admitted) => {
                replan.passed(asked);
                self.admit_after(config, host, stream, forward, replan, asked)
            }
            (Asked::KeyTokens, Verdict::Admitted) => {
                replan.passed(asked);
                replan.key_fleet_tokens = hits;
                self.admit_after(config, host, stream, forward, replan, asked)
            }
            (Asked::KeyBudget, Verdict::Admitted) => {
                replan.passed(asked);
                replan.key_budget_units = hits;
                if let Some(charge) = forward.key_charge.as_mut() {
                    charge.fleet_budget_units = hits;
                }
                self.admit_after(config, host, stream, forward, replan, asked)
            }
            (Asked::KeyBudget, Verdict::Full) => {
                drop_unsent(config, host, &forward);
                let budget = forward.key_charge.as_ref().and_then(|c| {
                    crate::access::fill_budget(host, &c.grant);
                    c.grant.budget
                });
                let mut reply = gateway::LocalReply::from(budget_spent(budget.unwrap_or_default()));
                reply
                    .metrics
                    .push(crate::metrics::key_refusals(&forward.key_label, "budget"));
                self.reply(stream, reply)
            }
            (Asked::Deployment, Verdict::Admitted) => {
                self.admit_after(config, host, stream, forward, replan, asked)
            }
            (Asked::Tokens, Verdict::Admitted) => {
                forward.reservation.fleet_tokens = hits;
                self.forward(config, stream, *forward, body_size)
            }
            (Asked::Key | Asked::KeyTokens, Verdict::Full) => {
                drop_unsent(config, host, &forward);
                if let Some(charge) = &forward.key_charge {
                    if asked == Asked::Key {
                        crate::access::fill_minute(host, &charge.grant);
                    } else {
                        crate::access::fill_tokens(host, &charge.grant);
                    }
                }
                let limit = if asked == Asked::Key {
                    "rpm_limit"
                } else {
                    "tpm_limit"
                };
                let mut reply =
                    gateway::LocalReply::from(key_over_limit(host.now_unix_ms(), limit));
                reply.metrics.push(crate::metrics::key_refusals(
                    &forward.key_label,
                    "rate_limit",
                ));
                self.reply(stream, reply)
            }
            (Asked::Deployment | Asked::Tokens, Verdict::Full) => {
                let name = crate::metrics::fleet_over_limit(config, forward.deployment());
                stream.add(Stat::Named(&name), 1);
                // Released first: filling the record after leaves it full.
                drop_unsent(config, host, &forward);
                if asked == Asked::Tokens {
                    crate::router::mark_tokens_spent(config, host, forward.deployment());
                } else {
                    crate::router::mark_full(config, host, forward.deployment());
                }
                self.route_again(config, host, stream, replan)
            }
            (_, Verdict::Unanswered(_)) => {
                match failure_mode(config) {
                    // What is asked next is admitted too (the service is down now).
                    FailureMode::Allow => {
                        replan.passed(asked);
                        self.admit_after(config, host, stream, forward, replan, asked)
                    }
                    FailureMode::Deny => {
                        drop_unsent(config, host, &forward);
                        self.reply(stream, service_unavailable().into())
                    }
                    // Not routed again: only its key was asked, and held to its share here.
                    FailureMode::Local if replan.routed.is_none() => {
                        self.charge_key_again(config, host, stream, forward, body_size)
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

    /// Go on after `asked` was admitted: the next descriptor, or send it.
    fn admit_after(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        forward: Box<Forward>,
        replan: Replan,
        asked: Asked,
    ) -> Flow {
        match asked.next(replan.routed.is_some()) {
            Some(next) => self.admit_from(config, host, stream, forward, replan, next),
            None => {
                let body_size = replan.body_size;
                self.forward(config, stream, *forward, body_size)
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
        let Some((pending, body)) = &replan.routed else {
            // Only a routed request spills; a head-forwarded one is never asked about its
            // deployment. Nothing to send it to again.
            return self.reply(stream, service_unavailable().into());
        };
        match gateway::on_request_body(config, host, pending, body) {
            BodyAction::Forward(forward) => self.admit(config, host, stream, forward, replan),
            BodyAction::Reply(reply) => self.reply(stream, reply),
            BodyAction::FanOut(plan) => self.fan_out(config, host, stream, plan),
        }
    }

    /// The service did not answer for a head-forwarded request's key in `local` mode: the
    /// key's charge is made again at this Envoy's share of its `rpm_limit`.
    fn charge_key_again(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        mut forward: Box<Forward>,
        body_size: Option<usize>,
    ) -> Flow {
        if let Some(charge) = forward.key_charge.take() {
            crate::access::refund(host, &charge);
            let principal = Principal::Key(std::sync::Arc::clone(&charge.grant));
            let share = fleet::key_rpm_share(config, host, &principal);
            match crate::access::charge(host, &principal, charge.reserved_tokens, share) {
                Ok(again) => forward.key_charge = again,
                Err(e) => {
                    crate::router::release(config, host, &forward.reservation);
                    let mut reply = gateway::LocalReply::from(e);
                    reply.metrics.push(crate::metrics::key_refusals(
                        &forward.key_label,
                        "rate_limit",
                    ));
                    return self.reply(stream, reply);
                }
            }
        }
        self.forward(config, stream, *forward, body_size)
    }
}

/// Whether the service answered, in this Envoy's record of it: each change logged once, each
/// failure counted.
pub(super) fn note_answer(
    config: &Config,
    host: &mut dyn Host,
    stream: &mut dyn Stream,
    verdict: Verdict,
) {
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
    if let Verdict::Unanswered(reason) = verdict {
        let name = crate::metrics::rate_limit_service_failures(reason);
        stream.add(Stat::Named(&name), 1);
    }
}

pub(super) fn failure_mode(config: &Config) -> FailureMode {
    config
        .rate_limit
        .as_ref()
        .map_or(FailureMode::Allow, |s| s.failure_mode)
}

/// A request that will not be sent as planned: its deployment and the caller's key get back
/// what they were charged.
pub(super) fn drop_unsent(config: &Config, host: &mut dyn Host, forward: &Forward) {
    crate::router::release(config, host, &forward.reservation);
    if let Some(charge) = &forward.key_charge {
        crate::access::refund(host, charge);
    }
}
