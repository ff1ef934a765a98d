//! Why a frame was not delivered: the engine's drop reasons, which the
//! ports' counters and the metrics share as labels.

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
