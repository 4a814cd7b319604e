//! The shell of LiteLLM's fan-out (`crate::fan_out`): each model's request goes out as a
//! callout at once; each answer is translated, settled and kept (a failed deployment hands
//! over to the next, as for a single request); the client gets the list once all are back,
//! or the first success with `fastest_response`.

use super::{
    abi, call_answer, call_body, call_status, header, Attempt, Http, Metrics, State, Timing,
    WasmHost,
};
use crate::access::KeyCharge;
use crate::config::Config;
use crate::gateway::{self, FanArm, FanOutPlan, LocalReply, Replay};
use proxy_wasm::types::{Action, MapType};

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
        replay: Option<Replay>,
        key_charge: Option<KeyCharge>,
    },
    Answered {
        status: u16,
        body: Vec<u8>,
    },
}

impl Http {
    /// Send every model's request; answer at once if none is in flight.
    pub(super) fn fan_out(&mut self, config: &Config, plan: FanOutPlan) -> Action {
        let mut key_label = String::new();
        let arms: Vec<Arm> = plan
            .arms
            .into_iter()
            .map(|arm| match arm {
                FanArm::Answered(reply) => Arm::Answered {
                    status: reply.status,
                    body: reply.body,
                },
                FanArm::Call(forward) => {
                    let mut forward = *forward;
                    key_label = std::mem::take(&mut forward.key_label);
                    let mut replay = forward.replay.take();
                    let key_charge = forward.key_charge.take();
                    let call = match Self::call(&self.metrics, config, &mut self.host, forward) {
                        Ok(call) => Some(call),
                        Err(()) => replay.as_mut().and_then(|r| {
                            Self::next_call(&self.metrics, config, &mut self.host, r, 503)
                        }),
                    };
                    match call {
                        Some((token, attempt)) => Arm::Calling {
                            token,
                            attempt: Box::new(attempt),
                            replay,
                            key_charge,
                        },
                        None => {
                            if let Some(charge) = &key_charge {
                                crate::access::refund(&mut self.host, charge);
                            }
                            let reply = LocalReply::from(crate::fan_out::unsent());
                            Arm::Answered {
                                status: reply.status,
                                body: reply.body,
                            }
                        }
                    }
                }
            })
            .collect();
        let mut fan = FanOut {
            arms,
            first_success: plan.first_success,
            key_label,
            started_ms: self.started_ms,
        };
        if let Some(reply) = fan.complete() {
            fan.abandon(&self.metrics, config, &mut self.host);
            return self.reply(reply);
        }
        self.state = State::FanOut(Box::new(fan));
        Action::Pause
    }
}

impl FanOut {
    /// The callout `token` answered: keep its translated answer (or hand over to the next
    /// deployment); the reply, once the core says one can be given (`complete`).
    pub(super) fn answered(
        &mut self,
        metrics: &Metrics,
        config: &Config,
        host: &mut WasmHost,
        token: u32,
        body_size: usize,
    ) -> Option<LocalReply> {
        let arm = self
            .arms
            .iter_mut()
            .find(|a| matches!(a, Arm::Calling { token: t, .. } if *t == token))?;
        let Arm::Calling {
            token: _,
            attempt,
            replay,
            key_charge,
        } = arm
        else {
            return None;
        };
        let headers = abi::header_map(MapType::HttpCallResponseHeaders);
        let status = call_status(&headers);
        attempt.status = Some(status);
        attempt.first_byte_ms = Some(crate::host::Host::now_unix_ms(host));
        if gateway::is_deployment_failure(status) {
            Http::settle(metrics, config, host, attempt);
            let next = replay
                .as_mut()
                .and_then(|r| Http::next_call(metrics, config, host, r, status));
            if let Some((next_token, next_attempt)) = next {
                metrics.count(
                    &super::labels(config, attempt.deployment, "").failovers(),
                    1,
                );
                **attempt = next_attempt;
                if let Arm::Calling { token, .. } = arm {
                    *token = next_token;
                }
                return None;
            }
        }
        let (status, _, body) = call_answer(
            attempt,
            status,
            header(&headers, "content-type"),
            call_body(body_size),
        );
        Http::settle(metrics, config, host, attempt);
        Http::settle_key(metrics, config, host, key_charge, attempt, &self.key_label);
        let now = crate::host::Host::now_unix_ms(host);
        let timing = Timing {
            started_ms: self.started_ms,
            first_body_ms: Some(now),
            now_ms: now,
        };
        Http::record_answer(metrics, config, &self.key_label, attempt, status, timing);
        *arm = Arm::Answered { status, body };
        self.complete()
    }

    /// The request ended (the client went away, or the fastest model answered) with models
    /// still being asked: their answers will never be read, so settle them here — the
    /// router's reservation and the key's charge (its in-flight count, its tokens as far as
    /// known) — as a single request's `on_log` settles an attempt in flight.
    pub(super) fn abandon(&mut self, metrics: &Metrics, config: &Config, host: &mut WasmHost) {
        for arm in &mut self.arms {
            if let Arm::Calling {
                attempt,
                key_charge,
                ..
            } = arm
            {
                Http::settle(metrics, config, host, attempt);
                Http::settle_key(metrics, config, host, key_charge, attempt, &self.key_label);
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
