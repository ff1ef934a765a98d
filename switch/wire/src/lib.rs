//! Switchyard's wire formats: the MAC address type every crate shares, the
//! EtherTypes, typed zero-copy views of the headers the switch, the pcap
//! port and the MAC-NAT read and edit, and the one Internet checksum.
//!
//! Each view's `new_checked` validates lengths once; after that no accessor
//! can panic. Byte ranges live in a private `field` module per view; setters
//! exist only where the buffer is `AsMut<[u8]>` (the smoltcp `wire` style).
//! No I/O, no allocation per frame.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod arp;
pub mod bytes;
pub mod checksum;
pub mod dhcp4;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
mod mac;
pub mod ndp;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use ethernet::{EthernetFrame, Layout};
pub use mac::MacAddr;

use bytes::{array, be16, need, put, put16};

/// Why bytes are not the header a view expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than the header (or a length field) needs.
    #[error("{what}: {len} bytes, need {need}")]
    Truncated {
        /// The header.
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A field has a value this view does not handle.
    #[error("{what}: {detail}")]
    Unsupported {
        /// The header.
        what: &'static str,
        /// Which field.
        detail: &'static str,
    },
    /// An ND option with length 0 (RFC 4861 §4.6: the message is invalid).
    #[error("neighbour discovery option of length 0")]
    ZeroLengthOption,
}
