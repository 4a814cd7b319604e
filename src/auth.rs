//! Client keys: where they are read from and how they are compared.
//!
//! Keys are compared as SHA-256 digests in constant time, so neither the content nor the
//! length of a configured key leaks through timing.

use sha2::{Digest, Sha256};

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

/// Where a client key may arrive, standard headers and the config's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `general_settings.litellm_key_header_name`.
    Custom,
    Authorization,
    ApiKey,
    XApiKey,
}

/// Whether a request header (lowercase name) carries a client key. Every such header is
/// removed before any upstream.
pub fn key_header(name: &str, custom: Option<&str>) -> Option<KeyHeader> {
    if custom == Some(name) {
        return Some(KeyHeader::Custom);
    }
    match name {
        "authorization" => Some(KeyHeader::Authorization),
        "api-key" => Some(KeyHeader::ApiKey),
        "x-api-key" => Some(KeyHeader::XApiKey),
        _ => None,
    }
}

/// The first value of each key header a request carried.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHeaders<'a> {
    pub custom: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
}

impl<'a> KeyHeaders<'a> {
    /// Keep the first value of a repeated key header.
    pub fn take(&mut self, which: KeyHeader, value: Option<&'a str>) {
        let slot = match which {
            KeyHeader::Custom => &mut self.custom,
            KeyHeader::Authorization => &mut self.authorization,
            KeyHeader::ApiKey => &mut self.api_key,
            KeyHeader::XApiKey => &mut self.x_api_key,
        };
        *slot = slot.or(value);
    }

    /// The key: the config's own header (with or without `Bearer `, as LiteLLM reads it),
    /// then `Authorization: Bearer`, then `api-key`, then `x-api-key`.
    pub fn presented(&self) -> Option<&'a str> {
        let bearer = |v: &'a str| -> Option<&'a str> {
            let v = v.trim();
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        };
        let given = |k: &&str| !k.is_empty();
        self.custom
            .map(|v| bearer(v).unwrap_or(v.trim()))
            .filter(given)
            .or(self.authorization.and_then(bearer).filter(given))
            .or(self.api_key.map(str::trim).filter(given))
            .or(self.x_api_key.map(str::trim).filter(given))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key a client presented: `Authorization: Bearer`, then `api-key`, then `x-api-key`.
    fn presented_key<'a>(
        authorization: Option<&'a str>,
        api_key: Option<&'a str>,
        x_api_key: Option<&'a str>,
    ) -> Option<&'a str> {
        KeyHeaders {
            custom: None,
            authorization,
            api_key,
            x_api_key,
        }
        .presented()
    }

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

    #[test]
    fn the_configured_header_comes_first_with_or_without_bearer() {
        let custom = Some("x-litellm-key");
        assert_eq!(key_header("x-litellm-key", custom), Some(KeyHeader::Custom));
        assert_eq!(key_header("x-litellm-key", None), None);
        assert_eq!(key_header("api-key", custom), Some(KeyHeader::ApiKey));
        let mut h = KeyHeaders::default();
        h.take(KeyHeader::Authorization, Some("Bearer sk-std"));
        h.take(KeyHeader::Custom, Some("Bearer sk-custom"));
        h.take(KeyHeader::Custom, Some("sk-second"));
        assert_eq!(h.presented(), Some("sk-custom"));
        h.custom = Some(" sk-raw ");
        assert_eq!(h.presented(), Some("sk-raw"));
        h.custom = Some("");
        assert_eq!(h.presented(), Some("sk-std"), "an empty header is no key");
    }
}
