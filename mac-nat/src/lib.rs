//! Layer-2 NAT ("MAC-NAT") for a Wi-Fi uplink.
//!
//! A station in 3-address mode may only send frames with its own MAC (Mu)
//! as source, and only receives frames addressed to Mu. [`MacNat`] lets
//! several guests share one station: [`MacNat::outbound`] rewrites every
//! frame sent to the uplink so that Mu appears as the Ethernet source and
//! in every protocol field that advertises a link-layer address (ARP, ND
//! options, DHCP), learning which guest owns which IP address;
//! [`MacNat::inbound`] maps frames arriving for Mu back to the right guest
//! by destination IP (per VLAN), floods group traffic and unknown ARP/NS
//! targets to all guests, and leaves the host's own traffic to the host.
//!
//! The crate is pure: no I/O, no clock, no allocation per frame except the
//! one DHCP edit that grows a frame. Time comes in as a [`Duration`] on the
//! caller's monotonic clock. No input panics or loops; every length is
//! checked before it is read. The behaviour follows
//! `shared/reference/mac-nat.md` §3.
//!
//! [`Duration`]: std::time::Duration
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod config;
mod counters;
mod inbound;
mod nat;
mod outbound;
mod table;

pub use config::{ConfigError, ConflictPolicy, DhcpMode, Limits, MacNatConfig, OtherEthertypes};
pub use counters::{Counter, Counters, DropReason};
pub use nat::{Inbound, MacNat, Outbound};
pub use switchyard_wire::MacAddr;
pub use table::{HostAddr, Snapshot, SnapshotEntry, Source, WireOwned};
