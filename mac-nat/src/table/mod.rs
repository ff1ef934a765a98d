//! The MAC-NAT table (§3.4): address → guest bindings keyed by (VLAN, IP),
//! the guest-MAC set, wire-owned addresses, the impersonate-mode xid map,
//! per-ethertype owners, and the host's own addresses.
//!
//! One [`Table`] holds them all; each submodule adds the methods of one job.

mod bindings;
mod guests;
mod host;
mod lan;
mod snapshot;

use bindings::Entry;
pub(crate) use bindings::Learn;
pub use bindings::Source;
use guests::Guest;
pub use host::HostAddr;
pub(crate) use lan::Transaction;
use lan::WireEntry;
pub use snapshot::{Snapshot, SnapshotEntry, WireOwned};

use crate::config::MacNatConfig;
use crate::counters::{Counter, Counters};
use crate::MacAddr;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

type Key = (u16, IpAddr);

/// The tables of one MAC-NAT.
#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: HashMap<Key, Entry>,
    guests: HashMap<MacAddr, Guest>,
    wire: HashMap<Key, WireEntry>,
    xids: HashMap<u32, Transaction>,
    ethertype_owners: HashMap<u16, (MacAddr, Duration)>,
    host: HashSet<IpAddr>,
    host_addrs: Vec<HostAddr>,
}

/// IPv4 addresses that can belong to a guest (§3.4), before the host and
/// wire checks.
pub(crate) fn learnable_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(o[0] == 0 || o[0] == 127 || o[0] >= 224)
}

/// IPv6 addresses that can belong to a guest (§3.4), before the host and
/// wire checks.
pub(crate) fn learnable_v6(a: Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.to_ipv4_mapped().is_some())
}

/// Either family.
pub(crate) fn learnable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => learnable_v4(a),
        IpAddr::V6(a) => learnable_v6(a),
    }
}

impl Table {
    // ---- maintenance ----------------------------------------------------

    /// Removes bindings idle for `aging` or longer (counted as `aged`),
    /// guests idle as long with no bindings left, and expired claims,
    /// transactions and ethertype owners.
    pub(crate) fn sweep(&mut self, now: Duration, cfg: &MacNatConfig, counters: &mut Counters) {
        let idle = |t: Duration, limit: Duration| now.saturating_sub(t) >= limit;
        let expired: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| idle(e.last_seen, cfg.aging))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.remove_entry(k);
            counters.bump(Counter::Aged);
        }
        self.guests
            .retain(|_, g| !(g.addrs.is_empty() && idle(g.last_seen, cfg.aging)));
        self.wire.retain(|_, w| !idle(w.last_seen, cfg.wire_aging));
        self.xids.retain(|_, t| !idle(t.at, cfg.dhcp_xid_timeout));
        self.ethertype_owners
            .retain(|_, (_, t)| !idle(*t, cfg.aging));
    }

    pub(crate) fn flush(&mut self) {
        self.entries.clear();
        self.guests.clear();
        self.wire.clear();
        self.xids.clear();
        self.ethertype_owners.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 1, n])
    }

    fn v4(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn learnable_ranges() {
        assert!(!learnable_v4(Ipv4Addr::UNSPECIFIED));
        assert!(!learnable_v4(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(!learnable_v4(Ipv4Addr::new(224, 0, 0, 251)));
        assert!(!learnable_v4(Ipv4Addr::BROADCAST));
        assert!(learnable_v4(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!learnable_v6(Ipv6Addr::UNSPECIFIED));
        assert!(!learnable_v6(Ipv6Addr::LOCALHOST));
        assert!(!learnable_v6("ff02::1".parse().unwrap()));
        assert!(!learnable_v6("::ffff:192.0.2.1".parse().unwrap()));
        assert!(learnable_v6("fe80::1".parse().unwrap()));
        assert!(learnable_v6("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn keep_first_takeover_and_lru() {
        let cfg = MacNatConfig::default();
        let mut c = Counters::default();
        let mut t = Table::default();
        let s = Duration::from_secs;
        assert_eq!(
            t.learn((0, v4(1)), mac(1), 1, Source::Ip, s(0), false, &cfg, &mut c),
            Learn::New
        );
        assert_eq!(
            t.learn(
                (0, v4(1)),
                mac(2),
                2,
                Source::Ip,
                s(10),
                false,
                &cfg,
                &mut c
            ),
            Learn::Conflict
        );
        // Idle longer than takeover_idle (60 s): the claimant takes over.
        assert_eq!(
            t.learn(
                (0, v4(1)),
                mac(2),
                2,
                Source::Ip,
                s(61),
                false,
                &cfg,
                &mut c
            ),
            Learn::New
        );
        assert_eq!(t.owner(0, v4(1)), Some(mac(2)));
        // DHCPACK is authoritative.
        assert_eq!(
            t.learn(
                (0, v4(1)),
                mac(1),
                1,
                Source::Dhcp,
                s(62),
                true,
                &cfg,
                &mut c
            ),
            Learn::New
        );
        assert_eq!(t.owner(0, v4(1)), Some(mac(1)));
        // Per-guest cap evicts the guest's least recently used entry.
        for n in 2..=9 {
            t.learn(
                (0, v4(n)),
                mac(1),
                1,
                Source::Ip,
                s(100 + u64::from(n)),
                false,
                &cfg,
                &mut c,
            );
        }
        assert_eq!(t.guest_count(mac(1), true), 8);
        assert_eq!(t.owner(0, v4(1)), None, "v4(1) was least recently used");
        assert_eq!(c.get(Counter::EvictLru), 1);
    }

    #[test]
    fn directed_broadcast_and_on_link() {
        let mut t = Table::default();
        t.set_host_addrs(vec![
            HostAddr::new(v4(10), 24),
            HostAddr::new("2001:db8:77::10".parse().unwrap(), 64),
        ]);
        assert!(t.is_directed_broadcast(Ipv4Addr::new(192, 0, 2, 255)));
        assert!(!t.is_directed_broadcast(Ipv4Addr::new(192, 0, 2, 254)));
        assert!(t.is_on_link(v4(77)));
        assert!(!t.is_on_link(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))));
        assert!(t.is_on_link("2001:db8:77::99".parse().unwrap()));
        assert!(t.is_on_link("fe80::5".parse().unwrap()));
        assert!(!t.is_on_link("2001:db8:78::99".parse().unwrap()));
    }
}
