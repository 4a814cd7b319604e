//! Response cache shared by the workers of one Envoy: exact match on the normalised request.
//!
//! Envoy's shared data has no delete and no listing, so one record per distinct request would
//! leave key names behind forever. Entries live instead in `slots` direct-mapped records
//! (`hash mod slots`), pre-created at configure time; each holds the request hash, its expiry
//! and the response. A shared byte counter keeps the total under `max_bytes` (an entry that
//! does not fit is not stored), and a sweep on the root tick frees expired slots. Entries leave
//! by TTL, or when a newer request with the same slot replaces them. Every write is a CAS.

use crate::host::Host;
use sha2::{Digest, Sha256};

const HEADER_BYTES: usize = 32 + 8;
const BYTES_KEY: &str = "llm_gateway.cache.bytes";

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheSettings {
    pub ttl_ms: u64,
    pub max_bytes: u64,
    pub max_entry_bytes: u64,
    pub slots: u64,
}

/// LiteLLM's in-memory cache keeps entries 10 minutes unless told otherwise.
pub const DEFAULT_TTL_SECS: f64 = 600.0;
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_SLOTS: u64 = 4096;

/// What one request does with the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub hash: [u8; 32],
    pub read: bool,
    pub write: bool,
    pub ttl_ms: u64,
}

/// Request fields that do not change the answer (or are the gateway's own).
const NOT_PART_OF_THE_KEY: [&str; 14] = [
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "caching",
    "cache",
    "num_retries",
    "fallbacks",
    "context_window_fallbacks",
    "timeout",
    "request_timeout",
    "store",
    "service_tier",
];

/// The cache key: the model group, endpoint and the caller's model scope, then the request
/// in a canonical form (keys sorted, numbers normalised, no whitespace).
pub fn key(group: &str, endpoint: &str, scope: &str, body: &[u8]) -> Option<[u8; 32]> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let map = value.as_object_mut()?;
    for field in NOT_PART_OF_THE_KEY {
        map.remove(field);
    }
    let canonical = serde_json::to_vec(&value).ok()?;
    let mut h = Sha256::new();
    for part in [
        b"llm-gateway cache v1".as_slice(),
        group.as_bytes(),
        endpoint.as_bytes(),
        scope.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&canonical);
    Some(h.finalize().into())
}

fn slot_key(settings: &CacheSettings, hash: &[u8; 32]) -> String {
    let n = hash
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    format!("llm_gateway.cache.slot.{}", n % settings.slots.max(1))
}

pub fn precreate(host: &mut dyn Host, settings: &CacheSettings) {
    for n in 0..settings.slots {
        let key = format!("llm_gateway.cache.slot.{n}");
        if host.shared_get(&key).is_none() {
            host.shared_set(&key, &[], None);
        }
    }
    if host.shared_get(BYTES_KEY).is_none() {
        host.shared_set(BYTES_KEY, &0u64.to_le_bytes(), None);
    }
}

fn expiry_of(entry: &[u8]) -> u64 {
    entry
        .get(32..40)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// The cached answer for this request, if one is stored and fresh.
pub fn get(host: &dyn Host, settings: &CacheSettings, plan: &Plan) -> Option<Vec<u8>> {
    let (entry, _) = host.shared_get(&slot_key(settings, &plan.hash))?;
    if entry.get(..32)? != plan.hash.as_slice() || expiry_of(&entry) <= host.now_unix_ms() {
        return None;
    }
    entry.get(HEADER_BYTES..).map(<[u8]>::to_vec)
}

/// Change the shared byte count by `delta` if the result stays within `max`.
fn add_bytes(host: &mut dyn Host, delta: i64, max: u64) -> bool {
    let mut apply = |bytes: Option<&[u8]>| -> Result<Vec<u8>, ()> {
        // The counter is pre-created; a missing one means the cache is not set up.
        let current = bytes
            .ok_or(())?
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        let next = current.saturating_add_signed(delta);
        if delta > 0 && next > max {
            return Err(());
        }
        Ok(next.to_le_bytes().to_vec())
    };
    crate::host::update_shared(host, BYTES_KEY, &mut apply).is_ok()
}

/// Store an answer; false when it is too large or the cache is full.
pub fn put(host: &mut dyn Host, settings: &CacheSettings, plan: &Plan, body: &[u8]) -> bool {
    let size = (HEADER_BYTES + body.len()) as u64;
    if size > settings.max_entry_bytes || plan.ttl_ms == 0 {
        return false;
    }
    let key = slot_key(settings, &plan.hash);
    let Some((old, cas)) = host.shared_get(&key) else {
        return false;
    };
    let delta = size as i64 - old.len() as i64;
    if !add_bytes(host, delta, settings.max_bytes) {
        return false;
    }
    let mut entry = Vec::with_capacity(size as usize);
    entry.extend_from_slice(&plan.hash);
    entry.extend_from_slice(&(host.now_unix_ms() + plan.ttl_ms).to_le_bytes());
    entry.extend_from_slice(body);
    if host.shared_set(&key, &entry, Some(cas)) {
        true
    } else {
        // Another worker wrote the slot first: give the bytes back.
        add_bytes(host, -delta, settings.max_bytes);
        false
    }
}

/// Free expired entries among `count` slots from `from` (a slice of the whole per tick).
pub fn sweep(host: &mut dyn Host, settings: &CacheSettings, from: u64, count: u64) {
    let now = host.now_unix_ms();
    for n in from..from.saturating_add(count).min(settings.slots) {
        let key = format!("llm_gateway.cache.slot.{n}");
        if let Some((entry, cas)) = host.shared_get(&key) {
            if !entry.is_empty()
                && expiry_of(&entry) <= now
                && host.shared_set(&key, &[], Some(cas))
            {
                add_bytes(host, -(entry.len() as i64), settings.max_bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    fn settings() -> CacheSettings {
        CacheSettings {
            ttl_ms: 1000,
            max_bytes: 400,
            max_entry_bytes: 200,
            slots: 8,
        }
    }

    fn plan(body: &[u8]) -> Plan {
        Plan {
            hash: key("chat", "chat", "*", body).unwrap(),
            read: true,
            write: true,
            ttl_ms: 1000,
        }
    }

    #[test]
    fn key_ignores_field_order_whitespace_and_gateway_fields() {
        let a = key(
            "g",
            "chat",
            "*",
            br#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#,
        );
        let b = key("g", "chat", "*", br#"{ "temperature" : 0.70, "messages" : [ {"content":"hi","role":"user"} ], "model":"alias", "stream":false, "user":"u", "caching":true }"#);
        assert_eq!(a, b);
        let other_temp = key(
            "g",
            "chat",
            "*",
            br#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.8}"#,
        );
        assert_ne!(a, other_temp);
        assert_ne!(
            a,
            key(
                "h",
                "chat",
                "*",
                br#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#
            )
        );
        assert_ne!(
            a,
            key(
                "g",
                "chat",
                "models:a",
                br#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#
            )
        );
        assert_eq!(key("g", "chat", "*", b"[1]"), None);
    }

    #[test]
    fn put_get_expire_and_sweep() {
        let mut h = FakeHost::new(1);
        let s = settings();
        precreate(&mut h, &s);
        let p = plan(br#"{"messages":[]}"#);
        assert_eq!(get(&h, &s, &p), None);
        assert!(put(&mut h, &s, &p, b"answer"));
        assert_eq!(get(&h, &s, &p).as_deref(), Some(&b"answer"[..]));
        h.now_ms += 1000;
        assert_eq!(get(&h, &s, &p), None, "expired");
        sweep(&mut h, &s, 0, s.slots);
        let used = u64::from_le_bytes(h.shared[BYTES_KEY].0[..8].try_into().unwrap());
        assert_eq!(used, 0, "the sweep gave the bytes back");
    }

    #[test]
    fn size_bounds_hold() {
        let mut h = FakeHost::new(1);
        let s = settings();
        precreate(&mut h, &s);
        assert!(
            !put(&mut h, &s, &plan(b"{}"), &[0u8; 200]),
            "larger than max_entry_bytes"
        );
        let mut stored = 0;
        for i in 0..50 {
            let body = format!(r#"{{"i":{i}}}"#);
            if put(&mut h, &s, &plan(body.as_bytes()), &[b'x'; 100]) {
                stored += 1;
            }
            let used = u64::from_le_bytes(h.shared[BYTES_KEY].0[..8].try_into().unwrap());
            let actual: u64 = h
                .shared
                .iter()
                .filter(|(k, _)| k.contains(".slot."))
                .map(|(_, (v, _))| v.len() as u64)
                .sum();
            assert_eq!(used, actual, "the byte count matches what is stored");
            assert!(used <= s.max_bytes);
        }
        assert!(stored >= 2);
    }
}
