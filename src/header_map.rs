//! Envoy's serialised header map (the proxy-wasm ABI's `proxy_get_header_map_pairs`), read in
//! place. The SDK's reader copies every name and value into its own `String`/`Vec` — two
//! allocations a header, about half of all the filter's allocations per request — and panics
//! on a name that is not UTF-8 or on a truncated map. This one borrows and never panics.
//!
//! Layout, little-endian: `u32` count; count × (`u32` name length, `u32` value length); then
//! each name and each value, every one followed by a NUL byte.

/// The pairs of a serialised map, in order. A malformed map ends the iteration where it stops
/// making sense; a name that is not UTF-8 is skipped (Envoy refuses such requests before any
/// filter sees them).
pub struct Pairs<'a> {
    sizes: &'a [u8],
    data: &'a [u8],
}

pub fn pairs(bytes: &[u8]) -> Pairs<'_> {
    let count = read_u32(bytes).unwrap_or(0) as usize;
    let split = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .and_then(|end| Some((bytes.get(4..end)?, bytes.get(end..)?)));
    match split {
        Some((sizes, data)) => Pairs { sizes, data },
        None => Pairs {
            sizes: &[],
            data: &[],
        },
    }
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

impl<'a> Pairs<'a> {
    fn next_raw(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let name_len = read_u32(self.sizes)? as usize;
        let value_len = read_u32(self.sizes.get(4..)?)? as usize;
        self.sizes = self.sizes.get(8..)?;
        let name = self.data.get(..name_len)?;
        let value_start = name_len.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let value = self.data.get(value_start..value_end)?;
        self.data = self.data.get(value_end.checked_add(1)?..)?;
        Some((name, value))
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((name, value)) = self.next_raw() else {
                // Malformed from here on: stop rather than read garbage.
                self.sizes = &[];
                return None;
            };
            if let Ok(name) = std::str::from_utf8(name) {
                return Some((name, value));
            }
        }
    }
}

/// `map` in the same layout, for the host calls that take a header map (local replies).
pub fn serialise<K: AsRef<[u8]>, V: AsRef<[u8]>>(map: &[(K, V)]) -> Vec<u8> {
    let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
    let size: usize = map
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 10)
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&u32::try_from(map.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&len(k.as_ref()));
        out.extend_from_slice(&len(v.as_ref()));
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// The names a response's header map holds (Fx hashes), learnt from a read the session made
/// anyway, so that a shell appends a header the map does not have — Envoy's replace searches
/// the map and removes before it adds — and replaces one it does. A hash collision only
/// means a replace where an append would have done.
#[derive(Debug, Default)]
pub struct HeaderNames {
    hashes: Vec<u64>,
    /// The map could not be read: every write replaces.
    unknown: bool,
}

impl HeaderNames {
    /// Room for a map's names and the answer headers the gateway adds (up to 13).
    pub fn with_capacity(names: usize) -> Self {
        HeaderNames {
            hashes: Vec::with_capacity(names + 16),
            unknown: false,
        }
    }

    /// A map that could not be read: nothing is known to be absent.
    pub fn unknown() -> Self {
        HeaderNames {
            hashes: Vec::new(),
            unknown: true,
        }
    }

    /// What a shell learns from one read of a map (`count` pairs): every name, and into `out`
    /// (at the positions of `wanted`) the first text value of each wanted name.
    pub fn read<'a>(
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        count: usize,
        wanted: &[&str],
        out: &mut [Option<String>],
    ) -> Self {
        let mut names = HeaderNames::with_capacity(count);
        for (name, value) in pairs {
            names.hashes.push(hash(name));
            for (want, slot) in wanted.iter().zip(out.iter_mut()) {
                if slot.is_none() && want.as_bytes() == name {
                    *slot = std::str::from_utf8(value).ok().map(str::to_string);
                }
            }
        }
        names
    }

    /// Whether the map lacks `name`; either way it holds it from now on (the caller writes it).
    pub fn add_if_absent(&mut self, name: &[u8]) -> bool {
        let h = hash(name);
        if self.unknown || self.hashes.contains(&h) {
            return false;
        }
        self.hashes.push(h);
        true
    }
}

fn hash(name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    crate::fast_hash::FxBuildHasher::default().hash_one(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_pair_in_order() {
        let map: &[(&[u8], &[u8])] = &[
            (b":method", b"POST"),
            (b":path", b"/v1/chat/completions"),
            (b"x-empty", b""),
            (b"authorization", b"Bearer sk-\xffbinary"),
        ];
        let bytes = serialise(map);
        let got: Vec<(&str, &[u8])> = pairs(&bytes).collect();
        assert_eq!(
            got,
            vec![
                (":method", &b"POST"[..]),
                (":path", b"/v1/chat/completions"),
                ("x-empty", b""),
                ("authorization", b"Bearer sk-\xffbinary"),
            ]
        );
        assert_eq!(pairs(&[]).count(), 0);
        assert_eq!(pairs(&serialise::<&str, &str>(&[])).count(), 0);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_skipped() {
        let map: &[(&[u8], &[u8])] = &[(b"x-\xff", b"1"), (b"x-ok", b"2")];
        let bytes = serialise(map);
        let got: Vec<(&str, &[u8])> = pairs(&bytes).collect();
        assert_eq!(got, vec![("x-ok", &b"2"[..])]);
    }

    #[test]
    fn truncated_or_lying_maps_end_without_panicking() {
        let full = serialise(&[("a", "bb"), ("ccc", "d")]);
        for cut in 0..full.len() {
            let got: Vec<_> = pairs(&full[..cut]).collect();
            assert!(got.len() <= 2);
            if let Some((name, value)) = got.first() {
                assert_eq!((*name, *value), ("a", &b"bb"[..]));
            }
        }
        // A count or lengths far beyond the buffer.
        let mut huge = full.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pairs(&huge).count(), 0);
        let mut long_value = full;
        long_value[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pairs(&long_value).count(), 0);
    }

    #[test]
    fn header_names_say_which_writes_can_append() {
        let map: [(&[u8], &[u8]); 3] = [
            (b":status", b"200"),
            (b"content-type", b"application/json"),
            (b"content-type", b"text/plain"),
        ];
        let mut out = [None, None];
        let mut names = HeaderNames::read(map.into_iter(), 3, &["content-type", "x-a"], &mut out);
        assert_eq!(
            out,
            [Some("application/json".to_string()), None],
            "the first value"
        );
        assert!(!names.add_if_absent(b"content-type"));
        assert!(names.add_if_absent(b"x-llm-deployment"));
        assert!(
            !names.add_if_absent(b"x-llm-deployment"),
            "written once, replaced after"
        );
        let mut unread = HeaderNames::unknown();
        assert!(
            !unread.add_if_absent(b"x-llm-deployment"),
            "an unread map: replace"
        );
    }
}
