//! The forwarding engine: given (ingress port, frame, now) it decides where
//! the frame goes. No sockets, no clock, no allocation per frame.

use crate::fdb::{Fdb, FdbConfig, FdbEntry, HashSeed, Learned};
use crate::loops::{LoopBlock, LoopGuard, Loops};
use crate::storm::{Bucket, Storm};
use crate::vlan::{Classified, PortVlans};
use crate::DropReason;
use crate::{MacAddr, PortId};
use std::collections::BTreeSet;
use std::time::Duration;
use switchyard_wire::EthernetFrame;

pub use crate::storm::Guards;

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
    /// BPDU guard and storm control, for every port.
    pub guards: Guards,
    /// Loop protection (on by default).
    pub loops: LoopGuard,
}

impl EngineConfig {
    /// A config from its parts (no guards; loop protection on).
    pub fn new(mode: Mode, fdb: FdbConfig) -> Self {
        EngineConfig {
            mode,
            fdb,
            guards: Guards::default(),
            loops: LoopGuard::default(),
        }
    }

    /// Sets loop protection.
    pub fn with_loop_guard(mut self, loops: LoopGuard) -> Self {
        self.loops = loops;
        self
    }

    /// Sets the guards.
    pub fn with_guards(mut self, guards: Guards) -> Self {
        self.guards = guards;
        self
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
    /// Moves within a second of the address's previous move.
    pub flaps: u64,
    /// Ports blocked by loop protection.
    pub loop_blocks: u64,
}

/// What deciding one frame did: where it goes, its VLAN, and what it did
/// to the FDB. Every effect of a frame comes back here; the engine keeps
/// nothing for the caller to fetch later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// Where the frame goes.
    pub decision: Decision,
    /// The frame's VLAN: a flood reaches only that VLAN's members, and
    /// each port tags or untags as its membership says.
    pub class: Classified,
    /// What learning the frame's source did, when it did more than
    /// refresh an entry (rare: a copy-sized value, no allocation).
    pub notice: Option<FdbNotice>,
}

impl Decided {
    /// A decision with no FDB effect.
    fn plain(decision: Decision, class: Classified) -> Decided {
        Decided {
            decision,
            class,
            notice: None,
        }
    }
}

/// What learning one frame's source address did to the FDB, beyond
/// refreshing an entry. Moves, flaps and refusals are worth a log line
/// (the caller decides how often).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbNotice {
    /// `mac` was learned on `port` (a new entry).
    Learned {
        /// The address.
        mac: MacAddr,
        /// The port it arrived on.
        port: PortId,
    },
    /// `mac` moved from one port to another.
    Moved {
        /// The address.
        mac: MacAddr,
        /// Where it was.
        from: PortId,
        /// Where it is now.
        to: PortId,
    },
    /// `mac` moves back and forth between ports: a loop, or a MAC used
    /// twice.
    Flapping {
        /// The address.
        mac: MacAddr,
        /// Where it was.
        from: PortId,
        /// Where it is now.
        to: PortId,
    },
    /// `mac` could not be learned on `port`: a limit is reached.
    Refused {
        /// The address.
        mac: MacAddr,
        /// The port it arrived on.
        port: PortId,
        /// True for the per-port limit, false for the table limit.
        per_port: bool,
    },
    /// A port was blocked: flaps of an address into it show a loop
    /// behind it. Its frames are dropped both ways until `until`.
    LoopBlocked(LoopBlock),
}

/// The pure forwarding engine.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    fdb: Fdb,
    ports: BTreeSet<PortId>,
    buckets: std::collections::HashMap<PortId, [Bucket; 3]>,
    /// Static entries: learning cannot move them, and another port sending
    /// from such a MAC is dropped.
    pinned: std::collections::HashMap<MacAddr, PortId>,
    /// VLAN membership per port; empty while the switch is VLAN-transparent.
    vlans: std::collections::HashMap<PortId, PortVlans>,
    vlan_aware: bool,
    /// The membership of a port without a rule.
    default_vlans: PortVlans,
    events: FdbEvents,
    loops: Loops,
    /// The source address of the switch's loop probes.
    own_mac: MacAddr,
}

impl Engine {
    /// An engine with no ports and a fixed FDB hash key: for tests and
    /// benchmarks. A switch uses [`Engine::with_seed`].
    pub fn new(config: EngineConfig) -> Self {
        Engine::with_seed(config, HashSeed::default())
    }

    /// An engine with no ports whose FDB hash is keyed with `seed`, which
    /// the caller draws at random.
    pub fn with_seed(config: EngineConfig, seed: HashSeed) -> Self {
        Engine {
            config,
            fdb: Fdb::with_seed(config.fdb, seed),
            ports: BTreeSet::new(),
            buckets: std::collections::HashMap::new(),
            pinned: std::collections::HashMap::new(),
            vlans: std::collections::HashMap::new(),
            vlan_aware: false,
            default_vlans: PortVlans::default(),
            events: FdbEvents::default(),
            loops: Loops::default(),
            own_mac: crate::loops::own_address(seed.0),
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
        if !config.loops.enabled {
            self.loops.clear();
        }
    }

    /// Switches between switch and hub mode; the FDB is kept.
    pub fn set_mode(&mut self, mode: Mode) {
        self.config.mode = mode;
    }

    /// Makes `port` a member: it receives floods from now on.
    pub fn add_port(&mut self, port: PortId) {
        self.ports.insert(port);
    }

    /// Makes the switch VLAN-aware (`true`) or VLAN-transparent. Changing
    /// it empties the FDB: entries learned in one scheme mean nothing in
    /// the other.
    pub fn set_vlan_aware(&mut self, aware: bool) {
        if aware != self.vlan_aware {
            self.vlan_aware = aware;
            self.fdb.flush();
        }
    }

    /// True when frames are classified into VLANs.
    pub fn is_vlan_aware(&self) -> bool {
        self.vlan_aware
    }

    /// Sets `port`'s VLAN membership (used while VLAN-aware; a member port
    /// without one is an access port of VLAN 1). Its FDB entries are
    /// purged, since they may belong to VLANs it has left.
    pub fn set_port_vlans(&mut self, port: PortId, vlans: PortVlans) {
        if self.vlans.get(&port) != Some(&vlans) {
            self.fdb.purge_port(port);
            self.vlans.insert(port, vlans);
        }
    }

    /// `port`'s VLAN membership, `None` while VLAN-transparent.
    pub fn port_vlans(&self, port: PortId) -> Option<&PortVlans> {
        if !self.vlan_aware {
            return None;
        }
        self.vlans.get(&port).or(Some(&self.default_vlans))
    }

    /// True when frames of `vid` may leave through `port` (always, while
    /// VLAN-transparent).
    fn carries(&self, port: PortId, vid: u16) -> bool {
        !self.vlan_aware
            || self
                .vlans
                .get(&port)
                .unwrap_or(&self.default_vlans)
                .is_member(vid)
    }

    /// Removes `port` and every FDB entry pointing at it; returns how many
    /// entries were purged.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        self.ports.remove(&port);
        self.vlans.remove(&port);
        self.buckets.remove(&port);
        self.loops.remove_port(port);
        self.pinned.retain(|_, p| *p != port);
        self.fdb.purge_port(port)
    }

    /// Pins `mac` to `port`: frames to it go there without learning, and
    /// frames from it on any other port are dropped.
    pub fn pin(&mut self, mac: MacAddr, port: PortId) {
        self.pinned.insert(mac, port);
    }

    /// Removes a static entry.
    pub fn unpin(&mut self, mac: MacAddr) {
        self.pinned.remove(&mac);
    }

    /// The static entries.
    pub fn pinned(&self) -> impl Iterator<Item = (MacAddr, PortId)> + '_ {
        self.pinned.iter().map(|(m, p)| (*m, *p))
    }

    /// The member ports, ascending.
    pub fn ports(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports.iter().copied()
    }

    /// True when `port` is a member.
    pub fn has_port(&self, port: PortId) -> bool {
        self.ports.contains(&port)
    }

    /// The ports a [`Decision::Flood`] from `ingress` reaches, in a
    /// VLAN-transparent switch.
    pub fn flood_set(&self, ingress: PortId) -> impl Iterator<Item = PortId> + '_ {
        self.flood_set_in(ingress, 0)
    }

    /// The ports a [`Decision::Flood`] of VLAN `vid` from `ingress` reaches.
    pub fn flood_set_in(&self, ingress: PortId, vid: u16) -> impl Iterator<Item = PortId> + '_ {
        self.ports
            .iter()
            .copied()
            .filter(move |p| *p != ingress && self.carries(*p, vid))
    }

    /// Decides where `frame`, received on `ingress` at `now`, goes, and
    /// learns its source address. The answer carries the frame's VLAN
    /// and what learning did ([`Decided::notice`]).
    pub fn decide(&mut self, ingress: PortId, frame: &[u8], now: Duration) -> Decided {
        let class = Classified::TRANSPARENT;
        if frame.len() > crate::MAX_FRAME {
            return Decided::plain(Decision::Drop(DropReason::TooLong), class);
        }
        let Ok(frame) = EthernetFrame::new_checked(frame) else {
            return Decided::plain(Decision::Drop(DropReason::TooShort), class);
        };
        if !self.ports.contains(&ingress) {
            return Decided::plain(Decision::Drop(DropReason::IngressDown), class);
        }
        if self.loops.is_blocked(ingress, now) {
            return Decided::plain(Decision::Drop(DropReason::LoopBlocked), class);
        }
        if frame.source() == self.own_mac {
            // The switch's own frame came back: a loop behind `ingress`.
            let notice = self.probe_returned(ingress, frame.as_bytes(), now);
            return Decided {
                decision: Decision::Drop(DropReason::LoopBlocked),
                class,
                notice,
            };
        }
        let class = if self.vlan_aware {
            let membership = self.vlans.get(&ingress).unwrap_or(&self.default_vlans);
            match membership.classify(frame.as_bytes()) {
                Ok(c) => c,
                Err(reason) => return Decided::plain(Decision::Drop(reason), class),
            }
        } else {
            class
        };
        let (decision, notice) = self.decide_classified(ingress, &frame, class.vid, now);
        Decided {
            decision,
            class,
            notice,
        }
    }

    fn decide_classified(
        &mut self,
        ingress: PortId,
        frame: &EthernetFrame<&[u8]>,
        vlan: u16,
        now: Duration,
    ) -> (Decision, Option<FdbNotice>) {
        let src = frame.source();
        if src.is_multicast() {
            return (Decision::Drop(DropReason::MulticastSource), None);
        }
        if let Some(owner) = self.pinned.get(&src) {
            if *owner != ingress {
                return (Decision::Drop(DropReason::MacSpoof), None);
            }
        }
        let dst = frame.destination();
        let guards = self.config.guards;
        if guards.bpdu_guard && dst.is_reserved_group() {
            return (Decision::Drop(DropReason::BpduGuard), None);
        }
        if dst.is_multicast() {
            let class = if dst == MacAddr::BROADCAST {
                Storm::Broadcast
            } else {
                Storm::Multicast
            };
            if !self.storm_allows(ingress, class, now) {
                return (Decision::Drop(DropReason::StormControl), None);
            }
        }
        if self.config.mode == Mode::Hub {
            return (Decision::Flood, None);
        }
        let notice = self.learn(src, vlan, ingress, now);
        if dst.is_multicast() {
            return (Decision::Flood, notice);
        }
        let learned = self
            .pinned
            .get(&dst)
            .copied()
            .or_else(|| self.fdb.lookup(dst, vlan, now))
            // A pinned port outside the VLAN, or an entry left from before
            // a membership change, is no destination.
            .filter(|p| self.carries(*p, vlan));
        let decision = match learned {
            Some(p) if p == ingress => Decision::Drop(DropReason::LocalDestination),
            Some(p) if self.loops.is_blocked(p, now) => Decision::Drop(DropReason::LoopBlocked),
            Some(p) => Decision::Forward(p),
            None if !self.storm_allows(ingress, Storm::Unknown, now) => {
                Decision::Drop(DropReason::StormControl)
            }
            None => Decision::Flood,
        };
        (decision, notice)
    }

    fn storm_allows(&mut self, port: PortId, class: Storm, now: Duration) -> bool {
        let g = self.config.guards;
        let rate = match class {
            Storm::Broadcast => g.storm_broadcast,
            Storm::Multicast => g.storm_multicast,
            Storm::Unknown => g.storm_unknown_unicast,
        };
        if rate == 0 {
            return true;
        }
        self.buckets.entry(port).or_default()[class as usize].take(rate, now)
    }

    fn learn(&mut self, mac: MacAddr, vlan: u16, port: PortId, now: Duration) -> Option<FdbNotice> {
        match self.fdb.learn(mac, vlan, port, now) {
            Learned::Refreshed => None,
            Learned::New => {
                self.events.learned += 1;
                Some(FdbNotice::Learned { mac, port })
            }
            Learned::Moved { from } => {
                self.events.moved += 1;
                Some(FdbNotice::Moved {
                    mac,
                    from,
                    to: port,
                })
            }
            Learned::Flapping { from, home } => {
                self.events.moved += 1;
                self.events.flaps += 1;
                let guard = self.config.loops;
                if let Some(block) = self.loops.flap(&guard, (mac, home), port, now) {
                    return Some(self.blocked(block, now));
                }
                Some(FdbNotice::Flapping {
                    mac,
                    from,
                    to: port,
                })
            }
            Learned::TableFull | Learned::PortFull => {
                self.events.refused += 1;
                Some(FdbNotice::Refused {
                    mac,
                    port,
                    per_port: self.fdb.len() < self.fdb.config().max_entries,
                })
            }
        }
    }

    fn probe_returned(
        &mut self,
        ingress: PortId,
        frame: &[u8],
        now: Duration,
    ) -> Option<FdbNotice> {
        let sent = crate::loops::probe_port(frame)?;
        let guard = self.config.loops;
        let block = self
            .loops
            .probe_returned(&guard, (self.own_mac, sent), ingress, now)?;
        Some(self.blocked(block, now))
    }

    /// Counts a new block and forgets what the loop taught: the blocked
    /// port's addresses and every address on the move are learned afresh
    /// where their owners send from.
    fn blocked(&mut self, block: LoopBlock, now: Duration) -> FdbNotice {
        self.events.loop_blocks += 1;
        self.fdb.purge_port(block.port);
        self.fdb.forget_moving(now);
        FdbNotice::LoopBlocked(block)
    }

    /// A loop probe to send out of `out` (loop protection sends one out of
    /// each port that faces a bridge or a LAN, about once a second): if it
    /// comes back on another port, that port is blocked.
    pub fn loop_probe(&self, out: PortId) -> [u8; crate::loops::PROBE_LEN] {
        crate::loops::probe(self.own_mac, out)
    }

    /// The source address of the switch's loop probes.
    pub fn own_mac(&self) -> MacAddr {
        self.own_mac
    }

    /// Ends loop blocks whose hold-down is over at `now`; returns them.
    pub fn expire_loop_blocks(&mut self, now: Duration) -> Vec<LoopBlock> {
        self.loops.expire(now)
    }

    /// The ports loop protection blocks at `now`.
    pub fn loop_blocks(&self, now: Duration) -> Vec<LoopBlock> {
        self.loops.blocks(now)
    }

    /// True when loop protection blocks `port` at `now`.
    pub fn is_loop_blocked(&self, port: PortId, now: Duration) -> bool {
        self.loops.is_blocked(port, now)
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
mod loop_tests;
#[cfg(test)]
mod tests;
