//! Property tests (§5.6): outbound-then-inbound gives the guest back its
//! frame; edited checksums verify from scratch; no input panics or loops;
//! the table respects its limits; `sweep` removes exactly the idle entries.

mod common;
use common::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use switchyard_mac_nat::{DhcpMode, Inbound, MacAddr, MacNat, MacNatConfig, Outbound};

fn unicast_mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 5]>()
        .prop_map(|r| [0x02, r[0], r[1], r[2], r[3], r[4] | 0x10])
        .prop_filter("not a fixed test MAC", |m| {
            ![MU, LAN, ROUTER, G1, G2].contains(m)
        })
}

/// A guest IPv4 address on the host's /24, not the host's own.
fn guest_ip() -> impl Strategy<Value = Ipv4Addr> {
    (20u8..=250).prop_map(|x| Ipv4Addr::new(192, 0, 2, x))
}

/// A peer address: on the link or beyond the router.
fn peer_ip() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        (1u8..=19).prop_map(|x| Ipv4Addr::new(192, 0, 2, x)),
        (1u8..=254).prop_map(|x| Ipv4Addr::new(198, 51, 100, x)),
    ]
    .prop_filter("not the host", |a| *a != HOST_IP)
}

fn tags() -> impl Strategy<Value = Vec<(u16, u16)>> {
    prop_oneof![
        Just(vec![]),
        (1u16..4095).prop_map(|v| vec![(0x8100, v)]),
        (1u16..4095, 1u16..4095).prop_map(|(a, b)| vec![(0x88a8, a), (0x8100, b)]),
    ]
}

fn any_mode() -> impl Strategy<Value = DhcpMode> {
    prop_oneof![Just(DhcpMode::BroadcastFlag), Just(DhcpMode::Impersonate)]
}

fn nat_mode(mode: DhcpMode) -> MacNat {
    let mut c = MacNatConfig::default();
    c.dhcp = mode;
    nat_with(c)
}

proptest! {
    /// ARP: the reply a LAN host sends to an outbound request comes back
    /// as `ToGuest(sender)` and is byte for byte the reply the guest would
    /// have got without the MAC-NAT.
    #[test]
    fn arp_round_trip(g in unicast_mac(), lan in unicast_mac(), gip in guest_ip(),
                      tip in peer_ip(), tags in tags(), unicast_req in any::<bool>()) {
        prop_assume!(g != lan);
        let mut n = nat();
        let (dst, tha) = if unicast_req { (lan, lan) } else { (BCAST, ZERO) };
        let original = eth_tagged(dst, g, &tags, ETH_ARP, &arp(1, g, gip, tha, tip));
        let mut out = original.clone();
        prop_assert_eq!(n.outbound(&mut out, 1, t(1)), Outbound::Send);
        prop_assert_eq!(&out, &eth_tagged(dst, MU, &tags, ETH_ARP, &arp(1, MU, gip, tha, tip)));

        // The LAN host answers what it saw.
        let seen_src: [u8; 6] = out[6..12].try_into().unwrap();
        let mut reply = eth_tagged(seen_src, lan, &tags, ETH_ARP, &arp(2, lan, tip, seen_src, gip));
        prop_assert_eq!(n.inbound(&mut reply, t(2)), Inbound::ToGuest(MacAddr(g)));
        prop_assert_eq!(reply, eth_tagged(g, lan, &tags, ETH_ARP, &arp(2, lan, tip, g, gip)));
    }

    /// IPv4 unicast (header options, Ethernet padding, VLAN tags): outbound
    /// changes only the source MAC; the swapped reply reaches the guest
    /// unchanged but for the destination MAC.
    #[test]
    fn ipv4_round_trip(g in unicast_mac(), peer in unicast_mac(), gip in guest_ip(),
                       pip in peer_ip(), tags in tags(), opts in 0usize..=3,
                       sport in 1024u16..60000, dport in 1024u16..60000,
                       payload in proptest::collection::vec(any::<u8>(), 0..200),
                       pad in 0usize..20) {
        prop_assume!(g != peer);
        let mut n = nat();
        let options = vec![1u8; opts * 4]; // NOPs
        let mk = |src_mac, dst_mac, s, d, sp, dp| {
            let u = udp4(s, d, sp, dp, &payload, true);
            let mut f = eth_tagged(dst_mac, src_mac, &tags, ETH_IPV4, &ipv4_opts(s, d, 17, &options, &u));
            f.extend(std::iter::repeat_n(0, pad));
            f
        };
        let original = mk(g, peer, gip, pip, sport, dport);
        let mut out = original.clone();
        prop_assert_eq!(n.outbound(&mut out, 1, t(1)), Outbound::Send);
        let mut want = original.clone();
        want[6..12].copy_from_slice(&MU);
        prop_assert_eq!(&out, &want);

        let mut reply = mk(peer, MU, pip, gip, dport, sport);
        prop_assert_eq!(n.inbound(&mut reply, t(2)), Inbound::ToGuest(MacAddr(g)));
        prop_assert_eq!(reply, mk(peer, g, pip, gip, dport, sport));
    }

    /// IPv6 with ND options: the guest's NS (SLLA among random other
    /// options) leaves with Mu in the SLLA and a checksum that verifies
    /// from scratch; the LAN's NA comes back to the guest unedited but for
    /// the destination MAC; then unicast data reaches the guest too. The
    /// guest's own NA (TLLA) is rewritten the same way.
    #[test]
    fn ipv6_nd_round_trip(g in unicast_mac(), lan in unicast_mac(), iid in any::<u64>(),
                          link_local in any::<bool>(), before in proptest::collection::vec((3u8..=13, 1u8..=3), 0..3),
                          after in proptest::collection::vec((3u8..=13, 1u8..=3), 0..3),
                          target_iid in 1u16..0xffff) {
        prop_assume!(g != lan);
        let prefix: u128 = if link_local { 0xfe80 << 112 } else { 0x2001_0db8_0077_0000 << 64 };
        let gsrc = Ipv6Addr::from(prefix | u128::from(iid | 0x100));
        prop_assume!(gsrc != host_v6() && gsrc != v6("fe80::ff:fe00:1"));
        let target = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0xabcd, target_iid);
        let filler = |spec: &[(u8, u8)]| -> Vec<u8> {
            spec.iter().flat_map(|&(k, l)| {
                let mut o = vec![k, l];
                o.extend(std::iter::repeat_n(0x5a, usize::from(l) * 8 - 2));
                o
            }).collect()
        };
        let mut opts = filler(&before);
        let slla_at = 24 + opts.len();
        opts.extend_from_slice(&lla(1, g));
        opts.extend_from_slice(&filler(&after));
        let mut n = nat();
        let ns = nd_msg(135, &ns_fixed(target), &opts);
        let original = icmp6_frame(solicited_mac(target), g, gsrc, solicited_node(target), 255, ns);
        let mut out = original.clone();
        prop_assert_eq!(n.outbound(&mut out, 1, t(1)), Outbound::Send);
        verify_icmpv6(&out, 40);
        let mut want = original.clone();
        want[6..12].copy_from_slice(&MU);
        want[14 + 40 + slla_at + 2..14 + 40 + slla_at + 8].copy_from_slice(&MU);
        want[14 + 42..14 + 44].copy_from_slice(&out[14 + 42..14 + 44]);
        prop_assert_eq!(&out, &want);

        let na = nd_msg(136, &na_fixed(0x60, target), &lla(2, lan));
        let mut reply = icmp6_frame(MU, lan, target, gsrc, 255, na.clone());
        prop_assert_eq!(n.inbound(&mut reply, t(2)), Inbound::ToGuest(MacAddr(g)));
        prop_assert_eq!(reply, icmp6_frame(g, lan, target, gsrc, 255, na));

        let data = ipv6(target, gsrc, 59, 64, &[]);
        let mut f = eth(MU, lan, ETH_IPV6, &data);
        prop_assert_eq!(n.inbound(&mut f, t(3)), Inbound::ToGuest(MacAddr(g)));
        prop_assert_eq!(f, eth(g, lan, ETH_IPV6, &data));

        // The guest answers an NS with its own NA.
        let na = nd_msg(136, &na_fixed(0x60, gsrc), &lla(2, g));
        let mut f = icmp6_frame(lan, g, gsrc, target, 255, na);
        prop_assert_eq!(n.outbound(&mut f, 1, t(4)), Outbound::Send);
        verify_icmpv6(&f, 40);
        prop_assert_eq!(&f[14 + 40 + 26..14 + 40 + 32], &MU[..]);
    }

    /// DHCP client messages in both modes: every edited frame's IPv4 and UDP
    /// checksums verify from scratch; the flag/chaddr/option-61 edits are
    /// the ones the mode promises.
    #[test]
    fn dhcp_edits_verify(mode in any_mode(), xid in any::<u32>(), flags in any::<u16>(),
                         ciaddr_set in any::<bool>(), checksum in any::<bool>(),
                         opts in proptest::collection::vec((1u8..=50, proptest::collection::vec(any::<u8>(), 0..12)), 0..6),
                         with_cid in any::<bool>(), pad in 0usize..24, g in unicast_mac()) {
        let mut n = nat_mode(mode);
        let mut o = vec![53, 1, 3];
        for (code, v) in &opts {
            o.push(*code);
            o.push(v.len() as u8);
            o.extend_from_slice(v);
        }
        if with_cid {
            o.extend_from_slice(&[61, 3, 0, 1, 2]);
        }
        o.push(255);
        o.extend(std::iter::repeat_n(0, pad));
        let ci = if ciaddr_set { G1_IP } else { ANY };
        let body = dhcp(1, xid, flags, ci, ANY, ANY, g, &o);
        let mut f = udp_frame(BCAST, g, ci, ALL, 68, 67, &body, checksum);
        prop_assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
        verify_ipv4(&f);
        let b = dhcp_body(&f);
        let new_flags = u16::from_be_bytes([b[10], b[11]]);
        match mode {
            DhcpMode::BroadcastFlag => {
                let expect = if ciaddr_set { flags } else { flags | 0x8000 };
                prop_assert_eq!(new_flags, expect);
                prop_assert_eq!(&b[28..34], &g[..]);
            }
            _ => {
                prop_assert_eq!(new_flags, flags);
                prop_assert_eq!(&b[28..34], &MU[..]);
                let cid = dhcp_option(b, 61).unwrap();
                if !with_cid {
                    prop_assert_eq!(&cid[..], &[&[1u8][..], &g[..]].concat()[..]);
                }
            }
        }
        if !checksum {
            prop_assert_eq!(&f[14 + 20 + 6..14 + 20 + 8], &[0u8, 0][..]);
        }
    }

    /// Table limits hold under any sequence of claims from a few guests.
    #[test]
    fn table_limits_hold(ops in proptest::collection::vec((0usize..5, any::<u8>(), any::<bool>(), 0u64..5), 1..300)) {
        let mut c = MacNatConfig::default();
        c.limits.per_guest_v4 = 3;
        c.limits.per_guest_v6 = 4;
        c.limits.total = 10;
        let mut n = nat_with(c);
        let guests = [G1, G2, [2, 0, 0, 0, 3, 1], [2, 0, 0, 0, 4, 1], [2, 0, 0, 0, 5, 1]];
        let mut now = 0;
        for (gi, x, v6addr, dt) in ops {
            now += dt;
            let g = guests[gi];
            let mut f = if v6addr {
                let a = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 1, u16::from(x));
                eth(ROUTER, g, ETH_IPV6, &ipv6(a, lan_v6(), 59, 64, &[]))
            } else {
                let a = Ipv4Addr::new(198, 51, 100, x.max(1));
                eth(BCAST, g, ETH_ARP, &arp(1, g, a, ZERO, a))
            };
            let _ = n.outbound(&mut f, gi as u32, t(now));
            let snap = n.snapshot();
            prop_assert!(snap.entries.len() <= 10);
            for g in guests {
                let v4 = snap.entries.iter().filter(|e| e.mac.0 == g && e.addr.is_ipv4()).count();
                let v6 = snap.entries.iter().filter(|e| e.mac.0 == g && e.addr.is_ipv6()).count();
                prop_assert!(v4 <= 3 && v6 <= 4);
            }
        }
    }

    /// `sweep` with a monotonic clock removes exactly the entries not
    /// refreshed for `aging` (600 s).
    #[test]
    fn sweep_removes_exactly_idle(events in proptest::collection::vec((1u8..40, 0u64..400), 1..60), at in 0u64..1500) {
        let mut c = MacNatConfig::default();
        c.limits.per_guest_v4 = 64;
        let mut n = nat_with(c);
        let mut last: HashMap<Ipv4Addr, u64> = HashMap::new();
        let mut now = 0;
        for (x, dt) in events {
            now += dt;
            let a = Ipv4Addr::new(198, 51, 100, x);
            let g = [2, 0, 0, 0, 9, x]; // one owner per address
            let mut f = eth(ROUTER, g, ETH_IPV4, &ipv4(a, FAR_IP, 59, &[]));
            prop_assert_eq!(n.outbound(&mut f, 1, t(now)), Outbound::Send);
            last.insert(a, now);
        }
        let sweep_at = now + at;
        n.sweep(t(sweep_at));
        let mut kept: Vec<IpAddr> = n.snapshot().entries.iter().map(|e| e.addr).collect();
        kept.sort();
        let mut want: Vec<IpAddr> = last.iter().filter(|(_, &l)| sweep_at - l < 600).map(|(a, _)| IpAddr::V4(*a)).collect();
        want.sort();
        prop_assert_eq!(kept, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Arbitrary bytes in both directions: no panic, no loop, inbound never
    /// changes the length, outbound grows by at most 9 bytes.
    #[test]
    fn fuzz_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), mode in any_mode(), port in any::<u32>()) {
        let mut n = nat_mode(mode);
        let mut f = bytes.clone();
        let _ = n.outbound(&mut f, port, t(1));
        prop_assert!(f.len() <= bytes.len() + 9);
        let mut f = bytes.clone();
        let _ = n.inbound(&mut f, t(2));
        prop_assert_eq!(f.len(), bytes.len());
    }

    /// Golden frames with random byte edits and truncation, both
    /// directions, with the table primed so deep paths run.
    #[test]
    fn fuzz_mutated_frames(which in any::<prop::sample::Index>(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
                           cut in any::<prop::sample::Index>(), mode in any_mode(), grow in 0usize..16) {
        let frames = golden();
        let mut f = which.get(&frames).clone();
        for (i, b) in edits {
            let at = i.index(f.len());
            f[at] = b;
        }
        let keep = f.len() - cut.index(f.len().min(24) + 1).min(f.len());
        f.truncate(keep);
        f.extend(std::iter::repeat_n(0, grow));
        let mut n = nat_mode(mode);
        for g in golden() {
            let mut g = g.clone();
            let _ = n.outbound(&mut g, 1, t(0));
        }
        let len = f.len();
        let mut o = f.clone();
        let _ = n.outbound(&mut o, 1, t(1));
        prop_assert!(o.len() <= len + 9);
        let mut i = f.clone();
        let _ = n.inbound(&mut i, t(2));
        prop_assert_eq!(i.len(), len);
        n.sweep(t(10_000));
    }
}
