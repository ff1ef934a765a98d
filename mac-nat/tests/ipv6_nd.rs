//! Golden frames: IPv6, neighbour discovery and DHCPv6 (§3.1, §3.2 step 8,
//! §3.3 step 9).

mod common;
use common::*;
use std::net::{IpAddr, Ipv6Addr};
use switchyard_mac_nat::{Counter, DropReason, Inbound, MacNat, MacNatConfig, Outbound, Source};

fn owner(n: &MacNat, ip: Ipv6Addr) -> Option<([u8; 6], Source)> {
    n.snapshot()
        .entries
        .iter()
        .find(|e| e.addr == IpAddr::V6(ip))
        .map(|e| (e.mac.0, e.source))
}

/// Sends `frame` out and checks: source and every listed option MAC
/// offset are Mu, nothing else changed, the ICMPv6 checksum verifies.
fn out_expect(n: &mut MacNat, frame: Vec<u8>, icmp_off: usize, mac_offsets: &[usize]) -> Vec<u8> {
    let mut f = frame.clone();
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    let mut want = frame;
    want[6..12].copy_from_slice(&MU);
    let base = l3(&want) + icmp_off;
    for &o in mac_offsets {
        want[base + o..base + o + 6].copy_from_slice(&MU);
    }
    want[base + 2..base + 4].copy_from_slice(&f[base + 2..base + 4]);
    assert_eq!(f, want);
    verify_icmpv6(&f, icmp_off);
    f
}

#[test]
fn ns_with_slla_only_option_rewritten() {
    let mut n = nat();
    let dst = solicited_node(lan_v6());
    let msg = nd_msg(135, &ns_fixed(lan_v6()), &lla(1, G1));
    let f = icmp6_frame([0x33, 0x33, 0xff, 0, 0, 2], G1, g1_v6(), dst, 255, msg);
    out_expect(&mut n, f, 40, &[24 + 2]);
    assert_eq!(owner(&n, g1_v6()), Some((G1, Source::Nd)));
    assert_eq!(n.counters().get(Counter::NdLlaRewritten), 1);
}

#[test]
fn ns_with_slla_last_after_nonce() {
    let mut n = nat();
    let mut opts = vec![14, 1, 1, 2, 3, 4, 5, 6]; // nonce
    opts.extend_from_slice(&lla(1, G1));
    let msg = nd_msg(135, &ns_fixed(lan_v6()), &opts);
    let f = icmp6_frame(
        [0x33, 0x33, 0xff, 0, 0, 2],
        G1,
        g1_ll(),
        solicited_node(lan_v6()),
        255,
        msg,
    );
    out_expect(&mut n, f, 40, &[32 + 2]);
}

#[test]
fn dad_ns_without_slla_not_learned() {
    let mut n = nat();
    let msg = nd_msg(135, &ns_fixed(g1_v6()), &[]);
    let f = icmp6_frame(
        solicited_mac(g1_v6()),
        G1,
        Ipv6Addr::UNSPECIFIED,
        solicited_node(g1_v6()),
        255,
        msg,
    );
    out_expect(&mut n, f, 40, &[]);
    assert!(n.is_empty());
}

#[test]
fn rs_slla_and_guest_ra_dropped_unless_allowed() {
    let mut n = nat();
    let rs = nd_msg(133, &[0, 0, 0, 0], &lla(1, G1));
    let f = icmp6_frame(
        [0x33, 0x33, 0, 0, 0, 2],
        G1,
        g1_ll(),
        v6("ff02::2"),
        255,
        rs,
    );
    out_expect(&mut n, f, 40, &[8 + 2]);

    let ra = nd_msg(
        134,
        &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0],
        &lla(1, G1),
    );
    let f = icmp6_frame(
        [0x33, 0x33, 0, 0, 0, 1],
        G1,
        g1_ll(),
        v6("ff02::1"),
        255,
        ra.clone(),
    );
    let mut g = f.clone();
    assert_eq!(
        n.outbound(&mut g, 1, t(1)),
        Outbound::Drop(DropReason::OutServerRole)
    );
    let mut c = MacNatConfig::default();
    c.allow_guest_servers = true;
    let mut n = nat_with(c);
    out_expect(&mut n, f, 40, &[16 + 2]);
}

#[test]
fn na_tlla_rewritten_and_target_learned() {
    let mut n = nat();
    let msg = nd_msg(136, &na_fixed(0x60, g1_v6()), &lla(2, G1));
    let f = icmp6_frame(LAN, G1, g1_ll(), lan_v6(), 255, msg);
    out_expect(&mut n, f, 40, &[24 + 2]);
    assert_eq!(owner(&n, g1_v6()), Some((G1, Source::Nd)));
    assert_eq!(owner(&n, g1_ll()).map(|o| o.0), Some(G1));
}

#[test]
fn redirect_tlla_rewritten() {
    let mut n = nat();
    let mut fixed = vec![0, 0, 0, 0];
    fixed.extend_from_slice(&v6("2001:db8:77::99").octets()); // target
    fixed.extend_from_slice(&lan_v6().octets()); // destination
    let msg = nd_msg(137, &fixed, &lla(2, G1));
    let f = icmp6_frame(LAN, G1, g1_ll(), lan_v6(), 255, msg);
    out_expect(&mut n, f, 40, &[40 + 2]);
}

#[test]
fn option_naming_another_guest_rewritten_foreign_mac_kept() {
    let mut n = nat();
    // G2 becomes a known guest.
    let mut a = eth(BCAST, G2, ETH_ARP, &arp(1, G2, G2_IP, ZERO, G2_IP));
    assert_eq!(n.outbound(&mut a, 2, t(0)), Outbound::Send);
    let msg = nd_msg(135, &ns_fixed(lan_v6()), &lla(1, G2));
    let f = icmp6_frame(
        [0x33, 0x33, 0xff, 0, 0, 2],
        G1,
        g1_v6(),
        solicited_node(lan_v6()),
        255,
        msg,
    );
    out_expect(&mut n, f, 40, &[26]);
    // A LAN MAC in an option (a proxy NS) is not ours to hide.
    let msg = nd_msg(135, &ns_fixed(lan_v6()), &lla(1, LAN));
    let f = icmp6_frame(
        [0x33, 0x33, 0xff, 0, 0, 2],
        G1,
        g1_v6(),
        solicited_node(lan_v6()),
        255,
        msg,
    );
    out_expect(&mut n, f, 40, &[]);
}

#[test]
fn zero_length_option_dropped_out_untouched_in() {
    let mut n = nat();
    for opts in [vec![1u8, 0, 2, 0, 0, 0, 0, 1], {
        let mut o = lla(1, G1);
        o.extend_from_slice(&[99, 0, 0, 0, 0, 0, 0, 0]);
        o
    }] {
        let msg = nd_msg(135, &ns_fixed(lan_v6()), &opts);
        let mut f = icmp6_frame(
            [0x33, 0x33, 0xff, 0, 0, 2],
            G1,
            g1_v6(),
            solicited_node(lan_v6()),
            255,
            msg,
        );
        assert_eq!(
            n.outbound(&mut f, 1, t(1)),
            Outbound::Drop(DropReason::NdZeroLenOption)
        );
    }
    assert!(n.is_empty(), "nothing learned from an invalid message");
    // Inbound: not edited, counted, handled as plain IPv6.
    let msg = nd_msg(
        135,
        &ns_fixed(v6("2001:db8:77::77")),
        &[1, 0, 0, 0, 0, 0, 0, 0],
    );
    let mut f = icmp6_frame(MU, LAN, lan_v6(), host_v6(), 255, msg);
    let before = f.clone();
    assert_eq!(n.inbound(&mut f, t(1)), Inbound::HostOnly);
    assert_eq!(f, before);
    assert_eq!(n.counters().get(Counter::NdZeroLenOption), 3);
}

#[test]
fn non_ethernet_lla_length_2_kept() {
    let mut n = nat();
    let mut opt = vec![1, 2];
    opt.extend_from_slice(&G1);
    opt.extend_from_slice(&[0; 8]);
    let msg = nd_msg(135, &ns_fixed(lan_v6()), &opt);
    let f = icmp6_frame(
        [0x33, 0x33, 0xff, 0, 0, 2],
        G1,
        g1_v6(),
        solicited_node(lan_v6()),
        255,
        msg,
    );
    out_expect(&mut n, f, 40, &[]);
}

#[test]
fn truncated_nd_option_is_malformed() {
    let mut n = nat();
    let msg = nd_msg(135, &ns_fixed(lan_v6()), &[1, 2, 0, 0, 0, 0, 0, 0]);
    let mut f = icmp6_frame(
        [0x33, 0x33, 0xff, 0, 0, 2],
        G1,
        g1_v6(),
        solicited_node(lan_v6()),
        255,
        msg,
    );
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::Malformed)
    );
}

/// Extension headers in front of the ICMPv6 message: hop-by-hop (8 bytes,
/// PadN) and destination options (8 bytes).
fn with_ext_headers(msg: Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let m = icmpv6_checksummed(src, dst, msg);
    let mut payload = vec![60, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop → dest opts
    payload.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]); // dest opts → ICMPv6
    payload.extend_from_slice(&m);
    eth(
        [0x33, 0x33, 0xff, 0, 0, 2],
        G1,
        ETH_IPV6,
        &ipv6(src, dst, 0, 255, &payload),
    )
}

#[test]
fn nd_after_hop_by_hop_and_destination_options() {
    let mut n = nat();
    let msg = nd_msg(135, &ns_fixed(lan_v6()), &lla(1, G1));
    let f = with_ext_headers(msg, g1_v6(), solicited_node(lan_v6()));
    // The checksum must use the upper-layer length (payload − 16).
    out_expect(&mut n, f, 56, &[24 + 2]);
}

#[test]
fn nd_with_fragment_header_left_alone() {
    let mut n = nat();
    let msg = icmpv6_checksummed(
        g1_v6(),
        lan_v6(),
        nd_msg(135, &ns_fixed(lan_v6()), &lla(1, G1)),
    );
    let mut payload = vec![58, 0, 0, 0, 0, 0, 0, 1]; // fragment header, offset 0, no MF
    payload.extend_from_slice(&msg);
    let f = eth(
        LAN,
        G1,
        ETH_IPV6,
        &ipv6(g1_v6(), lan_v6(), 44, 255, &payload),
    );
    let mut g = f.clone();
    assert_eq!(n.outbound(&mut g, 1, t(1)), Outbound::Send);
    assert_eq!(g[12..], f[12..], "only the source MAC changes");
}

#[test]
fn hop_limit_254_is_not_nd() {
    let mut n = nat();
    let msg = nd_msg(135, &ns_fixed(lan_v6()), &lla(1, G1));
    let f = icmp6_frame(LAN, G1, g1_v6(), lan_v6(), 254, msg);
    let mut g = f.clone();
    assert_eq!(n.outbound(&mut g, 1, t(1)), Outbound::Send);
    assert_eq!(g[12..], f[12..]);
    assert_eq!(owner(&n, g1_v6()).map(|o| o.1), Some(Source::Ip));
}

#[test]
fn ipv6_source_rules() {
    let mut n = nat();
    let mut f = eth(LAN, G1, ETH_IPV6, &ipv6(host_v6(), lan_v6(), 59, 64, &[]));
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::OutSpoofHostAddr)
    );
    for src in ["::1", "ff02::1", "::ffff:192.0.2.9", "::"] {
        let mut f = eth(LAN, G1, ETH_IPV6, &ipv6(v6(src), lan_v6(), 59, 64, &[]));
        assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send, "{src}");
    }
    assert!(n.is_empty());
    let mut ip = ipv6(g1_v6(), lan_v6(), 59, 64, &[1, 2, 3]);
    ip[5] = 9; // payload length past the frame
    let mut f = eth(LAN, G1, ETH_IPV6, &ip);
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::Malformed)
    );
}

#[test]
fn dhcpv6_server_from_guest_dropped_client_passes() {
    let mut n = nat();
    let udp = |sp: u16, dp: u16| {
        let mut u = sp.to_be_bytes().to_vec();
        u.extend_from_slice(&dp.to_be_bytes());
        u.extend_from_slice(&[0, 12, 0, 0, 2, 0, 0, 1]); // Advertise/Solicit, xid
        u
    };
    let mut adv = eth(
        LAN,
        G1,
        ETH_IPV6,
        &ipv6(g1_ll(), v6("fe80::2"), 17, 64, &udp(547, 546)),
    );
    assert_eq!(
        n.outbound(&mut adv, 1, t(1)),
        Outbound::Drop(DropReason::OutServerRole)
    );
    let sol = eth(
        [0x33, 0x33, 0, 1, 0, 2],
        G1,
        ETH_IPV6,
        &ipv6(g1_ll(), v6("ff02::1:2"), 17, 1, &udp(546, 547)),
    );
    let mut f = sol.clone();
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f[12..], sol[12..]);
}

fn learned_g1() -> MacNat {
    let mut n = nat();
    let msg = nd_msg(136, &na_fixed(0x20, g1_v6()), &lla(2, G1));
    let mut f = icmp6_frame(
        [0x33, 0x33, 0, 0, 0, 1],
        G1,
        g1_v6(),
        v6("ff02::1"),
        255,
        msg,
    );
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    n
}

#[test]
fn ipv6_unicast_in_to_guest_and_unknown() {
    let mut n = learned_g1();
    let pkt = ipv6(lan_v6(), g1_v6(), 59, 64, &[]);
    let mut f = eth(MU, LAN, ETH_IPV6, &pkt);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(f, eth(G1, LAN, ETH_IPV6, &pkt));
    let mut f = eth(
        MU,
        LAN,
        ETH_IPV6,
        &ipv6(lan_v6(), v6("2001:db8:77::abc"), 59, 64, &[]),
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    assert_eq!(n.counters().get(Counter::InUnknownL3), 1);
    let mut f = eth(MU, LAN, ETH_IPV6, &ipv6(lan_v6(), host_v6(), 59, 64, &[]));
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    assert_eq!(n.counters().get(Counter::InUnknownL3), 1);
}

#[test]
fn ipv6_multicast_in() {
    let mut n = learned_g1();
    // L2 unicast to Mu with ff02::1 → 33:33:00:00:00:01.
    let mut f = eth(
        MU,
        LAN,
        ETH_IPV6,
        &ipv6(lan_v6(), v6("ff02::1"), 59, 1, &[]),
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(f[..6], [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(n.counters().get(Counter::InL2ucL3bc), 1);
    // Already group-addressed: unchanged.
    let mut f = eth(
        [0x33, 0x33, 0, 0, 0, 0xfb],
        LAN,
        ETH_IPV6,
        &ipv6(lan_v6(), v6("ff02::fb"), 17, 1, &[0; 8]),
    );
    let before = f.clone();
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(f, before);
}

#[test]
fn ns_in_known_unknown_host_and_solicited_node() {
    let mut n = learned_g1();
    // Unicast NUD probe for the guest.
    let ns = nd_msg(135, &ns_fixed(g1_v6()), &lla(1, LAN));
    let mut f = icmp6_frame(MU, LAN, lan_v6(), g1_v6(), 255, ns);
    let mut want = f.clone();
    want[..6].copy_from_slice(&G1);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(f, want, "inbound options are never rewritten");
    // Unknown target (aged out): to its solicited-node group.
    let lost = v6("2001:db8:77::1:2345");
    let ns = nd_msg(135, &ns_fixed(lost), &lla(1, LAN));
    let mut f = icmp6_frame(MU, LAN, lan_v6(), lost, 255, ns);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(f[..6], solicited_mac(lost));
    assert_eq!(n.counters().get(Counter::InNsFloodUnknown), 1);
    // For the host: host only.
    let ns = nd_msg(135, &ns_fixed(host_v6()), &lla(1, LAN));
    let mut f = icmp6_frame(MU, LAN, lan_v6(), host_v6(), 255, ns);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    // Solicited-node multicast NS for the guest: flooded unchanged.
    let ns = nd_msg(135, &ns_fixed(g1_v6()), &lla(1, LAN));
    let mut f = icmp6_frame(
        solicited_mac(g1_v6()),
        LAN,
        lan_v6(),
        solicited_node(g1_v6()),
        255,
        ns,
    );
    let before = f.clone();
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(f, before);
}

#[test]
fn wire_override_na_purges_dad_ns_does_not() {
    let mut n = learned_g1();
    // A wire DAD NS for the guest's address: the guest defends; no purge.
    let ns = nd_msg(135, &ns_fixed(g1_v6()), &[]);
    let mut f = icmp6_frame(
        solicited_mac(g1_v6()),
        LAN,
        Ipv6Addr::UNSPECIFIED,
        solicited_node(g1_v6()),
        255,
        ns,
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert!(owner(&n, g1_v6()).is_some());
    // An overriding NA from a LAN MAC: purge and remember as wire-owned.
    let na = nd_msg(136, &na_fixed(0x20, g1_v6()), &lla(2, LAN));
    let mut f = icmp6_frame(
        [0x33, 0x33, 0, 0, 0, 1],
        LAN,
        lan_v6(),
        v6("ff02::1"),
        255,
        na,
    );
    assert_eq!(n.inbound(&mut f, t(3)), Inbound::Flood);
    assert!(owner(&n, g1_v6()).is_none());
    assert_eq!(n.counters().get(Counter::PurgedByWire), 1);
    // The guest's NA claim is now refused.
    let na = nd_msg(136, &na_fixed(0x20, g1_v6()), &lla(2, G1));
    let mut f = icmp6_frame(
        [0x33, 0x33, 0, 0, 0, 1],
        G1,
        g1_ll(),
        v6("ff02::1"),
        255,
        na,
    );
    assert_eq!(
        n.outbound(&mut f, 1, t(4)),
        Outbound::Drop(DropReason::OutSpoofWireAddr)
    );
    // Claiming a host address is refused too.
    let na = nd_msg(136, &na_fixed(0x20, host_v6()), &lla(2, G1));
    let mut f = icmp6_frame(
        [0x33, 0x33, 0, 0, 0, 1],
        G1,
        g1_ll(),
        v6("ff02::1"),
        255,
        na,
    );
    assert_eq!(
        n.outbound(&mut f, 1, t(4)),
        Outbound::Drop(DropReason::OutSpoofHostAddr)
    );
}

#[test]
fn lan_sources_become_wire_owned() {
    let mut n = nat();
    // A LAN host on the host's prefix sends to Mu (e.g. to the host).
    let mut f = eth(MU, LAN, ETH_IPV6, &ipv6(lan_v6(), host_v6(), 59, 64, &[]));
    assert_eq!(n.inbound(&mut f, t(1)), Inbound::HostOnly);
    // A guest that then adds the LAN host's address cannot claim it by NA.
    let na = nd_msg(136, &na_fixed(0x20, lan_v6()), &lla(2, G1));
    let mut f = icmp6_frame(
        [0x33, 0x33, 0, 0, 0, 1],
        G1,
        g1_ll(),
        v6("ff02::1"),
        255,
        na,
    );
    assert_eq!(
        n.outbound(&mut f, 1, t(2)),
        Outbound::Drop(DropReason::OutSpoofWireAddr)
    );
    // Off-link sources (behind the router) are not recorded.
    let mut f = eth(
        MU,
        ROUTER,
        ETH_IPV6,
        &ipv6(v6("2001:db8:9::1"), host_v6(), 59, 64, &[]),
    );
    assert_eq!(n.inbound(&mut f, t(3)), Inbound::HostOnly);
    assert_eq!(n.snapshot().wire_owned.len(), 1);
}
