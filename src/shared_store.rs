//! Shared data in process memory, with the semantics of proxy-wasm's shared data (a value and
//! a version per key; a write that names a version succeeds only while the key is still at
//! it): what the native shell (issue 18) gives the core's `Host::shared_get/shared_set`, so
//! that router records, key counters and the cache keep their compare-and-swap updates,
//! exact across Envoy's worker threads, with no host call at all.
//!
//! Keys are spread over shards, each behind its own lock, so workers updating different
//! records do not wait for each other. Nothing here panics: a lock poisoned by a panic
//! elsewhere is taken over (its map is never left half-written: every change is one insert).

use crate::fast_hash::{FxBuildHasher, FxHashMap};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;

type Shard = FxHashMap<String, (Vec<u8>, u32)>;

pub struct SharedStore {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for SharedStore {
    fn default() -> Self {
        SharedStore {
            shards: std::array::from_fn(|_| Mutex::new(FxHashMap::default())),
        }
    }
}

impl SharedStore {
    /// `f` on the shard holding `key`, under its lock (`None` only if the shard index were
    /// out of range, which `% SHARDS` rules out).
    fn with_shard<R>(&self, key: &str, f: impl FnOnce(&mut Shard) -> R) -> Option<R> {
        let hash = FxBuildHasher::default().hash_one(key);
        // The top bits: Fx's best mixed (its last step is a multiply).
        let shard = self.shards.get((hash >> 60) as usize % SHARDS)?;
        let mut guard: MutexGuard<'_, Shard> = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(f(&mut guard))
    }

    /// The value and its version (1 after the first write), when the key exists.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.with_shard(key, |m| m.get(key).cloned()).flatten()
    }

    /// Write `value` if the key is at version `cas` (`None`: unconditionally; a version on a
    /// key never written fails, as in Envoy). False when another writer got there first.
    pub fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.with_shard(key, |m| {
            let version = match (m.get(key), cas) {
                (Some((_, current)), Some(expected)) if *current != expected => return false,
                (None, Some(_)) => return false,
                (Some((_, current)), _) => current.wrapping_add(1).max(1),
                (None, None) => 1,
            };
            m.insert(key.to_string(), (value.to_vec(), version));
            true
        })
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{update_shared, Host};
    use std::sync::Arc;

    /// A worker's view: the shared store plus what the trait needs besides.
    struct Worker(Arc<SharedStore>);

    impl Host for Worker {
        fn now_unix_ms(&self) -> u64 {
            0
        }
        fn random_u64(&mut self) -> u64 {
            4
        }
        fn random_id(&mut self) -> [u8; 16] {
            [0; 16]
        }
        fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.0.get(key)
        }
        fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            self.0.set(key, value, cas)
        }
    }

    #[test]
    fn versions_follow_writes_and_stale_writes_lose() {
        let s = SharedStore::default();
        assert_eq!(s.get("k"), None);
        assert!(
            !s.set("k", b"x", Some(1)),
            "a version on a key never written"
        );
        assert!(s.set("k", b"a", None));
        assert_eq!(s.get("k"), Some((b"a".to_vec(), 1)));
        assert!(s.set("k", b"b", Some(1)));
        assert!(!s.set("k", b"c", Some(1)), "stale");
        assert_eq!(s.get("k"), Some((b"b".to_vec(), 2)));
    }

    #[test]
    fn compare_and_swap_updates_are_exact_across_threads() {
        let store = Arc::new(SharedStore::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let mut host = Worker(store);
                    let mut done = 0u64;
                    for _ in 0..2_000 {
                        let r = update_shared::<(), _>(&mut host, "counter", |b| {
                            let n =
                                b.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                            Ok((n + 1).to_le_bytes().to_vec())
                        });
                        done += u64::from(r.is_ok());
                    }
                    done
                })
            })
            .collect();
        let succeeded: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let (bytes, _) = store.get("counter").unwrap();
        let count = u64::from_le_bytes(bytes.try_into().unwrap());
        assert_eq!(
            count, succeeded,
            "every update that succeeded counted once, none lost"
        );
        assert!(succeeded > 0);
    }

    #[test]
    fn records_created_by_racing_threads_lose_no_update() {
        let store = Arc::new(SharedStore::default());
        crate::host::precreate_create_lock(&mut Worker(Arc::clone(&store)));
        const KEYS: usize = 400;
        let start = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, start) = (Arc::clone(&store), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut host = Worker(store);
                    start.wait();
                    (0..KEYS)
                        .map(|k| {
                            let r = update_shared::<(), _>(&mut host, &format!("new/{k}"), |b| {
                                let n = b.map_or(0, |b| {
                                    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
                                });
                                Ok((n + 1).to_le_bytes().to_vec())
                            });
                            u64::from(r.is_ok())
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut succeeded = vec![0u64; KEYS];
        for t in threads {
            for (k, ok) in t.join().unwrap().into_iter().enumerate() {
                succeeded[k] += ok;
            }
        }
        for (k, ok) in succeeded.iter().enumerate() {
            let (bytes, _) = store.get(&format!("new/{k}")).unwrap();
            assert_eq!(
                u64::from_le_bytes(bytes.try_into().unwrap()),
                *ok,
                "key {k}"
            );
        }
        assert!(succeeded.iter().sum::<u64>() > KEYS as u64);
    }
}
