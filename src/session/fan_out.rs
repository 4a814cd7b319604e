//! LiteLLM's fan-out (`crate::fan_out`): each model's request goes out as a callout at once;
//! each answer is translated, settled and kept (a failed deployment hands over to the next,
//! as for a single request); the client gets the list once all are back, or the first
//! success with `fastest_response`.

use super::callout::{call, call_answer, next_call};
use super::response::{record_answer, settle, settle_key};
use super::{Attempt, CalloutAnswer, Flow, Session, State, Stream, Timing};
use crate::access::KeyCharge;
use crate::config::Config;
use crate::gateway::{self, FanArm, FanOutPlan, LocalReply, Replay};
use crate::host::Host;
use crate::metrics::Stat;

pub(super) struct FanOut {
    arms: Vec<Arm>,
    /// LiteLLM's `fastest_response`: the first success answers alone.
    first_success: bool,
    key_label: String,
    started_ms: u64,
}

enum Arm {
    Calling {
        token: u32,
        attempt: Box<Attempt>,
        // Boxed, as the attempt: an arm that answered keeps only its status and body.
        replay: Option<Box<Replay>>,
        key_charge: Option<KeyCharge>,
    },
    Answered {
        status: u16,
        body: Vec<u8>,
    },
}

impl Session {
    /// Send every model's request; answer at once if none is in flight.
    pub(super) fn fan_out(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        plan: FanOutPlan,
    ) -> Flow {
        let mut key_label = String::new();
        let mut arms = Vec::with_capacity(plan.arms.len());
        for arm in plan.arms {
            let forward = match arm {
                FanArm::Answered(reply) => {
                    arms.push(Arm::Answered {
                        status: reply.status,
                        body: reply.body,
                    });
                    continue;
                }
                FanArm::Call(forward) => forward,
            };
            let mut forward = *forward;
            key_label = std::mem::take(&mut forward.key_label);
            let mut replay = forward.replay.take();
            let key_charge = forward.key_charge.take();
            let sent = match call(config, host, stream, forward) {
                Ok(call) => Some(call),
                Err(()) => replay
                    .as_mut()
                    .and_then(|r| next_call(config, host, stream, r, 503)),
            };
            arms.push(match sent {
                Some((token, attempt)) => Arm::Calling {
                    token,
                    attempt: Box::new(attempt),
                    replay: replay.map(Box::new),
                    key_charge,
                },
                None => {
                    if let Some(charge) = &key_charge {
                        crate::access::refund(host, charge);
                    }
                    let reply = LocalReply::from(crate::fan_out::unsent());
                    Arm::Answered {
                        status: reply.status,
                        body: reply.body,
                    }
                }
            });
        }
        let mut fan = FanOut {
            arms,
            first_success: plan.first_success,
            key_label,
            started_ms: self.started_ms,
        };
        if let Some(reply) = fan.complete() {
            fan.abandon(config, host, stream);
            return self.reply(stream, reply);
        }
        self.state = State::FanOut(Box::new(fan));
        Flow::Pause
    }
}

impl FanOut {
    /// The callout `token` answered: keep its translated answer (or hand over to the next
    /// deployment); the reply, once the core says one can be given (`complete`).
    pub(super) fn answered(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        token: u32,
        answer: CalloutAnswer<'_>,
    ) -> Option<LocalReply> {
        let arm = self
            .arms
            .iter_mut()
            .find(|a| matches!(a, Arm::Calling { token: t, .. } if *t == token))?;
        let Arm::Calling {
            token: arm_token,
            attempt,
            replay,
            key_charge,
        } = arm
        else {
            return None;
        };
        let status = answer.status.unwrap_or(503);
        attempt.status = Some(status);
        attempt.first_byte_ms = Some(host.now_unix_ms());
        if gateway::is_deployment_failure(status) {
            settle(config, host, stream, attempt);
            let next = replay
                .as_mut()
                .and_then(|r| next_call(config, host, stream, r, status));
            if let Some((next_token, next_attempt)) = next {
                let deployment = attempt.deployment;
                stream.add(Stat::Failovers { deployment }, 1);
                **attempt = next_attempt;
                *arm_token = next_token;
                return None;
            }
        }
        let (status, _, body) = call_answer(attempt, status, answer);
        settle(config, host, stream, attempt);
        settle_key(config, host, stream, key_charge, attempt, &self.key_label);
        let now = host.now_unix_ms();
        let timing = Timing {
            started_ms: self.started_ms,
            first_body_ms: Some(now),
            now_ms: now,
        };
        record_answer(config, stream, &self.key_label, attempt, status, timing);
        *arm = Arm::Answered { status, body };
        self.complete()
    }

    /// The request ended (the client went away, or the fastest model answered) with models
    /// still being asked: their answers will never be read, so settle them here — the
    /// router's reservation and the key's charge (its in-flight count, its tokens as far as
    /// known) — as a single request's `on_log` settles an attempt in flight.
    pub(super) fn abandon(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
    ) {
        for arm in &mut self.arms {
            if let Arm::Calling {
                attempt,
                key_charge,
                ..
            } = arm
            {
                settle(config, host, stream, attempt);
                settle_key(config, host, stream, key_charge, attempt, &self.key_label);
            }
        }
    }

    /// The reply, once the core says it can be given (`fan_out::ready`).
    fn complete(&self) -> Option<LocalReply> {
        let answers: Vec<Option<(u16, &[u8])>> = self
            .arms
            .iter()
            .map(|a| match a {
                Arm::Answered { status, body } => Some((*status, body.as_slice())),
                Arm::Calling { .. } => None,
            })
            .collect();
        crate::fan_out::ready(&answers, self.first_success)
    }
}
