//! Switchyard's host-side ports: tap devices, and host NICs through
//! libpcap (with MAC-NAT for Wi-Fi). Each port type is one module with the
//! same surface as the socket ports: open, receive loop, non-blocking
//! send, counters.
#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_code)]

// Public only for the fuzz targets in fuzz/ (not an interface to build on).
#[doc(hidden)]
pub mod checksum;
pub mod pcap;
#[allow(unsafe_code)]
mod sys;
pub mod tap;
pub mod vhost_user;

pub use self::pcap::{PcapConfig, PcapError, PcapPort};
pub use tap::{TapDevice, TapError};
pub use vhost_user::{VhostUserConfig, VhostUserError, VhostUserPort};
