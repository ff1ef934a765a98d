//! Switchyard's forwarding engine, pure: given (ingress port, frame bytes,
//! now) it answers with a [`Decision`] and every effect of that frame
//! (learned, moved, flapping or refused addresses) in the returned value.
//! It owns the FDB, hub mode, VLAN membership, BPDU guard, storm control
//! and loop protection. No sockets, no clock, no allocation per frame; this crate has
//! no I/O dependency, so the compiler keeps it that way.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod drop;
pub mod engine;
pub mod fdb;
mod keyed;
pub mod loops;
pub mod ratelimit;
mod storm;
pub mod vlan;

use std::fmt;

pub use drop::DropReason;
pub use engine::{Decided, Decision, Engine, EngineConfig, FdbNotice, Mode};
pub use fdb::{Fdb, FdbConfig, HashSeed};
pub use loops::{LoopBlock, LoopGuard};
pub use storm::STORM_BURST;
pub use switchyard_wire::MacAddr;
pub use vlan::{PortVlans, VlanRules};

/// The largest frame any port accepts and forwards whole (no FCS).
pub const MAX_FRAME: usize = 65_535;
/// The shortest frame the engine accepts: destination, source, EtherType.
pub const MIN_FRAME: usize = 14;

/// A port's identity inside one switch. Never reused while the switch runs,
/// so a stale FDB entry can never point at a newer port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
