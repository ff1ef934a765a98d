//! Addresses bound to guests (§3.4): how a binding was learned, and the
//! learning rule with its conflict policy and per-guest caps.

use super::{Key, Table};
use crate::config::{ConflictPolicy, MacNatConfig};
use crate::counters::{Counter, Counters};
use crate::MacAddr;
use std::net::IpAddr;
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

#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) mac: MacAddr,
    pub(super) port: u32,
    pub(super) source: Source,
    pub(super) first_seen: Duration,
    pub(super) last_seen: Duration,
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

impl Table {
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
}
