//! Who may do what: the principal behind a request and what the endpoint needs, and a
//! key's per-minute limits and budget (shared by every worker of one Envoy). Which model
//! groups a principal may use is `scope`; the key endpoints are `key_api`.

use crate::config::{Config, Deployment};
use crate::error::{ErrorKind, GatewayError};
use crate::host::Host;
use crate::key_table::{self, KeyCounters};
use crate::keys::{KeyGrant, Principal};
use crate::request::Endpoint;
use crate::state::{minute_of, Outcome, Policy, Unusable};
use crate::translate::text::Usage;

/// The caller, checked against what the endpoint needs.
pub fn authorize(
    config: &Config,
    endpoint: &Endpoint,
    key: Option<&str>,
    now_secs: u64,
) -> Result<Principal, GatewayError> {
    if endpoint.is_public() {
        return Ok(Principal::Open);
    }
    let principal = config.keys.authenticate(key, now_secs)?;
    let master_only = matches!(endpoint, Endpoint::HealthProbe | Endpoint::KeyGenerate);
    if master_only && matches!(principal, Principal::Key(_)) {
        return Err(GatewayError::new(
            ErrorKind::Permission,
            "only the master key may call this endpoint",
        ));
    }
    Ok(principal)
}

/// What a request was charged to its key, settled when it finishes.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCharge {
    pub grant: std::sync::Arc<KeyGrant>,
    pub tracked: bool,
    /// A tpm limit counts tokens: only then does settling with the real count matter.
    pub tokens_tracked: bool,
    pub reserved_tokens: u64,
    pub minute: u64,
    pub count_spend: bool,
    /// Counted in the key's in-flight requests (`max_parallel_requests`): released once.
    pub in_flight: bool,
    /// A key with a budget: what it had spent (this period) when the request came in.
    pub spend_before: Option<f64>,
    /// Tokens the fleet's rate-limit service was charged for the key when it admitted the
    /// request (its prompt estimate); the rest of the real count is reported after.
    pub fleet_tokens: u64,
    /// The request's token estimate (prompt + `max_tokens`), whatever the key tracks.
    pub estimated_tokens: u64,
    /// Units of the key's budget the fleet's service was charged at admission
    /// (`fleet::budget`): the answer's cost is reported less those.
    pub fleet_budget_units: u64,
}

/// Why a key's reservation was refused.
enum KeyRefusal {
    Budget(f64),
    Limited(Unusable),
    Parallel(u64),
}

/// Minutes without a new request after which a key's in-flight count is taken to be stale:
/// a request whose end was never seen (a VM that died mid-request) must not block its key
/// for good. Longer than any request may run (`timeout` defaults to 10 minutes).
const STALE_IN_FLIGHT_MINUTES: u64 = 11;

/// What the key has spent in its current budget period.
pub fn spend_of(host: &dyn Host, grant: &KeyGrant) -> f64 {
    let period = grant.budget_period_at(host.now_unix_ms() / 1000);
    key_table::read(host, &grant.id).spend_in(period)
}

/// Check and reserve the key's limits for one request: budget first, then rpm/tpm. This
/// Envoy holds the key to `rpm_limit / rpm_share`, `tpm_limit / rpm_share` and
/// `max_budget / rpm_share`
/// (`fleet::key_rpm_share`: more than 1 only while the fleet's service does not answer in
/// `local` mode).
pub fn charge(
    host: &mut dyn Host,
    principal: &Principal,
    estimated_tokens: u64,
    rpm_share: u64,
) -> Result<Option<KeyCharge>, GatewayError> {
    let Principal::Key(grant) = principal else {
        return Ok(None);
    };
    let over_budget = |spent: f64| {
        // LiteLLM's BudgetExceededError, as its proxy answers it (400, code "400").
        GatewayError::new(
            ErrorKind::BudgetExceeded,
            format!(
                "Budget has been exceeded! Current cost: {spent}, Max budget: {}",
                grant.budget.unwrap_or_default()
            ),
        )
        .with_code("400")
    };
    let now = host.now_unix_ms();
    // This Envoy's share of the budget while the fleet's service does not answer (`local`
    // mode), as for the per-minute limits.
    let budget_here = grant.budget.map(|b| b / rpm_share.max(1) as f64);
    let parallel = grant.max_parallel;
    let period = grant.budget_period_at(now / 1000);
    let tracked = grant.rpm.is_some() || grant.tpm.is_some() || parallel.is_some();
    if tracked {
        // The budget is checked inside the same compare-and-swap as the reservation: one
        // read of the key's record, not two.
        let reserve = |mut c: KeyCounters| -> Result<KeyCounters, KeyRefusal> {
            let spent = c.spend_in(period);
            if budget_here.is_some_and(|budget| spent >= budget) {
                return Err(KeyRefusal::Budget(spent));
            }
            if minute_of(now).saturating_sub(c.state.minute) >= STALE_IN_FLIGHT_MINUTES {
                c.state.in_flight = 0;
            }
            if let Some(max) = parallel.filter(|&max| c.state.in_flight >= max) {
                return Err(KeyRefusal::Parallel(max));
            }
            c.state = c
                .state
                .reserve(
                    now,
                    grant.rpm.map(|rpm| rpm / rpm_share.max(1)),
                    grant.tpm.map(|tpm| tpm / rpm_share.max(1)),
                    estimated_tokens,
                    parallel.is_some(),
                )
                .map_err(KeyRefusal::Limited)?;
            Ok(c)
        };
        let spend_before = match key_table::update(host, &grant.id, &reserve) {
            Ok(c) => grant.budget.map(|_| c.spend_in(period)),
            Err(Some(KeyRefusal::Budget(spent))) => return Err(over_budget(spent)),
            Err(Some(KeyRefusal::Parallel(max))) => {
                let mut e = GatewayError::new(
                    ErrorKind::RateLimited,
                    format!("this key has {max} requests in flight, its max_parallel_requests; retry when one ends"),
                )
                .with_code("max_parallel_requests_exceeded");
                e.retry_after = Some(1);
                return Err(e);
            }
            Err(refusal) => {
                let retry_after = match refusal {
                    Some(KeyRefusal::Limited(u)) => u.retry_after_secs(),
                    _ => 1,
                };
                let mut e = GatewayError::new(
                    ErrorKind::RateLimited,
                    "this key is over its rate limit for this minute (rpm_limit/tpm_limit)",
                )
                .with_code("rate_limit_exceeded");
                e.retry_after = Some(retry_after);
                return Err(e);
            }
        };
        return Ok(Some(charged(
            grant,
            tracked,
            estimated_tokens,
            now,
            spend_before,
        )));
    }
    let mut spend_before = None;
    if let Some(budget) = budget_here {
        let spent = spend_of(host, grant);
        if spent >= budget {
            return Err(over_budget(spent));
        }
        spend_before = Some(spent);
    }
    Ok(Some(charged(
        grant,
        tracked,
        estimated_tokens,
        now,
        spend_before,
    )))
}

fn charged(
    grant: &std::sync::Arc<KeyGrant>,
    tracked: bool,
    estimated_tokens: u64,
    now: u64,
    spend_before: Option<f64>,
) -> KeyCharge {
    KeyCharge {
        grant: std::sync::Arc::clone(grant),
        tracked,
        tokens_tracked: grant.tpm.is_some(),
        reserved_tokens: if tracked { estimated_tokens } else { 0 },
        minute: minute_of(now),
        count_spend: grant.budget.is_some(),
        in_flight: grant.max_parallel.is_some(),
        spend_before,
        fleet_tokens: 0,
        estimated_tokens,
        fleet_budget_units: 0,
    }
}

/// Settle a finished request: true tokens for the estimate, and its cost against the budget
/// (tokens × the deployment's `model_info` prices; per Envoy instance).
pub fn settle(
    host: &mut dyn Host,
    charge: &KeyCharge,
    usage: Option<Usage>,
    deployment: Option<&Deployment>,
) -> Settled {
    let now = host.now_unix_ms();
    let priced = match (usage, deployment) {
        (Some(u), Some(d)) => d.cost(u),
        _ => 0.0,
    };
    // Spend is kept only for keys with a budget (the metric counts every key's).
    let cost = if charge.count_spend { priced } else { 0.0 };
    // An rpm-only key was counted when charged; its record needs no second write.
    if !charge.tokens_tracked && !charge.in_flight && cost <= 0.0 {
        return Settled {
            cost: priced,
            budget_used: None,
        };
    }
    let outcome = Outcome {
        reserved_tokens: charge.reserved_tokens,
        actual_tokens: usage.map(|u| u.total_tokens),
        reserved_minute: charge.minute,
        counted_in_flight: charge.in_flight,
        ..Default::default()
    };
    let policy = Policy::NEVER;
    let tracked = charge.tokens_tracked || charge.in_flight;
    let period = charge.grant.budget_period_at(now / 1000);
    let written = key_table::update::<()>(host, &charge.grant.id, &|mut c| {
        if tracked {
            c.state = c.state.finish(now, &outcome, &policy);
        }
        c.spend = c.spend_in(period) + cost;
        c.spend_period = period;
        Ok(c)
    });
    let budget_used = match (charge.grant.budget, written) {
        (Some(budget), Ok(c)) if budget > 0.0 => Some(c.spend / budget),
        _ => None,
    };
    Settled {
        cost: priced,
        budget_used,
    }
}

/// What settling a request found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settled {
    /// The answer's cost (USD) at the deployment's prices; 0 when unpriced.
    pub cost: f64,
    /// For a key with a budget: the share of it spent now (this period).
    pub budget_used: Option<f64>,
}

/// The fleet's service says the key has used its `rpm_limit` this minute: this Envoy's
/// record says so too, so the key's later requests here are refused without a call.
pub fn fill_minute(host: &mut dyn Host, grant: &KeyGrant) {
    let Some(rpm) = grant.rpm else {
        return;
    };
    let now = host.now_unix_ms();
    // Losing every race leaves the record as it was: the next request asks again.
    let _ = key_table::update::<()>(host, &grant.id, &|mut c| {
        c.state = c.state.filled(now, rpm);
        Ok(c)
    });
}

/// The fleet's service says the key's `max_budget` is spent this period: this Envoy's record
/// says so too, so the key's later requests here are refused without a call.
pub fn fill_budget(host: &mut dyn Host, grant: &KeyGrant) {
    let Some(budget) = grant.budget else {
        return;
    };
    let period = grant.budget_period_at(host.now_unix_ms() / 1000);
    let _ = key_table::update::<()>(host, &grant.id, &|mut c| {
        c.spend = c.spend_in(period).max(budget);
        c.spend_period = period;
        Ok(c)
    });
}

/// The fleet's service says the key has used its `tpm_limit` this minute: so it has here.
pub fn fill_tokens(host: &mut dyn Host, grant: &KeyGrant) {
    let Some(tpm) = grant.tpm else {
        return;
    };
    let now = host.now_unix_ms();
    let _ = key_table::update::<()>(host, &grant.id, &|mut c| {
        c.state = c.state.filled_tokens(now, tpm);
        Ok(c)
    });
}

/// Give back a charge for a request nothing served.
pub fn refund(host: &mut dyn Host, charge: &KeyCharge) {
    if !charge.tracked {
        return;
    }
    let minute = charge.minute;
    let tokens = charge.reserved_tokens;
    let in_flight = charge.in_flight;
    let _ = key_table::update::<()>(host, &charge.grant.id, &|mut c| {
        if c.state.minute == minute {
            c.state.requests = c.state.requests.saturating_sub(1);
            c.state.tokens = c.state.tokens.saturating_sub(tokens);
        }
        if in_flight {
            c.state.in_flight = c.state.in_flight.saturating_sub(1);
        }
        Ok(c)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::host::FakeHost;
    use crate::key_api::{generate, info};

    fn config() -> Config {
        let json = r#"{"model_list":[
            {"model_name":"chat","litellm_params":{"model":"openai/c","api_base":"http://h:1"},
             "model_info":{"input_cost_per_token":0.001,"output_cost_per_token":0.002}},
            {"model_name":"other","litellm_params":{"model":"openai/o","api_base":"http://h:1"}}],
          "router_settings":{"model_group_alias":{"gpt-4o":"chat"}},
          "general_settings":{"master_key":"sk-m","virtual_keys":[
            {"key":"sk-team","key_alias":"team","models":["gpt-4o"],"rpm_limit":2},
            {"key_sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]}}"#;
        parse(json.as_bytes(), &|_| None, 0).unwrap().0
    }

    fn key(c: &Config, k: &str) -> Principal {
        c.keys.authenticate(Some(k), 1_000).unwrap()
    }

    #[test]
    fn endpoints_needing_the_master_key() {
        let c = config();
        let e = authorize(&c, &Endpoint::KeyGenerate, Some("sk-team"), 1_000).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(
            authorize(&c, &Endpoint::KeyGenerate, Some("sk-m"), 1_000).unwrap(),
            Principal::Master
        );
        assert_eq!(
            authorize(&c, &Endpoint::ListModels, None, 1_000)
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            authorize(&c, &Endpoint::V1Live, None, 1_000).unwrap(),
            Principal::Open
        );
    }

    #[test]
    fn key_rpm_limit_and_budget() {
        let c = config();
        let mut h = FakeHost::new(1);
        key_table::precreate(&mut h);
        let team = key(&c, "sk-team");
        assert!(charge(&mut h, &team, 0, 1).unwrap().is_some());
        assert!(charge(&mut h, &team, 0, 1).is_ok());
        let e = charge(&mut h, &team, 0, 1).unwrap_err();
        assert_eq!(e.status(), 429);
        assert!(e.retry_after.is_some());

        let minted = {
            let reply = generate(
                &c,
                &mut h,
                br#"{"models":["chat"],"duration":"1h","max_budget":0.01,"key_alias":"b"}"#,
            )
            .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            v["key"].as_str().unwrap().to_string()
        };
        let p = c.keys.authenticate(Some(&minted), h.now_ms / 1000).unwrap();
        let ch = charge(&mut h, &p, 0, 1).unwrap().unwrap();
        // 4 prompt + 3 completion tokens at 0.001/0.002: 0.010 USD, the whole budget.
        let usage = Usage::new(4, 3);
        settle(&mut h, &ch, Some(usage), c.deployments.first());
        let e = charge(&mut h, &p, 0, 1).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.kind.error_type(), "budget_exceeded");
        assert_eq!(
            e.message,
            "Budget has been exceeded! Current cost: 0.01, Max budget: 0.01"
        );
        let info = info(&c, &h, &p, None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
        assert!((v["info"]["spend"].as_f64().unwrap() - 0.01).abs() < 1e-12);
        assert!(!String::from_utf8(info.body).unwrap().contains(&minted));
    }

    #[test]
    fn max_parallel_requests_counts_requests_in_flight_and_releases_them() {
        let c = config();
        let mut h = FakeHost::new(1);
        crate::router::precreate(&c, &mut h);
        let minted = json_key(generate(&c, &mut h, br#"{"max_parallel_requests":2}"#).unwrap());
        let p = c.keys.authenticate(Some(&minted), h.now_ms / 1000).unwrap();
        let first = charge(&mut h, &p, 10, 1).unwrap().unwrap();
        let second = charge(&mut h, &p, 10, 1).unwrap().unwrap();
        let e = charge(&mut h, &p, 10, 1).unwrap_err();
        assert_eq!(
            (e.status(), e.code.as_deref()),
            (429, Some("max_parallel_requests_exceeded"))
        );
        // One ends (answered), one is refunded (nothing served): two fit again.
        settle(
            &mut h,
            &first,
            Some(Usage::new(1, 1)),
            c.deployments.first(),
        );
        refund(&mut h, &second);
        let a = charge(&mut h, &p, 10, 1).unwrap().unwrap();
        let _b = charge(&mut h, &p, 10, 1).unwrap().unwrap();
        assert!(charge(&mut h, &p, 10, 1).is_err());
        // A count whose end was never seen goes stale once the key has been idle long enough.
        h.now_ms += STALE_IN_FLIGHT_MINUTES * 60_000;
        assert!(charge(&mut h, &p, 10, 1).is_ok());
        settle(&mut h, &a, None, None);
    }

    #[test]
    fn budget_duration_starts_the_spend_again_each_period() {
        let c = config();
        let mut h = FakeHost::new(1);
        crate::router::precreate(&c, &mut h);
        let body = br#"{"max_budget":0.01,"budget_duration":"1h"}"#;
        let minted = json_key(generate(&c, &mut h, body).unwrap());
        let p = c.keys.authenticate(Some(&minted), h.now_ms / 1000).unwrap();
        let spend_all = |h: &mut FakeHost| {
            let ch = charge(h, &p, 0, 1).unwrap().unwrap();
            settle(h, &ch, Some(Usage::new(4, 3)), c.deployments.first());
        };
        spend_all(&mut h);
        assert_eq!(
            charge(&mut h, &p, 0, 1).unwrap_err().kind,
            ErrorKind::BudgetExceeded
        );
        h.now_ms += 3_600_000;
        spend_all(&mut h);
        assert_eq!(
            charge(&mut h, &p, 0, 1).unwrap_err().kind,
            ErrorKind::BudgetExceeded
        );
        let Principal::Key(g) = &p else { panic!() };
        assert!(
            (spend_of(&h, g) - 0.01).abs() < 1e-12,
            "this period's spend only"
        );
        let v: serde_json::Value =
            serde_json::from_slice(&info(&c, &h, &p, None).unwrap().body).unwrap();
        assert_eq!(v["info"]["budget_duration"], "1h");
        assert!(v["info"]["budget_reset_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
    }

    fn json_key(reply: crate::gateway::LocalReply) -> String {
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        v["key"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_key_with_budget_and_limits_is_refused_once_its_budget_is_spent() {
        let c = config();
        let mut h = FakeHost::new(1);
        key_table::precreate(&mut h);
        let reply = generate(
            &c,
            &mut h,
            br#"{"models":["chat"],"max_budget":0.01,"rpm_limit":3,"tpm_limit":1000}"#,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let p = c
            .keys
            .authenticate(v["key"].as_str(), h.now_ms / 1000)
            .unwrap();
        let first = charge(&mut h, &p, 10, 1).unwrap().unwrap();
        settle(
            &mut h,
            &first,
            Some(Usage::new(4, 3)),
            c.deployments.first(),
        );
        // The budget is spent: refused as such, and the refusal reserves nothing.
        let e = charge(&mut h, &p, 10, 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BudgetExceeded);
        let counters = key_table::read(&h, &first.grant.id);
        assert_eq!(counters.state.requests, 1);
        assert_eq!(counters.state.tokens, 7, "settled on the real usage");
    }

    #[test]
    fn rpm_only_keys_are_written_once_tpm_keys_settle_tokens() {
        let c = config();
        let mut h = FakeHost::new(1);
        key_table::precreate(&mut h);
        let team = key(&c, "sk-team");
        let ch = charge(&mut h, &team, 50, 1).unwrap().unwrap();
        let charged = h.shared.clone();
        settle(&mut h, &ch, Some(Usage::new(4, 3)), c.deployments.get(1));
        assert_eq!(h.shared, charged, "rpm only, no price: nothing to settle");
        // Its rpm limit still holds: 2 per minute.
        assert!(charge(&mut h, &team, 0, 1).is_ok());
        assert_eq!(charge(&mut h, &team, 0, 1).unwrap_err().status(), 429);

        let minted = {
            let reply = generate(&c, &mut h, br#"{"tpm_limit":100}"#).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            v["key"].as_str().unwrap().to_string()
        };
        let p = c.keys.authenticate(Some(&minted), h.now_ms / 1000).unwrap();
        let ch = charge(&mut h, &p, 90, 1).unwrap().unwrap();
        // The estimate (90) is replaced by the real count (7): 93 tokens are left this minute.
        settle(&mut h, &ch, Some(Usage::new(4, 3)), c.deployments.get(1));
        assert!(charge(&mut h, &p, 90, 1).is_ok());
    }
}
