//! Writing JSON text straight into a buffer, for the bodies the gateway builds on the hot path.
//!
//! serde_json escapes a string one byte at a time (~16 instructions a byte natively, more in
//! wasm); a prompt of a few kilobytes made that the largest single cost of a Triton request.
//! `write_str` skips eight bytes at a time while none needs escaping and writes exactly what
//! serde_json writes. `decimal` formats a number on the stack (JSON numbers and header
//! values alike), and `from_bytes` reads JSON checking UTF-8 once.

use serde::Serialize;

/// `s` as a JSON string literal, quotes included, appended to `out`.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    loop {
        // Eight bytes at a time while none needs escaping.
        i += 8 * bytes
            .get(i..)
            .unwrap_or_default()
            .chunks_exact(8)
            .take_while(|word| {
                <[u8; 8]>::try_from(*word).is_ok_and(|w| !any_needs_escape(u64::from_le_bytes(w)))
            })
            .count();
        // Then byte by byte through the word that does (or the tail).
        let end = (i + 8).min(bytes.len());
        if i >= end {
            break;
        }
        for (at, &byte) in bytes.get(i..end).unwrap_or_default().iter().enumerate() {
            let escape = escape_of(byte);
            if escape != 0 {
                if let Some(run) = bytes.get(run_start..i + at) {
                    out.extend_from_slice(run);
                }
                push_escape(out, byte, escape);
                run_start = i + at + 1;
            }
        }
        i = end;
    }
    if let Some(run) = bytes.get(run_start..) {
        out.extend_from_slice(run);
    }
    out.push(b'"');
}

/// Whether any of the eight bytes is a control character, `"` or `\` (exactly: see `swar`).
fn any_needs_escape(w: u64) -> bool {
    use crate::swar::{below_mask, eq_mask};
    below_mask(w, 0x20) | eq_mask(w, b'"') | eq_mask(w, b'\\') != 0
}

/// 0: as it is; `u`: `\u00XX`; anything else: the letter after the backslash.
fn escape_of(byte: u8) -> u8 {
    match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x00..=0x1f => b'u',
        _ => 0,
    }
}

fn push_escape(out: &mut Vec<u8>, byte: u8, escape: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if escape == b'u' {
        out.extend_from_slice(b"\\u00");
        for nibble in [byte >> 4, byte & 0xf] {
            out.push(HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'));
        }
    } else {
        out.push(b'\\');
        out.push(escape);
    }
}

/// `n` in decimal, written into `buf` (no allocation: header values on the hot path).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(digit) = buf.get_mut(at) {
            *digit = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    std::str::from_utf8(buf.get(at..).unwrap_or_default()).unwrap_or_default()
}

/// JSON read from bytes with UTF-8 checked once for the whole input: serde_json's byte reader
/// checks every string it reads, keys included — three checks per small stream event.
pub fn from_bytes<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    let text =
        std::str::from_utf8(bytes).map_err(<serde_json::Error as serde::de::Error>::custom)?;
    serde_json::from_str(text)
}

/// A value serde writes without failing (numbers, plain structs) appended to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_serde(s: &str) {
        let mut ours = Vec::new();
        write_str(&mut ours, s);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(s).unwrap(),
            "{s:?}"
        );
    }

    #[test]
    fn decimal_writes_any_u64() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 99, 600_000, 1_234_567_890_123, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }

    #[test]
    fn from_bytes_reads_json_and_refuses_bad_utf8() {
        let v: serde_json::Value = from_bytes(br#"{"a":"\u00e9","b":[1]}"#).unwrap();
        assert_eq!(v["a"], "é");
        assert!(from_bytes::<serde_json::Value>(b"{\"a\":\"\xff\"}").is_err());
        assert!(from_bytes::<serde_json::Value>(b"{").is_err());
    }

    #[test]
    fn escapes_exactly_as_serde_json() {
        for s in [
            "",
            "plain ascii text that is longer than eight bytes",
            "\"",
            "\\",
            "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{0}i\u{1f}j\u{7f}",
            "é日本語🎉 and \"quotes\" inside a long enough run",
            "12345678\"",
            "1234567\"8",
            "\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}",
        ] {
            same_as_serde(s);
        }
    }

    #[test]
    fn every_special_byte_at_every_offset() {
        let specials: Vec<char> = (0u8..0x20)
            .map(char::from)
            .chain(['"', '\\', '\u{7f}', 'é', '~', ' ', '!', '#', '[', ']'])
            .collect();
        for &c in &specials {
            for len in 0..20 {
                for at in 0..=len {
                    let mut s: String = "abcdefghijklmnopqrstu".chars().take(len).collect();
                    s.insert(at.min(s.len()), c);
                    same_as_serde(&s);
                }
            }
        }
    }

    #[test]
    fn the_word_test_finds_every_special_byte() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..8 {
                for fill in [b'a', 0xff, b'!', b'#', 0x80, b' '] {
                    let mut w = [fill; 8];
                    w[at] = special;
                    assert!(any_needs_escape(u64::from_le_bytes(w)), "{special} at {at}");
                }
            }
        }
        assert!(!any_needs_escape(u64::from_le_bytes(*b"abcdefgh")));
        assert!(!any_needs_escape(u64::from_le_bytes([0xff; 8])));
        assert!(!any_needs_escape(u64::from_le_bytes(*b" !#[]~\x7f\x80")));
    }
}
