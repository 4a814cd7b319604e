//! Limits that hold across many Envoys, through Envoy's global rate-limit service
//! (`general_settings.rate_limit_service`): envoyproxy/ratelimit, Limitador, or anything that
//! answers `ShouldRateLimit`.
//!
//! Before a request goes to a deployment with `rpm`, one `ShouldRateLimit` hit on that
//! deployment's descriptor admits it. `OVER_LIMIT` fills the deployment's local record for the
//! rest of the minute (the services' windows are clock-aligned minutes, as the router's), so
//! later requests on this Envoy skip it without a call and the router picks the next one in
//! its strategy's order; when none has room the router's 429 with `retry-after` goes out, as
//! without the service. The local record still counts every request this Envoy sends: it can
//! never say "full" before the fleet is.
//!
//! When the service does not answer (unreachable, over `timeout_ms`, a gRPC error, a message
//! we cannot read) the configured failure mode applies, and the service is marked down for this
//! Envoy: later requests do not wait on it; one request a second asks again, and the first
//! answer brings it back. Each transition is logged once and every failure counted.
//!
//! Only decisions live here; the session sends the call (`Stream::call`, gRPC over an HTTP/2
//! cluster) and hands the answer back.

pub mod budget;
pub mod proto;
pub mod service_config;
pub mod tokens;

use crate::config::{Config, Deployment};
use crate::host::Host;
use crate::keys::{KeyGrant, Principal};

/// The descriptor key the gateway sends for a deployment's requests per minute; its value is
/// the deployment's id (`model_info.id`, else `<model_name>/<index>`), the same on every
/// Envoy that loads the same config.
pub const DEPLOYMENT_RPM_KEY: &str = "deployment";

/// The descriptor key for a virtual key's tokens per minute (`tpm_limit`), with the key's
/// limit carried as the descriptor's own, as for `KEY_RPM_KEY`.
pub const KEY_TPM_KEY: &str = "key_tpm";

/// The descriptor key for a deployment's tokens per minute (`tpm`); its value is the
/// deployment's id, as for `DEPLOYMENT_RPM_KEY`.
pub const DEPLOYMENT_TPM_KEY: &str = "deployment_tpm";

/// The descriptor key for a virtual key's requests per minute; its value is the key's id
/// (`static-<digest prefix>` or a minted key's `kid`, never the key itself), and the
/// descriptor carries the key's `rpm_limit` as its own limit, so keys minted after the
/// service's configuration was written are limited too.
pub const KEY_RPM_KEY: &str = "key";

/// How often a worker asks a service marked down whether it is back.
pub const PROBE_INTERVAL_MS: u64 = 1_000;

/// The shared record (per Envoy) saying whether the service answers.
pub(crate) const HEALTH_KEY: &str = "llm-gateway/rate-limit-service";

/// What to do when the service does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Each Envoy enforces `limit / instances` on its own (never more than the limit in all).
    Local,
    /// Admit as if the service had said OK (this Envoy's own count still caps at the limit).
    Allow,
    /// Refuse requests that need the service: 503.
    Deny,
}

impl FailureMode {
    pub fn parse(s: &str) -> Option<FailureMode> {
        match s {
            "local" => Some(FailureMode::Local),
            "allow" => Some(FailureMode::Allow),
            "deny" => Some(FailureMode::Deny),
            _ => None,
        }
    }
}

/// `general_settings.rate_limit_service`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The Envoy cluster (HTTP/2) the calls go to: `host:port` unless `cluster` names one.
    pub cluster: String,
    /// `host:port`, for the rendered cluster and the calls' `:authority`.
    pub host: String,
    pub port: u16,
    pub domain: String,
    pub timeout_ms: u64,
    pub failure_mode: FailureMode,
    /// How many Envoys share the limits (`local` mode divides by it).
    pub instances: u64,
    /// `host:port`, the calls' `:authority`.
    pub authority: String,
    /// Per deployment (config order), the request admitting one of its requests: the same
    /// bytes every time, so written once here; `None` for a deployment without `rpm`.
    pub frames: Vec<Option<Vec<u8>>>,
}

/// What this Envoy divides deployments' `rpm` by now: `instances` in `local` mode while the
/// service does not answer, else 1 (and no read at all without a service in `local` mode).
pub fn rpm_share(config: &Config, host: &dyn Host) -> u64 {
    match &config.rate_limit {
        Some(s) if s.failure_mode == FailureMode::Local && Health::read(host).down => {
            s.instances.max(1)
        }
        _ => 1,
    }
}

/// What this Envoy divides the caller's key's `rpm_limit`, `tpm_limit` and `max_budget` by
/// now (`rpm_share`); 1 without a read for every caller that is not a key with one.
pub fn key_rpm_share(config: &Config, host: &dyn Host, principal: &Principal) -> u64 {
    match principal {
        Principal::Key(grant)
            if (grant.rpm.is_some() || grant.tpm.is_some() || grant.budget.is_some())
                && config.rate_limit.is_some() =>
        {
            rpm_share(config, host)
        }
        _ => 1,
    }
}

/// The rpm this Envoy's own record enforces for `d` at a given `rpm_share`.
pub fn rpm_at_share(d: &Deployment, share: u64) -> Option<u64> {
    d.rpm.map(|rpm| rpm / share.max(1))
}

/// The tpm this Envoy's own record enforces for `d` at a given `rpm_share` (the same share:
/// the service is down for every limit at once).
pub fn tpm_at_share(d: &Deployment, share: u64) -> Option<u64> {
    d.tpm.map(|tpm| tpm / share.max(1))
}

/// The rpm this Envoy's own record enforces for `d` now: the configured one while the service
/// answers (or without one), `rpm / instances` in `local` mode while it does not.
pub fn local_rpm(config: &Config, host: &dyn Host, d: &Deployment) -> Option<u64> {
    d.rpm?;
    rpm_at_share(d, rpm_share(config, host))
}

/// Before a request is sent: whether the service must admit it (on a deployment's or a
/// key's descriptor) and with which gRPC frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<F> {
    /// Send it: no fleet limit applies, or the service is down and the mode admits it.
    Go,
    /// Ask the service first: this gRPC frame, to `Service::cluster`.
    Ask(F),
    /// The service is down and the mode is `deny`.
    Refuse,
}

impl<F> Admission<F> {
    /// The frame made by `f`, only when the service is to be asked.
    pub fn map<G>(self, f: impl FnOnce(F) -> G) -> Admission<G> {
        match self {
            Admission::Go => Admission::Go,
            Admission::Ask(frame) => Admission::Ask(f(frame)),
            Admission::Refuse => Admission::Refuse,
        }
    }
}

/// Whether the request for `deployment` must be admitted by the service first.
pub fn admission<'c>(
    config: &'c Config,
    host: &mut dyn Host,
    deployment: usize,
) -> Admission<&'c [u8]> {
    let Some(service) = &config.rate_limit else {
        return Admission::Go;
    };
    let Some(Some(frame)) = service.frames.get(deployment) else {
        return Admission::Go;
    };
    ask_or_fall_back(service, host, frame.as_slice())
}

/// Whether the request of a key with `rpm_limit` must be admitted on the key's descriptor
/// first (once per request, before its deployment is asked).
pub fn key_admission(config: &Config, host: &mut dyn Host, grant: &KeyGrant) -> Admission<Vec<u8>> {
    let Some(service) = &config.rate_limit else {
        return Admission::Go;
    };
    let Some(frame) = key_frame(&service.domain, grant) else {
        return Admission::Go;
    };
    ask_or_fall_back(service, host, frame)
}

pub(crate) fn ask_or_fall_back<F>(
    service: &Service,
    host: &mut dyn Host,
    frame: F,
) -> Admission<F> {
    let now = host.now_unix_ms();
    if Health::claim_call(host, now) {
        return Admission::Ask(frame);
    }
    match service.failure_mode {
        // The router and the key's record already held the request to `rpm / instances`
        // (`local_rpm`, `rpm_share`).
        FailureMode::Local | FailureMode::Allow => Admission::Go,
        FailureMode::Deny => Admission::Refuse,
    }
}

/// One hit on the key's rpm descriptor, carrying the key's `rpm_limit` per minute (`None`
/// for a key without one).
pub fn key_frame(domain: &str, grant: &KeyGrant) -> Option<Vec<u8>> {
    key_frame_with(domain, grant, None)
}

/// `hits` requests on the key's rpm descriptor at once (a fan-out's arms).
pub fn key_frame_hits(domain: &str, grant: &KeyGrant, hits: u32) -> Option<Vec<u8>> {
    key_frame_with(domain, grant, Some(hits))
}

fn key_frame_with(domain: &str, grant: &KeyGrant, hits: Option<u32>) -> Option<Vec<u8>> {
    let rpm = grant.rpm?;
    Some(proto::request_frame(
        domain,
        &[proto::Descriptor {
            entries: vec![(KEY_RPM_KEY, grant.id.as_str())],
            limit: Some(proto::LimitOverride {
                requests_per_unit: u32::try_from(rpm).unwrap_or(u32::MAX),
                unit: proto::Unit::Minute,
            }),
        }],
        hits,
    ))
}

/// One hit on the deployment's rpm descriptor (`None` when it has no `rpm`).
pub fn deployment_frame(domain: &str, d: &Deployment) -> Option<Vec<u8>> {
    d.rpm?;
    Some(proto::request_frame(
        domain,
        &[proto::Descriptor {
            entries: vec![(DEPLOYMENT_RPM_KEY, d.id.as_str())],
            limit: None,
        }],
        None,
    ))
}

/// The call's headers: gRPC over HTTP/2.
pub fn call_headers(authority: &str) -> [(&str, &str); 5] {
    [
        (":method", "POST"),
        (":path", proto::SHOULD_RATE_LIMIT_PATH),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
}

/// What the service's answer means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// The deployment has no room left in the fleet's window.
    Full,
    /// No usable answer: the failure mode applies. The reason is a metric label.
    Unanswered(&'static str),
}

/// Read a callout's answer: `status` `None` means the call failed (refused, reset, timeout).
pub fn verdict(status: Option<u16>, body: &[u8]) -> Verdict {
    match status {
        None => return Verdict::Unanswered("unreachable"),
        Some(200) => {}
        Some(_) => return Verdict::Unanswered("error"),
    }
    match proto::parse_answer(body) {
        Ok(a) => match a.overall {
            proto::Code::Ok => Verdict::Admitted,
            proto::Code::OverLimit => Verdict::Full,
            proto::Code::Unknown => Verdict::Unanswered("error"),
        },
        // A gRPC error (UNAVAILABLE, …) comes as headers and trailers with no message.
        Err(proto::Unreadable::NoMessage) => Verdict::Unanswered("error"),
        Err(_) => Verdict::Unanswered("malformed"),
    }
}

/// A change in whether the service answers, for the one log line it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentDown,
    CameBack,
}

/// After a call: record whether the service answered; `Some` for the one worker that saw
/// it change.
pub fn record_answer(host: &mut dyn Host, answered: bool) -> Option<Transition> {
    let now = host.now_unix_ms();
    let mut changed = None;
    let result = crate::host::update_shared(host, HEALTH_KEY, |bytes| {
        let h = Health::decode(bytes.unwrap_or_default());
        changed = match (h.down, answered) {
            (false, false) => Some(Transition::WentDown),
            (true, true) => Some(Transition::CameBack),
            _ => None,
        };
        if changed.is_none() {
            // Nothing to write (the common case: up and answering): leave it.
            return Err(());
        }
        Ok(Health {
            down: !answered,
            probe_at_ms: now + PROBE_INTERVAL_MS,
        }
        .encode()
        .to_vec())
    });
    result.ok().and(changed)
}

/// The per-Envoy view of the service: down or not, and when a worker may ask it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Health {
    down: bool,
    probe_at_ms: u64,
}

impl Health {
    fn encode(self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[0] = u8::from(self.down);
        out[1..].copy_from_slice(&self.probe_at_ms.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Health {
        match (bytes.first(), bytes.get(1..9)) {
            (Some(&down), Some(at)) => Health {
                down: down != 0,
                probe_at_ms: at.try_into().map_or(0, u64::from_le_bytes),
            },
            _ => Health::default(),
        }
    }

    fn read(host: &dyn Host) -> Health {
        host.shared_get(HEALTH_KEY)
            .map(|(b, _)| Health::decode(&b))
            .unwrap_or_default()
    }

    /// Whether this request calls the service: always while it answers; while it is down,
    /// the one request per `PROBE_INTERVAL_MS` that wins the record.
    fn claim_call(host: &mut dyn Host, now: u64) -> bool {
        let Some((bytes, cas)) = host.shared_get(HEALTH_KEY) else {
            return true;
        };
        let h = Health::decode(&bytes);
        if !h.down {
            return true;
        }
        if now < h.probe_at_ms {
            return false;
        }
        let next = Health {
            down: true,
            probe_at_ms: now + PROBE_INTERVAL_MS,
        };
        host.shared_set(HEALTH_KEY, &next.encode(), Some(cas))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    fn config(mode: &str) -> Config {
        let yaml = format!(
            r#"{{"model_list": [
              {{"model_name": "m", "litellm_params": {{"model": "openai/a", "api_base": "http://127.0.0.1:9001", "rpm": 30}}, "model_info": {{"id": "a"}}}},
              {{"model_name": "m", "litellm_params": {{"model": "openai/b", "api_base": "http://127.0.0.1:9002"}}}}],
             "general_settings": {{"rate_limit_service": {{"address": "127.0.0.1:8081", "failure_mode": "{mode}", "instances": 3}}}}}}"#
        );
        crate::config::parse(yaml.as_bytes(), &|_| None, 0)
            .unwrap()
            .0
    }

    fn answer(code: u8) -> Vec<u8> {
        vec![0, 0, 0, 0, 2, 0x08, code]
    }

    #[test]
    fn only_a_deployment_with_rpm_asks_and_its_descriptor_names_it() {
        let c = config("local");
        let mut host = FakeHost::new(1);
        let Admission::Ask(frame) = admission(&c, &mut host, 0) else {
            panic!("a deployment with rpm asks the service");
        };
        let message = &frame[5..];
        assert!(message.starts_with(b"\x0a\x0bllm-gateway"));
        assert!(message.ends_with(b"\x0a\x0adeployment\x12\x01a"));
        assert_eq!(admission(&c, &mut host, 1), Admission::Go);
    }

    #[test]
    fn answers_become_verdicts() {
        assert_eq!(verdict(Some(200), &answer(1)), Verdict::Admitted);
        assert_eq!(verdict(Some(200), &answer(2)), Verdict::Full);
        assert_eq!(verdict(Some(200), &answer(0)), Verdict::Unanswered("error"));
        assert_eq!(verdict(Some(200), &[]), Verdict::Unanswered("error"));
        assert_eq!(verdict(Some(503), &answer(1)), Verdict::Unanswered("error"));
        assert_eq!(verdict(None, &[]), Verdict::Unanswered("unreachable"));
        assert_eq!(
            verdict(Some(200), &[0, 0, 0, 0, 1, 0x0b]),
            Verdict::Unanswered("malformed")
        );
    }

    #[test]
    fn a_service_down_is_asked_again_once_a_second_and_comes_back() {
        let c = config("local");
        let mut host = FakeHost::new(1);
        assert_eq!(record_answer(&mut host, true), None);
        assert_eq!(record_answer(&mut host, false), Some(Transition::WentDown));
        // Another worker's failure changes nothing: one log line per transition.
        assert_eq!(record_answer(&mut host, false), None);
        let d = c.deployment(0).unwrap();
        assert_eq!(local_rpm(&c, &host, d), Some(10));
        // Down: no call until the probe is due; `local` admits (the router held it to rpm/3).
        assert_eq!(admission(&c, &mut host, 0), Admission::Go);
        host.now_ms += PROBE_INTERVAL_MS;
        assert!(matches!(admission(&c, &mut host, 0), Admission::Ask(_)));
        // The probe was claimed: the next request in the same second does not call.
        assert_eq!(admission(&c, &mut host, 0), Admission::Go);
        assert_eq!(record_answer(&mut host, true), Some(Transition::CameBack));
        assert_eq!(local_rpm(&c, &host, d), Some(30));
        assert!(matches!(admission(&c, &mut host, 0), Admission::Ask(_)));
    }

    #[test]
    fn deny_refuses_while_down_and_allow_admits() {
        for (mode, expected) in [("deny", Admission::Refuse), ("allow", Admission::Go)] {
            let c = config(mode);
            let mut host = FakeHost::new(1);
            record_answer(&mut host, false);
            assert_eq!(admission(&c, &mut host, 0), expected, "{mode}");
            let d = c.deployment(0).unwrap();
            assert_eq!(local_rpm(&c, &host, d), Some(30), "{mode}");
        }
    }
}
