//! Golden frames: DHCPv4 in both modes (§3.2 step 7, §3.3 step 6).

mod common;
use common::*;
use std::net::{IpAddr, Ipv4Addr};
use switchyard_mac_nat::{
    Counter, DhcpMode, DropReason, Inbound, MacNat, MacNatConfig, Outbound, Source,
};

const XID: u32 = 0x3903_f326;
const OFFERED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 161);

fn client_frame(body: &[u8], checksum: bool) -> Vec<u8> {
    udp_frame(BCAST, G1, ANY, ALL, 68, 67, body, checksum)
}

fn flags(frame: &[u8]) -> u16 {
    let b = dhcp_body(frame);
    u16::from_be_bytes([b[10], b[11]])
}

fn udp_checksum(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[14 + 20 + 6], frame[14 + 20 + 7]])
}

fn impersonating() -> MacNat {
    let mut c = MacNatConfig::default();
    c.dhcp = DhcpMode::Impersonate;
    nat_with(c)
}

fn owner(n: &MacNat, ip: Ipv4Addr) -> Option<([u8; 6], Source)> {
    n.snapshot()
        .entries
        .iter()
        .find(|e| e.addr == IpAddr::V4(ip))
        .map(|e| (e.mac.0, e.source))
}

#[test]
fn discover_flag_clear_gets_broadcast_flag() {
    let mut n = nat();
    let mut f = client_frame(&discover(XID, 0, G1, &[]), true);
    let mut want = client_frame(&discover(XID, 0x8000, G1, &[]), true);
    want[6..12].copy_from_slice(&MU);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f, want, "only the flag, the checksum and the source change");
    verify_ipv4(&f);
    assert_eq!(dhcp_body(&f)[28..34], G1, "chaddr untouched");
    assert_eq!(n.counters().get(Counter::DhcpBcastFlagSet), 1);
    assert!(n.is_empty(), "0.0.0.0 is not learned");
}

#[test]
fn discover_flag_already_set_untouched() {
    let mut n = nat();
    let mut f = client_frame(&discover(XID, 0x8000, G1, &[]), true);
    let mut want = f.clone();
    want[6..12].copy_from_slice(&MU);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f, want);
    assert_eq!(n.counters().get(Counter::DhcpBcastFlagSet), 0);
}

#[test]
fn discover_checksum_zero_stays_zero() {
    let mut n = nat();
    let mut f = client_frame(&discover(XID, 0, G1, &[]), false);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(flags(&f), 0x8000);
    assert_eq!(udp_checksum(&f), 0);
}

#[test]
fn checksum_result_zero_is_sent_as_ffff() {
    // Search for a DISCOVER whose patched checksum is 0x0000 / 0xffff.
    let mut n = nat();
    for xid in 0..200_000u32 {
        let body = discover(xid, 0, G1, &[]);
        let mut want = client_frame(&discover(xid, 0x8000, G1, &[]), true);
        if udp_checksum(&want) != 0xffff {
            continue;
        }
        let mut f = client_frame(&body, true);
        assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
        want[6..12].copy_from_slice(&MU);
        assert_eq!(udp_checksum(&f), 0xffff);
        assert_eq!(f, want);
        return;
    }
    panic!("no xid gives a zero checksum");
}

#[test]
fn relay_and_renewal_untouched() {
    let mut n = nat();
    let relayed = dhcp(1, XID, 0, ANY, ANY, ROUTER_IP, G1, &[53, 1, 1, 255]);
    let mut f = client_frame(&relayed, true);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(flags(&f), 0);
    // Renewal: unicast REQUEST from the bound address with ciaddr set.
    let renew = dhcp(1, XID, 0, G1_IP, ANY, ANY, G1, &[53, 1, 3, 255]);
    let mut f = udp_frame(ROUTER, G1, G1_IP, ROUTER_IP, 68, 67, &renew, true);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(flags(&f), 0);
    assert_eq!(owner(&n, G1_IP).map(|o| o.0), Some(G1));
    verify_ipv4(&f);
}

#[test]
fn option_overload_message_type_in_file() {
    let mut n = nat();
    let mut body = dhcp(1, XID, 0, G1_IP, ANY, ANY, G1, &[52, 1, 1, 255]);
    body[108..112].copy_from_slice(&[53, 1, 7, 255]); // RELEASE, in `file`
    let mut f = udp_frame(ROUTER, G1, G1_IP, ROUTER_IP, 68, 67, &body, true);
    // Learn G1_IP first, then the RELEASE (found via overload) removes it.
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(owner(&n, G1_IP), None);
    verify_ipv4(&f);
}

#[test]
fn release_removes_ciaddr() {
    let mut n = nat();
    let mut a = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, G1_IP));
    assert_eq!(n.outbound(&mut a, 1, t(1)), Outbound::Send);
    let rel = dhcp(1, XID, 0, G1_IP, ANY, ANY, G1, &[53, 1, 7, 255]);
    let mut f = udp_frame(ROUTER, G1, G1_IP, ROUTER_IP, 68, 67, &rel, true);
    assert_eq!(n.outbound(&mut f, 1, t(2)), Outbound::Send);
    assert_eq!(owner(&n, G1_IP), None);
}

#[test]
fn server_messages_from_guests_dropped_unless_allowed() {
    let mut n = nat();
    let offer = reply(2, XID, 0, OFFERED, G2);
    let mut f = udp_frame(BCAST, G1, G1_IP, ALL, 67, 68, &offer, true);
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::OutServerRole)
    );
    let mut c = MacNatConfig::default();
    c.allow_guest_servers = true;
    let mut n = nat_with(c);
    let mut f = udp_frame(BCAST, G1, G1_IP, ALL, 67, 68, &offer, true);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
}

fn known_g1(n: &mut MacNat) {
    let mut f = client_frame(&discover(XID, 0, G1, &[]), true);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
}

#[test]
fn offer_broadcast_known_chaddr_floods_unchanged() {
    let mut n = nat();
    known_g1(&mut n);
    let mut f = udp_frame(
        BCAST,
        ROUTER,
        ROUTER_IP,
        ALL,
        67,
        68,
        &reply(2, XID, 0x8000, OFFERED, G1),
        true,
    );
    let before = f.clone();
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    assert_eq!(f, before);
    assert!(n.is_empty(), "an OFFER binds nothing");
}

#[test]
fn offer_unicast_to_mu_goes_to_chaddr_guest() {
    let mut n = nat();
    known_g1(&mut n);
    // Server (or an AP converting broadcast to unicast) sends to Mu.
    let body = reply(2, XID, 0x8000, OFFERED, G1);
    let mut f = udp_frame(MU, ROUTER, ROUTER_IP, ALL, 67, 68, &body, true);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(
        f,
        udp_frame(G1, ROUTER, ROUTER_IP, ALL, 67, 68, &body, true)
    );
    let mut f = udp_frame(MU, ROUTER, ROUTER_IP, OFFERED, 67, 68, &body, true);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
}

#[test]
fn unknown_chaddr_and_host_chaddr() {
    let mut n = nat();
    known_g1(&mut n);
    let stranger = [0x02, 0, 0, 0, 0x99, 0x01];
    let mut f = udp_frame(
        BCAST,
        ROUTER,
        ROUTER_IP,
        ALL,
        67,
        68,
        &reply(2, XID, 0, OFFERED, stranger),
        true,
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::Flood);
    let mut f = udp_frame(
        MU,
        ROUTER,
        ROUTER_IP,
        OFFERED,
        67,
        68,
        &reply(2, XID, 0, OFFERED, stranger),
        true,
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    // The host's own lease (chaddr = Mu): host only, broadcast or not.
    let mut f = udp_frame(
        BCAST,
        ROUTER,
        ROUTER_IP,
        ALL,
        67,
        68,
        &reply(5, 7, 0, HOST_IP, MU),
        true,
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    let mut f = udp_frame(
        MU,
        ROUTER,
        ROUTER_IP,
        HOST_IP,
        67,
        68,
        &reply(5, 7, 0, HOST_IP, MU),
        true,
    );
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::HostOnly);
    assert!(n.is_empty());
}

#[test]
fn ack_binds_nak_does_not() {
    let mut n = nat();
    known_g1(&mut n);
    let mut nak = udp_frame(
        BCAST,
        ROUTER,
        ROUTER_IP,
        ALL,
        67,
        68,
        &reply(6, XID, 0, ANY, G1),
        true,
    );
    assert_eq!(n.inbound(&mut nak, t(2)), Inbound::Flood);
    assert!(n.is_empty());
    let mut ack = udp_frame(
        BCAST,
        ROUTER,
        ROUTER_IP,
        ALL,
        67,
        68,
        &reply(5, XID, 0x8000, OFFERED, G1),
        true,
    );
    assert_eq!(n.inbound(&mut ack, t(3)), Inbound::Flood);
    assert_eq!(owner(&n, OFFERED), Some((G1, Source::Dhcp)));
    assert_eq!(n.counters().get(Counter::DhcpAckBind), 1);
    // Inbound unicast for the bound address now reaches G1.
    let mut f = udp_frame(MU, ROUTER, FAR_IP, OFFERED, 53, 5000, b"a", true);
    assert_eq!(n.inbound(&mut f, t(4)), Inbound::ToGuest(mac(G1)));
}

#[test]
fn ack_overrides_conflict_and_drops_old_ciaddr() {
    let mut n = nat();
    // G2 holds OFFERED, G1 holds G1_IP.
    let mut a = eth(BCAST, G2, ETH_ARP, &arp(1, G2, OFFERED, ZERO, OFFERED));
    assert_eq!(n.outbound(&mut a, 2, t(1)), Outbound::Send);
    let mut b = eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, G1_IP));
    assert_eq!(n.outbound(&mut b, 1, t(1)), Outbound::Send);
    let mut body = reply(5, XID, 0, OFFERED, G1);
    body[12..16].copy_from_slice(&G1_IP.octets()); // ciaddr: the old address
    let mut ack = udp_frame(MU, ROUTER, ROUTER_IP, OFFERED, 67, 68, &body, true);
    assert_eq!(n.inbound(&mut ack, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(owner(&n, OFFERED), Some((G1, Source::Dhcp)));
    assert_eq!(owner(&n, G1_IP), None);
}

#[test]
fn impersonate_inserts_client_id_growing_the_frame() {
    let mut n = impersonating();
    let mut f = client_frame(&discover(XID, 0, G1, &[55, 2, 1, 3]), true);
    f.extend_from_slice(&[0; 4]); // Ethernet padding is dropped when growing
    let ip_total = f.len() - 4 - 14;
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f.len(), 14 + ip_total + 9);
    verify_ipv4(&f);
    let body = dhcp_body(&f);
    assert_eq!(body[28..34], MU, "chaddr is Mu");
    let mut cid = vec![1];
    cid.extend_from_slice(&G1);
    assert_eq!(dhcp_option(body, 61), Some(cid));
    assert_eq!(dhcp_option(body, 55), Some(vec![1, 3]));
    assert_eq!(
        *body.last().unwrap(),
        255,
        "END moved behind the new option"
    );
    assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, ip_total + 9);
    assert_eq!(flags(&f), 0, "impersonate mode leaves the flag");
    assert_eq!(n.snapshot().dhcp_transactions, 1);
    assert_eq!(n.counters().get(Counter::DhcpImpersonated), 1);
}

#[test]
fn impersonate_uses_padding_after_end() {
    let mut n = impersonating();
    let mut opts = vec![53, 1, 1, 255];
    opts.extend_from_slice(&[0; 60]); // BOOTP minimum-size padding
    let body = dhcp(1, XID, 0, ANY, ANY, ANY, G1, &opts);
    let mut f = client_frame(&body, true);
    let len = f.len();
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f.len(), len, "no growth");
    verify_ipv4(&f);
    let b = dhcp_body(&f);
    assert_eq!(dhcp_option(b, 61).map(|v| v.len()), Some(7));
    assert_eq!(b[240 + 3 + 9], 255);
}

#[test]
fn impersonate_keeps_existing_client_id_and_checksum_zero() {
    let mut n = impersonating();
    let cid = [61, 5, 0, b'g', b'u', b'e', b's'];
    let mut f = client_frame(&discover(XID, 0, G1, &cid), false);
    let len = f.len();
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(f.len(), len);
    assert_eq!(udp_checksum(&f), 0);
    assert_eq!(
        dhcp_option(dhcp_body(&f), 61),
        Some(vec![0, b'g', b'u', b'e', b's'])
    );
    verify_ipv4(&f);
}

#[test]
fn impersonate_no_room_within_mtu() {
    let mut c = MacNatConfig::default();
    c.dhcp = DhcpMode::Impersonate;
    c.mtu = 576;
    let mut n = nat_with(c);
    // IP total = 20 + 8 + 240 + 306 = 574; +9 = 583 > 576.
    let mut opts = vec![53, 1, 1];
    for _ in 0..3 {
        opts.extend_from_slice(&[43, 98]);
        opts.extend_from_slice(&[7; 98]);
    }
    opts.extend_from_slice(&[12, 0, 255]); // an empty host name, END
    let body = dhcp(1, XID, 0, ANY, ANY, ANY, G1, &opts);
    let mut f = client_frame(&body, true);
    assert_eq!(f.len() - 14, 574);
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::DhcpNoRoom)
    );
    // Without END there is nowhere to insert: malformed.
    let mut n = impersonating();
    let body = dhcp(1, XID, 0, ANY, ANY, ANY, G1, &[53, 1, 1]);
    let mut f = client_frame(&body, true);
    assert_eq!(
        n.outbound(&mut f, 1, t(1)),
        Outbound::Drop(DropReason::Malformed)
    );
}

#[test]
fn impersonate_reply_restores_chaddr_and_binds() {
    let mut n = impersonating();
    let mut d = client_frame(&discover(XID, 0, G1, &[]), true);
    assert_eq!(n.outbound(&mut d, 4, t(1)), Outbound::Send);
    // OFFER to Mu with chaddr Mu: restored, to G1; transaction kept.
    let offer = reply(2, XID, 0, OFFERED, MU);
    let mut f = udp_frame(MU, ROUTER, ROUTER_IP, OFFERED, 67, 68, &offer, true);
    assert_eq!(n.inbound(&mut f, t(2)), Inbound::ToGuest(mac(G1)));
    assert_eq!(
        f,
        udp_frame(
            G1,
            ROUTER,
            ROUTER_IP,
            OFFERED,
            67,
            68,
            &reply(2, XID, 0, OFFERED, G1),
            true
        )
    );
    verify_ipv4(&f);
    assert_eq!(n.snapshot().dhcp_transactions, 1);
    // ACK broadcast: restored, flooded, bound, transaction closed.
    let mut f = udp_frame(
        BCAST,
        ROUTER,
        ROUTER_IP,
        ALL,
        67,
        68,
        &reply(5, XID, 0, OFFERED, MU),
        true,
    );
    assert_eq!(n.inbound(&mut f, t(3)), Inbound::Flood);
    assert_eq!(dhcp_body(&f)[28..34], G1);
    verify_ipv4(&f);
    assert_eq!(owner(&n, OFFERED), Some((G1, Source::Dhcp)));
    assert_eq!(n.snapshot().dhcp_transactions, 0);
    assert_eq!(n.snapshot().entries[0].port, 4);
    // Another xid with chaddr Mu is the host's own.
    let mut f = udp_frame(
        MU,
        ROUTER,
        ROUTER_IP,
        HOST_IP,
        67,
        68,
        &reply(5, XID + 1, 0, HOST_IP, MU),
        true,
    );
    assert_eq!(n.inbound(&mut f, t(3)), Inbound::HostOnly);
    // Transactions expire after 60 s.
    let mut d = client_frame(&discover(XID + 2, 0, G1, &[]), true);
    assert_eq!(n.outbound(&mut d, 4, t(10)), Outbound::Send);
    let mut f = udp_frame(
        MU,
        ROUTER,
        ROUTER_IP,
        OFFERED,
        67,
        68,
        &reply(2, XID + 2, 0, OFFERED, MU),
        true,
    );
    assert_eq!(n.inbound(&mut f, t(71)), Inbound::HostOnly);
}

#[test]
fn fragmented_dhcp_is_not_edited() {
    let mut n = nat();
    let u = udp4(ANY, ALL, 68, 67, &discover(XID, 0, G1, &[]), true);
    let mut ip = ipv4(ANY, ALL, 17, &u);
    ipv4_set_frag(&mut ip, 0x2000);
    let mut f = eth(BCAST, G1, ETH_IPV4, &ip);
    assert_eq!(n.outbound(&mut f, 1, t(1)), Outbound::Send);
    assert_eq!(flags(&f), 0);
}
