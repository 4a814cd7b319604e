//! Keys without a database. Static virtual keys come from the config (the key, or only its
//! SHA-256); minted keys carry their own claims and an HMAC-SHA-256 signature, so any Envoy
//! with the same signing secret accepts them, across restarts, with nothing stored.
//!
//! Minted key format: `sk-lgw1_<base64url(claims JSON)>.<base64url(HMAC-SHA-256 tag)>`.
//! Every comparison of secret material is constant time: tags with `Mac::verify_slice`,
//! static keys through their SHA-256 digest (a map lookup by digest reveals nothing usable
//! about a key: finding a valid digest prefix is a preimage search).

use crate::auth::KeyDigest;
use crate::error::{ErrorKind, GatewayError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Mac, SimpleHmac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type HmacSha256 = SimpleHmac<Sha256>;

pub const MINTED_PREFIX: &str = "sk-lgw1_";

/// What a minted key says about itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Claims {
    /// Key id: 128 random bits, hex. Revocation names it.
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds; none: never (LiteLLM's key without a `duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// LiteLLM's `max_parallel_requests`: requests in flight at once, across workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub par: Option<u64>,
    /// LiteLLM's `budget_duration`, seconds: the spend starts again each period from `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bdur: Option<u64>,
    /// LiteLLM's bookkeeping, carried and echoed (`key_name`, `user_id`, `team_id`,
    /// `metadata`); of these only `metadata.allow_client_mock_response` changes anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
    /// LiteLLM's key `aliases`: a requested name → the model asked for instead.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub als: std::collections::BTreeMap<String, String>,
}

impl KeyGrant {
    /// The `budget_duration` period `now_secs` falls in (0 without one): spend counts
    /// within a period.
    pub fn budget_period_at(&self, now_secs: u64) -> u64 {
        match self.budget_period {
            Some((length, start)) if length > 0 => now_secs.saturating_sub(start) / length + 1,
            _ => 0,
        }
    }

    /// When the current budget period ends (LiteLLM's `budget_reset_at`).
    pub fn budget_reset_at(&self, now_secs: u64) -> Option<u64> {
        let (length, start) = self.budget_period.filter(|(l, _)| *l > 0)?;
        Some(start.saturating_add(self.budget_period_at(now_secs).saturating_mul(length)))
    }
}

impl Claims {
    /// LiteLLM's `metadata.allow_client_mock_response`: this key's requests may carry a
    /// `mock_response` the gateway answers itself.
    pub fn allows_mock_response(&self) -> bool {
        self.meta
            .as_ref()
            .and_then(|m| m.get("allow_client_mock_response"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

/// A key the gateway accepted, with what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyGrant {
    /// Stable id for shared counters: the minted key's `kid`, or `static-<digest prefix>`.
    pub id: String,
    pub alias: Option<String>,
    /// Model names (groups or aliases) it may use; empty = all.
    pub models: Vec<String>,
    pub expires: Option<u64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget: Option<f64>,
    /// `max_parallel_requests`.
    pub max_parallel: Option<u64>,
    /// `budget_duration` (seconds) and when its periods start (unix seconds).
    pub budget_period: Option<(u64, u64)>,
    pub minted: Option<Claims>,
}

impl Principal {
    /// The model a minted key's `aliases` put in place of `requested`, if any.
    pub fn model_alias(&self, requested: &str) -> Option<&str> {
        match self {
            Principal::Key(grant) => grant
                .minted
                .as_ref()?
                .als
                .get(requested)
                .map(String::as_str),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// No master key and no virtual keys are configured: the gateway is open.
    Open,
    Master,
    /// Shared with the configuration for static keys: a request clones a pointer, not the
    /// grant's strings.
    Key(Arc<KeyGrant>),
}

/// The key material of a configuration, prepared once.
#[derive(Debug, Default)]
pub struct KeyRing {
    pub master: Option<KeyDigest>,
    signing: Option<Vec<u8>>,
    statics: HashMap<[u8; 32], Arc<KeyGrant>>,
    revoked: HashSet<String>,
}

impl KeyRing {
    pub fn new(
        master: Option<&str>,
        signing_secret: Option<&str>,
        statics: Vec<([u8; 32], KeyGrant)>,
        revoked: Vec<String>,
    ) -> KeyRing {
        // The signing key is derived from the master key unless one is given, so every
        // Envoy sharing the master key shares it too, and it is never the master key itself.
        let signing = signing_secret
            .map(|s| derive(s.as_bytes(), b"llm-gateway key signing secret v1"))
            .or_else(|| {
                master.map(|m| derive(m.as_bytes(), b"llm-gateway key signing from master key v1"))
            });
        KeyRing {
            master: master.map(KeyDigest::of),
            signing,
            statics: statics
                .into_iter()
                .map(|(digest, grant)| (digest, Arc::new(grant)))
                .collect(),
            revoked: revoked.into_iter().collect(),
        }
    }

    /// The configured virtual keys' grants, by id (a stable order for what is rendered
    /// from them).
    pub fn static_grants(&self) -> Vec<&KeyGrant> {
        let mut grants: Vec<&KeyGrant> = self.statics.values().map(|g| g.as_ref()).collect();
        grants.sort_by(|a, b| a.id.cmp(&b.id));
        grants
    }

    /// Whether any key is required at all.
    pub fn is_open(&self) -> bool {
        self.master.is_none() && self.statics.is_empty()
    }

    pub fn can_mint(&self) -> bool {
        self.signing.is_some()
    }

    /// Who is calling. Missing, unknown, badly signed, expired or revoked keys are 401.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        now_secs: u64,
    ) -> Result<Principal, GatewayError> {
        if self.is_open() {
            return Ok(Principal::Open);
        }
        let Some(key) = presented else {
            return Err(unauthorized(
                "No API key provided. Send it as 'Authorization: Bearer <key>'.",
            ));
        };
        let digest = KeyDigest::of(key);
        if self.master.as_ref().is_some_and(|m| m.matches(&digest)) {
            return Ok(Principal::Master);
        }
        if let Some(grant) = self.statics.get(digest.bytes()) {
            if let Some(e) = grant.expires.filter(|&e| e <= now_secs) {
                return Err(expired(e, now_secs));
            }
            return Ok(Principal::Key(Arc::clone(grant)));
        }
        if let Some(token) = key.strip_prefix(MINTED_PREFIX) {
            let claims = self.verify(token)?;
            if self.revoked.contains(&claims.kid) {
                return Err(unauthorized("API key revoked."));
            }
            if let Some(exp) = claims.exp.filter(|&e| e <= now_secs) {
                return Err(expired(exp, now_secs));
            }
            return Ok(Principal::Key(Arc::new(KeyGrant {
                id: claims.kid.clone(),
                alias: claims.alias.clone(),
                models: claims.models.clone(),
                expires: claims.exp,
                rpm: claims.rpm,
                tpm: claims.tpm,
                budget: claims.budget,
                max_parallel: claims.par,
                budget_period: claims.bdur.map(|d| (d, claims.iat)),
                minted: Some(claims),
            })));
        }
        Err(unauthorized("Invalid API key."))
    }

    fn verify(&self, token: &str) -> Result<Claims, GatewayError> {
        let invalid = || unauthorized("Invalid API key.");
        let signing = self.signing.as_deref().ok_or_else(invalid)?;
        let (payload, tag) = token.split_once('.').ok_or_else(invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        let mut mac = HmacSha256::new_from_slice(signing).map_err(|_| invalid())?;
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| invalid())?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        serde_json::from_slice(&json).map_err(|_| invalid())
    }

    /// A new signed key for these claims.
    pub fn mint(&self, claims: &Claims) -> Result<String, GatewayError> {
        let signing = self.signing.as_deref().ok_or_else(|| {
            GatewayError::new(
                ErrorKind::Permission,
                "minting keys needs general_settings.master_key or key_signing_secret",
            )
        })?;
        let json = serde_json::to_vec(claims)
            .map_err(|e| GatewayError::new(ErrorKind::BadGateway, e.to_string()))?;
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = HmacSha256::new_from_slice(signing)
            .map_err(|e| GatewayError::new(ErrorKind::BadGateway, e.to_string()))?;
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{MINTED_PREFIX}{payload}.{tag}"))
    }
}

fn derive(secret: &[u8], context: &[u8]) -> Vec<u8> {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return secret.to_vec(),
    };
    mac.update(context);
    mac.finalize().into_bytes().to_vec()
}

/// LiteLLM's answer for an expired key (type `expired_key`).
fn expired(expiry: u64, now_secs: u64) -> GatewayError {
    GatewayError::new(
        ErrorKind::ExpiredKey,
        format!(
            "Authentication Error - Expired Key. Key Expiry time {} and current time {}",
            rfc3339(expiry),
            rfc3339(now_secs)
        ),
    )
    .with_code("401")
}

fn unauthorized(message: &str) -> GatewayError {
    GatewayError::new(ErrorKind::Authentication, message).with_code("invalid_api_key")
}

/// Seconds as the largest whole LiteLLM unit (`30d`, `2h`, `90s`).
pub fn format_duration(secs: u64) -> String {
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// LiteLLM's durations: `30s`, `30m`, `30h`, `30d` (also `30min`, as its docs write it).
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let unit_secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        // LiteLLM's `mo`: a month, taken as 30 days (a signed key holds seconds).
        "mo" | "month" | "months" => 2_592_000,
        _ => return None,
    };
    n.checked_mul(unit_secs).filter(|&d| d > 0)
}

/// Unix seconds → `2026-11-22T00:03:00Z`.
pub fn rfc3339(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, se) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs).ok()
}

/// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Hex of 16 random bytes.
pub fn key_id(bytes: [u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000;

    fn claims() -> Claims {
        Claims {
            kid: "00112233445566778899aabbccddeeff".into(),
            alias: Some("team-a".into()),
            models: vec!["chat".into()],
            iat: NOW,
            exp: Some(NOW + 3600),
            rpm: Some(5),
            budget: Some(1.5),
            ..Claims::default()
        }
    }

    fn ring(master: &str) -> KeyRing {
        KeyRing::new(Some(master), None, vec![], vec![])
    }

    #[test]
    fn minted_keys_round_trip_on_any_ring_with_the_same_master() {
        let key = ring("sk-master").mint(&claims()).unwrap();
        assert!(key.starts_with(MINTED_PREFIX));
        let other_envoy = ring("sk-master");
        match other_envoy.authenticate(Some(&key), NOW).unwrap() {
            Principal::Key(g) => {
                assert_eq!(g.id, "00112233445566778899aabbccddeeff");
                assert_eq!(g.models, vec!["chat"]);
                assert_eq!(g.rpm, Some(5));
                assert_eq!(g.budget, Some(1.5));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            other_envoy.authenticate(Some("sk-master"), NOW).unwrap(),
            Principal::Master
        );
    }

    #[test]
    fn forged_expired_revoked_and_foreign_keys_are_refused() {
        let r = ring("sk-master");
        let key = r.mint(&claims()).unwrap();
        // Tampered claims: a different payload under the old signature.
        let (payload, tag) = key
            .strip_prefix(MINTED_PREFIX)
            .unwrap()
            .split_once('.')
            .unwrap();
        let mut forged_claims = claims();
        forged_claims.models = vec![];
        forged_claims.rpm = None;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        assert_ne!(forged_payload, payload);
        let forged = format!("{MINTED_PREFIX}{forged_payload}.{tag}");
        assert_eq!(
            r.authenticate(Some(&forged), NOW).unwrap_err().status(),
            401
        );
        // Wrong secret.
        assert_eq!(
            ring("sk-other")
                .authenticate(Some(&key), NOW)
                .unwrap_err()
                .status(),
            401
        );
        let separate = KeyRing::new(Some("sk-master"), Some("a separate secret"), vec![], vec![]);
        assert_eq!(
            separate.authenticate(Some(&key), NOW).unwrap_err().status(),
            401
        );
        // Expired.
        let e = r.authenticate(Some(&key), NOW + 3600).unwrap_err();
        assert!(e.message.contains("Expired Key"), "{}", e.message);
        assert_eq!((e.status(), e.kind.error_type()), (401, "expired_key"));
        // Revoked.
        let revoked = KeyRing::new(Some("sk-master"), None, vec![], vec![claims().kid]);
        assert!(revoked
            .authenticate(Some(&key), NOW)
            .unwrap_err()
            .message
            .contains("revoked"));
        // Garbage and truncation.
        for bad in [
            "sk-lgw1_",
            "sk-lgw1_abc",
            "sk-lgw1_abc.def",
            &key[..key.len() - 2],
            "nope",
        ] {
            assert_eq!(
                r.authenticate(Some(bad), NOW).unwrap_err().status(),
                401,
                "{bad}"
            );
        }
        assert_eq!(r.authenticate(None, NOW).unwrap_err().status(), 401);
    }

    #[test]
    fn static_keys_by_digest_with_expiry() {
        let grant = KeyGrant {
            id: "static-1".into(),
            alias: Some("ci".into()),
            models: vec![],
            expires: Some(NOW + 10),
            rpm: None,
            tpm: None,
            budget: None,
            max_parallel: None,
            budget_period: None,
            minted: None,
        };
        let r = KeyRing::new(
            None,
            None,
            vec![(*KeyDigest::of("sk-static").bytes(), grant)],
            vec![],
        );
        assert!(!r.is_open() && !r.can_mint());
        assert!(matches!(
            r.authenticate(Some("sk-static"), NOW),
            Ok(Principal::Key(_))
        ));
        assert_eq!(
            r.authenticate(Some("sk-static"), NOW + 10)
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            r.authenticate(Some("sk-other"), NOW).unwrap_err().status(),
            401
        );
        assert_eq!(
            KeyRing::default().authenticate(None, NOW).unwrap(),
            Principal::Open
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("30min"), Some(1800));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("30d"), Some(2_592_000));
        for bad in ["", "30", "m", "-1h", "0s", "30y", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_both_ways() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_306_391), "2026-11-22T00:13:11Z");
        assert_eq!(parse_rfc3339("2026-11-22T00:13:11Z"), Some(1_795_306_391));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(
            parse_rfc3339("2026-11-22T01:13:11.250+01:00"),
            Some(1_795_306_391)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z")
                .map(rfc3339)
                .as_deref(),
            Some("2024-02-29T00:00:00Z")
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-11-21",
            "2026-11-21T23:33:11",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
