//! `general_settings.virtual_keys`: static keys, by value or by SHA-256.

use super::*;
use crate::auth::KeyDigest;

pub(super) fn static_key(
    i: usize,
    v: &WireVirtualKey,
    is_known: &dyn Fn(&str) -> bool,
) -> Result<([u8; 32], crate::keys::KeyGrant), ConfigError> {
    let path = format!("general_settings.virtual_keys[{i}]");
    let digest: [u8; 32] = match (&v.key, &v.key_sha256) {
        (Some(k), None) => {
            if k.is_empty() {
                return Err(err(format!("{path}.key"), "must not be empty"));
            }
            *KeyDigest::of(k).bytes()
        }
        (None, Some(hex)) => parse_sha256_hex(hex).ok_or_else(|| {
            err(
                format!("{path}.key_sha256"),
                "must be 64 hexadecimal digits",
            )
        })?,
        _ => return Err(err(&path, "give exactly one of key or key_sha256")),
    };
    for (j, m) in v.models.iter().enumerate() {
        if !is_known(m) {
            return Err(err(
                format!("{path}.models[{j}]"),
                format!("\"{m}\" is not a model group, alias or access group"),
            ));
        }
    }
    let expires = match v.expires.as_deref() {
        Some(e) => Some(crate::keys::parse_rfc3339(e).ok_or_else(|| {
            err(
                format!("{path}.expires"),
                "must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z",
            )
        })?),
        None => None,
    };
    // A static key's budget periods start at the Unix epoch (it has no issue time).
    let budget_period = match v.budget_duration.as_deref() {
        Some(d) => Some((
            crate::keys::parse_duration(d).ok_or_else(|| {
                err(
                    format!("{path}.budget_duration"),
                    "must look like 30s, 30m, 30h, 30d, 2w or 1mo",
                )
            })?,
            0,
        )),
        None => None,
    };
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok((
        digest,
        crate::keys::KeyGrant {
            id: format!("static-{short}"),
            alias: v.key_alias.clone(),
            models: v.models.clone(),
            expires,
            rpm: v.rpm_limit,
            tpm: v.tpm_limit,
            budget: v.max_budget,
            max_parallel: v.max_parallel_requests,
            budget_period,
            minted: None,
        },
    ))
}

fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
