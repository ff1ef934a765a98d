//! ARP for Ethernet/IPv4 (RFC 826). Everything else is "other ARP".

use super::{array, be16, need, put, ParseError};
use crate::MacAddr;
use std::net::Ipv4Addr;

/// ARP request.
pub const OP_REQUEST: u16 = 1;
/// ARP reply.
pub const OP_REPLY: u16 = 2;

mod field {
    pub(super) const HTYPE: usize = 0;
    pub(super) const PTYPE: usize = 2;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OPER: usize = 6;
    pub(super) const SHA: usize = 8;
    pub(super) const SPA: usize = 14;
    pub(super) const THA: usize = 18;
    pub(super) const TPA: usize = 24;
    pub(super) const LEN: usize = 28;
}

/// A valid Ethernet/IPv4 ARP request or reply.
#[derive(Debug)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Hardware type 1, protocol 0x0800, lengths 6/4, op 1 or 2, 28 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        need("ARP", b.len(), field::LEN)?;
        let unsupported = |detail| {
            Err(ParseError::Unsupported {
                what: "ARP",
                detail,
            })
        };
        if be16(b, field::HTYPE) != 1 || be16(b, field::PTYPE) != 0x0800 {
            return unsupported("not Ethernet/IPv4");
        }
        if b[field::HLEN] != 6 || b[field::PLEN] != 4 {
            return unsupported("address lengths are not 6/4");
        }
        let op = be16(b, field::OPER);
        if op != OP_REQUEST && op != OP_REPLY {
            return unsupported("operation is not request or reply");
        }
        Ok(ArpPacket { buffer })
    }

    /// Operation (1 request, 2 reply).
    #[inline]
    pub fn op(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sha(&self) -> MacAddr {
        MacAddr(array(self.buffer.as_ref(), field::SHA))
    }

    /// Sender protocol address.
    #[inline]
    pub fn spa(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SPA))
    }

    /// Target hardware address.
    #[inline]
    pub fn tha(&self) -> MacAddr {
        MacAddr(array(self.buffer.as_ref(), field::THA))
    }

    /// Target protocol address.
    #[inline]
    pub fn tpa(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sha(&mut self, mac: MacAddr) {
        put(self.buffer.as_mut(), field::SHA, &mac.0);
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_tha(&mut self, mac: MacAddr) {
        put(self.buffer.as_mut(), field::THA, &mac.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(op: u16) -> Vec<u8> {
        let mut b = vec![0, 1, 8, 0, 6, 4, 0, op as u8];
        b.extend_from_slice(&[2, 0, 0, 0, 1, 1, 192, 0, 2, 10]);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 192, 0, 2, 1]);
        b
    }

    #[test]
    fn valid_and_rejected() {
        let b = arp(1);
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.op(), 1);
        assert_eq!(p.spa(), Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(p.tpa(), Ipv4Addr::new(192, 0, 2, 1));
        assert!(ArpPacket::new_checked(&arp(3)[..]).is_err()); // RARP request
        let mut hl = arp(1);
        hl[4] = 16;
        assert!(ArpPacket::new_checked(&hl[..]).is_err());
        for n in 0..28 {
            assert!(ArpPacket::new_checked(&b[..n]).is_err());
        }
    }
}
