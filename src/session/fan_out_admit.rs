//! A fan-out (`model: "a,b"`) of a key with fleet-wide limits, behind the fleet's rate-limit
//! service: its arms go out at once, each charged to the key, so the fleet is asked for all
//! of them together before any is sent — on the key's `rpm_limit` (`hits_addend` = the number
//! of arms), then its `tpm_limit` (the arms' token estimates), then its `max_budget` (their
//! estimates' cost), each a call of its own as for a single request (`admit`). `OVER_LIMIT`
//! answers the whole fan-out (429, or 400 for the budget). The arms' deployments are not
//! asked (each arm is counted in its deployment's rpm after the fact, as failovers are);
//! their tokens and cost beyond what was charged are reported after.

use super::admit::{
    budget_spent, drop_unsent, failure_mode, key_over_limit, note_answer, service_unavailable,
};
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
    stage: FanStage,
    plan: FanOutPlan,
}

/// Which of the key's limits a fan-out's call asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FanStage {
    Requests,
    Tokens,
    Budget,
}

impl FanStage {
    fn next(self) -> Option<FanStage> {
        match self {
            FanStage::Requests => Some(FanStage::Tokens),
            FanStage::Tokens => Some(FanStage::Budget),
            FanStage::Budget => None,
        }
    }
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

/// The key the arms are charged to, and how many arms will be sent.
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
    let grant = grant?;
    (arms > 0).then_some((grant, arms))
}

/// Each arm's own share of what a stage charges: its token estimate, or its estimate's cost
/// at its deployment's input price (`fleet::budget`).
fn arm_share(config: &Config, forward: &crate::gateway::Forward, stage: FanStage) -> u64 {
    let Some(charge) = &forward.key_charge else {
        return 0;
    };
    match stage {
        FanStage::Requests => 1,
        FanStage::Tokens => charge.reserved_tokens.max(1),
        FanStage::Budget => fleet::budget::estimate_units(
            charge.estimated_tokens,
            config.deployment(forward.deployment()),
        ),
    }
}

/// What the arms together are charged at `stage`.
fn plan_hits(config: &Config, plan: &FanOutPlan, stage: FanStage) -> u64 {
    plan.arms
        .iter()
        .map(|arm| match arm {
            FanArm::Call(forward) => arm_share(config, forward, stage),
            FanArm::Answered(_) => 0,
        })
        .fold(0, u64::saturating_add)
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
        self.admit_fan_out_from(config, host, stream, plan, FanStage::Requests)
    }

    /// `admit_fan_out`, from one of the key's limits on: the first that needs the service is
    /// asked.
    fn admit_fan_out_from(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        plan: FanOutPlan,
        from: FanStage,
    ) -> Flow {
        let (Some(service), Some((grant, arms))) = (&config.rate_limit, keyed_arms(&plan)) else {
            return self.fan_out(config, host, stream, plan);
        };
        let mut stage = from;
        let frame = loop {
            let admission = match stage {
                FanStage::Requests => match fleet::key_frame_hits(&service.domain, &grant, arms) {
                    Some(frame) => fleet::ask_or_fall_back(service, host, frame),
                    None => Admission::Go,
                },
                FanStage::Tokens => {
                    let hits = plan_hits(config, &plan, stage);
                    fleet::tokens::key_admission_of(config, host, &grant, hits)
                }
                FanStage::Budget => {
                    let units = plan_hits(config, &plan, stage);
                    fleet::budget::admission_of(config, host, &grant, units)
                }
            };
            match admission {
                Admission::Go => match stage.next() {
                    Some(next) => stage = next,
                    None => return self.fan_out(config, host, stream, plan),
                },
                Admission::Refuse => {
                    drop_arms(config, host, &plan);
                    return self.reply(stream, service_unavailable().into());
                }
                Admission::Ask(frame) => break frame,
            }
        };
        let headers = fleet::call_headers(&service.authority);
        match stream.call(&service.cluster, &headers, Some(&frame), service.timeout_ms) {
            Some(token) => {
                self.state =
                    State::AdmittingFanOut(Box::new(FanOutAdmission { token, stage, plan }));
                Flow::Pause
            }
            None => self.fan_out_decided(
                config,
                host,
                stream,
                plan,
                stage,
                Verdict::Unanswered("unreachable"),
            ),
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
        let FanOutAdmission { stage, plan, .. } = *waiting;
        Some(self.fan_out_decided(config, host, stream, plan, stage, verdict))
    }

    fn fan_out_decided(
        &mut self,
        config: &Config,
        host: &mut dyn Host,
        stream: &mut dyn Stream,
        mut plan: FanOutPlan,
        stage: FanStage,
        verdict: Verdict,
    ) -> Flow {
        note_answer(config, host, stream, verdict);
        match verdict {
            Verdict::Admitted => {
                // Each arm's charge knows its share, so its answer reports only the rest.
                if stage != FanStage::Requests {
                    for arm in &mut plan.arms {
                        if let FanArm::Call(forward) = arm {
                            let share = arm_share(config, forward, stage);
                            if let Some(charge) = forward.key_charge.as_mut() {
                                if stage == FanStage::Tokens {
                                    charge.fleet_tokens = share;
                                } else {
                                    charge.fleet_budget_units = share;
                                }
                            }
                        }
                    }
                }
                match stage.next() {
                    Some(next) => self.admit_fan_out_from(config, host, stream, plan, next),
                    None => self.fan_out(config, host, stream, plan),
                }
            }
            Verdict::Full => {
                drop_arms(config, host, &plan);
                let now = host.now_unix_ms();
                let grant = keyed_arms(&plan).map(|(g, _)| g);
                let (mut reply, reason) = match stage {
                    FanStage::Requests => (
                        LocalReply::from(key_over_limit(now, "rpm_limit")),
                        "rate_limit",
                    ),
                    FanStage::Tokens => (
                        LocalReply::from(key_over_limit(now, "tpm_limit")),
                        "rate_limit",
                    ),
                    FanStage::Budget => {
                        let budget = grant.as_ref().and_then(|g| g.budget).unwrap_or_default();
                        (LocalReply::from(budget_spent(budget)), "budget")
                    }
                };
                if let Some(grant) = &grant {
                    match stage {
                        FanStage::Requests => crate::access::fill_minute(host, grant),
                        FanStage::Tokens => crate::access::fill_tokens(host, grant),
                        FanStage::Budget => crate::access::fill_budget(host, grant),
                    }
                }
                if let Some(FanArm::Call(forward)) =
                    plan.arms.iter().find(|a| matches!(a, FanArm::Call(_)))
                {
                    reply
                        .metrics
                        .push(crate::metrics::key_refusals(&forward.key_label, reason));
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
