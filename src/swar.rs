//! Eight bytes at a time: which bytes of a little-endian `u64` word equal a byte, or lie below
//! one. Each mask has the high bit of every such byte set. A byte above a true match may be
//! flagged too (the subtraction borrows), a byte below one never: "any?" is exact, and so is
//! the lowest flagged byte.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` equal to `byte`.
pub fn eq_mask(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGH
}

/// The bytes of `word` below `bound` (at most 0x80).
pub fn below_mask(word: u64, bound: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(bound)) & !word & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_agree_with_a_byte_by_byte_look() {
        let samples: [u8; 12] = [
            0, 1, 0x0a, 0x0d, 0x1f, 0x20, b'"', b'\\', 0x7f, 0x80, 0xc3, 0xff,
        ];
        for &a in &samples {
            for &b in &samples {
                for at in 0..8 {
                    let mut bytes = [b'x'; 8];
                    bytes[at] = a;
                    bytes[(at + 3) % 8] = b;
                    let w = u64::from_le_bytes(bytes);
                    for probe in [b'\n', b'"', b'\\'] {
                        let first = bytes.iter().position(|&c| c == probe);
                        let m = eq_mask(w, probe);
                        assert_eq!(m != 0, first.is_some());
                        if let Some(i) = first {
                            assert_eq!(m.trailing_zeros() / 8, i as u32);
                        }
                    }
                    let first = bytes.iter().position(|&c| c < 0x20);
                    let m = below_mask(w, 0x20);
                    assert_eq!(m != 0, first.is_some());
                    if let Some(i) = first {
                        assert_eq!(m.trailing_zeros() / 8, i as u32);
                    }
                }
            }
        }
    }
}
