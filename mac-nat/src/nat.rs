//! The [`MacNat`] instance: configuration, table, counters and the
//! maintenance API. The data path is in `outbound` and `inbound`.

use crate::config::{ConfigError, MacNatConfig};
use crate::counters::Counters;
use crate::table::{HostAddr, Snapshot, Table};
use crate::{DropReason, MacAddr};
use std::time::Duration;

/// What to do with a frame the engine is sending to the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outbound {
    /// Send the (edited) frame on the uplink.
    Send,
    /// Do not send it.
    Drop(DropReason),
}

/// What to do with a frame captured on the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Inbound {
    /// For this guest; the destination MAC is already set to it, so the
    /// engine forwards by its FDB.
    ToGuest(MacAddr),
    /// Deliver to every guest port.
    Flood,
    /// Not for guests: the host's kernel has its own copy; deliver nothing.
    HostOnly,
    /// Deliver nothing and count the reason.
    Drop(DropReason),
}

/// A layer-2 NAT for one uplink whose MAC is Mu. Pure: no I/O, no clock;
/// every method takes the time on the caller's monotonic clock.
#[derive(Debug)]
pub struct MacNat {
    pub(crate) uplink: MacAddr,
    pub(crate) config: MacNatConfig,
    pub(crate) table: Table,
    pub(crate) counters: Counters,
}

fn check_uplink(mac: MacAddr) -> Result<(), ConfigError> {
    if mac.is_multicast() || mac == MacAddr::ZERO {
        Err(ConfigError::BadUplinkMac(mac))
    } else {
        Ok(())
    }
}

impl MacNat {
    /// A MAC-NAT for the uplink whose MAC is `uplink`.
    pub fn new(uplink: MacAddr, config: MacNatConfig) -> Result<Self, ConfigError> {
        check_uplink(uplink)?;
        config.validate()?;
        Ok(MacNat {
            uplink,
            config,
            table: Table::default(),
            counters: Counters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MacNatConfig {
        &self.config
    }

    /// The uplink MAC (Mu).
    pub fn uplink_mac(&self) -> MacAddr {
        self.uplink
    }

    /// Changes Mu (the interface's MAC changed, `RTM_NEWLINK`). A guest
    /// record under the new MAC is dropped.
    pub fn set_uplink_mac(&mut self, mac: MacAddr) -> Result<(), ConfigError> {
        check_uplink(mac)?;
        self.uplink = mac;
        self.table.remove_guest(mac);
        Ok(())
    }

    /// Replaces the host's own addresses on the uplink (all of them, from
    /// netlink, link-local and temporary included). Bindings of guests to
    /// these addresses are removed.
    pub fn set_host_addrs<I: IntoIterator<Item = HostAddr>>(&mut self, addrs: I) {
        self.table.set_host_addrs(addrs.into_iter().collect());
    }

    /// Removes idle bindings (`aging`), stale LAN claims and transactions.
    pub fn sweep(&mut self, now: Duration) {
        self.table.sweep(now, &self.config, &mut self.counters);
    }

    /// Forgets a guest MAC and its bindings (its FDB entry aged out).
    pub fn remove_guest(&mut self, mac: MacAddr) {
        self.table.remove_guest(mac);
    }

    /// Forgets every guest last seen on a port (the port went away).
    pub fn remove_port(&mut self, port: u32) {
        self.table.remove_port(port);
    }

    /// Clears every table (`switchyard ctl macnat flush`); counters stay.
    pub fn flush(&mut self) {
        self.table.flush();
    }

    /// Number of address bindings.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when there are no address bindings.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// A sorted copy of the tables for `switchyard ctl macnat`.
    pub fn snapshot(&self) -> Snapshot {
        self.table.snapshot()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}
