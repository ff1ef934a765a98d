//! The guest registry: which MACs are guests, the port each was last seen
//! on, the addresses each holds, and the guests owning other ethertypes.

use super::{Key, Table};
use crate::MacAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(super) struct Guest {
    pub(super) port: u32,
    pub(super) last_seen: Duration,
    pub(super) addrs: Vec<Key>,
}

impl Table {
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

    // ---- other ethertypes -----------------------------------------------

    pub(crate) fn note_ethertype_owner(&mut self, ethertype: u16, mac: MacAddr, now: Duration) {
        self.ethertype_owners.insert(ethertype, (mac, now));
    }

    pub(crate) fn ethertype_owner(&self, ethertype: u16) -> Option<MacAddr> {
        self.ethertype_owners.get(&ethertype).map(|(m, _)| *m)
    }
}
