//! Switchyard's switch: a pure forwarding engine ([`engine`]) and the socket
//! ports that feed it ([`ports`]), joined by [`Switch`], which owns the port
//! table snapshot and forwards frames where they arrive.
#![warn(missing_docs, unreachable_pub)]

pub mod capture;
pub mod checksum;
pub mod counters;
pub mod egress;
pub mod engine;
pub mod fdb;
pub mod frame;
pub mod gso;
pub mod hold;
pub mod port;
pub mod ports;
pub mod ratelimit;
pub mod stop;
mod switch;
pub mod sys;
pub mod tick;
pub mod vlan;

pub use counters::{DropReason, PortCounters};
pub use egress::{Frames, Outgoing, Overflow};
pub use engine::{Decision, Engine, EngineConfig, Mode};
pub use fdb::{Fdb, FdbConfig};
pub use frame::MacAddr;
pub use port::{transmit_each, Port, PortId, SendError, Transmit};
pub use stop::Stop;
pub use switch::{PortTable, Switch, MAX_BUSY_POLL};
pub use vlan::{PortVlans, VlanRules};

/// The largest frame any port accepts and forwards whole (no FCS).
pub const MAX_FRAME: usize = 65_535;
/// The shortest frame the engine accepts: destination, source, EtherType.
pub const MIN_FRAME: usize = 14;
