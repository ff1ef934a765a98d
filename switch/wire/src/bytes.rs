//! Bounds-checked reads and writes of big-endian fields. The views check
//! lengths once in `new_checked`; these helpers still never panic, so a
//! view's accessor cannot either.

use crate::ParseError;

/// `Err(Truncated)` unless `len >= need`.
#[inline]
pub fn need(what: &'static str, len: usize, need: usize) -> Result<(), ParseError> {
    if len < need {
        Err(ParseError::Truncated { what, len, need })
    } else {
        Ok(())
    }
}

/// Reads a big-endian u16 at `at`; 0 when out of range (views check first).
#[inline]
pub fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

/// Writes a big-endian u16 at `at`; nothing when out of range.
#[inline]
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Copies `src` to `at`; nothing when out of range.
#[inline]
pub fn put(b: &mut [u8], at: usize, src: &[u8]) {
    if let Some(s) = b.get_mut(at..at + src.len()) {
        s.copy_from_slice(src);
    }
}

/// Reads `N` bytes at `at`; zeros when out of range.
#[inline]
pub fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}
