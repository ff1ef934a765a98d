//! Zero-copy views of Ethernet frames: the shared wire crate's, at the
//! path the switch's ports import them from.

pub use switchyard_wire::{EthernetFrame, MacAddr};
