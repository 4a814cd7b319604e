//! A deployment's `tpm` and a key's `tpm_limit` across the fleet. Tokens are known only after the answer, so a
//! request is admitted by one `ShouldRateLimit` call on `deployment_tpm = <id>` whose
//! `hits_addend` is its prompt estimate (the service counts first and compares after, so a
//! request is admitted only while the estimate fits), and the rest of its real count
//! (`usage.total_tokens` minus what was charged, streams included) is reported after the
//! answer. A request-level `hits_addend` is what both envoyproxy/ratelimit and Limitador
//! read; the per-descriptor one (`RateLimitDescriptor.hits_addend = 3`) is not Limitador's.
//!
//! Reports are off the response's path: the answer adds its remainder to a per-Envoy shared
//! record per deployment. The next admission call for that deployment on this Envoy carries
//! what the record holds on top of its own estimate, and the once-a-second tick sends what is
//! left, one call per deployment, from outside any request (a call a request makes as it ends
//! would be cancelled with it). Tokens recorded in an earlier minute are dropped: the service
//! would count them in the current window. So the fleet's `tpm` is exceeded by at most the
//! tokens of answers in flight, plus the remainders other Envoys have not reported yet (at
//! most a second's worth).

use super::{proto, Admission, DEPLOYMENT_TPM_KEY, KEY_TPM_KEY};
use crate::access::KeyCharge;
use crate::config::{Config, Deployment};
use crate::host::Host;
use crate::keys::KeyGrant;
use crate::router::Reservation;
use crate::state::minute_of;

/// The per-Envoy list of keys whose tokens wait for the tick (ids, one per line): a key's
/// id is added when its record goes from nothing waiting to something.
const WAITING_KEYS: &str = "llm-gateway/fleet-key-tokens";

fn key_record(id: &str) -> String {
    format!("{WAITING_KEYS}/{id}")
}

/// The per-Envoy records of what waits for the tick, created at configure time so that
/// no answer has to create one (`host::create_shared`): each deployment's tokens (with
/// `tpm`) and requests sent unasked (with `rpm`), the list of keys with tokens waiting, and
/// the service's health.
pub fn precreate(config: &Config, host: &mut dyn Host) {
    if config.rate_limit.is_none() {
        return;
    }
    let mut create = |key: &str| {
        if host.shared_get(key).is_none() {
            host.shared_set(key, &[], None);
        }
    };
    for d in &config.deployments {
        if d.tpm.is_some() {
            create(&d.fleet_tokens_key);
        }
        if d.rpm.is_some() {
            create(&d.fleet_unasked_key);
        }
    }
    create(WAITING_KEYS);
    create(super::budget::WAITING_KEYS);
    create(super::HEALTH_KEY);
}

/// A charge of `hits` tokens on the deployment's tpm descriptor.
pub fn frame(domain: &str, d: &Deployment, hits: u64) -> Vec<u8> {
    proto::request_frame(
        domain,
        &[proto::Descriptor {
            entries: vec![(DEPLOYMENT_TPM_KEY, d.id.as_str())],
            limit: None,
        }],
        Some(u32::try_from(hits.max(1)).unwrap_or(u32::MAX)),
    )
}

/// Whether the request reserved as `r` must be admitted on its deployment's tokens first,
/// and with how many (its prompt estimate, at least 1).
pub fn admission(
    config: &Config,
    host: &mut dyn Host,
    r: &Reservation,
) -> (Admission<Vec<u8>>, u64) {
    let (Some(service), Some(d)) = (&config.rate_limit, config.deployment(r.deployment)) else {
        return (Admission::Go, 0);
    };
    if d.tpm.is_none() {
        return (Admission::Go, 0);
    }
    let hits = r.reserved_tokens.max(1);
    match super::ask_or_fall_back(service, host, ()) {
        Admission::Ask(()) => {
            let minute = minute_of(host.now_unix_ms());
            let waiting = take_waiting(host, d, minute);
            let frame = frame(&service.domain, d, hits.saturating_add(waiting));
            (Admission::Ask(frame), hits)
        }
        Admission::Go => (Admission::Go, 0),
        Admission::Refuse => (Admission::Refuse, 0),
    }
}

/// After an answer on a deployment with `tpm`: what the fleet has not been charged yet
/// waits in this Envoy's record for the tick.
pub fn report(config: &Config, host: &mut dyn Host, r: &Reservation, actual: u64, now_ms: u64) {
    if config.rate_limit.is_none() {
        return;
    }
    let Some(d) = config.deployment(r.deployment) else {
        return;
    };
    let rest = actual.saturating_sub(r.fleet_tokens);
    if rest == 0 {
        return;
    }
    let minute = minute_of(now_ms);
    let _ = crate::host::update_shared::<(), _>(host, &d.fleet_tokens_key, |bytes| {
        let (at, waiting) = decode(bytes.unwrap_or_default());
        let waiting = if at == minute { waiting } else { 0 };
        Ok(encode(minute, waiting.saturating_add(rest)))
    });
}

/// A charge of `hits` tokens on the key's tpm descriptor, carrying the key's `tpm_limit` as
/// its own limit (keys minted after the service's configuration was written are limited too).
pub fn key_frame(domain: &str, id: &str, tpm: u64, hits: u64) -> Vec<u8> {
    proto::request_frame(
        domain,
        &[proto::Descriptor {
            entries: vec![(KEY_TPM_KEY, id)],
            limit: Some(proto::LimitOverride {
                requests_per_unit: u32::try_from(tpm).unwrap_or(u32::MAX),
                unit: proto::Unit::Minute,
            }),
        }],
        Some(u32::try_from(hits.max(1)).unwrap_or(u32::MAX)),
    )
}

/// Whether the request of a key with `tpm_limit` must be admitted on the key's tokens first,
/// and with how many (its prompt estimate, at least 1; what waits for the key rides along).
pub fn key_admission(
    config: &Config,
    host: &mut dyn Host,
    charge: &KeyCharge,
) -> (Admission<Vec<u8>>, u64) {
    let hits = charge.reserved_tokens.max(1);
    (key_admission_of(config, host, &charge.grant, hits), hits)
}

/// `key_admission` for `hits` tokens of `grant` (a fan-out's arms together).
pub fn key_admission_of(
    config: &Config,
    host: &mut dyn Host,
    grant: &KeyGrant,
    hits: u64,
) -> Admission<Vec<u8>> {
    let (Some(service), Some(tpm)) = (&config.rate_limit, grant.tpm) else {
        return Admission::Go;
    };
    super::ask_or_fall_back(service, host, ()).map(|()| {
        let minute = minute_of(host.now_unix_ms());
        let waiting = take_key_waiting(host, &grant.id, minute).map_or(0, |(_, t)| t);
        key_frame(
            &service.domain,
            &grant.id,
            tpm,
            hits.saturating_add(waiting),
        )
    })
}

/// After an answer for a key with `tpm_limit`: what the fleet has not been charged yet waits
/// in this Envoy's record for the key (and the key in the tick's list).
pub fn report_key(
    config: &Config,
    host: &mut dyn Host,
    grant: &KeyGrant,
    fleet_tokens: u64,
    actual: u64,
) {
    let (Some(_), Some(tpm)) = (&config.rate_limit, grant.tpm) else {
        return;
    };
    let rest = actual.saturating_sub(fleet_tokens);
    if rest == 0 {
        return;
    }
    let minute = minute_of(host.now_unix_ms());
    let mut was_empty = false;
    let written = crate::host::update_shared::<(), _>(host, &key_record(&grant.id), |bytes| {
        let (at, _, waiting) = decode_key(bytes.unwrap_or_default());
        let waiting = if at == minute { waiting } else { 0 };
        was_empty = waiting == 0;
        Ok(encode_key(minute, tpm, waiting.saturating_add(rest)))
    });
    if written.is_ok() && was_empty {
        add_to_list(host, WAITING_KEYS, &grant.id);
    }
}

/// Add a key id to a list record for the tick (`take_list` reads each id once).
pub(super) fn add_to_list(host: &mut dyn Host, list: &str, id: &str) {
    let _ = crate::host::update_shared::<(), _>(host, list, |bytes| {
        let mut ids = bytes.unwrap_or_default().to_vec();
        ids.extend_from_slice(id.as_bytes());
        ids.push(b'\n');
        Ok(ids)
    });
}

/// A request went to a deployment with `rpm` without the service's admission (a failover
/// attempt, a fan-out arm): the tick counts it in the fleet's window after the fact, so later
/// admissions see it.
pub fn report_unasked(config: &Config, host: &mut dyn Host, deployment: usize) {
    let (Some(_), Some(d)) = (&config.rate_limit, config.deployment(deployment)) else {
        return;
    };
    if d.rpm.is_none() {
        return;
    }
    let minute = minute_of(host.now_unix_ms());
    let _ = crate::host::update_shared::<(), _>(host, &d.fleet_unasked_key, |bytes| {
        let (at, waiting) = decode(bytes.unwrap_or_default());
        let waiting = if at == minute { waiting } else { 0 };
        Ok(encode(minute, waiting.saturating_add(1)))
    });
}

/// For the tick: the calls that report every deployment's waiting tokens, the records
/// emptied (a worker that loses the race leaves them to the one that won).
pub fn take_reports(config: &Config, host: &mut dyn Host) -> Vec<Vec<u8>> {
    let Some(service) = &config.rate_limit else {
        return Vec::new();
    };
    let minute = minute_of(host.now_unix_ms());
    let mut calls = Vec::new();
    for d in config.deployments.iter().filter(|d| d.tpm.is_some()) {
        let waiting = take_waiting(host, d, minute);
        if waiting > 0 {
            calls.push(frame(&service.domain, d, waiting));
        }
    }
    for d in config.deployments.iter().filter(|d| d.rpm.is_some()) {
        let unasked = take_record(host, &d.fleet_unasked_key, minute);
        if unasked > 0 {
            calls.push(proto::request_frame(
                &service.domain,
                &[proto::Descriptor {
                    entries: vec![(super::DEPLOYMENT_RPM_KEY, d.id.as_str())],
                    limit: None,
                }],
                Some(u32::try_from(unasked).unwrap_or(u32::MAX)),
            ));
        }
    }
    for id in take_waiting_keys(host) {
        if let Some((tpm, waiting)) = take_key_waiting(host, &id, minute) {
            calls.push(key_frame(&service.domain, &id, tpm, waiting));
        }
    }
    calls.extend(super::budget::take_reports(&service.domain, host));
    calls
}

/// The tick's list of keys with tokens waiting, emptied.
fn take_waiting_keys(host: &mut dyn Host) -> Vec<String> {
    take_list(host, WAITING_KEYS)
}

/// A list record of key ids (one per line), emptied; each id once.
pub(super) fn take_list(host: &mut dyn Host, list: &str) -> Vec<String> {
    let Some((bytes, cas)) = host.shared_get(list) else {
        return Vec::new();
    };
    if bytes.is_empty() || !host.shared_set(list, &[], Some(cas)) {
        return Vec::new();
    }
    let mut ids: Vec<String> = String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// This minute's tokens waiting for a key, with its `tpm_limit`, the record emptied.
fn take_key_waiting(host: &mut dyn Host, id: &str, minute: u64) -> Option<(u64, u64)> {
    let key = key_record(id);
    let (bytes, cas) = host.shared_get(&key)?;
    let (at, tpm, waiting) = decode_key(&bytes);
    if waiting == 0 || !host.shared_set(&key, &encode_key(minute, tpm, 0), Some(cas)) {
        return None;
    }
    (at == minute).then_some((tpm, waiting))
}

fn encode_key(minute: u64, tpm: u64, tokens: u64) -> Vec<u8> {
    let mut out = encode(minute, tokens);
    out.extend_from_slice(&tpm.to_le_bytes());
    out
}

fn decode_key(bytes: &[u8]) -> (u64, u64, u64) {
    let (minute, tokens) = decode(bytes);
    let tpm = bytes
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    (minute, tpm, tokens)
}

/// This minute's tokens waiting in the deployment's record, the record emptied; 0 when a
/// worker won the race for them, or when they are an earlier minute's.
fn take_waiting(host: &mut dyn Host, d: &Deployment, minute: u64) -> u64 {
    take_record(host, &d.fleet_tokens_key, minute)
}

/// A (minute, count) record's count for this minute, the record emptied; 0 when a worker
/// won the race for it, or when it is an earlier minute's.
fn take_record(host: &mut dyn Host, key: &str, minute: u64) -> u64 {
    let Some((bytes, cas)) = host.shared_get(key) else {
        return 0;
    };
    let (at, waiting) = decode(&bytes);
    if waiting == 0 || !host.shared_set(key, &encode(minute, 0), Some(cas)) {
        return 0;
    }
    if at == minute {
        waiting
    } else {
        0
    }
}

fn encode(minute: u64, tokens: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&minute.to_le_bytes());
    out.extend_from_slice(&tokens.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> (u64, u64) {
    let word = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    (word(0..8), word(8..16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    fn config() -> Config {
        let json = r#"{"model_list": [
          {"model_name": "m", "litellm_params": {"model": "openai/a", "api_base": "http://127.0.0.1:9001", "tpm": 100}, "model_info": {"id": "a"}},
          {"model_name": "m", "litellm_params": {"model": "openai/b", "api_base": "http://127.0.0.1:9002"}}],
         "general_settings": {"rate_limit_service": {"address": "127.0.0.1:8081", "instances": 2}}}"#;
        crate::config::parse(json.as_bytes(), &|_| None, 0)
            .unwrap()
            .0
    }

    fn reservation(c: &Config, host: &mut FakeHost, estimate: u64) -> Reservation {
        let target = crate::scope::Scope::of(c, &crate::keys::Principal::Master)
            .admit_group(0)
            .unwrap();
        crate::router::reserve_deployment(c, host, target, 0, estimate).unwrap()
    }

    #[test]
    fn a_deployment_with_tpm_is_charged_its_prompt_estimate_as_the_calls_hits() {
        let c = config();
        let mut host = FakeHost::new(1);
        let r = reservation(&c, &mut host, 12);
        let (Admission::Ask(frame), hits) = admission(&c, &mut host, &r) else {
            panic!("a deployment with tpm asks");
        };
        assert_eq!(hits, 12);
        let message = &frame[5..];
        assert!(message.windows(16).any(|w| w == b"\x0a\x0edeployment_tpm"));
        assert!(message.ends_with(b"\x18\x0c"), "hits_addend = 12");
    }

    #[test]
    fn the_rest_of_the_real_count_is_reported_once_by_the_tick_and_never_into_the_next_minute() {
        let c = config();
        let mut host = FakeHost::new(1);
        let mut r = reservation(&c, &mut host, 12);
        r.fleet_tokens = 12;
        let now = host.now_ms;
        report(&c, &mut host, &r, 30, now);
        report(&c, &mut host, &r, 15, now);
        let calls = take_reports(&c, &mut host);
        assert_eq!(calls.len(), 1);
        assert!(calls[0].ends_with(b"\x18\x15"), "18 + 3 = 21 tokens");
        assert!(take_reports(&c, &mut host).is_empty(), "taken once");
        // An answer at or under its charge reports nothing.
        report(&c, &mut host, &r, 12, now);
        assert!(take_reports(&c, &mut host).is_empty());
        // Tokens of a minute gone are dropped.
        report(&c, &mut host, &r, 40, now);
        host.now_ms += 60_000;
        assert!(take_reports(&c, &mut host).is_empty());
    }

    #[test]
    fn the_next_admission_carries_what_waits_on_top_of_its_own_estimate() {
        let c = config();
        let mut host = FakeHost::new(1);
        let mut r = reservation(&c, &mut host, 12);
        r.fleet_tokens = 12;
        let now = host.now_ms;
        report(&c, &mut host, &r, 20, now);
        let next = reservation(&c, &mut host, 12);
        let (Admission::Ask(frame), hits) = admission(&c, &mut host, &next) else {
            panic!("asks");
        };
        assert_eq!(hits, 12, "the request's own charge");
        assert!(frame.ends_with(b"\x18\x14"), "12 + the 8 waiting");
        assert!(
            take_reports(&c, &mut host).is_empty(),
            "nothing left for the tick"
        );
    }

    #[test]
    fn requests_sent_unasked_are_counted_in_the_deployments_rpm_by_the_tick() {
        let json = r#"{"model_list": [
          {"model_name": "m", "litellm_params": {"model": "openai/a", "api_base": "http://127.0.0.1:9001", "rpm": 10}, "model_info": {"id": "a"}},
          {"model_name": "m", "litellm_params": {"model": "openai/b", "api_base": "http://127.0.0.1:9002"}}],
         "general_settings": {"rate_limit_service": {"address": "127.0.0.1:8081", "instances": 2}}}"#;
        let c = crate::config::parse(json.as_bytes(), &|_| None, 0)
            .unwrap()
            .0;
        let mut host = FakeHost::new(1);
        report_unasked(&c, &mut host, 0);
        report_unasked(&c, &mut host, 0);
        // Without rpm: nothing to count.
        report_unasked(&c, &mut host, 1);
        let calls = take_reports(&c, &mut host);
        assert_eq!(calls.len(), 1);
        assert!(calls[0].windows(12).any(|w| w == b"\x0a\x0adeployment"));
        assert!(calls[0].ends_with(b"\x18\x02"), "two requests");
        assert!(take_reports(&c, &mut host).is_empty());
    }
}
