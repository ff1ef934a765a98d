//! The MAC-NAT table (§3.4): address → guest bindings keyed by (VLAN, IP),
//! the guest-MAC set, wire-owned addresses, the impersonate-mode xid map,
//! per-ethertype owners, and the host's own addresses.

use crate::config::{ConflictPolicy, MacNatConfig};
use crate::counters::{Counter, Counters};
use crate::MacAddr;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// How a binding was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Source {
    /// An ARP sender address.
    Arp,
    /// An IPv4 or IPv6 source address.
    Ip,
    /// A neighbour advertisement's target or an ND message's source.
    Nd,
    /// A DHCPACK's `yiaddr`.
    Dhcp,
}

impl Source {
    /// The name `switchyard ctl macnat` prints.
    pub fn label(self) -> &'static str {
        match self {
            Source::Arp => "arp",
            Source::Ip => "ip",
            Source::Nd => "nd",
            Source::Dhcp => "dhcp",
        }
    }
}

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

/// One binding as `switchyard ctl macnat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotEntry {
    /// VLAN id of the outermost tag (0 untagged).
    pub vlan: u16,
    /// The guest's address.
    pub addr: IpAddr,
    /// The guest's MAC.
    pub mac: MacAddr,
    /// The switch port the guest was last seen on.
    pub port: u32,
    /// How the binding was learned.
    pub source: Source,
    /// When it was created (monotonic clock of the caller).
    pub first_seen: Duration,
    /// When it was last refreshed.
    pub last_seen: Duration,
}

/// A LAN host's claim on an address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WireOwned {
    /// VLAN id.
    pub vlan: u16,
    /// The address.
    pub addr: IpAddr,
    /// The LAN host's MAC.
    pub mac: MacAddr,
    /// When the claim was last seen.
    pub last_seen: Duration,
}

/// A copy of the table for `switchyard ctl macnat`, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Address bindings.
    pub entries: Vec<SnapshotEntry>,
    /// Guest MACs with the port they were last seen on and when.
    pub guests: Vec<(MacAddr, u32, Duration)>,
    /// Addresses owned by LAN hosts.
    pub wire_owned: Vec<WireOwned>,
    /// Impersonated DHCP transactions in flight.
    pub dhcp_transactions: usize,
}

type Key = (u16, IpAddr);

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: MacAddr,
    port: u32,
    source: Source,
    first_seen: Duration,
    last_seen: Duration,
}

#[derive(Debug, Clone)]
struct Guest {
    port: u32,
    last_seen: Duration,
    addrs: Vec<Key>,
}

#[derive(Debug, Clone, Copy)]
struct WireEntry {
    mac: MacAddr,
    last_seen: Duration,
}

/// An impersonated DHCP transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transaction {
    /// The guest that sent it.
    pub(crate) guest: MacAddr,
    /// Its port.
    pub(crate) port: u32,
    /// The original `chaddr`.
    pub(crate) chaddr: MacAddr,
    /// When it was sent.
    pub(crate) at: Duration,
}

/// Outcome of a learning attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learn {
    /// A new binding.
    New,
    /// An existing binding of the same guest, refreshed.
    Refreshed,
    /// Held by another guest and the policy keeps it there.
    Conflict,
    /// No room (global limit or guest set full).
    Full,
}

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
    // ---- host addresses -------------------------------------------------

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

    // ---- guests ---------------------------------------------------------

    pub(crate) fn is_guest(&self, mac: MacAddr) -> bool {
        self.guests.contains_key(&mac)
    }

    pub(crate) fn guest_port(&self, mac: MacAddr) -> Option<u32> {
        self.guests.get(&mac).map(|g| g.port)
    }

    /// Records a guest MAC (§3.2 step 5). False when the guest set is full
    /// and no idle guest without bindings could make room.
    pub(crate) fn note_guest(
        &mut self,
        mac: MacAddr,
        port: u32,
        now: Duration,
        max: usize,
    ) -> bool {
        if let Some(g) = self.guests.get_mut(&mac) {
            g.port = port;
            g.last_seen = now;
            return true;
        }
        if self.guests.len() >= max {
            let victim = self
                .guests
                .iter()
                .filter(|(_, g)| g.addrs.is_empty())
                .min_by_key(|(_, g)| g.last_seen)
                .map(|(m, _)| *m);
            match victim {
                Some(v) => {
                    self.guests.remove(&v);
                }
                None => return false,
            }
        }
        self.guests.insert(
            mac,
            Guest {
                port,
                last_seen: now,
                addrs: Vec::new(),
            },
        );
        true
    }

    /// Forgets a guest and everything bound to it.
    pub(crate) fn remove_guest(&mut self, mac: MacAddr) {
        if let Some(g) = self.guests.remove(&mac) {
            for k in g.addrs {
                self.entries.remove(&k);
            }
        }
        self.xids.retain(|_, t| t.guest != mac);
        self.ethertype_owners.retain(|_, (m, _)| *m != mac);
    }

    /// Forgets every guest last seen on `port`.
    pub(crate) fn remove_port(&mut self, port: u32) {
        let gone: Vec<MacAddr> = self
            .guests
            .iter()
            .filter(|(_, g)| g.port == port)
            .map(|(m, _)| *m)
            .collect();
        for m in gone {
            self.remove_guest(m);
        }
    }

    // ---- bindings -------------------------------------------------------

    pub(crate) fn owner(&self, vlan: u16, a: IpAddr) -> Option<MacAddr> {
        self.entries.get(&(vlan, a)).map(|e| e.mac)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries held by one guest in one family.
    pub(crate) fn guest_count(&self, mac: MacAddr, v4: bool) -> usize {
        self.guests.get(&mac).map_or(0, |g| {
            g.addrs.iter().filter(|(_, a)| a.is_ipv4() == v4).count()
        })
    }

    pub(crate) fn remove_entry(&mut self, key: Key) -> Option<MacAddr> {
        let e = self.entries.remove(&key)?;
        if let Some(g) = self.guests.get_mut(&e.mac) {
            g.addrs.retain(|k| *k != key);
        }
        Some(e.mac)
    }

    /// Learns or refreshes `(vlan, addr) → mac`. `authoritative` (a DHCPACK)
    /// overrides another guest's binding. The caller has checked that the
    /// address is learnable, not the host's and not wire-owned.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn learn(
        &mut self,
        key: Key,
        mac: MacAddr,
        port: u32,
        source: Source,
        now: Duration,
        authoritative: bool,
        cfg: &MacNatConfig,
        counters: &mut Counters,
    ) -> Learn {
        if let Some(e) = self.entries.get_mut(&key) {
            if e.mac == mac {
                e.last_seen = now;
                e.port = port;
                if authoritative {
                    e.source = source;
                }
                counters.bump(Counter::LearnRefresh);
                return Learn::Refreshed;
            }
            let owner_gone = !self.guests.contains_key(&e.mac);
            let idle = now.saturating_sub(e.last_seen) > cfg.takeover_idle;
            let takeover =
                authoritative || cfg.conflict == ConflictPolicy::LastWins || owner_gone || idle;
            if !takeover {
                return Learn::Conflict;
            }
            self.remove_entry(key);
        }
        if !self.note_guest(mac, port, now, cfg.limits.guests) {
            counters.bump(Counter::TableFull);
            return Learn::Full;
        }
        let v4 = key.1.is_ipv4();
        let cap = if v4 {
            cfg.limits.per_guest_v4
        } else {
            cfg.limits.per_guest_v6
        };
        if self.guest_count(mac, v4) >= cap {
            if let Some(lru) = self.lru_of(mac, v4) {
                self.remove_entry(lru);
                counters.bump(Counter::EvictLru);
            }
        } else if self.entries.len() >= cfg.limits.total {
            counters.bump(Counter::TableFull);
            return Learn::Full;
        }
        self.entries.insert(
            key,
            Entry {
                mac,
                port,
                source,
                first_seen: now,
                last_seen: now,
            },
        );
        if let Some(g) = self.guests.get_mut(&mac) {
            g.addrs.push(key);
        }
        counters.bump(Counter::LearnNew);
        Learn::New
    }

    fn lru_of(&self, mac: MacAddr, v4: bool) -> Option<Key> {
        let g = self.guests.get(&mac)?;
        g.addrs
            .iter()
            .filter(|(_, a)| a.is_ipv4() == v4)
            .filter_map(|k| self.entries.get(k).map(|e| (*k, e.last_seen)))
            .min_by_key(|(_, t)| *t)
            .map(|(k, _)| k)
    }

    // ---- wire-owned -----------------------------------------------------

    /// Records a LAN host's claim, replacing the oldest claim when full.
    pub(crate) fn note_wire(&mut self, key: Key, mac: MacAddr, now: Duration, max: usize) {
        if !self.wire.contains_key(&key) && self.wire.len() >= max {
            if let Some(oldest) = self
                .wire
                .iter()
                .min_by_key(|(_, w)| w.last_seen)
                .map(|(k, _)| *k)
            {
                self.wire.remove(&oldest);
            }
        }
        self.wire.insert(
            key,
            WireEntry {
                mac,
                last_seen: now,
            },
        );
    }

    pub(crate) fn is_wire_owned(&self, key: Key, now: Duration, aging: Duration) -> bool {
        self.wire
            .get(&key)
            .is_some_and(|w| now.saturating_sub(w.last_seen) < aging)
    }

    pub(crate) fn forget_wire(&mut self, key: Key) {
        self.wire.remove(&key);
    }

    // ---- DHCP transactions (impersonate) --------------------------------

    pub(crate) fn note_xid(&mut self, xid: u32, t: Transaction, max: usize) {
        if !self.xids.contains_key(&xid) && self.xids.len() >= max {
            if let Some(oldest) = self.xids.iter().min_by_key(|(_, t)| t.at).map(|(k, _)| *k) {
                self.xids.remove(&oldest);
            }
        }
        self.xids.insert(xid, t);
    }

    pub(crate) fn xid(&self, xid: u32, now: Duration, timeout: Duration) -> Option<Transaction> {
        self.xids
            .get(&xid)
            .filter(|t| now.saturating_sub(t.at) < timeout)
            .copied()
    }

    pub(crate) fn remove_xid(&mut self, xid: u32) {
        self.xids.remove(&xid);
    }

    // ---- other ethertypes -----------------------------------------------

    pub(crate) fn note_ethertype_owner(&mut self, ethertype: u16, mac: MacAddr, now: Duration) {
        self.ethertype_owners.insert(ethertype, (mac, now));
    }

    pub(crate) fn ethertype_owner(&self, ethertype: u16) -> Option<MacAddr> {
        self.ethertype_owners.get(&ethertype).map(|(m, _)| *m)
    }

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

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut entries: Vec<SnapshotEntry> = self
            .entries
            .iter()
            .map(|(&(vlan, addr), e)| SnapshotEntry {
                vlan,
                addr,
                mac: e.mac,
                port: e.port,
                source: e.source,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
            })
            .collect();
        entries.sort_by_key(|e| (e.vlan, e.addr));
        let mut guests: Vec<_> = self
            .guests
            .iter()
            .map(|(m, g)| (*m, g.port, g.last_seen))
            .collect();
        guests.sort();
        let mut wire_owned: Vec<WireOwned> = self
            .wire
            .iter()
            .map(|(&(vlan, addr), w)| WireOwned {
                vlan,
                addr,
                mac: w.mac,
                last_seen: w.last_seen,
            })
            .collect();
        wire_owned.sort_by_key(|w| (w.vlan, w.addr));
        Snapshot {
            entries,
            guests,
            wire_owned,
            dhcp_transactions: self.xids.len(),
        }
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
