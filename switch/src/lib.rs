//! Switchyard's switch: a pure forwarding engine ([`engine`]) and the socket
//! ports that feed it ([`ports`]), joined by [`Switch`], which owns the port
//! table snapshot and forwards frames where they arrive.
#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_code)]

mod arrived;
pub mod capture;
pub mod checksum;
pub mod counters;
pub mod egress;
mod forms;
pub mod frame;
pub mod gather;
pub mod gso;
pub mod hold;
mod notice;
pub mod port;
pub mod ports;
pub mod stop;
mod switch;
#[allow(unsafe_code)]
pub mod sys;
pub mod tick;

// The pure engine lives in its own crate; its modules and types stay
// reachable at the paths the ports, the bridge and the CLI use.
pub use switchyard_engine::{engine, fdb, loops, ratelimit, vlan};
pub use switchyard_engine::{
    Decided, Decision, DropReason, Engine, EngineConfig, Fdb, FdbConfig, FdbNotice, LoopBlock,
    LoopGuard, MacAddr, Mode, PortId, PortVlans, VlanRules, MAX_FRAME, MIN_FRAME,
};

pub use counters::PortCounters;
pub use egress::{Frames, Outgoing, Overflow};
pub use port::{transmit_each, Port, SendError, Transmit};
pub use stop::Stop;
pub use switch::{PortTable, Switch, MAX_BUSY_POLL};
