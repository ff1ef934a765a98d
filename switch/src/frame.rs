//! Zero-copy views of Ethernet frames.

use std::fmt;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True when the I/G bit is set: multicast or broadcast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The address as the low 48 bits of a `u64`, for compact keys.
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// The inverse of [`MacAddr::to_u64`]; the top 16 bits are ignored.
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;

    /// `02:00:00:00:00:01` (or with `-`).
    fn from_str(s: &str) -> Result<MacAddr, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let bad = || format!("{s:?} is not a MAC address (e.g. 02:00:00:00:00:01)");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut m = [0u8; 6];
        for (b, p) in m.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(m))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a byte buffer is not an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the 14-byte Ethernet header.
    #[error("frame of {0} bytes is shorter than the 14-byte Ethernet header")]
    TooShort(usize),
    /// Longer than [`crate::MAX_FRAME`].
    #[error("frame of {0} bytes is longer than the 65535-byte limit")]
    TooLong(usize),
}

mod field {
    use std::ops::Range;
    pub(super) const DESTINATION: Range<usize> = 0..6;
    pub(super) const SOURCE: Range<usize> = 6..12;
    pub(super) const ETHERTYPE: Range<usize> = 12..14;
}

/// A read-only view of an Ethernet II frame whose length was checked once.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Checks the length (14 to 65535 bytes); after this no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, FrameError> {
        let len = buffer.as_ref().len();
        if len < crate::MIN_FRAME {
            return Err(FrameError::TooShort(len));
        }
        if len > crate::MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        Ok(EthernetFrame { buffer })
    }

    fn mac(&self, range: std::ops::Range<usize>) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[range]);
        MacAddr(m)
    }

    /// The destination MAC address.
    pub fn destination(&self) -> MacAddr {
        self.mac(field::DESTINATION)
    }

    /// The source MAC address.
    pub fn source(&self) -> MacAddr {
        self.mac(field::SOURCE)
    }

    /// The EtherType (or 802.3 length) field.
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ARP request as UML sends it: 42 bytes, unpadded.
    pub(crate) const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc0, 0x00,
        0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x02,
    ];

    #[test]
    fn parses_a_real_arp_request() {
        let f = EthernetFrame::new_checked(&ARP_REQUEST[..]).expect("valid frame");
        assert_eq!(f.destination(), MacAddr::BROADCAST);
        assert!(f.destination().is_multicast());
        assert_eq!(f.source().to_string(), "02:00:00:00:00:01");
        assert!(!f.source().is_multicast());
        assert_eq!(f.ethertype(), 0x0806);
    }

    #[test]
    fn rejects_runts_and_giants() {
        assert_eq!(
            EthernetFrame::new_checked(&ARP_REQUEST[..13]).unwrap_err(),
            FrameError::TooShort(13)
        );
        let giant = vec![0u8; 65_536];
        assert_eq!(
            EthernetFrame::new_checked(&giant[..]).unwrap_err(),
            FrameError::TooLong(65_536)
        );
        assert!(EthernetFrame::new_checked(&giant[..65_535]).is_ok());
    }

    #[test]
    fn mac_u64_round_trip() {
        let m = MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
    }
}
