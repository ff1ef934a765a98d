//! What the LAN side holds: addresses LAN hosts have claimed (wire-owned),
//! and the impersonated DHCP transactions awaiting the server's reply.

use super::{Key, Table};
use crate::MacAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub(super) struct WireEntry {
    pub(super) mac: MacAddr,
    pub(super) last_seen: Duration,
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

impl Table {
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
}
