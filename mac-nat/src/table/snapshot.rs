//! The sorted copy of the table that `switchyard ctl macnat` shows.

use super::{Source, Table};
use crate::MacAddr;
use std::net::IpAddr;
use std::time::Duration;

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

impl Table {
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
