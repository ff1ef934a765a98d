//! Per-port counters: plain atomics, read by metrics and `ctl` without
//! touching the data path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was not delivered. Doubles as the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than the 14-byte Ethernet header (counted on ingress).
    TooShort,
    /// Longer than 65535 bytes (counted on ingress).
    TooLong,
    /// The source MAC has the multicast bit set (counted on ingress).
    MulticastSource,
    /// The destination was learned on the ingress port itself: the frame
    /// would go back where it came from (counted on ingress).
    LocalDestination,
    /// The ingress port was being removed when the frame arrived.
    IngressDown,
    /// A datagram from an address that is not the port's peer.
    UnknownSender,
    /// A tunnel header that is malformed (VXLAN: I flag clear, too short).
    BadEncapsulation,
    /// A VXLAN packet for another network identifier.
    WrongVni,
    /// Refused by the uplink's MAC-NAT (its own counters say why).
    MacNat,
    /// A spanning-tree or other 802.1D link-local frame, with BPDU guard on.
    BpduGuard,
    /// Over the port's broadcast, multicast or unknown-unicast rate limit.
    StormControl,
    /// A source MAC pinned to another port (port security).
    MacSpoof,
    /// A frame of a VLAN the ingress port is not a member of (or untagged
    /// on a trunk without a native VLAN).
    VlanFiltered,
    /// The destination's queue was full: a tail drop (counted on egress).
    EgressFull,
    /// The destination's link is down (counted on egress).
    EgressDown,
    /// The destination's peer has gone away (counted on egress).
    EgressGone,
    /// Sending failed for another reason (counted on egress).
    EgressError,
    /// An offloaded (TSO/GSO) frame for a port that cannot take it whole,
    /// which could not be segmented in software (counted on egress).
    Unsegmentable,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 18] = [
        DropReason::TooShort,
        DropReason::TooLong,
        DropReason::MulticastSource,
        DropReason::LocalDestination,
        DropReason::IngressDown,
        DropReason::UnknownSender,
        DropReason::BadEncapsulation,
        DropReason::WrongVni,
        DropReason::MacNat,
        DropReason::BpduGuard,
        DropReason::StormControl,
        DropReason::MacSpoof,
        DropReason::VlanFiltered,
        DropReason::EgressFull,
        DropReason::EgressDown,
        DropReason::EgressGone,
        DropReason::EgressError,
        DropReason::Unsegmentable,
    ];

    /// A dense index into per-reason arrays.
    pub fn index(self) -> usize {
        match self {
            DropReason::TooShort => 0,
            DropReason::TooLong => 1,
            DropReason::MulticastSource => 2,
            DropReason::LocalDestination => 3,
            DropReason::IngressDown => 4,
            DropReason::UnknownSender => 5,
            DropReason::BadEncapsulation => 6,
            DropReason::WrongVni => 7,
            DropReason::MacNat => 8,
            DropReason::BpduGuard => 9,
            DropReason::StormControl => 10,
            DropReason::MacSpoof => 11,
            DropReason::VlanFiltered => 12,
            DropReason::EgressFull => 13,
            DropReason::EgressDown => 14,
            DropReason::EgressGone => 15,
            DropReason::EgressError => 16,
            DropReason::Unsegmentable => 17,
        }
    }

    /// True for drops caused by what a peer sent (malformed or unexpected
    /// input), worth a warning; the others are load or topology.
    pub fn is_bad_input(self) -> bool {
        matches!(
            self,
            DropReason::TooShort
                | DropReason::TooLong
                | DropReason::MulticastSource
                | DropReason::UnknownSender
                | DropReason::BadEncapsulation
                | DropReason::WrongVni
                | DropReason::BpduGuard
                | DropReason::StormControl
                | DropReason::MacSpoof
                | DropReason::VlanFiltered
        )
    }

    /// The snake_case label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::MulticastSource => "multicast_source",
            DropReason::LocalDestination => "local_destination",
            DropReason::IngressDown => "ingress_down",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::BadEncapsulation => "bad_encapsulation",
            DropReason::WrongVni => "wrong_vni",
            DropReason::MacNat => "mac_nat",
            DropReason::BpduGuard => "bpdu_guard",
            DropReason::StormControl => "storm_control",
            DropReason::MacSpoof => "mac_spoof",
            DropReason::VlanFiltered => "vlan_filtered",
            DropReason::EgressFull => "egress_full",
            DropReason::EgressDown => "egress_down",
            DropReason::EgressGone => "egress_gone",
            DropReason::EgressError => "egress_error",
            DropReason::Unsegmentable => "unsegmentable",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Frames and bytes in and out of one port, and drops by reason.
#[derive(Debug, Default)]
pub struct PortCounters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_held: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

/// A copy of a port's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Frames received from the port's peer.
    pub rx_frames: u64,
    /// Bytes received from the port's peer.
    pub rx_bytes: u64,
    /// Frames sent to the port's peer.
    pub tx_frames: u64,
    /// Bytes sent to the port's peer.
    pub tx_bytes: u64,
    /// Frames the peer's full queue made the switch hold (pausing their
    /// sender) instead of dropping; each is then sent or counted a drop.
    pub tx_held: u64,
    /// Drops, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::ALL.len()],
}

impl CounterSnapshot {
    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
}

impl PortCounters {
    /// Counts a frame received from the peer.
    pub fn received(&self, bytes: usize) {
        self.rx_frames.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a frame sent to the peer.
    pub fn sent(&self, bytes: usize) {
        self.tx_frames.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts frames held for a full peer (backpressure).
    pub fn held(&self, frames: usize) {
        self.tx_held.fetch_add(frames as u64, Relaxed);
    }

    /// Counts a drop.
    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Relaxed);
    }

    /// Adds another port's counts (a removed port's, kept switch-wide).
    pub fn absorb(&self, s: &CounterSnapshot) {
        self.rx_frames.fetch_add(s.rx_frames, Relaxed);
        self.rx_bytes.fetch_add(s.rx_bytes, Relaxed);
        self.tx_frames.fetch_add(s.tx_frames, Relaxed);
        self.tx_bytes.fetch_add(s.tx_bytes, Relaxed);
        self.tx_held.fetch_add(s.tx_held, Relaxed);
        for (a, d) in self.drops.iter().zip(s.drops.iter()) {
            a.fetch_add(*d, Relaxed);
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut drops = [0; DropReason::ALL.len()];
        for (d, a) in drops.iter_mut().zip(self.drops.iter()) {
            *d = a.load(Relaxed);
        }
        CounterSnapshot {
            rx_frames: self.rx_frames.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_frames: self.tx_frames.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_held: self.tx_held.load(Relaxed),
            drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_and_match_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn counts_add_up() {
        let c = PortCounters::default();
        c.received(60);
        c.received(40);
        c.sent(1514);
        c.dropped(DropReason::EgressFull);
        let s = c.snapshot();
        assert_eq!(
            (s.rx_frames, s.rx_bytes, s.tx_frames, s.tx_bytes),
            (2, 100, 1, 1514)
        );
        assert_eq!(s.drops(DropReason::EgressFull), 1);
        assert_eq!(s.drops(DropReason::TooShort), 0);
    }
}
