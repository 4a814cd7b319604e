//! A virtual key's `max_budget` across the fleet. Spend is counted by the rate-limit service
//! in hundredths of a cent (`UNIT_USD`, so that a budget fits the protocol's 32-bit limit up
//! to $429,496): before a request of a key with a budget, one `ShouldRateLimit` call charges
//! its estimate on `key_budget = <id>, budget_period = <n>` with the budget as the
//! descriptor's own limit (`OVER_LIMIT`: the budget is spent fleet-wide). The estimate is the
//! request's token estimate at its deployment's input price, at least one unit. After the
//! answer its cost (the deployment's prices, as the key's local spend) minus that charge waits
//! in this Envoy's record for the key, rides on the key's next admission here, or goes out
//! with the once-a-second tick (`tokens::take_reports`). So the fleet's budget is exceeded by
//! at most what answers in flight and not yet reported cost beyond their estimates.
//!
//! The period is LiteLLM's: `budget_duration` periods from the key's issue time (a static
//! key's from the epoch), numbered as `KeyGrant::budget_period_at` numbers them, 0 for a
//! budget without a duration. It is a descriptor entry, so each period is a new counter at
//! the service and no service window has to match it; the counter's own window is a `YEAR`
//! (envoyproxy/ratelimit's longest unit, 365 days aligned to the epoch), so a period that
//! spans the service's year boundary, and a budget without a duration, start again there.
//!
//! What an answer costs below what was charged at admission is credited against the key's
//! next reports on this Envoy (the record holds a signed amount), so spend is not overstated
//! by the estimates over time.

use super::{proto, Admission};
use crate::access::KeyCharge;
use crate::config::{Config, Deployment};
use crate::host::Host;
use crate::keys::KeyGrant;

/// The descriptor key for a virtual key's budget; its value is the key's id.
pub const KEY_BUDGET_KEY: &str = "key_budget";
/// The descriptor entry after `KEY_BUDGET_KEY`: the key's budget period, as a number.
pub const BUDGET_PERIOD_KEY: &str = "budget_period";

/// What one hit on a budget descriptor stands for.
pub const UNIT_USD: f64 = 0.0001;
/// Records keep spend in 1e-8 USD, so costs below a unit add up exactly.
const NANO_USD_PER_UNIT: i64 = 10_000;

/// The per-Envoy list of keys with spend waiting for the tick (ids, one per line).
pub(super) const WAITING_KEYS: &str = "llm-gateway/fleet-key-budget";

fn key_record(id: &str) -> String {
    format!("{WAITING_KEYS}/{id}")
}

/// The budget in service units (at least 1, at most `u32::MAX`).
pub fn budget_units(budget: f64) -> u32 {
    let units = (budget / UNIT_USD).round();
    if units >= f64::from(u32::MAX) {
        u32::MAX
    } else if units >= 1.0 {
        units as u32
    } else {
        1
    }
}

/// `hits` units on the key's budget descriptor for `period`, with the budget as its limit.
pub fn frame(domain: &str, id: &str, period: u64, limit_units: u32, hits: u64) -> Vec<u8> {
    let period = period.to_string();
    proto::request_frame(
        domain,
        &[proto::Descriptor {
            entries: vec![(KEY_BUDGET_KEY, id), (BUDGET_PERIOD_KEY, period.as_str())],
            limit: Some(proto::LimitOverride {
                requests_per_unit: limit_units,
                unit: proto::Unit::Year,
            }),
        }],
        Some(u32::try_from(hits.max(1)).unwrap_or(u32::MAX)),
    )
}

/// Whether the request of a key with `max_budget` must be admitted on the key's budget
/// first, and the units its own estimate is charged (the whole units of spend waiting for
/// the key on this Envoy ride along).
pub fn admission(
    config: &Config,
    host: &mut dyn Host,
    charge: &KeyCharge,
    deployment: Option<&Deployment>,
) -> (Admission<Vec<u8>>, u64) {
    let units = estimate_units(charge.estimated_tokens, deployment);
    (admission_of(config, host, &charge.grant, units), units)
}

/// `admission` for `units` of `grant`'s budget (a fan-out's arms together).
pub fn admission_of(
    config: &Config,
    host: &mut dyn Host,
    grant: &KeyGrant,
    units: u64,
) -> Admission<Vec<u8>> {
    let (Some(service), Some(budget)) = (&config.rate_limit, grant.budget) else {
        return Admission::Go;
    };
    super::ask_or_fall_back(service, host, ()).map(|()| {
        let period = grant.budget_period_at(host.now_unix_ms() / 1000);
        let waiting = take_units(host, &key_record(&grant.id), Some(period)).map_or(0, |t| t.2);
        let limit = budget_units(budget);
        frame(
            &service.domain,
            &grant.id,
            period,
            limit,
            units.saturating_add(waiting),
        )
    })
}

/// A request's estimate in units: its estimated tokens at the deployment's input price,
/// rounded down, at least one (the admission itself).
pub fn estimate_units(tokens: u64, deployment: Option<&Deployment>) -> u64 {
    let usd = deployment.map_or(0.0, |d| {
        d.cost(crate::translate::text::Usage {
            prompt_tokens: tokens,
            completion_tokens: 0,
            total_tokens: tokens,
        })
    });
    ((usd / UNIT_USD).floor() as u64).max(1)
}

/// After an answer for a key with a budget: its cost, less the units charged at admission,
/// waits in this Envoy's record for the key (the key in the tick's list once a whole unit
/// waits).
pub fn report(
    config: &Config,
    host: &mut dyn Host,
    grant: &KeyGrant,
    charged_units: u64,
    cost: f64,
) {
    let (Some(_), Some(budget)) = (&config.rate_limit, grant.budget) else {
        return;
    };
    let charged = i64::try_from(charged_units)
        .unwrap_or(i64::MAX)
        .saturating_mul(NANO_USD_PER_UNIT);
    let rest = ((cost.max(0.0) * 1e8).round() as i64).saturating_sub(charged);
    if rest == 0 {
        return;
    }
    let period = grant.budget_period_at(host.now_unix_ms() / 1000);
    let limit = u64::from(budget_units(budget));
    let mut now_due = false;
    let written = crate::host::update_shared::<(), _>(host, &key_record(&grant.id), |bytes| {
        let (at, _, waiting) = decode(bytes.unwrap_or_default());
        let waiting = if at == period { waiting } else { 0 };
        let next = waiting.saturating_add(rest);
        now_due = waiting < NANO_USD_PER_UNIT && next >= NANO_USD_PER_UNIT;
        Ok(encode(period, limit, next))
    });
    if written.is_ok() && now_due {
        super::tokens::add_to_list(host, WAITING_KEYS, &grant.id);
    }
}

/// For the tick: one call per key with whole units of spend waiting, those units taken.
pub fn take_reports(domain: &str, host: &mut dyn Host) -> Vec<Vec<u8>> {
    let mut calls = Vec::new();
    for id in super::tokens::take_list(host, WAITING_KEYS) {
        if let Some((period, limit, units)) = take_units(host, &key_record(&id), None) {
            let limit = u32::try_from(limit).unwrap_or(u32::MAX);
            calls.push(frame(domain, &id, period, limit, units));
        }
    }
    calls
}

/// The whole units waiting in a key's record, taken (what is below a unit stays), with the
/// record's period and limit; `None` when nothing whole waits, when `period` is given and the
/// record is another period's, or when another worker took it first.
fn take_units(host: &mut dyn Host, key: &str, period: Option<u64>) -> Option<(u64, u64, u64)> {
    let (bytes, cas) = host.shared_get(key)?;
    let (at, limit, waiting) = decode(&bytes);
    if period.is_some_and(|p| p != at) || waiting < NANO_USD_PER_UNIT {
        return None;
    }
    let units = waiting / NANO_USD_PER_UNIT;
    let left = waiting - units * NANO_USD_PER_UNIT;
    host.shared_set(key, &encode(at, limit, left), Some(cas))
        .then_some((at, limit, u64::try_from(units).unwrap_or(0)))
}

/// (period, limit in units, spend waiting in 1e-8 USD: negative while admission charges
/// exceed what answers cost).
fn encode(period: u64, limit: u64, waiting: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&period.to_le_bytes());
    out.extend_from_slice(&limit.to_le_bytes());
    out.extend_from_slice(&waiting.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> (u64, u64, i64) {
    let word = |range: std::ops::Range<usize>| -> [u8; 8] {
        bytes
            .get(range)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 8])
    };
    (
        u64::from_le_bytes(word(0..8)),
        u64::from_le_bytes(word(8..16)),
        i64::from_le_bytes(word(16..24)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    fn config() -> Config {
        let json = r#"{"model_list": [
          {"model_name": "m", "litellm_params": {"model": "openai/a", "api_base": "http://127.0.0.1:9001"}}],
         "general_settings": {"master_key": "sk-m", "virtual_keys": [{"key": "sk-b", "max_budget": 0.01, "budget_duration": "1h"}],
           "rate_limit_service": {"address": "127.0.0.1:8081", "instances": 2}}}"#;
        crate::config::parse(json.as_bytes(), &|_| None, 0)
            .unwrap()
            .0
    }

    fn grant(c: &Config) -> KeyGrant {
        c.keys.static_grants()[0].clone()
    }

    fn charge(g: &KeyGrant, estimated_tokens: u64) -> KeyCharge {
        let principal = crate::keys::Principal::Key(std::sync::Arc::new(g.clone()));
        let mut host = FakeHost::new(9);
        crate::access::charge(&mut host, &principal, estimated_tokens, 1)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn budgets_become_units_that_fit_the_protocol() {
        assert_eq!(budget_units(0.01), 100);
        assert_eq!(budget_units(25.0), 250_000);
        assert_eq!(budget_units(0.00001), 1);
        assert_eq!(budget_units(1e9), u32::MAX);
    }

    #[test]
    fn admission_charges_one_unit_on_the_keys_period_with_the_budget_as_its_limit() {
        let c = config();
        let g = grant(&c);
        let mut host = FakeHost::new(1);
        let (Admission::Ask(frame), 1) = admission(&c, &mut host, &charge(&g, 0), None) else {
            panic!("a key with a budget asks");
        };
        let period = g.budget_period_at(host.now_ms / 1000);
        assert_eq!(frame, super::frame("llm-gateway", &g.id, period, 100, 1));
        let text = String::from_utf8_lossy(&frame);
        assert!(text.contains("key_budget") && text.contains("budget_period"));
        assert!(text.contains(&period.to_string()));
    }

    #[test]
    fn spend_waits_in_whole_units_rides_on_the_next_admission_and_credits_below_a_unit() {
        let c = config();
        let g = grant(&c);
        let mut host = FakeHost::new(1);
        crate::router::precreate(&c, &mut host);
        let period = g.budget_period_at(host.now_ms / 1000);
        // Admitted (1 unit charged), cost 3.5 units: 2.5 wait, 2 whole go with the next call.
        report(&c, &mut host, &g, 1, 3.5 * UNIT_USD);
        let (Admission::Ask(frame), 1) = admission(&c, &mut host, &charge(&g, 0), None) else {
            panic!("asks");
        };
        assert_eq!(frame, super::frame("llm-gateway", &g.id, period, 100, 3));
        // 0.5 left; an answer costing 0.2 units against its 1 charged: 0.5 - 0.8 < 0.
        report(&c, &mut host, &g, 1, 0.2 * UNIT_USD);
        assert!(take_reports("llm-gateway", &mut host).is_empty());
        // Not admitted (the service was down): the whole cost waits; 1.5 units → 1 due.
        report(&c, &mut host, &g, 0, 1.8 * UNIT_USD);
        let calls = take_reports("llm-gateway", &mut host);
        assert_eq!(
            calls,
            vec![super::frame("llm-gateway", &g.id, period, 100, 1)]
        );
        assert!(
            take_reports("llm-gateway", &mut host).is_empty(),
            "taken once"
        );
    }

    #[test]
    fn the_estimate_is_charged_at_the_deployments_input_price() {
        let c = config();
        let mut d = c.deployments[0].clone();
        d.input_cost_per_token = Some(0.00005);
        assert_eq!(estimate_units(10, Some(&d)), 5);
        assert_eq!(
            estimate_units(1, Some(&d)),
            1,
            "at least the admission's unit"
        );
        assert_eq!(estimate_units(1000, None), 1, "unpriced");
    }

    #[test]
    fn without_a_service_or_a_budget_nothing_is_asked_or_kept() {
        let json = r#"{"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/a", "api_base": "http://127.0.0.1:9001"}}],
         "general_settings": {"master_key": "sk-m", "virtual_keys": [{"key": "sk-b", "max_budget": 0.01}, {"key": "sk-c"}]}}"#;
        let c = crate::config::parse(json.as_bytes(), &|_| None, 0)
            .unwrap()
            .0;
        let mut host = FakeHost::new(1);
        for g in c.keys.static_grants() {
            assert_eq!(
                admission(&c, &mut host, &charge(g, 10), None).0,
                Admission::Go
            );
            report(&c, &mut host, g, 0, 1.0);
        }
        assert!(host.shared.is_empty());
        let with_service = config();
        let mut no_budget = grant(&with_service);
        no_budget.budget = None;
        let (a, _) = admission(&with_service, &mut host, &charge(&no_budget, 10), None);
        assert_eq!(a, Admission::Go);
    }
}
