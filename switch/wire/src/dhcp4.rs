//! The DHCPv4/BOOTP message (RFC 2131, RFC 2132).

use super::{array, be16, need, put, put16, ParseError};
use crate::MacAddr;
use std::net::Ipv4Addr;

/// BOOTREQUEST.
pub const OP_REQUEST: u8 = 1;
/// BOOTREPLY.
pub const OP_REPLY: u8 = 2;
/// The BROADCAST bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// Server port.
pub const SERVER_PORT: u16 = 67;
/// Client port.
pub const CLIENT_PORT: u16 = 68;
/// DHCPACK.
pub const ACK: u8 = 5;
/// DHCPNAK.
pub const NAK: u8 = 6;
/// DHCPRELEASE.
pub const RELEASE: u8 = 7;
/// Option: client identifier.
pub const OPT_CLIENT_ID: u8 = 61;

const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;
const OPT_OVERLOAD: u8 = 52;
const OPT_MESSAGE_TYPE: u8 = 53;
const COOKIE: [u8; 4] = [99, 130, 83, 99];

mod field {
    use std::ops::Range;
    pub(super) const OP: usize = 0;
    pub(super) const HTYPE: usize = 1;
    pub(super) const HLEN: usize = 2;
    pub(super) const XID: usize = 4;
    pub(super) const FLAGS: usize = 10;
    pub(super) const CIADDR: usize = 12;
    pub(super) const YIADDR: usize = 16;
    pub(super) const GIADDR: usize = 24;
    pub(super) const CHADDR: usize = 28;
    pub(super) const SNAME: Range<usize> = 44..108;
    pub(super) const FILE: Range<usize> = 108..236;
    pub(super) const COOKIE: usize = 236;
    pub(super) const OPTIONS: usize = 240;
}

/// A DHCP message: ≥ 240 bytes, magic cookie, htype 1, hlen 6.
#[derive(Debug)]
pub struct DhcpMessage<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DhcpMessage<T> {
    /// Validates length, cookie and hardware type/length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        need("DHCP", b.len(), field::OPTIONS)?;
        if b[field::COOKIE..field::OPTIONS] != COOKIE {
            return Err(ParseError::Unsupported {
                what: "DHCP",
                detail: "no magic cookie (plain BOOTP)",
            });
        }
        if b[field::HTYPE] != 1 || b[field::HLEN] != 6 {
            return Err(ParseError::Unsupported {
                what: "DHCP",
                detail: "hardware is not Ethernet",
            });
        }
        Ok(DhcpMessage { buffer })
    }

    /// `op`: 1 request, 2 reply.
    #[inline]
    pub fn op(&self) -> u8 {
        self.buffer.as_ref()[field::OP]
    }

    /// Transaction id.
    #[inline]
    pub fn xid(&self) -> u32 {
        u32::from_be_bytes(array(self.buffer.as_ref(), field::XID))
    }

    /// Flags.
    #[inline]
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS)
    }

    /// Client address (`ciaddr`).
    #[inline]
    pub fn ciaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::CIADDR))
    }

    /// "Your" address (`yiaddr`).
    #[inline]
    pub fn yiaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::YIADDR))
    }

    /// Relay agent address (`giaddr`).
    #[inline]
    pub fn giaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::GIADDR))
    }

    /// Client hardware address (the first 6 bytes of `chaddr`).
    #[inline]
    pub fn chaddr(&self) -> MacAddr {
        MacAddr(array(self.buffer.as_ref(), field::CHADDR))
    }

    /// The option areas in RFC 2131 order: options, then `file` and `sname`
    /// when option 52 says they are overloaded.
    #[inline]
    fn areas(&self) -> impl Iterator<Item = &[u8]> {
        let b = self.buffer.as_ref();
        let main = b.get(field::OPTIONS..).unwrap_or(&[]);
        let overload = find(main, OPT_OVERLOAD)
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        let file = (overload & 1 != 0).then(|| b.get(field::FILE)).flatten();
        let sname = (overload & 2 != 0).then(|| b.get(field::SNAME)).flatten();
        std::iter::once(main).chain(file).chain(sname)
    }

    /// The value of the first `code` option in any area.
    #[inline]
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.areas().find_map(|a| find(a, code))
    }

    /// The message type (option 53), if present.
    #[inline]
    pub fn message_type(&self) -> Option<u8> {
        self.option(OPT_MESSAGE_TYPE)
            .and_then(|v| v.first().copied())
    }

    /// Offset (in the message) of the END option of the main option area.
    #[inline]
    pub fn end_offset(&self) -> Option<usize> {
        let main = self.buffer.as_ref().get(field::OPTIONS..)?;
        walk(main).find_map(|o| match o {
            Opt::End(at) => Some(field::OPTIONS + at),
            _ => None,
        })
    }

    /// Bytes after offset `end` that are zero (PAD), up to the message end.
    #[inline]
    pub fn pad_after(&self, end: usize) -> usize {
        self.buffer
            .as_ref()
            .get(end + 1..)
            .map_or(0, |rest| rest.iter().take_while(|&&b| b == OPT_PAD).count())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DhcpMessage<T> {
    /// Sets the flags.
    #[inline]
    pub fn set_flags(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::FLAGS, v);
    }

    /// Sets the first 6 bytes of `chaddr`.
    #[inline]
    pub fn set_chaddr(&mut self, mac: MacAddr) {
        put(self.buffer.as_mut(), field::CHADDR, &mac.0);
    }
}

/// One step of an option walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt<'a> {
    /// An option with a value.
    Value(u8, &'a [u8]),
    /// END at this offset of the area.
    End(usize),
}

/// Walks one option area: PAD skipped, stops after END or at the first
/// option that would run past the area. Every step advances, so the walk
/// ends within `area.len()` steps.
#[inline]
fn walk(area: &[u8]) -> impl Iterator<Item = Opt<'_>> {
    let mut at = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        while !done {
            let code = *area.get(at)?;
            match code {
                OPT_PAD => at += 1,
                OPT_END => {
                    done = true;
                    return Some(Opt::End(at));
                }
                _ => {
                    let len = usize::from(*area.get(at + 1)?);
                    let value = area.get(at + 2..at + 2 + len)?;
                    at += 2 + len;
                    return Some(Opt::Value(code, value));
                }
            }
        }
        None
    })
}

#[inline]
fn find(area: &[u8], code: u8) -> Option<&[u8]> {
    walk(area).find_map(|o| match o {
        Opt::Value(c, v) if c == code => Some(v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[236..240].copy_from_slice(&COOKIE);
        b.extend_from_slice(options);
        b
    }

    #[test]
    fn options_walk_and_overload() {
        let m = msg(&[53, 1, 1, 0, 0, 61, 7, 1, 2, 0, 0, 0, 1, 1, 255, 0, 0]);
        let d = DhcpMessage::new_checked(&m[..]).unwrap();
        assert_eq!(d.message_type(), Some(1));
        assert_eq!(d.option(61).map(<[u8]>::len), Some(7));
        assert_eq!(d.end_offset(), Some(240 + 14));
        assert_eq!(d.pad_after(240 + 14), 2);

        // Message type only in the overloaded `file` field.
        let mut m = msg(&[52, 1, 1, 255]);
        m[108..111].copy_from_slice(&[53, 1, 3]);
        m[111] = 255;
        let d = DhcpMessage::new_checked(&m[..]).unwrap();
        assert_eq!(d.message_type(), Some(3));

        // Truncated options stop the walk; no END.
        let m = msg(&[53, 1, 1, 61, 20, 1]);
        let d = DhcpMessage::new_checked(&m[..]).unwrap();
        assert_eq!(d.option(61), None);
        assert_eq!(d.end_offset(), None);
    }

    #[test]
    fn rejects_short_and_bootp() {
        let m = msg(&[255]);
        for n in 0..240 {
            assert!(DhcpMessage::new_checked(&m[..n]).is_err());
        }
        let mut nocookie = msg(&[255]);
        nocookie[236] = 0;
        assert!(DhcpMessage::new_checked(&nocookie[..]).is_err());
    }
}
