//! The IPv4 header (RFC 791).

use super::{array, be16, need, put16, ParseError};
use crate::checksum;
use std::net::Ipv4Addr;

/// UDP.
pub const PROTO_UDP: u8 = 17;

mod field {
    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOTAL_LEN: usize = 2;
    pub(super) const FLAGS_FRAG: usize = 6;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: usize = 10;
    pub(super) const SRC: usize = 12;
    pub(super) const DST: usize = 16;
    pub(super) const MIN_HEADER: usize = 20;
}

/// An IPv4 packet: version 4, IHL ≥ 5, IHL·4 ≤ total length ≤ buffer.
/// Bytes past the total length (Ethernet padding) are ignored.
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Validates version, IHL and total length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        need("IPv4", b.len(), field::MIN_HEADER)?;
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(ParseError::Unsupported {
                what: "IPv4",
                detail: "version is not 4",
            });
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < field::MIN_HEADER {
            return Err(ParseError::Unsupported {
                what: "IPv4",
                detail: "IHL below 5",
            });
        }
        let total = usize::from(be16(b, field::TOTAL_LEN));
        need("IPv4 total length", total, hl)?;
        need("IPv4", b.len(), total)?;
        Ok(Ipv4Packet { buffer })
    }

    /// Header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length in bytes (header + payload).
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::TOTAL_LEN))
    }

    /// True when MF is set or the fragment offset is not 0.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x3fff != 0
    }

    /// Protocol number.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::DST))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the total length and patches the header checksum (RFC 1624).
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        let b = self.buffer.as_mut();
        let old = be16(b, field::TOTAL_LEN);
        let check = checksum::update_word(be16(b, field::CHECKSUM), old, len);
        put16(b, field::TOTAL_LEN, len);
        put16(b, field::CHECKSUM, check);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = vec![
            0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 10, 198, 51, 100, 1,
        ];
        let c = checksum::fold(checksum::sum(&h, 0));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn checks_and_length_update() {
        let mut h = header();
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert!(!p.is_fragment());
        assert_eq!(p.dst(), Ipv4Addr::new(198, 51, 100, 1));
        h.extend_from_slice(&[0; 9]);
        let mut p = Ipv4Packet::new_checked(&mut h[..]).unwrap();
        p.set_total_len(29);
        assert_eq!(checksum::fold(checksum::sum(&h[..20], 0)), 0);
        let mut bad = header();
        bad[0] = 0x44;
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
        let mut long = header();
        long[3] = 21;
        assert!(Ipv4Packet::new_checked(&long[..]).is_err());
    }
}
