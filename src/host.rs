//! The one way the pure core reaches the host: clock, randomness and the data every worker
//! of one Envoy shares. The filter implements it over proxy-wasm; tests use `FakeHost` with a
//! fixed clock, a seeded generator and an in-memory store.

pub trait Host {
    fn now_unix_ms(&self) -> u64;
    /// A uniformly distributed 64-bit sample.
    fn random_u64(&mut self) -> u64;
    /// 128 bits for ids that must never collide (minted key ids): fresh host entropy.
    fn random_id(&mut self) -> [u8; 16];
    /// A shared value and its version, when the key exists.
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Write `value` if the key is still at version `cas` (`None`: unconditionally). False
    /// when another worker wrote first.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;

    /// A sample in [0, 1).
    fn random_unit(&mut self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How often a worker retries a compare-and-swap another worker won before giving up.
pub const MAX_CAS_ATTEMPTS: usize = 32;

/// Read-modify-write of one shared value, atomically across workers: `f` gets the current
/// bytes (`None` when the key does not exist) and returns the new ones or refuses; a write
/// another worker beat is retried, a bounded number of times. `Err(None)`: it kept losing.
/// A record that does not exist yet is created under `CREATE_LOCK` (`create_shared`).
pub fn update_shared<E, F>(host: &mut dyn Host, key: &str, mut f: F) -> Result<Vec<u8>, Option<E>>
where
    F: FnMut(Option<&[u8]>) -> Result<Vec<u8>, E>,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let written = match host.shared_get(key) {
            Some((bytes, cas)) => {
                let next = f(Some(&bytes)).map_err(Some)?;
                host.shared_set(key, &next, Some(cas)).then_some(next)
            }
            None => {
                let next = f(None).map_err(Some)?;
                (create_shared(host, key, &next) == Creation::Created).then_some(next)
            }
        };
        if let Some(next) = written {
            return Ok(next);
        }
    }
    Err(None)
}

/// The record that serialises the creation of records. A write names the version it
/// replaces, but a key that does not exist yet is written whatever version is named (Envoy's
/// shared data; `../shared/spec/envoy-facts.md`), so two workers creating one record would
/// both succeed and one's update would be lost. Pre-created at configure time
/// (`precreate_create_lock`); its value while held is the holder's deadline (ms, LE), after
/// which a worker may take it over (a holder never waits inside, so it is held for a few host
/// calls).
pub const CREATE_LOCK: &str = "llm-gateway/create-lock";
const CREATE_LOCK_HOLD_MS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// This call created the record with its value.
    Created,
    /// Another worker created it first: update it instead.
    Exists,
    /// Another worker holds the creation lock: try again.
    Busy,
}

pub fn precreate_create_lock(host: &mut dyn Host) {
    if host.shared_get(CREATE_LOCK).is_none() {
        host.shared_set(CREATE_LOCK, &[], None);
    }
}

/// Create `key` with `value` unless it exists, atomically across workers (under
/// `CREATE_LOCK`). Without the lock record (nothing was configured), the plain write.
pub fn create_shared(host: &mut dyn Host, key: &str, value: &[u8]) -> Creation {
    let Some((lock, cas)) = host.shared_get(CREATE_LOCK) else {
        host.shared_set(key, value, None);
        return Creation::Created;
    };
    let now = host.now_unix_ms();
    let held_until = lock
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    if held_until > now {
        return Creation::Busy;
    }
    let mine = now.saturating_add(CREATE_LOCK_HOLD_MS).to_le_bytes();
    if !host.shared_set(CREATE_LOCK, &mine, Some(cas)) {
        return Creation::Busy;
    }
    let created = if host.shared_get(key).is_some() {
        Creation::Exists
    } else {
        host.shared_set(key, value, None);
        Creation::Created
    };
    // Released only while still ours: a holder that overstayed lost it to another worker.
    if let Some((held, cas)) = host.shared_get(CREATE_LOCK) {
        if held == mine {
            host.shared_set(CREATE_LOCK, &[], Some(cas));
        }
    }
    created
}

/// Fresh entropy for a shell, mixed with `salt`: std keys each `RandomState` from the
/// platform's randomness once per thread (WASI `random_get` in a wasm VM, the OS natively) and
/// advances it per call, so no two draws repeat.
pub fn entropy(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish()
}

/// SplitMix64: tiny, fast, statistically fine for load spreading (not for secrets).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An in-memory host: for tests and the fuzzers.
pub struct FakeHost {
    pub now_ms: u64,
    pub rng: SplitMix64,
    pub shared: std::collections::HashMap<String, (Vec<u8>, u32)>,
    /// Make the next N conditional writes fail, as if another worker won the race.
    pub lose_races: u32,
    /// Shared-data reads so far: each is a host call.
    pub reads: std::cell::Cell<u32>,
    /// Those of them that found a non-empty value: the host copies it into the module's
    /// memory through an allocation call back into the module, the dearest kind of call.
    pub copies: std::cell::Cell<u32>,
}

impl FakeHost {
    pub fn new(seed: u64) -> Self {
        FakeHost {
            now_ms: 1_700_000_000_000,
            rng: SplitMix64::new(seed),
            shared: std::collections::HashMap::new(),
            lose_races: 0,
            reads: std::cell::Cell::new(0),
            copies: std::cell::Cell::new(0),
        }
    }
}

impl Host for FakeHost {
    fn now_unix_ms(&self) -> u64 {
        self.now_ms
    }
    fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    fn random_id(&mut self) -> [u8; 16] {
        ((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64())).to_le_bytes()
    }
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.reads.set(self.reads.get() + 1);
        let found = self.shared.get(key).cloned();
        if found.as_ref().is_some_and(|(value, _)| !value.is_empty()) {
            self.copies.set(self.copies.get() + 1);
        }
        found
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let version = self.shared.get(key).map_or(0, |(_, v)| *v);
        if let Some(expected) = cas {
            if self.lose_races > 0 {
                self.lose_races -= 1;
                // Someone else wrote: the version moves on and this write is refused.
                if let Some(entry) = self.shared.get_mut(key) {
                    entry.1 += 1;
                }
                return false;
            }
            if expected != version {
                return false;
            }
        }
        self.shared
            .insert(key.to_string(), (value.to_vec(), version + 1));
        true
    }
}
