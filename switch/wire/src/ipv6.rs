//! The IPv6 header (RFC 8200) and the extension-header walk to the upper
//! layer.

use super::{array, be16, need, ParseError};
use std::net::Ipv6Addr;

/// ICMPv6.
pub const NEXT_ICMPV6: u8 = 58;
/// UDP.
pub const NEXT_UDP: u8 = 17;
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_DEST_OPTS: u8 = 60;
/// More extension headers than this and we stop looking.
const MAX_EXT_HEADERS: usize = 8;

mod field {
    pub(super) const PAYLOAD_LEN: usize = 4;
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: usize = 8;
    pub(super) const DST: usize = 24;
    pub(super) const HEADER_LEN: usize = 40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::HEADER_LEN;

/// Where the upper-layer protocol sits in an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpperLayer {
    /// Found after hop-by-hop/routing/destination-options headers.
    Found {
        /// Protocol number.
        proto: u8,
        /// Offset from the start of the IPv6 header.
        offset: usize,
        /// Upper-layer length: payload length minus extension headers.
        len: usize,
    },
    /// A fragment header was met: not edited.
    Fragmented,
    /// Extension headers malformed or too many.
    Unparsed,
}

/// An IPv6 packet: 40-byte header, version 6, payload length ≤ buffer.
#[derive(Debug)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Validates version and payload length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        need("IPv6", b.len(), field::HEADER_LEN)?;
        if b[0] >> 4 != 6 {
            return Err(ParseError::Unsupported {
                what: "IPv6",
                detail: "version is not 6",
            });
        }
        let plen = usize::from(be16(b, field::PAYLOAD_LEN));
        need("IPv6", b.len(), field::HEADER_LEN + plen)?;
        Ok(Ipv6Packet { buffer })
    }

    /// The Next Header field of the fixed header (an extension header's
    /// number when there is one; see [`Ipv6Packet::upper_layer`]).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// The payload length: everything after the 40-byte fixed header.
    #[inline]
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::PAYLOAD_LEN))
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::DST))
    }

    /// Walks hop-by-hop (0), routing (43) and destination-options (60)
    /// headers; stops at a fragment header (44).
    #[inline]
    pub fn upper_layer(&self) -> UpperLayer {
        let b = self.buffer.as_ref();
        let end = field::HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN));
        let mut next = b[field::NEXT_HEADER];
        let mut at = field::HEADER_LEN;
        for _ in 0..=MAX_EXT_HEADERS {
            match next {
                NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => {
                    let (Some(&n), Some(&l)) = (b.get(at), b.get(at + 1)) else {
                        return UpperLayer::Unparsed;
                    };
                    let len = (usize::from(l) + 1) * 8;
                    if at + len > end {
                        return UpperLayer::Unparsed;
                    }
                    next = n;
                    at += len;
                }
                NEXT_FRAGMENT => return UpperLayer::Fragmented,
                proto => {
                    return UpperLayer::Found {
                        proto,
                        offset: at,
                        len: end - at,
                    }
                }
            }
        }
        UpperLayer::Unparsed
    }
}
