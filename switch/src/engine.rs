//! The forwarding engine: given (ingress port, frame, now) it decides where
//! the frame goes. No sockets, no clock, no allocation per frame.

use crate::counters::DropReason;
use crate::fdb::{Fdb, FdbConfig, FdbEntry, Learned};
use crate::frame::{EthernetFrame, FrameError};
use crate::port::PortId;
use std::collections::BTreeSet;
use std::time::Duration;

/// How frames are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Learn source addresses; known unicast goes to one port.
    #[default]
    Switch,
    /// Every frame goes to every port but its ingress; nothing is learned.
    Hub,
}

/// The engine's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Switch or hub.
    pub mode: Mode,
    /// FDB limits and aging.
    pub fdb: FdbConfig,
}

impl EngineConfig {
    /// A config from its parts.
    pub fn new(mode: Mode, fdb: FdbConfig) -> Self {
        EngineConfig { mode, fdb }
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// To exactly this port (never the ingress port).
    Forward(PortId),
    /// To every registered port except the ingress port.
    Flood,
    /// Nowhere, for this reason (counted on the ingress port).
    Drop(DropReason),
}

/// Learning events since the engine started, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdbEvents {
    /// New addresses learned.
    pub learned: u64,
    /// Addresses that moved to another port.
    pub moved: u64,
    /// Entries removed by aging.
    pub aged: u64,
    /// Addresses not learned because a limit was reached.
    pub refused: u64,
}

/// A move or a refusal worth one log line (the caller decides how often).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbNotice {
    /// `mac` moved from one port to another.
    Moved {
        /// The address.
        mac: crate::MacAddr,
        /// Where it was.
        from: PortId,
        /// Where it is now.
        to: PortId,
    },
    /// `mac` could not be learned on `port`: a limit is reached.
    Refused {
        /// The address.
        mac: crate::MacAddr,
        /// The port it arrived on.
        port: PortId,
        /// True for the per-port limit, false for the table limit.
        per_port: bool,
    },
}

/// The pure forwarding engine.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    fdb: Fdb,
    ports: BTreeSet<PortId>,
    events: FdbEvents,
    last_notice: Option<FdbNotice>,
}

impl Engine {
    /// An engine with no ports.
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            config,
            fdb: Fdb::new(config.fdb),
            ports: BTreeSet::new(),
            events: FdbEvents::default(),
            last_notice: None,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Applies new settings (reload); the FDB is kept.
    pub fn set_config(&mut self, config: EngineConfig) {
        self.config = config;
        self.fdb.set_config(config.fdb);
    }

    /// Switches between switch and hub mode; the FDB is kept.
    pub fn set_mode(&mut self, mode: Mode) {
        self.config.mode = mode;
    }

    /// Makes `port` a member: it receives floods from now on.
    pub fn add_port(&mut self, port: PortId) {
        self.ports.insert(port);
    }

    /// Removes `port` and every FDB entry pointing at it; returns how many
    /// entries were purged.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        self.ports.remove(&port);
        self.fdb.purge_port(port)
    }

    /// The member ports, ascending.
    pub fn ports(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports.iter().copied()
    }

    /// True when `port` is a member.
    pub fn has_port(&self, port: PortId) -> bool {
        self.ports.contains(&port)
    }

    /// The ports a [`Decision::Flood`] from `ingress` reaches.
    pub fn flood_set(&self, ingress: PortId) -> impl Iterator<Item = PortId> + '_ {
        self.ports.iter().copied().filter(move |p| *p != ingress)
    }

    /// Decides where `frame`, received on `ingress` at `now`, goes, and
    /// learns its source address.
    pub fn decide(&mut self, ingress: PortId, frame: &[u8], now: Duration) -> Decision {
        let frame = match EthernetFrame::new_checked(frame) {
            Ok(f) => f,
            Err(FrameError::TooShort(_)) => return Decision::Drop(DropReason::TooShort),
            Err(FrameError::TooLong(_)) => return Decision::Drop(DropReason::TooLong),
        };
        if !self.ports.contains(&ingress) {
            return Decision::Drop(DropReason::IngressDown);
        }
        let src = frame.source();
        if src.is_multicast() {
            return Decision::Drop(DropReason::MulticastSource);
        }
        if self.config.mode == Mode::Hub {
            return Decision::Flood;
        }
        let vlan = 0;
        self.learn(src, vlan, ingress, now);
        let dst = frame.destination();
        if dst.is_multicast() {
            return Decision::Flood;
        }
        match self.fdb.lookup(dst, vlan, now) {
            Some(p) if p == ingress => Decision::Drop(DropReason::LocalDestination),
            Some(p) => Decision::Forward(p),
            None => Decision::Flood,
        }
    }

    fn learn(&mut self, mac: crate::MacAddr, vlan: u16, port: PortId, now: Duration) {
        match self.fdb.learn(mac, vlan, port, now) {
            Learned::Refreshed => {}
            Learned::New => self.events.learned += 1,
            Learned::Moved { from } => {
                self.events.moved += 1;
                self.last_notice = Some(FdbNotice::Moved {
                    mac,
                    from,
                    to: port,
                });
            }
            Learned::TableFull | Learned::PortFull => {
                self.events.refused += 1;
                self.last_notice = Some(FdbNotice::Refused {
                    mac,
                    port,
                    per_port: self.fdb.len() < self.fdb.config().max_entries,
                });
            }
        }
    }

    /// Takes the latest move or refusal, if any, for a rate-limited log.
    pub fn take_notice(&mut self) -> Option<FdbNotice> {
        self.last_notice.take()
    }

    /// Forgets entries idle for longer than the aging time.
    pub fn age(&mut self, now: Duration) -> usize {
        let n = self.fdb.age(now);
        self.events.aged += n as u64;
        n
    }

    /// Empties the FDB, or only the entries of one port.
    pub fn flush(&mut self, port: Option<PortId>) -> usize {
        match port {
            Some(p) => self.fdb.purge_port(p),
            None => self.fdb.flush(),
        }
    }

    /// The FDB, for inspection.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The live FDB entries.
    pub fn fdb_entries(&self, now: Duration) -> Vec<FdbEntry> {
        self.fdb.entries(now)
    }

    /// Learning events so far.
    pub fn events(&self) -> FdbEvents {
        self.events
    }
}

#[cfg(test)]
mod tests;
