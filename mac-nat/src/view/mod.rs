//! Bounds-checked zero-copy views of the headers the MAC-NAT reads and
//! edits. Each view's `new_checked` validates lengths once; after that no
//! accessor can panic. Byte ranges live in a private `field` module per view.

pub(crate) mod arp;
pub(crate) mod dhcp4;
pub(crate) mod ethernet;
pub(crate) mod ipv4;
pub(crate) mod ipv6;
pub(crate) mod ndp;
pub(crate) mod udp;

/// Why bytes are not the header a view expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    /// Fewer bytes than the header (or a length field) needs.
    #[error("{what}: {len} bytes, need {need}")]
    Truncated {
        /// The header.
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A field has a value this view does not handle.
    #[error("{what}: {detail}")]
    Unsupported {
        /// The header.
        what: &'static str,
        /// Which field.
        detail: &'static str,
    },
    /// An ND option with length 0 (RFC 4861 §4.6: the message is invalid).
    #[error("neighbour discovery option of length 0")]
    ZeroLengthOption,
}

/// `Err(Truncated)` unless `len >= need`.
pub(crate) fn need(what: &'static str, len: usize, need: usize) -> Result<(), ParseError> {
    if len < need {
        Err(ParseError::Truncated { what, len, need })
    } else {
        Ok(())
    }
}

/// Reads a big-endian u16 at `at`; 0 when out of range (views check first).
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

/// Writes a big-endian u16 at `at`; nothing when out of range.
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Copies `src` to `at`; nothing when out of range.
pub(crate) fn put(b: &mut [u8], at: usize, src: &[u8]) {
    if let Some(s) = b.get_mut(at..at + src.len()) {
        s.copy_from_slice(src);
    }
}

/// Reads `N` bytes at `at`; zeros when out of range.
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}
