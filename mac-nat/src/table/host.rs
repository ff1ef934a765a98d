//! The host's own addresses on the uplink and the prefixes they imply.

use super::{Key, Table};
use std::net::{IpAddr, Ipv4Addr};

/// One of the host's own addresses on the uplink, with its prefix length
/// (used for directed broadcasts and to tell on-link LAN hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostAddr {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length (e.g. 24 for 192.0.2.10/24).
    pub prefix_len: u8,
}

impl HostAddr {
    /// An address with its prefix length.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Self {
        HostAddr { addr, prefix_len }
    }

    fn contains(&self, other: IpAddr) -> bool {
        match (self.addr, other) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = prefix_mask_v4(self.prefix_len);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let p = u32::from(self.prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    fn directed_broadcast(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(a) if self.prefix_len <= 30 => Some(Ipv4Addr::from(
                u32::from(a) | !prefix_mask_v4(self.prefix_len),
            )),
            _ => None,
        }
    }
}

fn prefix_mask_v4(prefix_len: u8) -> u32 {
    let p = u32::from(prefix_len.min(32));
    u32::MAX.checked_shl(32 - p).unwrap_or(0)
}

impl Table {
    pub(crate) fn set_host_addrs(&mut self, addrs: Vec<HostAddr>) {
        self.host = addrs.iter().map(|h| h.addr).collect();
        self.host_addrs = addrs;
        let owned: Vec<Key> = self
            .entries
            .keys()
            .filter(|(_, a)| self.host.contains(a))
            .copied()
            .collect();
        for k in owned {
            self.remove_entry(k);
        }
    }

    pub(crate) fn is_host(&self, a: IpAddr) -> bool {
        self.host.contains(&a)
    }

    /// A directed broadcast of one of the host's IPv4 prefixes.
    pub(crate) fn is_directed_broadcast(&self, a: Ipv4Addr) -> bool {
        self.host_addrs
            .iter()
            .any(|h| h.directed_broadcast() == Some(a))
    }

    /// On the uplink's link: inside one of the host's prefixes, or IPv6
    /// link-local.
    pub(crate) fn is_on_link(&self, a: IpAddr) -> bool {
        if let IpAddr::V6(v6) = a {
            if v6.segments()[0] & 0xffc0 == 0xfe80 {
                return true;
            }
        }
        self.host_addrs.iter().any(|h| h.contains(a))
    }
}
