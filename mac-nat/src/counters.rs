//! Counters and drop reasons. Every label is the metric label
//! (`switchyard_macnat_total{port,counter}`) and the name `switchyard ctl
//! macnat` prints.

use std::fmt;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident => $label:literal, )*) => {
        /// Everything the MAC-NAT counts: drops (see [`DropReason`]), edits,
        /// decisions and table events.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Counter {
            $( $(#[doc = $doc])* $name, )*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[ $(Counter::$name,)* ];

            /// The metric label, e.g. `out_rewritten`.
            pub fn label(self) -> &'static str {
                match self { $(Counter::$name => $label,)* }
            }
        }
    };
}

counters! {
    /// Outbound frames sent with the source rewritten to the uplink MAC.
    OutRewritten => "out_rewritten",
    /// Outbound drop: group or uplink MAC as source.
    OutBadSrc => "out_bad_src",
    /// Outbound drop: addressed to the uplink MAC (guests reach the host through a tap port).
    OutToUplinkMac => "out_to_uplink_mac",
    /// Outbound drop: addressed to a known guest MAC (guest MACs never exist on the wire).
    OutToGuestMac => "out_to_guest_mac",
    /// Outbound drop: 01:80:c2:00:00:0x link-local group.
    OutReservedGroup => "out_reserved_group",
    /// Outbound drop: EAPOL, RSN pre-authentication or TDLS.
    OutWifiControl => "out_wifi_control",
    /// Outbound drop: an ethertype that cannot be translated.
    OutUnsupportedEthertype => "out_unsupported_ethertype",
    /// Outbound drop: DHCP server reply, DHCPv6 server reply or RA from a guest.
    OutServerRole => "out_server_role",
    /// Outbound drop: a guest used or claimed one of the host's addresses.
    OutSpoofHostAddr => "out_spoof_host_addr",
    /// Outbound drop: a guest claimed an address owned by a LAN host.
    OutSpoofWireAddr => "out_spoof_wire_addr",
    /// Outbound drop: a guest claimed an address another guest holds.
    Conflict => "conflict",
    /// SLLA/TLLA options rewritten to the uplink MAC.
    NdLlaRewritten => "nd_lla_rewritten",
    /// ND messages with a zero-length option (invalid per RFC 4861).
    NdZeroLenOption => "nd_zero_len_option",
    /// DHCP client messages given the broadcast flag.
    DhcpBcastFlagSet => "dhcp_bcast_flag_set",
    /// Outbound drop: no room to insert the client identifier (impersonate mode).
    DhcpNoRoom => "dhcp_no_room",
    /// DHCP client messages whose chaddr was replaced (impersonate mode).
    DhcpImpersonated => "dhcp_impersonated",
    /// DHCP server replies whose chaddr was restored (impersonate mode).
    DhcpChaddrRestored => "dhcp_chaddr_restored",
    /// Inbound drop: a frame we (or the host) sent, echoed by the AP.
    InEcho => "in_echo",
    /// Inbound drop: 01:80:c2:00:00:0x link-local group.
    InReservedGroup => "in_reserved_group",
    /// Inbound drop: unicast for another MAC (promiscuous capture).
    InNotForUplink => "in_not_for_uplink",
    /// Inbound L2-unicast frames with an L3 broadcast/multicast destination, re-grouped.
    InL2ucL3bc => "in_l2uc_l3bc",
    /// Inbound unicast ARP requests for unknown targets flooded to guests.
    InArpFloodUnknown => "in_arp_flood_unknown",
    /// Inbound unicast NS for unknown targets flooded to guests.
    InNsFloodUnknown => "in_ns_flood_unknown",
    /// Inbound unicast IP for an address that is neither a guest's nor the host's.
    InUnknownL3 => "in_unknown_l3",
    /// Inbound frames answered `HostOnly`.
    InHostOnly => "in_host_only",
    /// Inbound frames answered `ToGuest`.
    InToGuest => "in_to_guest",
    /// Inbound frames answered `Flood`.
    InFlood => "in_flood",
    /// DHCPACKs that bound an address to a guest.
    DhcpAckBind => "dhcp_ack_bind",
    /// New table entries.
    LearnNew => "learn_new",
    /// Refreshed table entries.
    LearnRefresh => "learn_refresh",
    /// Entries evicted because their guest reached its per-guest limit.
    EvictLru => "evict_lru",
    /// Entries refused because the table (or the guest set) is full.
    TableFull => "table_full",
    /// Entries removed by `sweep` after `aging` without refresh.
    Aged => "aged",
    /// Guest entries removed because a LAN host claimed the address.
    PurgedByWire => "purged_by_wire",
    /// Frames too short or with invalid headers (dropped outbound, not edited inbound).
    Malformed => "malformed",
}

impl Counter {
    /// The number of counters.
    pub const COUNT: usize = Counter::ALL.len();

    /// A dense index into per-counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a frame was dropped. Each reason is also a [`Counter`] with the same
/// label, so it doubles as the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Too short, a truncated VLAN tag, an invalid IP header or ND message.
    Malformed,
    /// Outbound source MAC is a group address or the uplink MAC.
    OutBadSrc,
    /// Outbound frame addressed to the uplink MAC.
    OutToUplinkMac,
    /// Outbound frame addressed to a known guest MAC.
    OutToGuestMac,
    /// Outbound frame to a 01:80:c2:00:00:0x group.
    OutReservedGroup,
    /// Outbound EAPOL, RSN pre-authentication or TDLS.
    OutWifiControl,
    /// Outbound ethertype that cannot be translated.
    OutUnsupportedEthertype,
    /// A guest acting as DHCP/DHCPv6 server or IPv6 router.
    OutServerRole,
    /// A guest using or claiming one of the host's addresses.
    OutSpoofHostAddr,
    /// A guest claiming an address a LAN host owns.
    OutSpoofWireAddr,
    /// A guest claiming an address another guest holds (`keep_first`).
    Conflict,
    /// An outbound ND message with a zero-length option.
    NdZeroLenOption,
    /// No room to insert the DHCP client identifier within the uplink MTU.
    DhcpNoRoom,
    /// Inbound frame whose source is the uplink MAC (an echo).
    InEcho,
    /// Inbound frame to a 01:80:c2:00:00:0x group.
    InReservedGroup,
    /// Inbound unicast not addressed to the uplink MAC.
    InNotForUplink,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 16] = [
        DropReason::Malformed,
        DropReason::OutBadSrc,
        DropReason::OutToUplinkMac,
        DropReason::OutToGuestMac,
        DropReason::OutReservedGroup,
        DropReason::OutWifiControl,
        DropReason::OutUnsupportedEthertype,
        DropReason::OutServerRole,
        DropReason::OutSpoofHostAddr,
        DropReason::OutSpoofWireAddr,
        DropReason::Conflict,
        DropReason::NdZeroLenOption,
        DropReason::DhcpNoRoom,
        DropReason::InEcho,
        DropReason::InReservedGroup,
        DropReason::InNotForUplink,
    ];

    /// The counter this reason increments.
    pub fn counter(self) -> Counter {
        match self {
            DropReason::Malformed => Counter::Malformed,
            DropReason::OutBadSrc => Counter::OutBadSrc,
            DropReason::OutToUplinkMac => Counter::OutToUplinkMac,
            DropReason::OutToGuestMac => Counter::OutToGuestMac,
            DropReason::OutReservedGroup => Counter::OutReservedGroup,
            DropReason::OutWifiControl => Counter::OutWifiControl,
            DropReason::OutUnsupportedEthertype => Counter::OutUnsupportedEthertype,
            DropReason::OutServerRole => Counter::OutServerRole,
            DropReason::OutSpoofHostAddr => Counter::OutSpoofHostAddr,
            DropReason::OutSpoofWireAddr => Counter::OutSpoofWireAddr,
            DropReason::Conflict => Counter::Conflict,
            DropReason::NdZeroLenOption => Counter::NdZeroLenOption,
            DropReason::DhcpNoRoom => Counter::DhcpNoRoom,
            DropReason::InEcho => Counter::InEcho,
            DropReason::InReservedGroup => Counter::InReservedGroup,
            DropReason::InNotForUplink => Counter::InNotForUplink,
        }
    }

    /// The metric label, e.g. `out_spoof_host_addr`.
    pub fn label(self) -> &'static str {
        self.counter().label()
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Per-counter totals of one MAC-NAT instance. The owner (the uplink port)
/// copies them out for metrics; the data path only increments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    values: [u64; Counter::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            values: [0; Counter::COUNT],
        }
    }
}

impl Counters {
    /// The value of one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.values.get(c.index()).copied().unwrap_or(0)
    }

    /// Every counter with its value, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(move |&c| (c, self.get(c)))
    }

    pub(crate) fn bump(&mut self, c: Counter) {
        if let Some(v) = self.values.get_mut(c.index()) {
            *v = v.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn labels_unique_and_indices_dense() {
        let labels: HashSet<_> = Counter::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), Counter::COUNT);
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        for r in DropReason::ALL {
            assert_eq!(r.label(), r.counter().label());
        }
    }
}
