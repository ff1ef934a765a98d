//! Neighbour Discovery messages (RFC 4861) and their options.

use super::{array, need, ParseError};
use std::net::Ipv6Addr;

/// Router Solicitation.
pub const RS: u8 = 133;
/// Router Advertisement.
pub const RA: u8 = 134;
/// Neighbour Solicitation.
pub const NS: u8 = 135;
/// Neighbour Advertisement.
pub const NA: u8 = 136;
/// Redirect.
pub const REDIRECT: u8 = 137;
/// Source link-layer address option.
pub const OPT_SLLA: u8 = 1;
/// Target link-layer address option.
pub const OPT_TLLA: u8 = 2;
/// NA "solicited" flag.
pub const NA_SOLICITED: u8 = 0x40;
/// NA "override" flag.
pub const NA_OVERRIDE: u8 = 0x20;
/// Offset of the ICMPv6 checksum.
pub const CHECKSUM_OFFSET: usize = 2;
/// Offset of the MAC inside an Ethernet SLLA/TLLA option.
pub const LLA_MAC_OFFSET: usize = 2;

mod field {
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const FLAGS: usize = 4;
    pub(super) const TARGET: usize = 8;
}

/// Where the options start for each ND message type.
#[inline]
pub fn options_offset(icmp_type: u8) -> Option<usize> {
    match icmp_type {
        RS => Some(8),
        RA => Some(16),
        NS | NA => Some(24),
        REDIRECT => Some(40),
        _ => None,
    }
}

/// An ND option: its type, its offset in the message, its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdOption {
    /// Option type.
    pub kind: u8,
    /// Offset of the option in the ICMPv6 message.
    pub offset: usize,
    /// Length in bytes (8 × the length field).
    pub len: usize,
}

/// A valid ND message: a known type, code 0, the fixed part present, every
/// option of non-zero length and within the message. The caller checks the
/// IPv6 hop limit (255).
#[derive(Debug)]
pub struct NdMessage<T: AsRef<[u8]>> {
    buffer: T,
    options: usize,
}

impl<T: AsRef<[u8]>> NdMessage<T> {
    /// Validates the message; `buffer` is exactly the ICMPv6 message
    /// (upper-layer length).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        need("ICMPv6", b.len(), 4)?;
        let Some(options) = options_offset(b[field::TYPE]) else {
            return Err(ParseError::Unsupported {
                what: "ICMPv6",
                detail: "not a neighbour discovery type",
            });
        };
        if b[field::CODE] != 0 {
            return Err(ParseError::Unsupported {
                what: "ND",
                detail: "code is not 0",
            });
        }
        need("ND message", b.len(), options)?;
        let mut at = options;
        while at < b.len() {
            let len = usize::from(*b.get(at + 1).ok_or(ParseError::Truncated {
                what: "ND option",
                len: b.len() - at,
                need: 2,
            })?) * 8;
            if len == 0 {
                return Err(ParseError::ZeroLengthOption);
            }
            need("ND option", b.len() - at, len)?;
            at += len;
        }
        Ok(NdMessage { buffer, options })
    }

    /// ICMPv6 type.
    #[inline]
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The target address of NS, NA and Redirect; `None` for RS/RA.
    #[inline]
    pub fn target(&self) -> Option<Ipv6Addr> {
        matches!(self.kind(), NS | NA | REDIRECT)
            .then(|| Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::TARGET)))
    }

    /// The NA flags byte (R, S, O in the top bits).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref().get(field::FLAGS).copied().unwrap_or(0)
    }

    /// The options, validated by `new_checked`.
    #[inline]
    pub fn options(&self) -> impl Iterator<Item = NdOption> + '_ {
        let b = self.buffer.as_ref();
        let mut at = self.options;
        std::iter::from_fn(move || {
            let kind = *b.get(at)?;
            let len = usize::from(*b.get(at + 1)?) * 8;
            if len == 0 || at + len > b.len() {
                return None;
            }
            let o = NdOption {
                kind,
                offset: at,
                len,
            };
            at += len;
            Some(o)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(options: &[u8]) -> Vec<u8> {
        let mut m = vec![NS, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        m.extend_from_slice(options);
        m
    }

    #[test]
    fn options_and_errors() {
        let m = ns(&[14, 1, 1, 2, 3, 4, 5, 6, 1, 1, 2, 0, 0, 0, 0, 1]);
        let nd = NdMessage::new_checked(&m[..]).unwrap();
        let kinds: Vec<_> = nd.options().map(|o| (o.kind, o.offset)).collect();
        assert_eq!(kinds, vec![(14, 24), (1, 32)]);
        assert_eq!(
            NdMessage::new_checked(&ns(&[1, 0, 2, 0, 0, 0, 0, 1])[..]).unwrap_err(),
            ParseError::ZeroLengthOption
        );
        // A zero-length option of another type also invalidates the message.
        assert_eq!(
            NdMessage::new_checked(&ns(&[1, 1, 2, 0, 0, 0, 0, 1, 99, 0])[..]).unwrap_err(),
            ParseError::ZeroLengthOption
        );
        assert!(NdMessage::new_checked(&ns(&[1, 2, 2, 0, 0, 0, 0, 1])[..]).is_err());
        assert!(NdMessage::new_checked(&ns(&[1])[..]).is_err());
        for n in 0..24 {
            assert!(NdMessage::new_checked(&m[..n]).is_err());
        }
    }
}
