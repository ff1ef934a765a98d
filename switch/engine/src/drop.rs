//! Why a frame was not delivered: the engine's drop reasons, which the
//! ports' counters and the metrics share as labels.

/// Declares [`DropReason`] and its table from one list: each row is a
/// variant with its doc, its metric label and whether it is bad input.
/// The order is the counters' index order and the metrics' order.
macro_rules! drop_reasons {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $label:literal, bad_input: $bad:literal;
    )*) => {
        /// Why a frame was not delivered. Doubles as the metric label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum DropReason {
            $(
                $(#[$doc])*
                $variant,
            )*
        }

        /// How many reasons there are.
        const COUNT: usize = [$(stringify!($variant)),*].len();

        impl DropReason {
            /// Every reason, in the order of [`DropReason::index`].
            pub const ALL: [DropReason; COUNT] = [$(DropReason::$variant),*];

            /// A dense index into per-reason arrays.
            pub fn index(self) -> usize {
                // A field-less enum counts its variants from 0 in the
                // table's order.
                self as usize
            }

            /// True for drops caused by what a peer sent (malformed or
            /// unexpected input), worth a warning; the others are load or
            /// topology.
            pub fn is_bad_input(self) -> bool {
                match self {
                    $(DropReason::$variant => $bad,)*
                }
            }

            /// The snake_case label used in logs and metrics.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $label,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the 14-byte Ethernet header (counted on ingress).
    TooShort = "too_short", bad_input: true;
    /// Longer than 65535 bytes (counted on ingress).
    TooLong = "too_long", bad_input: true;
    /// The source MAC has the multicast bit set (counted on ingress).
    MulticastSource = "multicast_source", bad_input: true;
    /// The destination was learned on the ingress port itself: the frame
    /// would go back where it came from (counted on ingress).
    LocalDestination = "local_destination", bad_input: false;
    /// The ingress port was being removed when the frame arrived.
    IngressDown = "ingress_down", bad_input: false;
    /// A datagram from an address that is not the port's peer.
    UnknownSender = "unknown_sender", bad_input: true;
    /// A tunnel header that is malformed (VXLAN: I flag clear, too short).
    BadEncapsulation = "bad_encapsulation", bad_input: true;
    /// A VXLAN packet for another network identifier.
    WrongVni = "wrong_vni", bad_input: true;
    /// Refused by the uplink's MAC-NAT (its own counters say why).
    MacNat = "mac_nat", bad_input: false;
    /// A spanning-tree or other 802.1D link-local frame, with BPDU guard on.
    BpduGuard = "bpdu_guard", bad_input: true;
    /// Over the port's broadcast, multicast or unknown-unicast rate limit.
    StormControl = "storm_control", bad_input: true;
    /// A source MAC pinned to another port (port security).
    MacSpoof = "mac_spoof", bad_input: true;
    /// A frame of a VLAN the ingress port is not a member of (or untagged
    /// on a trunk without a native VLAN).
    VlanFiltered = "vlan_filtered", bad_input: true;
    /// The destination's queue was full: a tail drop (counted on egress).
    EgressFull = "egress_full", bad_input: false;
    /// The destination's link is down (counted on egress).
    EgressDown = "egress_down", bad_input: false;
    /// The destination's peer has gone away (counted on egress).
    EgressGone = "egress_gone", bad_input: false;
    /// Sending failed for another reason (counted on egress).
    EgressError = "egress_error", bad_input: false;
    /// An offloaded (TSO/GSO) frame for a port that cannot take it whole,
    /// which could not be segmented in software (counted on egress).
    Unsegmentable = "unsegmentable", bad_input: false;
    /// From or to a port loop protection has blocked (counted on the
    /// blocked port for the frames it sends, on the sender for unicast to
    /// it, and on the blocked port for flood copies it does not get).
    LoopBlocked = "loop_blocked", bad_input: false;
    /// A virtio descriptor chain a guest posted that points outside its
    /// memory, has the wrong direction or is too long (vhost-user ports).
    BadDescriptor = "bad_descriptor", bad_input: true;
    /// A TSO/GSO super-frame whose segment size is below the floor
    /// (`gso::MIN_GSO_SIZE`): cutting it would make thousands of frames.
    GsoTooSmall = "gso_too_small", bad_input: true;
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

    /// The labels are metric labels: their order and spelling are part of
    /// the interface.
    #[test]
    fn labels_and_order_are_the_published_ones() {
        let labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "too_short",
                "too_long",
                "multicast_source",
                "local_destination",
                "ingress_down",
                "unknown_sender",
                "bad_encapsulation",
                "wrong_vni",
                "mac_nat",
                "bpdu_guard",
                "storm_control",
                "mac_spoof",
                "vlan_filtered",
                "egress_full",
                "egress_down",
                "egress_gone",
                "egress_error",
                "unsegmentable",
                "loop_blocked",
                "bad_descriptor",
                "gso_too_small",
            ]
        );
        let bad: Vec<&str> = DropReason::ALL
            .iter()
            .filter(|r| r.is_bad_input())
            .map(|r| r.as_str())
            .collect();
        assert_eq!(
            bad,
            [
                "too_short",
                "too_long",
                "multicast_source",
                "unknown_sender",
                "bad_encapsulation",
                "wrong_vni",
                "bpdu_guard",
                "storm_control",
                "mac_spoof",
                "vlan_filtered",
                "bad_descriptor",
                "gso_too_small",
            ]
        );
        assert_eq!(DropReason::MacNat.to_string(), "mac_nat");
    }
}
