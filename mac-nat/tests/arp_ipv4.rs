//! Golden frames: ARP and IPv4, both directions (§3.2 steps 6–7, §3.3
//! steps 7–8).

mod common;
use common::*;
use std::net::{IpAddr, Ipv4Addr};
use switchyard_mac_nat::{
    ConflictPolicy, Counter, DropReason, Inbound, MacNatConfig, Outbound, Source,
};

fn owner(n: &switchyard_mac_nat::MacNat, ip: Ipv4Addr) -> Option<[u8; 6]> {
    n.snapshot()
        .entries
        .iter()
        .find(|e| e.addr == IpAddr::V4(ip))
        .map(|e| e.mac.0)
}

#[test]
fn arp_request_out_rewrites_sender_and_learns() {
    let mut n = nat();
    let mut f = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, ROUTER_IP));
    assert_eq!(n.outbound(&mut f, 3, t(1)), Outbound::Send);
    assert_eq!(
        f,
        eth(BCAST, MU, ETH_ARP, &arp(1, MU, G1_IP, ZERO, ROUTER_IP))
    );
    let s = n.snapshot();
    assert_eq!(s.entries.len(), 1);
    assert_eq!(
        (s.entries[0].mac.0, s.entries[0].port, s.entries[0].source),
        (G1, 3, Source::Arp)
    );
    assert_eq!(n.counters().get(Counter::OutRewritten), 1);
    assert_eq!(n.counters().get(Counter::LearnNew), 1);
}

#[test]
fn arp_reply_out_rewrites_sender_and_target_naming_guests() {
    let mut n = nat();
    // A reply to a LAN host: target stays the LAN host.
    let mut f = eth(LAN, G1, ETH_ARP, &arp(2, G1, G1_IP, LAN, LAN_IP));
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f, eth(LAN, MU, ETH_ARP, &arp(2, MU, G1_IP, LAN, LAN_IP)));
    // Target hardware address naming the sender itself is also hidden.
    let mut f = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, G1, LAN_IP));
    assert_eq!(n.outbound(&mut f, 1, t(2)), Outbound::Send);
    assert_eq!(f, eth(BCAST, MU, ETH_ARP, &arp(1, MU, G1_IP, MU, LAN_IP)));
}

#[test]
fn arp_probe_forwarded_not_learned_and_gratuitous_learned() {
    let mut n = nat();
    let mut probe = eth(BCAST, G1, ETH_ARP, &arp(1, G1, ANY, ZERO, G1_IP));
    assert_eq!(n.outbound(&mut probe, 1, t(1)), Outbound::Send);
    assert_eq!(
        probe,
        eth(BCAST, MU, ETH_ARP, &arp(1, MU, ANY, ZERO, G1_IP))
    );
    assert!(n.is_empty());
    let mut grat = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, G1_IP));
    assert_eq!(n.outbound(&mut grat, 1, t(2)), Outbound::Send);
    assert_eq!(owner(&n, G1_IP), Some(G1));
}

#[test]
fn other_arp_passes_unedited() {
    let mut n = nat();
    // RARP-style op 3 and a 16-byte hardware length: not Ethernet/IPv4 ARP.
    let mut body = arp(3, G1, G1_IP, ZERO, ROUTER_IP);
    let mut f = eth(BCAST, G1, ETH_ARP, &body);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f, eth(BCAST, MU, ETH_ARP, &body));
    body[4] = 16;
    body[7] = 1;
    let mut f = eth(BCAST, G1, ETH_ARP, &body);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(&f[14..], &body[..]);
    // Truncated ARP: passes, nothing written past the end.
    let mut f = eth(
        BCAST,
        G1,
        ETH_ARP,
        &arp(1, G1, G1_IP, ZERO, ROUTER_IP)[..20],
    );
    let len = f.len();
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f.len(), len);
    assert!(n.is_empty());
}

#[test]
fn arp_claims_on_host_and_wire_addresses_dropped() {
    let mut n = nat();
    let mut f = eth(BCAST, G1, ETH_ARP, &arp(1, G1, HOST_IP, ZERO, HOST_IP));
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::OutSpoofHostAddr)
    );
    // The LAN host announces itself; a guest's gratuitous ARP for it is refused.
    let mut lan = eth(BCAST, LAN, ETH_ARP, &arp(1, LAN, LAN_IP, ZERO, ROUTER_IP));
    assert_eq!(n.inbound(&mut lan, t(2)), Inbound::Flood);
    let mut grat = eth(BCAST, G1, ETH_ARP, &arp(1, G1, LAN_IP, ZERO, LAN_IP));
    assert_eq!(
        n.outbound(&mut grat, 1, t(3)),
        Outbound::Drop(DropReason::OutSpoofWireAddr)
    );
    let mut reply = eth(ROUTER, G1, ETH_ARP, &arp(2, G1, LAN_IP, ROUTER, ROUTER_IP));
    assert_eq!(
        n.outbound(&mut reply, 1, t(3)),
        Outbound::Drop(DropReason::OutSpoofWireAddr)
    );
    // A request using it as sender passes without learning.
    let mut req = eth(BCAST, G1, ETH_ARP, &arp(1, G1, LAN_IP, ZERO, ROUTER_IP));
    assert_eq!(n.outbound(&mut req, 1, t(3)), Outbound::Send);
    assert!(n.is_empty());
    assert_eq!(n.counters().get(Counter::OutSpoofWireAddr), 2);
}

#[test]
fn guest_conflict_keep_first_and_last_wins() {
    let mut n = nat();
    let mut a = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, G1_IP));
    assert_eq!(n.outbound(&mut a, 1, t(1)), Outbound::Send);
    let mut b = eth(BCAST, G2, ETH_ARP, &arp(1, G2, G1_IP, ZERO, G1_IP));
    assert_eq!(
        n.outbound(&mut b, 2, t(2)),
        Outbound::Drop(DropReason::Conflict)
    );
    assert_eq!(owner(&n, G1_IP), Some(G1));
    // Plain IPv4 data from the claimant passes without learning.
    let mut d = udp_frame(ROUTER, G2, G1_IP, FAR_IP, 5000, 53, b"q", true);
    assert_eq!(n.outbound(&mut d, 2, t(3)), Outbound::Send);
    assert_eq!(owner(&n, G1_IP), Some(G1));
    // ... unless strict_source.
    let mut cfg = MacNatConfig::default();
    cfg.strict_source = true;
    let mut s = nat_with(cfg);
    let mut a = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, G1_IP));
    assert_eq!(s.outbound(&mut a, 1, t(1)), Outbound::Send);
    let mut d = udp_frame(ROUTER, G2, G1_IP, FAR_IP, 5000, 53, b"q", true);
    assert_eq!(
        s.outbound(&mut d, 2, t(3)),
        Outbound::Drop(DropReason::Conflict)
    );

    let mut cfg = MacNatConfig::default();
    cfg.conflict = ConflictPolicy::LastWins;
    let mut l = nat_with(cfg);
    let mut a = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, G1_IP));
    assert_eq!(l.outbound(&mut a, 1, t(1)), Outbound::Send);
    let mut b = eth(BCAST, G2, ETH_ARP, &arp(1, G2, G1_IP, ZERO, G1_IP));
    assert_eq!(l.outbound(&mut b, 2, t(2)), Outbound::Send);
    assert_eq!(owner(&l, G1_IP), Some(G2));
}

#[test]
fn takeover_after_owner_idle() {
    let mut n = nat();
    let mut a = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, G1_IP));
    assert_eq!(n.outbound(&mut a, 1, t(0)), Outbound::Send);
    let mut b = eth(BCAST, G2, ETH_ARP, &arp(1, G2, G1_IP, ZERO, G1_IP));
    assert_eq!(n.outbound(&mut b, 2, t(61)), Outbound::Send);
    assert_eq!(owner(&n, G1_IP), Some(G2));
}

fn learned_g1() -> switchyard_mac_nat::MacNat {
    let mut n = nat();
    let mut f = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, ROUTER_IP));
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    n
}

#[test]
fn arp_reply_in_maps_to_guest() {
    let mut n = learned_g1();
    let mut f = eth(MU, ROUTER, ETH_ARP, &arp(2, ROUTER, ROUTER_IP, MU, G1_IP));
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(
        f,
        eth(G1, ROUTER, ETH_ARP, &arp(2, ROUTER, ROUTER_IP, G1, G1_IP))
    );
}

#[test]
fn arp_unicast_request_in_known_unknown_host() {
    let mut n = learned_g1();
    // NUD probe for a known guest: to the guest, target MAC left as sent (zero).
    let mut f = eth(MU, ROUTER, ETH_ARP, &arp(1, ROUTER, ROUTER_IP, ZERO, G1_IP));
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(
        f,
        eth(G1, ROUTER, ETH_ARP, &arp(1, ROUTER, ROUTER_IP, ZERO, G1_IP))
    );
    // Unknown target: flooded as a broadcast.
    let mut f = eth(MU, ROUTER, ETH_ARP, &arp(1, ROUTER, ROUTER_IP, MU, G2_IP));
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(
        f,
        eth(
            BCAST,
            ROUTER,
            ETH_ARP,
            &arp(1, ROUTER, ROUTER_IP, MU, G2_IP)
        )
    );
    assert_eq!(n.counters().get(Counter::InArpFloodUnknown), 1);
    // For the host: host only.
    let mut f = eth(MU, ROUTER, ETH_ARP, &arp(1, ROUTER, ROUTER_IP, MU, HOST_IP));
    let before = f.clone();
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    assert_eq!(f, before);
    // A reply for an unknown address: host only.
    let mut f = eth(MU, ROUTER, ETH_ARP, &arp(2, ROUTER, ROUTER_IP, MU, G2_IP));
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
}

#[test]
fn arp_broadcast_in_floods_unchanged_and_wire_claim_purges() {
    let mut n = learned_g1();
    let mut f = eth(BCAST, LAN, ETH_ARP, &arp(1, LAN, LAN_IP, ZERO, G1_IP));
    let before = f.clone();
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(f, before);
    assert_eq!(owner(&n, G1_IP), Some(G1));
    // A LAN host announces G1's address: the guest's binding is purged.
    let mut g = eth(BCAST, LAN, ETH_ARP, &arp(1, LAN, G1_IP, ZERO, G1_IP));
    assert_eq!(n.inbound(&mut g, t(3)), Inbound::Flood);
    assert_eq!(owner(&n, G1_IP), None);
    assert_eq!(n.counters().get(Counter::PurgedByWire), 1);
    assert_eq!(n.snapshot().wire_owned.len(), 2);
    // A wire ARP probe (sender 0.0.0.0) purges nothing.
    let mut n = learned_g1();
    let mut p = eth(BCAST, LAN, ETH_ARP, &arp(1, LAN, ANY, ZERO, G1_IP));
    assert_eq!(n.inbound(&mut p, t(3)), Inbound::Flood);
    assert_eq!(owner(&n, G1_IP), Some(G1));
}

#[test]
fn ipv4_with_options_and_padding_both_ways() {
    let mut n = nat();
    let opts = [0x94, 0x04, 0x00, 0x00]; // router alert
    let ip = ipv4_opts(G1_IP, LAN_IP, 1, &opts, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
    let mut f = eth(LAN, G1, ETH_IPV4, &ip);
    f.extend_from_slice(&[0; 12]); // Ethernet padding to 60 bytes
    let mut want = f.clone();
    want[6..12].copy_from_slice(&MU);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f, want);
    assert_eq!(owner(&n, G1_IP), Some(G1));
    verify_ipv4(&f);

    let back = ipv4_opts(LAN_IP, G1_IP, 1, &opts, &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    let mut r = eth(MU, LAN, ETH_IPV4, &back);
    r.extend_from_slice(&[0; 12]);
    assert_eq!(n.inbound(&mut r, t(2)), Inbound::ToGuest(mac(G1)));
    let mut want = eth(G1, LAN, ETH_IPV4, &back);
    want.extend_from_slice(&[0; 12]);
    assert_eq!(r, want);
}

#[test]
fn ipv4_fragments_use_the_header_only() {
    let mut n = nat();
    let mut ip = ipv4(G1_IP, FAR_IP, 17, &[0u8; 64]);
    ipv4_set_frag(&mut ip, 0x2000 | 8); // MF, offset 64
    let mut f = eth(ROUTER, G1, ETH_IPV4, &ip);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(owner(&n, G1_IP), Some(G1));
    let mut back = ipv4(FAR_IP, G1_IP, 17, &[1u8; 40]);
    ipv4_set_frag(&mut back, 185);
    let mut r = eth(MU, ROUTER, ETH_IPV4, &back);
    assert_eq!(n.inbound(&mut r, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(&r[..6], &G1);
}

#[test]
fn ipv4_source_sanity() {
    let mut n = nat();
    let mut f = udp_frame(ROUTER, G1, HOST_IP, FAR_IP, 1, 2, b"x", true);
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::OutSpoofHostAddr)
    );
    // Unlearnable sources pass without learning.
    for src in [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(224, 0, 0, 1),
        ANY,
    ] {
        let mut f = udp_frame(ROUTER, G1, src, FAR_IP, 1, 2, b"x", true);
        assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    }
    assert!(n.is_empty());
    // Invalid header: dropped as malformed.
    let mut ip = ipv4(G1_IP, FAR_IP, 17, b"abc");
    ip[0] = 0x44;
    let mut f = eth(ROUTER, G1, ETH_IPV4, &ip);
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::Malformed)
    );
    let mut ip = ipv4(G1_IP, FAR_IP, 17, b"abc");
    ip[3] = 200; // total length past the frame
    let mut f = eth(ROUTER, G1, ETH_IPV4, &ip);
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::Malformed)
    );
}

#[test]
fn ipv4_inbound_broadcast_multicast_unknown_host() {
    let mut n = learned_g1();
    // L2 unicast to Mu carrying 255.255.255.255.
    let mut f = udp_frame(MU, ROUTER, ROUTER_IP, ALL, 1, 2, b"x", true);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(&f[..6], &BCAST);
    // Directed broadcast of the host's /24.
    let mut f = udp_frame(
        MU,
        ROUTER,
        ROUTER_IP,
        Ipv4Addr::new(192, 0, 2, 255),
        1,
        2,
        b"x",
        true,
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(&f[..6], &BCAST);
    // Multicast 239.255.255.250 → 01:00:5e:7f:ff:fa.
    let mut f = udp_frame(
        MU,
        ROUTER,
        ROUTER_IP,
        Ipv4Addr::new(239, 255, 255, 250),
        1,
        1900,
        b"x",
        true,
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(&f[..6], &[0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa]);
    assert_eq!(n.counters().get(Counter::InL2ucL3bc), 3);
    // Unknown address.
    let mut f = udp_frame(
        MU,
        ROUTER,
        FAR_IP,
        Ipv4Addr::new(192, 0, 2, 250),
        1,
        2,
        b"x",
        true,
    );
    let before = f.clone();
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    assert_eq!(f, before);
    assert_eq!(n.counters().get(Counter::InUnknownL3), 1);
    // The host's own address: host only, not "unknown".
    let mut f = udp_frame(MU, ROUTER, FAR_IP, HOST_IP, 1, 2, b"x", true);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    assert_eq!(n.counters().get(Counter::InUnknownL3), 1);
    // Group-addressed: flooded unchanged.
    let mut f = udp_frame(BCAST, ROUTER, ROUTER_IP, ALL, 1, 2, b"x", true);
    let before = f.clone();
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(f, before);
}
