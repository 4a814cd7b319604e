//! A fan-out (`model: "a,b"`) of a key with `rpm_limit`, behind the fleet's rate-limit
//! service: its arms go out at once, each charged to the key, so the fleet is asked once for
//! all of them (`hits_addend` = the number of arms) before any is sent. `OVER_LIMIT` is 429
//! for the whole fan-out. The arms' deployments are not asked (each arm is counted in its
//! deployment's rpm after the fact, as failovers are); their tokens are reported after.

use super::admit::{drop_unsent, failure_mode, key_over_limit, note_answer, service_unavailable};
use super::{CalloutAnswer, Flow, Session, State, Stream};
use crate::config::Config;
use crate::fleet::{self, Admission, FailureMode, Verdict};
use crate::gateway::{FanArm, FanOutPlan, LocalReply};
use crate::host::Host;
use crate::keys::KeyGrant;
use std::sync::Arc;

/// A fan-out waiting for the service's answer on its key.
pub(super) struct FanOutAdmission {
    token: u32,
    plan: FanOutPlan,
}

impl FanOutAdmission {
    /// The client left: nothing was sent, every arm gives back what it was charged.
    pub(super) fn abandon(&self, config: &Config, host: &mut dyn Host) {
        drop_arms(config, host, &self.plan);
    }
}

fn drop_arms(config: &Config, host: &mut dyn Host, plan: &FanOutPlan) {
    for arm in &plan.arms {
        if let FanArm::Call(forward) = arm {
            drop_unsent(config, host, forward);
        }
    }
}

/// The key the arms are charged to, when it has `rpm_limit`, and how many arms will be sent.
fn keyed_arms(plan: &FanOutPlan) -> Option<(Arc<KeyGrant>, u32)> {
    let mut grant = None;
    let mut arms = 0u32;
    for arm in &plan.arms {
        if let FanArm::Call(forward) = arm {
            arms = arms.saturating_add(1);
            if let Some(charge) = &forward.key_charge {
                grant = Some(Arc::clone(&charge.grant));
            }
        }
    }
    let grant = grant.filter(|g| g.rpm.is_some())?;
    (arms > 0).then_some((grant, arms))
}

impl Session {
    /// Send the fan-out, once the fleet's service has admitted its key's requests.
    pub(super) fn admit_fan_out(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        plan: FanOutPlan,
    ) -> Flow {
        let (Some(service), Some((grant, arms))) = (&config.rate_limit, keyed_arms(&plan)) else {
            return self.fan_out(config, host, stream, plan);
        };
        let Some(frame) = fleet::key_frame_hits(&service.domain, &grant, arms) else {
            return self.fan_out(config, host, stream, plan);
        };
        match fleet::ask_or_fall_back(service, host, frame) {
            Admission::Go => self.fan_out(config, host, stream, plan),
            Admission::Refuse => {
                drop_arms(config, host, &plan);
                self.reply(stream, service_unavailable().into())
            }
            Admission::Ask(frame) => {
                let headers = fleet::call_headers(&service.authority);
                match stream.call(&service.cluster, &headers, Some(&frame), service.timeout_ms) {
                    Some(token) => {
                        self.state =
                            State::AdmittingFanOut(Box::new(FanOutAdmission { token, plan }));
                        Flow::Pause
                    }
                    None => self.fan_out_decided(
                        config,
                        host,
                        stream,
                        plan,
                        Verdict::Unanswered("unreachable"),
                    ),
                }
            }
        }
    }

    /// The service's answer for a fan-out's key; `None` when the call was not that.
    pub(super) fn on_fan_out_admission_answer(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        token: u32,
        answer: &CalloutAnswer<'_>,
    ) -> Option<Flow> {
        match &self.state {
            State::AdmittingFanOut(waiting) if waiting.token == token => {}
            _ => return None,
        }
        let State::AdmittingFanOut(waiting) = std::mem::replace(&mut self.state, State::Head)
        else {
            return None;
        };
        let verdict = fleet::verdict(answer.status, &answer.body);
        Some(self.fan_out_decided(config, host, stream, waiting.plan, verdict))
    }

    fn fan_out_decided(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        plan: FanOutPlan,
        verdict: Verdict,
    ) -> Flow {
        note_answer(config, host, stream, verdict);
        match verdict {
            Verdict::Admitted => self.fan_out(config, host, stream, plan),
            Verdict::Full => {
                drop_arms(config, host, &plan);
                let mut reply = LocalReply::from(key_over_limit(host.now_unix_ms(), "rpm_limit"));
                if let Some((grant, _)) = keyed_arms(&plan) {
                    crate::access::fill_minute(host, &grant);
                }
                if let Some(FanArm::Call(forward)) =
                    plan.arms.iter().find(|a| matches!(a, FanArm::Call(_)))
                {
                    reply.metrics.push(crate::metrics::key_refusals(
                        &forward.key_label,
                        "rate_limit",
                    ));
                }
                self.reply(stream, reply)
            }
            // `local`: the arms were charged to the key here already; the service being down
            // now, later requests are held to the key's share.
            Verdict::Unanswered(_) => match failure_mode(config) {
                FailureMode::Allow | FailureMode::Local => self.fan_out(config, host, stream, plan),
                FailureMode::Deny => {
                    drop_arms(config, host, &plan);
                    self.reply(stream, service_unavailable().into())
                }
            },
        }
    }
}
