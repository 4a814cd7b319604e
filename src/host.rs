//! The one way the pure core reaches the host: clock and randomness. The filter implements
//! it over proxy-wasm; tests use `FakeHost` with a fixed clock and a seeded generator.

pub trait Host {
    fn now_unix_ms(&self) -> u64;
    /// A uniformly distributed 64-bit sample.
    fn random_u64(&mut self) -> u64;

    /// A sample in [0, 1).
    fn random_unit(&mut self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
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

#[cfg(test)]
pub struct FakeHost {
    pub now_ms: u64,
    pub rng: SplitMix64,
}

#[cfg(test)]
impl FakeHost {
    pub fn new(seed: u64) -> Self {
        FakeHost {
            now_ms: 1_700_000_000_000,
            rng: SplitMix64::new(seed),
        }
    }
}

#[cfg(test)]
impl Host for FakeHost {
    fn now_unix_ms(&self) -> u64 {
        self.now_ms
    }
    fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}
