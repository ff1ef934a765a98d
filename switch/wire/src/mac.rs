//! The 48-bit MAC address type every Switchyard crate uses.

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The all-zero address (never a valid station).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// True when the I/G bit is set: multicast or broadcast.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == MacAddr::BROADCAST
    }

    /// True for the IEEE 802.1D link-local reserved groups
    /// 01:80:c2:00:00:00 to 01:80:c2:00:00:0f (STP, PAE, LLDP, pause …),
    /// which a bridge must never forward.
    #[inline]
    pub fn is_reserved_group(&self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] <= 0x0f
    }

    /// Reads a MAC from the first six bytes of `b`, if there are six.
    #[inline]
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        let a: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(MacAddr(a))
    }

    /// The address as the low 48 bits of a `u64`, for compact keys.
    #[inline]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// The inverse of [`MacAddr::to_u64`]; the top 16 bits are ignored.
    #[inline]
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

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    /// The message the command line and the config file show as it is
    /// (they take errors as text).
    type Err = String;

    /// Six two-digit hex octets separated by `:` or `-`, like
    /// `02:00:00:00:00:01`.
    fn from_str(s: &str) -> Result<MacAddr, String> {
        let bad = || format!("{s:?} is not a MAC address (e.g. 02:00:00:00:00:01)");
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let m: MacAddr = "02:00:00:00:01:0a".parse().unwrap();
        assert_eq!(m, MacAddr([2, 0, 0, 0, 1, 10]));
        assert_eq!(m.to_string(), "02:00:00:00:01:0a");
        assert_eq!(format!("{m:?}"), "02:00:00:00:01:0a");
        assert_eq!("02-00-00-00-01-0A".parse::<MacAddr>(), Ok(m));
        for bad in [
            "02:00:00:00:01",
            "02:00:00:00:01:0a:0b",
            "zz:00:00:00:01:0a",
            "2:0:0:0:1:a",
            "",
        ] {
            assert_eq!(
                bad.parse::<MacAddr>(),
                Err(format!(
                    "{bad:?} is not a MAC address (e.g. 02:00:00:00:00:01)"
                ))
            );
        }
    }

    #[test]
    fn classes() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]).is_reserved_group());
        assert!(!MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x10]).is_reserved_group());
        assert!(!MacAddr([2, 0, 0, 0, 0, 1]).is_multicast());
    }

    #[test]
    fn u64_and_slice_round_trip() {
        let m = MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert_eq!(
            MacAddr::from_slice(&[2, 0x11, 0x22, 0x33, 0x44, 0x55, 9]),
            Some(m)
        );
        assert_eq!(MacAddr::from_slice(&[2, 0x11]), None);
    }
}
