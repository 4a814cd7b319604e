//! Client keys: where they are read from and how they are compared.
//!
//! Keys are compared as SHA-256 digests in constant time, so neither the content nor the
//! length of a configured key leaks through timing.

use sha2::{Digest, Sha256};

/// The request headers a client key may arrive in, all dropped before the upstream.
pub const CLIENT_AUTH_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

#[derive(Clone, PartialEq, Eq)]
pub struct KeyDigest([u8; 32]);

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even hashed in full.
        write!(f, "KeyDigest({})", self.short_id())
    }
}

impl KeyDigest {
    pub fn of(key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    /// Constant-time equality of two digests.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        constant_time_eq(&self.0, &other.0)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short prefix of the digest, safe to show in logs.
    pub fn short_id(&self) -> String {
        self.0.iter().take(4).map(|b| format!("{b:02x}")).collect()
    }
}

pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    // black_box keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// The key a client presented: `Authorization: Bearer`, then `api-key`, then `x-api-key`.
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    api_key: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    let bearer = authorization.and_then(|v| {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer
        .or(api_key.map(str::trim))
        .or(x_api_key.map(str::trim))
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_comparison() {
        let a = KeyDigest::of("sk-1234");
        assert!(a.matches(&KeyDigest::of("sk-1234")));
        assert!(!a.matches(&KeyDigest::of("sk-1235")));
        assert!(!a.matches(&KeyDigest::of("")));
        assert!(!format!("{a:?}").contains("sk-"));
    }

    #[test]
    fn key_sources_in_order() {
        assert_eq!(
            presented_key(Some("Bearer sk-1"), Some("sk-2"), None),
            Some("sk-1")
        );
        assert_eq!(
            presented_key(Some("bearer  sk-1 "), None, None),
            Some("sk-1")
        );
        assert_eq!(
            presented_key(Some("Basic abc"), Some("sk-2"), None),
            Some("sk-2")
        );
        assert_eq!(presented_key(None, None, Some("sk-3")), Some("sk-3"));
        assert_eq!(presented_key(Some("Bearer "), None, None), None);
        assert_eq!(presented_key(None, None, None), None);
    }
}
