//! `litellm_settings.cache` and `cache_params`: the response cache's bounds.

use super::*;

pub(super) fn cache_settings(
    l: &WireLitellmSettings,
) -> Result<Option<crate::cache::CacheSettings>, ConfigError> {
    if l.cache != Some(true) {
        return Ok(None);
    }
    let p = l.cache_params.as_ref();
    let ttl = p
        .and_then(|p| p.ttl)
        .unwrap_or(crate::cache::DEFAULT_TTL_SECS);
    if !(ttl.is_finite() && ttl > 0.0) {
        return Err(err(
            "litellm_settings.cache_params.ttl",
            "must be a positive number of seconds",
        ));
    }
    let max_bytes = p
        .and_then(|p| p.max_size_bytes)
        .unwrap_or(crate::cache::DEFAULT_MAX_BYTES);
    let max_entry_bytes = p
        .and_then(|p| p.max_entry_bytes)
        .unwrap_or(crate::cache::DEFAULT_MAX_ENTRY_BYTES)
        .min(max_bytes);
    let slots = p
        .and_then(|p| p.slots)
        .unwrap_or(crate::cache::DEFAULT_SLOTS);
    if slots == 0 || slots > 1_000_000 {
        return Err(err(
            "litellm_settings.cache_params.slots",
            "must be between 1 and 1000000",
        ));
    }
    Ok(Some(crate::cache::CacheSettings {
        ttl_ms: (ttl * 1000.0) as u64,
        max_bytes,
        max_entry_bytes,
        slots,
    }))
}
