//! Per-key counters (this minute's requests and tokens, and spend) for keys that appear at
//! run time. Envoy writes a missing shared-data key unconditionally, so records created on
//! first use could lose a count when two workers create one at once. Instead, keys live in
//! a fixed set of buckets pre-created at configure time: every write is a compare-and-swap.
//! Entries whose minute is over and that carry no spend are dropped on write, so a bucket
//! holds only keys active this minute plus keys with a budget.

use crate::host::Host;
use crate::state::{minute_of, DeploymentState, STATE_BYTES};
use sha2::{Digest, Sha256};

pub const BUCKETS: u64 = 64;

const ENTRY_BYTES: usize = 8 + STATE_BYTES + 8 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct KeyCounters {
    pub state: DeploymentState,
    /// USD spent through this Envoy (in `spend_period`, for a key with `budget_duration`).
    pub spend: f64,
    /// The `budget_duration` period `spend` belongs to (0 for keys without one).
    pub spend_period: u64,
}

impl KeyCounters {
    /// The spend of `period`: what is recorded, or nothing once a new period began.
    pub fn spend_in(&self, period: u64) -> f64 {
        if self.spend_period == period {
            self.spend
        } else {
            0.0
        }
    }
}

fn id_hash(id: &str) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    digest
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// `keys2`: entries grew a period field; a module of the old layout never reads these.
fn bucket_key(hash: u64) -> String {
    format!("llm_gateway.keys2.{}", hash % BUCKETS)
}

pub fn precreate(host: &mut dyn Host) {
    for b in 0..BUCKETS {
        let key = bucket_key(b);
        if host.shared_get(&key).is_none() {
            host.shared_set(&key, &[], None);
        }
    }
}

fn decode(bytes: &[u8]) -> Vec<(u64, KeyCounters)> {
    bytes
        .chunks_exact(ENTRY_BYTES)
        .filter_map(|e| {
            let hash = u64::from_le_bytes(e.get(..8)?.try_into().ok()?);
            let state = DeploymentState::decode(e.get(8..8 + STATE_BYTES)?);
            let at = 8 + STATE_BYTES;
            let spend = f64::from_le_bytes(e.get(at..at + 8)?.try_into().ok()?);
            let spend_period = u64::from_le_bytes(e.get(at + 8..)?.try_into().ok()?);
            Some((
                hash,
                KeyCounters {
                    state,
                    spend,
                    spend_period,
                },
            ))
        })
        .collect()
}

fn encode(entries: &[(u64, KeyCounters)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for (hash, c) in entries {
        out.extend_from_slice(&hash.to_le_bytes());
        out.extend_from_slice(&c.state.encode());
        out.extend_from_slice(&c.spend.to_le_bytes());
        out.extend_from_slice(&c.spend_period.to_le_bytes());
    }
    out
}

pub fn read(host: &dyn Host, id: &str) -> KeyCounters {
    let hash = id_hash(id);
    host.shared_get(&bucket_key(hash))
        .and_then(|(bytes, _)| decode(&bytes).into_iter().find(|(h, _)| *h == hash))
        .map(|(_, c)| c)
        .unwrap_or_default()
}

/// Apply `f` to one key's counters atomically; `f`'s refusal is passed on. `Err(None)` when
/// the compare-and-swap kept losing.
pub fn update<E>(
    host: &mut dyn Host,
    id: &str,
    f: &dyn Fn(KeyCounters) -> Result<KeyCounters, E>,
) -> Result<KeyCounters, Option<E>> {
    let hash = id_hash(id);
    let now_minute = minute_of(host.now_unix_ms());
    let mut written = KeyCounters::default();
    let mut apply = |bytes: Option<&[u8]>| -> Result<Vec<u8>, E> {
        let mut entries = decode(bytes.unwrap_or_default());
        let current = entries
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        let next = f(current)?;
        entries.retain(|(h, c)| {
            *h != hash && (c.state.minute >= now_minute || c.spend > 0.0 || c.state.in_flight > 0)
        });
        entries.push((hash, next));
        written = next;
        Ok(encode(&entries))
    };
    crate::host::update_shared(host, &bucket_key(hash), &mut apply)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    #[test]
    fn counters_per_key_share_buckets_and_stale_entries_go() {
        let mut h = FakeHost::new(1);
        precreate(&mut h);
        // More keys than buckets: several share one.
        for i in 0..200 {
            let id = format!("k{i}");
            update::<()>(&mut h, &id, &|mut c| {
                c.state.minute = minute_of(1_700_000_000_000);
                c.state.requests += 1;
                Ok(c)
            })
            .unwrap();
        }
        assert_eq!(read(&h, "k7").state.requests, 1);
        update::<()>(&mut h, "k7", &|mut c| {
            c.spend += 0.5;
            Ok(c)
        })
        .unwrap();
        // A minute later, the next write to each bucket drops the stale entries, but a key
        // with spend keeps its record.
        h.now_ms += 60_000;
        // Enough writes to touch every bucket; each write drops its bucket's stale entries
        // (this pass writes untouched, hence stale, counters: at most one per bucket stays).
        for i in 1000..3000 {
            update::<()>(&mut h, &format!("k{i}"), &Ok).unwrap();
        }
        let stored: usize = h.shared.values().map(|(b, _)| b.len() / ENTRY_BYTES).sum();
        assert!(
            stored <= 64 + 1,
            "only this minute's keys and the one with spend: {stored}"
        );
        assert_eq!(read(&h, "k7").spend, 0.5);
        assert_eq!(read(&h, "k8").state.requests, 0);
    }

    #[test]
    fn every_write_is_compare_and_swap() {
        let mut h = FakeHost::new(1);
        precreate(&mut h);
        h.lose_races = 3;
        for _ in 0..5 {
            update::<()>(&mut h, "key", &|mut c| {
                c.state.requests += 1;
                Ok(c)
            })
            .unwrap();
        }
        assert_eq!(
            read(&h, "key").state.requests,
            5,
            "lost races were retried, no count lost"
        );
    }
}
