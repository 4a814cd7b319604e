//! Per-deployment router state shared by every worker of one Envoy: this minute's requests
//! and tokens, requests in flight, recent failures, cooldown, latency. One fixed-size record
//! per deployment, rolled over in place when the minute changes, so memory stays bounded.
//!
//! Transitions are pure functions of (state, now, limits); the shared-data store and its
//! compare-and-swap loop live in `router`.

/// Encoded size of a `DeploymentState`.
pub const STATE_BYTES: usize = 72;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeploymentState {
    /// Unix minute the counters below belong to.
    pub minute: u64,
    pub requests: u64,
    pub tokens: u64,
    pub in_flight: u64,
    /// Unix minute `fails` belongs to.
    pub fail_minute: u64,
    pub fails: u64,
    pub cooldown_until_ms: u64,
    /// Exponentially weighted latency of successful requests, µs; 0 = none measured yet.
    pub latency_us: u64,
    pub latency_at_ms: u64,
}

/// Why a deployment cannot take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    CoolingDown { retry_after_secs: u64 },
    RateLimited { retry_after_secs: u64 },
}

impl Unusable {
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Unusable::CoolingDown { retry_after_secs }
            | Unusable::RateLimited { retry_after_secs } => retry_after_secs,
        }
    }
}

/// What one finished request tells the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// A failure that counts toward cooldown (5xx, 429, timeout, connection failure): the
    /// status it answered (503 for no answer).
    pub failure: Option<u16>,
    /// Tokens reserved when the request was sent.
    pub reserved_tokens: u64,
    /// Tokens the response reported (or we counted), when known.
    pub actual_tokens: Option<u64>,
    /// The minute the reservation was made in.
    pub reserved_minute: u64,
    pub latency_ms: Option<u64>,
    /// Whether the request was counted in `in_flight`.
    pub counted_in_flight: bool,
}

/// Router knobs that shape transitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub allowed_fails: u64,
    pub cooldown_ms: u64,
    /// LiteLLM's `allowed_fails_policy`: another threshold where the failure is of this kind.
    pub allowed_fails_by_kind: AllowedFailsByKind,
}

/// The kinds of deployment failure LiteLLM's per-kind policies (`retry_policy`,
/// `allowed_fails_policy`) tell apart, by the status the upstream answered (503 for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    RateLimit,
    Timeout,
    InternalServer,
}

impl FailureKind {
    pub fn of(status: u16) -> FailureKind {
        match status {
            429 => FailureKind::RateLimit,
            408 | 504 => FailureKind::Timeout,
            _ => FailureKind::InternalServer,
        }
    }
}

/// Failures a minute allowed before a cooldown, by the kind of the failure that is one too
/// many (`None`: `allowed_fails`). Only the threshold differs: every failure counts in the
/// one counter, as in LiteLLM (`failed_calls` per deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllowedFailsByKind {
    pub rate_limit: Option<u64>,
    pub timeout: Option<u64>,
    pub internal_server: Option<u64>,
}

impl Policy {
    /// Failures never take anything out of rotation (`disable_cooldowns`; per-key records).
    pub const NEVER: Policy = Policy {
        allowed_fails: u64::MAX,
        cooldown_ms: 0,
        allowed_fails_by_kind: AllowedFailsByKind {
            rate_limit: None,
            timeout: None,
            internal_server: None,
        },
    };

    /// The failures allowed when the latest one answered `status`.
    pub fn allowed_fails_for(&self, status: u16) -> u64 {
        let by = &self.allowed_fails_by_kind;
        match FailureKind::of(status) {
            FailureKind::RateLimit => by.rate_limit,
            FailureKind::Timeout => by.timeout,
            FailureKind::InternalServer => by.internal_server,
        }
        .unwrap_or(self.allowed_fails)
    }

    /// Whether failures can ever cool a deployment down; if not, nothing need read or write
    /// a deployment's record for cooldowns.
    pub fn cools_down(&self) -> bool {
        *self != Policy::NEVER
    }
}

pub fn minute_of(now_ms: u64) -> u64 {
    now_ms / 60_000
}

pub fn secs_to_next_minute(now_ms: u64) -> u64 {
    (60_000 - now_ms % 60_000).div_ceil(1000).max(1)
}

impl DeploymentState {
    pub fn encode(&self) -> [u8; STATE_BYTES] {
        let mut out = [0u8; STATE_BYTES];
        let fields = [
            self.minute,
            self.requests,
            self.tokens,
            self.in_flight,
            self.fail_minute,
            self.fails,
            self.cooldown_until_ms,
            self.latency_us,
            self.latency_at_ms,
        ];
        for (chunk, value) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// Anything that is not a record we wrote reads as a fresh state.
    pub fn decode(bytes: &[u8]) -> DeploymentState {
        if bytes.len() != STATE_BYTES {
            return DeploymentState::default();
        }
        let mut f = bytes
            .chunks_exact(8)
            .map(|c| c.try_into().map(u64::from_le_bytes).unwrap_or(0));
        let mut next = || f.next().unwrap_or(0);
        DeploymentState {
            minute: next(),
            requests: next(),
            tokens: next(),
            in_flight: next(),
            fail_minute: next(),
            fails: next(),
            cooldown_until_ms: next(),
            latency_us: next(),
            latency_at_ms: next(),
        }
    }

    /// The counters as of `now`: a new minute starts from zero.
    pub fn rolled(mut self, now_ms: u64) -> DeploymentState {
        let minute = minute_of(now_ms);
        if self.minute != minute {
            self.minute = minute;
            self.requests = 0;
            self.tokens = 0;
        }
        self
    }

    /// Whether one more request (of `tokens` estimated tokens) fits now.
    pub fn check(
        &self,
        now_ms: u64,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> Result<(), Unusable> {
        if self.cooldown_until_ms > now_ms {
            return Err(Unusable::CoolingDown {
                retry_after_secs: (self.cooldown_until_ms - now_ms).div_ceil(1000).max(1),
            });
        }
        let s = self.rolled(now_ms);
        let over_rpm = rpm.is_some_and(|limit| s.requests >= limit);
        // A request larger than the whole budget still gets a window of its own.
        let over_tpm =
            tpm.is_some_and(|limit| s.tokens > 0 && s.tokens.saturating_add(tokens) > limit);
        if over_rpm || over_tpm {
            return Err(Unusable::RateLimited {
                retry_after_secs: secs_to_next_minute(now_ms),
            });
        }
        Ok(())
    }

    /// Count a request that is being sent: one request and its estimated tokens this minute.
    pub fn reserve(
        self,
        now_ms: u64,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
        in_flight: bool,
    ) -> Result<DeploymentState, Unusable> {
        self.check(now_ms, rpm, tpm, tokens)?;
        let mut s = self.rolled(now_ms);
        s.requests += 1;
        s.tokens = s.tokens.saturating_add(tokens);
        if in_flight {
            s.in_flight += 1;
        }
        Ok(s)
    }

    /// Settle a finished request: true tokens for the estimate, failures and cooldown,
    /// latency, in-flight.
    pub fn finish(self, now_ms: u64, outcome: &Outcome, policy: &Policy) -> DeploymentState {
        let mut s = self.rolled(now_ms);
        if outcome.counted_in_flight {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        if let Some(actual) = outcome.actual_tokens {
            if s.minute == outcome.reserved_minute {
                s.tokens = s
                    .tokens
                    .saturating_sub(outcome.reserved_tokens)
                    .saturating_add(actual);
            } else {
                // The reservation belonged to a window that is gone; count usage where it
                // lands, as LiteLLM does.
                s.tokens = s.tokens.saturating_add(actual);
            }
        }
        if let Some(status) = outcome.failure {
            let minute = minute_of(now_ms);
            if s.fail_minute != minute {
                s.fail_minute = minute;
                s.fails = 0;
            }
            s.fails += 1;
            if s.fails > policy.allowed_fails_for(status) {
                s.cooldown_until_ms = now_ms + policy.cooldown_ms;
                s.fails = 0;
            }
        } else if let Some(ms) = outcome.latency_ms {
            let us = ms.saturating_mul(1000);
            s.latency_us = if s.latency_us == 0 {
                us
            } else {
                // Weight 1/4 on the newest sample: recent enough to follow a slowing
                // backend, smooth enough not to flap on one slow request.
                (s.latency_us * 3 + us) / 4
            };
            s.latency_at_ms = now_ms;
        }
        s
    }

    /// The fleet's rate-limit service said the deployment has no room this minute: count it
    /// full here too, so this Envoy stops asking until the minute ends.
    pub fn filled(self, now_ms: u64, rpm: u64) -> DeploymentState {
        let mut s = self.rolled(now_ms);
        s.requests = s.requests.max(rpm);
        s
    }

    /// The fleet's service said the deployment's tokens are spent this minute (`tpm`): count
    /// them spent here too.
    pub fn filled_tokens(self, now_ms: u64, tpm: u64) -> DeploymentState {
        let mut s = self.rolled(now_ms);
        s.tokens = s.tokens.max(tpm);
        s
    }

    /// Take back a reservation whose request was never sent (still in its minute).
    pub fn released(
        self,
        now_ms: u64,
        reserved_minute: u64,
        tokens: u64,
        in_flight: bool,
    ) -> DeploymentState {
        let mut s = self.rolled(now_ms);
        if s.minute == reserved_minute {
            s.requests = s.requests.saturating_sub(1);
            s.tokens = s.tokens.saturating_sub(tokens);
        }
        if in_flight {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        s
    }

    /// A failed health probe cools the deployment down at once.
    pub fn cool_down(mut self, now_ms: u64, policy: &Policy) -> DeploymentState {
        self.cooldown_until_ms = now_ms + policy.cooldown_ms;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_020_000; // 40 s into a minute

    fn policy() -> Policy {
        Policy {
            allowed_fails: 2,
            cooldown_ms: 5_000,
            allowed_fails_by_kind: AllowedFailsByKind::default(),
        }
    }

    #[test]
    fn a_full_fleet_fills_the_minute_and_a_release_takes_a_request_back() {
        let s = DeploymentState::default()
            .reserve(T0, Some(30), None, 5, true)
            .unwrap();
        let back = s.released(T0, minute_of(T0), 5, true);
        assert_eq!((back.requests, back.tokens, back.in_flight), (0, 0, 0));
        // Released in the next minute: that minute's counts are not touched.
        let later = s.released(T0 + 60_000, minute_of(T0), 5, true);
        assert_eq!((later.requests, later.in_flight), (0, 0));
        let full = s.filled(T0, 30);
        assert!(matches!(
            full.check(T0, Some(30), None, 0),
            Err(Unusable::RateLimited {
                retry_after_secs: 20
            })
        ));
        assert_eq!(full.check(T0 + 20_000, Some(30), None, 0), Ok(()));
    }

    #[test]
    fn encoding_round_trips() {
        let s = DeploymentState {
            minute: 1,
            requests: 2,
            tokens: 3,
            in_flight: 4,
            fail_minute: 5,
            fails: 6,
            cooldown_until_ms: 7,
            latency_us: 8,
            latency_at_ms: 9,
        };
        assert_eq!(DeploymentState::decode(&s.encode()), s);
        assert_eq!(DeploymentState::decode(b"junk"), DeploymentState::default());
    }

    #[test]
    fn rpm_is_never_exceeded_and_rolls_over() {
        let mut s = DeploymentState::default();
        for _ in 0..5 {
            s = s.reserve(T0, Some(5), None, 0, false).unwrap();
        }
        assert_eq!(
            s.reserve(T0, Some(5), None, 0, false),
            Err(Unusable::RateLimited {
                retry_after_secs: 20
            })
        );
        // The next minute starts from zero.
        let s = s.reserve(T0 + 20_000, Some(5), None, 0, false).unwrap();
        assert_eq!(s.requests, 1);
    }

    #[test]
    fn tpm_counts_estimates_then_settles_on_actual_usage() {
        let s = DeploymentState::default();
        let s = s.reserve(T0, None, Some(1000), 600, false).unwrap();
        assert!(
            s.reserve(T0, None, Some(1000), 600, false).is_err(),
            "600 + 600 > 1000"
        );
        let outcome = Outcome {
            reserved_tokens: 600,
            actual_tokens: Some(100),
            reserved_minute: minute_of(T0),
            ..Default::default()
        };
        let s = s.finish(T0 + 1, &outcome, &policy());
        assert_eq!(s.tokens, 100);
        assert!(s.reserve(T0, None, Some(1000), 600, false).is_ok());
        // A request bigger than the whole budget still runs when the window is empty.
        assert!(DeploymentState::default()
            .reserve(T0, None, Some(10), 600, false)
            .is_ok());
    }

    #[test]
    fn failures_beyond_allowed_fails_cool_down_then_expire() {
        let failed = Outcome {
            failure: Some(500),
            ..Default::default()
        };
        let mut s = DeploymentState::default();
        for _ in 0..2 {
            s = s.finish(T0, &failed, &policy());
            assert!(
                s.check(T0, None, None, 0).is_ok(),
                "allowed_fails not yet exceeded"
            );
        }
        s = s.finish(T0, &failed, &policy());
        assert_eq!(
            s.check(T0 + 1000, None, None, 0),
            Err(Unusable::CoolingDown {
                retry_after_secs: 4
            })
        );
        assert!(s.check(T0 + 5_000, None, None, 0).is_ok(), "cooldown over");
        // Failures in an earlier minute do not add up with new ones.
        let mut s = DeploymentState::default();
        s = s.finish(T0, &failed, &policy());
        s = s.finish(T0, &failed, &policy());
        s = s.finish(T0 + 60_000, &failed, &policy());
        assert!(s.check(T0 + 60_000, None, None, 0).is_ok());
    }

    #[test]
    fn allowed_fails_policy_sets_the_threshold_by_the_kind_of_the_last_failure() {
        let p = Policy {
            allowed_fails_by_kind: AllowedFailsByKind {
                rate_limit: Some(0),
                timeout: Some(5),
                internal_server: None,
            },
            ..policy()
        };
        let fail = |status| Outcome {
            failure: Some(status),
            ..Default::default()
        };
        // One 429 is already one too many.
        let s = DeploymentState::default().finish(T0, &fail(429), &p);
        assert!(s.check(T0, None, None, 0).is_err());
        // Timeouts: five allowed; a 500 uses `allowed_fails` (2), counting every kind.
        let mut s = DeploymentState::default();
        for _ in 0..5 {
            s = s.finish(T0, &fail(504), &p);
        }
        assert!(s.check(T0, None, None, 0).is_ok(), "5 timeouts allowed");
        s = s.finish(T0, &fail(500), &p);
        assert!(
            s.check(T0, None, None, 0).is_err(),
            "6 failures > 2 for a 500"
        );
        assert_eq!(p.allowed_fails_for(408), 5);
        assert_eq!(p.allowed_fails_for(503), 2);
    }

    #[test]
    fn in_flight_and_latency() {
        let s = DeploymentState::default()
            .reserve(T0, None, None, 0, true)
            .unwrap();
        assert_eq!(s.in_flight, 1);
        let done = Outcome {
            counted_in_flight: true,
            latency_ms: Some(100),
            ..Default::default()
        };
        let s = s.finish(T0, &done, &policy());
        assert_eq!((s.in_flight, s.latency_us), (0, 100_000));
        let s = s.finish(
            T0,
            &Outcome {
                latency_ms: Some(500),
                ..Default::default()
            },
            &policy(),
        );
        assert_eq!(s.latency_us, 200_000);
        assert_eq!(s.in_flight, 0, "never below zero");
    }
}
