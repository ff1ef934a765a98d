//! Golden frames: Ethernet-level rules, VLANs, truncation, and the table's
//! limits, ageing and maintenance API (§3.1, §3.2 steps 1–5, 9, §3.3 steps
//! 1–5, 10, §3.4).

mod common;
use common::*;
use std::net::{IpAddr, Ipv4Addr};
use switchyard_mac_nat::{
    ConfigError, Counter, DropReason, HostAddr, Inbound, MacAddr, MacNat, MacNatConfig,
    OtherEthertypes, Outbound,
};

fn arp_out(n: &mut MacNat, src: [u8; 6], ip: Ipv4Addr, port: u32, now: u64) -> Outbound {
    let mut f = eth(BCAST, src, ETH_ARP, &arp(1, src, ip, ZERO, ip));
    n.outbound(&mut f, port, t(now))
}

#[test]
fn outbound_source_and_destination_rules() {
    let mut n = nat();
    let payload = arp(1, G1, G1_IP, ZERO, ROUTER_IP);
    let cases: [([u8; 6], [u8; 6], u16, DropReason); 5] = [
        (BCAST, [0x03, 0, 0, 0, 0, 1], ETH_ARP, DropReason::OutBadSrc),
        (BCAST, MU, ETH_ARP, DropReason::OutBadSrc),
        (MU, G1, ETH_ARP, DropReason::OutToUplinkMac),
        (
            [0x01, 0x80, 0xc2, 0, 0, 0x0e],
            G1,
            0x88cc,
            DropReason::OutReservedGroup,
        ),
        (
            [0x01, 0x80, 0xc2, 0, 0, 0x03],
            G1,
            0x888e,
            DropReason::OutReservedGroup,
        ),
    ];
    for (dst, src, et, reason) in cases {
        let mut f = eth(dst, src, et, &payload);
        assert_eq!(
            n.outbound(&mut f, 1, t(1)),
            Outbound::Drop(reason),
            "{reason}"
        );
    }
    // EAPOL / pre-auth / TDLS to a unicast or broadcast address.
    for et in [0x888e, 0x88c7, 0x890d] {
        let mut f = eth(ROUTER, G1, et, &[1, 0, 0, 0]);
        assert_eq!(
            n.outbound(&mut f, 1, t(1)),
            Outbound::Drop(DropReason::OutWifiControl)
        );
    }
    // A frame for a known guest MAC (flooded unknown unicast).
    assert_eq!(arp_out(&mut n, G2, G2_IP, 2, 1), Outbound::Send);
    let mut f = udp_frame(G2, G1, G1_IP, G2_IP, 1, 2, b"x", true);
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::OutToGuestMac)
    );
    for r in [
        DropReason::OutBadSrc,
        DropReason::OutWifiControl,
        DropReason::OutReservedGroup,
    ] {
        assert!(n.counters().get(r.counter()) >= 2);
    }
}

#[test]
fn other_ethertypes_drop_or_single_owner() {
    let mut n = nat();
    for et in [0x88b5u16, 0x8863, 0x0842, 0x8137, 46] {
        let mut f = eth(BCAST, G1, et, &[0; 46]);
        assert_eq!(
            n.outbound(&mut f, 1, t(1)),
            Outbound::Drop(DropReason::OutUnsupportedEthertype)
        );
    }
    let mut f = eth(MU, LAN, 0x88b5, &[0; 46]);
    assert_eq!(n.inbound(&mut f, t(1)), Inbound::HostOnly);

    let mut c = MacNatConfig::default();
    c.other_ethertypes = OtherEthertypes::SingleOwner;
    let mut n = nat_with(c);
    let mut f = eth(BCAST, G1, 0x88b5, &[7; 46]);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f, eth(BCAST, MU, 0x88b5, &[7; 46]));
    let mut f = eth(MU, LAN, 0x88b5, &[8; 46]);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(f[..6], G1);
    let mut f = eth(MU, LAN, 0x88b6, &[8; 46]);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    // Owners age like bindings.
    n.sweep(t(1000));
    let mut f = eth(MU, LAN, 0x88b5, &[8; 46]);
    assert_eq!(n.inbound(&mut f, t(1000)), Inbound::HostOnly);
}

#[test]
fn inbound_ethernet_rules() {
    let mut n = nat();
    let payload = arp(1, LAN, LAN_IP, ZERO, G1_IP);
    let mut echo = eth(BCAST, MU, ETH_ARP, &arp(1, MU, G1_IP, ZERO, ROUTER_IP));
    assert_eq!(
        n.inbound(&mut echo, t(1)),
        Inbound::Drop(DropReason::InEcho)
    );
    let mut stp = eth([0x01, 0x80, 0xc2, 0, 0, 0], LAN, 38, &[0; 38]);
    assert_eq!(
        n.inbound(&mut stp, t(1)),
        Inbound::Drop(DropReason::InReservedGroup)
    );
    let mut eapol = eth(MU, ROUTER, 0x888e, &[2, 3, 0, 0]);
    assert_eq!(n.inbound(&mut eapol, t(1)), Inbound::HostOnly);
    let mut other = eth(LAN, ROUTER, ETH_ARP, &payload);
    assert_eq!(
        n.inbound(&mut other, t(1)),
        Inbound::Drop(DropReason::InNotForUplink)
    );
    let mut bcast_other = eth(BCAST, ROUTER, 0x88b5, &[0; 46]);
    assert_eq!(n.inbound(&mut bcast_other, t(1)), Inbound::Flood);
    for c in [
        Counter::InEcho,
        Counter::InReservedGroup,
        Counter::InNotForUplink,
        Counter::InHostOnly,
        Counter::InFlood,
    ] {
        assert_eq!(n.counters().get(c), 1, "{c}");
    }
}

#[test]
fn vlan_single_and_double_tags_key_the_table() {
    let mut n = nat();
    let tags_10 = [(0x8100u16, 10u16)];
    let mut f = eth_tagged(
        BCAST,
        G1,
        &tags_10,
        ETH_ARP,
        &arp(1, G1, G1_IP, ZERO, ROUTER_IP),
    );
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(
        f,
        eth_tagged(
            BCAST,
            MU,
            &tags_10,
            ETH_ARP,
            &arp(1, MU, G1_IP, ZERO, ROUTER_IP)
        )
    );
    assert_eq!(n.snapshot().entries[0].vlan, 10);
    // Reply on VLAN 10 → guest; the same address on VLAN 20 is unknown.
    let r = arp(2, ROUTER, ROUTER_IP, MU, G1_IP);
    let mut f = eth_tagged(MU, ROUTER, &tags_10, ETH_ARP, &r);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(
        f,
        eth_tagged(
            G1,
            ROUTER,
            &tags_10,
            ETH_ARP,
            &arp(2, ROUTER, ROUTER_IP, G1, G1_IP)
        )
    );
    let mut f = eth_tagged(MU, ROUTER, &[(0x8100, 20)], ETH_ARP, &r);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    // Q-in-Q: keyed by the outer VLAN id; payload offsets after both tags.
    let qinq = [(0x88a8u16, 100u16), (0x8100, 5)];
    let ip = ipv4(G2_IP, FAR_IP, 17, &udp4(G2_IP, FAR_IP, 1, 2, b"q", true));
    let mut f = eth_tagged(ROUTER, G2, &qinq, ETH_IPV4, &ip);
    assert_eq!(n.outbound(&mut f, 2, t(3)), Outbound::Send);
    let e = n
        .snapshot()
        .entries
        .into_iter()
        .find(|e| e.addr == IpAddr::V4(G2_IP))
        .unwrap();
    assert_eq!(e.vlan, 100);
    let back = ipv4(FAR_IP, G2_IP, 17, &udp4(FAR_IP, G2_IP, 2, 1, b"a", true));
    let mut f = eth_tagged(MU, ROUTER, &qinq, ETH_IPV4, &back);
    assert_eq!(n.inbound(&mut f, t(4)), Inbound::ToGuest(mac(G2)));
    // A truncated tag is malformed.
    let mut f = eth(BCAST, G1, 0x8100, &[0, 10]);
    assert_eq!(
        n.outbound(&mut f, 1, t(5)),
        Outbound::Drop(DropReason::Malformed)
    );
    let mut f = eth(BCAST, LAN, 0x8100, &[0]);
    assert_eq!(
        n.inbound(&mut f, t(5)),
        Inbound::Drop(DropReason::Malformed)
    );
}

#[test]
fn truncated_frames_at_every_length_never_panic() {
    for mode in [
        switchyard_mac_nat::DhcpMode::BroadcastFlag,
        switchyard_mac_nat::DhcpMode::Impersonate,
    ] {
        let mut c = MacNatConfig::default();
        c.dhcp = mode;
        let mut n = nat_with(c);
        for g in golden() {
            for len in 0..=g.len() {
                let mut f = g[..len].to_vec();
                let _ = n.outbound(&mut f, 1, t(1));
                assert!(f.len() <= len + 9);
                let mut f = g[..len].to_vec();
                let _ = n.inbound(&mut f, t(1));
                assert_eq!(f.len(), len);
            }
        }
        for len in 0..14 {
            let mut f = vec![0x02; len];
            assert_eq!(
                n.outbound(&mut f, 1, t(1)),
                Outbound::Drop(DropReason::Malformed)
            );
            assert_eq!(
                n.inbound(&mut f, t(1)),
                Inbound::Drop(DropReason::Malformed)
            );
        }
    }
}

#[test]
fn host_addresses_protected_and_replace_bindings() {
    let mut n = nat();
    assert_eq!(arp_out(&mut n, G1, G1_IP, 1, 1), Outbound::Send);
    assert_eq!(
        arp_out(&mut n, G1, HOST_IP, 1, 1),
        Outbound::Drop(DropReason::OutSpoofHostAddr)
    );
    // The host acquires G1's address: the binding goes.
    n.set_host_addrs([HostAddr::new(G1_IP.into(), 24)]);
    assert!(n.is_empty());
    let mut f = udp_frame(MU, ROUTER, FAR_IP, G1_IP, 1, 2, b"x", true);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    assert_eq!(n.counters().get(Counter::InUnknownL3), 0);
}

#[test]
fn per_guest_lru_and_global_limit() {
    let mut c = MacNatConfig::default();
    c.limits.per_guest_v4 = 2;
    c.limits.total = 3;
    let mut n = nat_with(c);
    for (i, last) in [20u8, 21, 22].iter().enumerate() {
        assert_eq!(
            arp_out(&mut n, G1, Ipv4Addr::new(192, 0, 2, *last), 1, i as u64),
            Outbound::Send
        );
    }
    assert_eq!(n.len(), 2);
    assert_eq!(n.counters().get(Counter::EvictLru), 1);
    let snap = n.snapshot();
    let addrs: Vec<_> = snap.entries.iter().map(|e| e.addr).collect();
    assert!(!addrs.contains(&IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20))));
    assert_eq!(arp_out(&mut n, G2, G2_IP, 2, 5), Outbound::Send);
    // Full: a third guest's address is refused, the others keep theirs.
    let g3 = [0x02, 0, 0, 0, 0x03, 0x01];
    assert_eq!(
        arp_out(&mut n, g3, Ipv4Addr::new(192, 0, 2, 53), 3, 6),
        Outbound::Send
    );
    assert_eq!(n.len(), 3);
    assert_eq!(n.counters().get(Counter::TableFull), 1);
}

#[test]
fn sweep_ages_exactly_idle_entries() {
    let mut n = nat();
    assert_eq!(arp_out(&mut n, G1, G1_IP, 1, 0), Outbound::Send);
    assert_eq!(arp_out(&mut n, G2, G2_IP, 2, 100), Outbound::Send);
    n.sweep(t(599));
    assert_eq!(n.len(), 2);
    n.sweep(t(600));
    assert_eq!(n.len(), 1);
    assert_eq!(n.counters().get(Counter::Aged), 1);
    // Self-healing: the next unicast ARP probe for G1 floods.
    let mut f = eth(MU, ROUTER, ETH_ARP, &arp(1, ROUTER, ROUTER_IP, MU, G1_IP));
    assert_eq!(n.inbound(&mut f, t(601)), Inbound::Flood);
    n.sweep(t(700));
    assert!(n.is_empty());
    assert!(
        n.snapshot().guests.is_empty(),
        "idle guests without bindings go too"
    );
}

#[test]
fn remove_port_guest_flush_and_uplink_change() {
    let mut n = nat();
    assert_eq!(arp_out(&mut n, G1, G1_IP, 1, 0), Outbound::Send);
    assert_eq!(arp_out(&mut n, G2, G2_IP, 2, 0), Outbound::Send);
    n.remove_port(1);
    assert_eq!(n.len(), 1);
    n.remove_guest(MacAddr(G2));
    assert!(n.is_empty());
    assert_eq!(arp_out(&mut n, G1, G1_IP, 1, 0), Outbound::Send);
    n.flush();
    assert!(n.is_empty() && n.snapshot().guests.is_empty());
    let new_mu = [0x02, 0, 0, 0, 0, 0x02];
    n.set_uplink_mac(MacAddr(new_mu)).unwrap();
    let mut f = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, ROUTER_IP));
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f[6..12], new_mu);
    assert_eq!(
        n.set_uplink_mac(MacAddr(BCAST)),
        Err(ConfigError::BadUplinkMac(MacAddr(BCAST)))
    );
}

#[test]
fn config_validation() {
    assert!(MacNat::new(MacAddr(ZERO), MacNatConfig::default()).is_err());
    let mut c = MacNatConfig::default();
    c.limits.total = 0;
    assert_eq!(
        MacNat::new(MacAddr(MU), c).unwrap_err(),
        ConfigError::ZeroLimit("total")
    );
    let mut c = MacNatConfig::default();
    c.aging = t(0);
    assert_eq!(
        MacNat::new(MacAddr(MU), c).unwrap_err(),
        ConfigError::ZeroTimer("aging")
    );
    let mut c = MacNatConfig::default();
    c.mtu = 100;
    assert!(MacNat::new(MacAddr(MU), c).is_err());
    let e = ConfigError::BadUplinkMac(MacAddr(BCAST)).to_string();
    assert!(e.contains("ff:ff:ff:ff:ff:ff"), "{e}");
}

#[test]
fn counters_cover_every_label() {
    let n = nat();
    let labels: Vec<_> = n.counters().iter().map(|(c, _)| c.label()).collect();
    for want in [
        "out_rewritten",
        "out_bad_src",
        "out_to_uplink_mac",
        "out_to_guest_mac",
        "out_reserved_group",
        "out_wifi_control",
        "out_unsupported_ethertype",
        "out_server_role",
        "out_spoof_host_addr",
        "out_spoof_wire_addr",
        "conflict",
        "nd_lla_rewritten",
        "nd_zero_len_option",
        "dhcp_bcast_flag_set",
        "dhcp_no_room",
        "in_echo",
        "in_reserved_group",
        "in_not_for_uplink",
        "in_l2uc_l3bc",
        "in_arp_flood_unknown",
        "in_ns_flood_unknown",
        "in_unknown_l3",
        "in_host_only",
        "dhcp_ack_bind",
        "learn_new",
        "learn_refresh",
        "evict_lru",
        "table_full",
        "aged",
        "purged_by_wire",
        "malformed",
    ] {
        assert!(labels.contains(&want), "{want}");
    }
}
