//! Frame builders and an independent checksum routine for the MAC-NAT
//! tests. Every checksum here is computed the plain way (sum all 16-bit
//! words, fold, complement) without the crate's code. Addresses are from
//! documentation ranges only.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use switchyard_mac_nat::{HostAddr, MacAddr, MacNat, MacNatConfig};

pub const MU: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const G1: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const G2: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
pub const LAN: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 0x01];
pub const ROUTER: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
pub const BCAST: [u8; 6] = [0xff; 6];
pub const ZERO: [u8; 6] = [0; 6];

pub const G1_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 51);
pub const G2_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 52);
pub const LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const FAR_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IPV6: u16 = 0x86dd;

pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

pub fn g1_v6() -> Ipv6Addr {
    v6("2001:db8:77::51")
}
pub fn g1_ll() -> Ipv6Addr {
    v6("fe80::ff:fe00:101")
}
pub fn lan_v6() -> Ipv6Addr {
    v6("2001:db8:77::2")
}
pub fn host_v6() -> Ipv6Addr {
    v6("2001:db8:77::10")
}

pub fn mac(b: [u8; 6]) -> MacAddr {
    MacAddr(b)
}

pub fn t(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A MAC-NAT for Mu with the host on 192.0.2.10/24 and 2001:db8:77::10/64.
pub fn nat_with(cfg: MacNatConfig) -> MacNat {
    let mut n = MacNat::new(MacAddr(MU), cfg).unwrap();
    n.set_host_addrs([
        HostAddr::new(HOST_IP.into(), 24),
        HostAddr::new(host_v6().into(), 64),
        HostAddr::new(v6("fe80::ff:fe00:1").into(), 64),
    ]);
    n
}

pub fn nat() -> MacNat {
    nat_with(MacNatConfig::default())
}

// ---- independent checksum ------------------------------------------------

/// Plain one's-complement sum of big-endian words, folded.
pub fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut s: u32 = 0;
    for i in (0..bytes.len()).step_by(2) {
        s += (u32::from(bytes[i]) << 8) | u32::from(bytes[i + 1]);
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

pub fn csum(parts: &[&[u8]]) -> u16 {
    !ones_sum(parts)
}

fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    p
}

// ---- builders ------------------------------------------------------------

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    eth_tagged(dst, src, &[], ethertype, payload)
}

/// Ethernet with VLAN tags (tpid, vid), outermost first.
pub fn eth_tagged(
    dst: [u8; 6],
    src: [u8; 6],
    tags: &[(u16, u16)],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// An IPv4 packet with header options and a correct header checksum.
pub fn ipv4_opts(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hl = 20 + options.len();
    let total = hl + payload.len();
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    let c = csum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_opts(src, dst, proto, &[], payload)
}

/// Sets flags/fragment offset and fixes the header checksum.
pub fn ipv4_set_frag(ip: &mut [u8], flags_frag: u16) {
    ip[6..8].copy_from_slice(&flags_frag.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let c = csum(&[&ip[..hl]]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// A UDP datagram over IPv4; `checksum: false` leaves the field 0.
pub fn udp4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    checksum: bool,
) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    if checksum {
        let mut c = csum(&[&pseudo4(src, dst, 17, len), &u]);
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    u
}

#[allow(clippy::too_many_arguments)]
pub fn udp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    checksum: bool,
) -> Vec<u8> {
    let u = udp4(sip, dip, sport, dport, payload, checksum);
    eth(dst, src, ETH_IPV4, &ipv4(sip, dip, 17, &u))
}

pub const COOKIE: [u8; 4] = [99, 130, 83, 99];

/// A DHCP body: op, xid, flags, ciaddr, yiaddr, giaddr, chaddr, options.
#[allow(clippy::too_many_arguments)]
pub fn dhcp(
    op: u8,
    xid: u32,
    flags: u16,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    chaddr: [u8; 6],
    options: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = op;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[10..12].copy_from_slice(&flags.to_be_bytes());
    b[12..16].copy_from_slice(&ciaddr.octets());
    b[16..20].copy_from_slice(&yiaddr.octets());
    b[24..28].copy_from_slice(&giaddr.octets());
    b[28..34].copy_from_slice(&chaddr);
    b[236..240].copy_from_slice(&COOKIE);
    b.extend_from_slice(options);
    b
}

pub const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
pub const ALL: Ipv4Addr = Ipv4Addr::BROADCAST;

/// DHCP DISCOVER (type 1) from a client with `chaddr`, options + END.
pub fn discover(xid: u32, flags: u16, chaddr: [u8; 6], extra: &[u8]) -> Vec<u8> {
    let mut o = vec![53, 1, 1];
    o.extend_from_slice(extra);
    o.push(255);
    dhcp(1, xid, flags, ANY, ANY, ANY, chaddr, &o)
}

/// A server reply of `mtype` (2 OFFER, 5 ACK, 6 NAK).
pub fn reply(mtype: u8, xid: u32, flags: u16, yiaddr: Ipv4Addr, chaddr: [u8; 6]) -> Vec<u8> {
    let o = [
        53, 1, mtype, 54, 4, 192, 0, 2, 1, 51, 4, 0, 0, 0x0e, 0x10, 255,
    ];
    dhcp(2, xid, flags, ANY, yiaddr, ANY, chaddr, &o)
}

/// An IPv6 packet; `payload` includes any extension headers.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, hop]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// Fills in the ICMPv6 checksum of `msg` (checksum field must be zero).
pub fn icmpv6_checksummed(src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
    msg[2..4].copy_from_slice(&[0, 0]);
    let c = csum(&[&pseudo6(src, dst, 58, msg.len()), &msg]);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    msg
}

/// An ND message: type, the fixed part after the 4-byte ICMPv6 header, options.
pub fn nd_msg(kind: u8, fixed: &[u8], options: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(fixed);
    m.extend_from_slice(options);
    m
}

pub fn lla(kind: u8, m: [u8; 6]) -> Vec<u8> {
    let mut o = vec![kind, 1];
    o.extend_from_slice(&m);
    o
}

/// NS fixed part: reserved + target.
pub fn ns_fixed(target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0];
    f.extend_from_slice(&target.octets());
    f
}

/// NA fixed part: flags + target.
pub fn na_fixed(flags: u8, target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![flags, 0, 0, 0];
    f.extend_from_slice(&target.octets());
    f
}

pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

pub fn solicited_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, 0xff, o[13], o[14], o[15]]
}

/// An ICMPv6 frame (no extension headers) with a correct checksum.
pub fn icmp6_frame(
    dst: [u8; 6],
    src: [u8; 6],
    sip: Ipv6Addr,
    dip: Ipv6Addr,
    hop: u8,
    msg: Vec<u8>,
) -> Vec<u8> {
    let m = icmpv6_checksummed(sip, dip, msg);
    eth(dst, src, ETH_IPV6, &ipv6(sip, dip, 58, hop, &m))
}

// ---- verification --------------------------------------------------------

/// Offset of the L3 payload of an Ethernet frame (skipping VLAN tags).
pub fn l3(frame: &[u8]) -> usize {
    let mut at = 12;
    while matches!(
        u16::from_be_bytes([frame[at], frame[at + 1]]),
        0x8100 | 0x88a8 | 0x9100
    ) {
        at += 4;
    }
    at + 2
}

/// IPv4 header checksum and, for UDP with a non-zero checksum, the UDP
/// checksum, verified from scratch.
pub fn verify_ipv4(frame: &[u8]) {
    let ip = &frame[l3(frame)..];
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(ones_sum(&[&ip[..hl]]), 0xffff, "IPv4 header checksum");
    if ip[9] == 17 {
        let u = &ip[hl..total];
        let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
        assert!(ulen <= u.len(), "UDP length");
        if u[6..8] != [0, 0] {
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            assert_eq!(
                ones_sum(&[&pseudo4(src, dst, 17, ulen), &u[..ulen]]),
                0xffff,
                "UDP checksum"
            );
        }
    }
}

/// The ICMPv6 checksum at `icmp_off` (from the IPv6 header) verified with
/// the upper-layer length (payload length minus extension headers).
pub fn verify_icmpv6(frame: &[u8], icmp_off: usize) {
    let ip = &frame[l3(frame)..];
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    let upper = &ip[icmp_off..40 + plen];
    assert_eq!(
        ones_sum(&[&pseudo6(src, dst, 58, upper.len()), upper]),
        0xffff,
        "ICMPv6 checksum"
    );
}

/// The DHCP body of an untagged IPv4/UDP frame.
pub fn dhcp_body(frame: &[u8]) -> &[u8] {
    let ip = &frame[l3(frame)..];
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let u = &ip[hl..];
    let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
    &u[8..ulen]
}

/// Finds DHCP option `code` in the main option area.
pub fn dhcp_option(body: &[u8], code: u8) -> Option<Vec<u8>> {
    let mut i = 240;
    while i < body.len() {
        match body[i] {
            0 => i += 1,
            255 => return None,
            c => {
                let l = usize::from(body[i + 1]);
                if c == code {
                    return Some(body[i + 2..i + 2 + l].to_vec());
                }
                i += 2 + l;
            }
        }
    }
    None
}

/// Golden frames of every kind, for truncation and fuzzing.
pub fn golden() -> Vec<Vec<u8>> {
    let ns = nd_msg(135, &ns_fixed(lan_v6()), &lla(1, G1));
    let na = nd_msg(136, &na_fixed(0x20, g1_v6()), &lla(2, LAN));
    vec![
        eth(BCAST, G1, ETH_ARP, &arp(1, G1, G1_IP, ZERO, ROUTER_IP)),
        eth(MU, ROUTER, ETH_ARP, &arp(2, ROUTER, ROUTER_IP, MU, G1_IP)),
        udp_frame(BCAST, G1, ANY, ALL, 68, 67, &discover(1, 0, G1, &[]), true),
        udp_frame(
            MU,
            ROUTER,
            ROUTER_IP,
            ALL,
            67,
            68,
            &reply(5, 1, 0, G1_IP, G1),
            true,
        ),
        icmp6_frame(
            [0x33, 0x33, 0xff, 0, 0, 2],
            G1,
            g1_v6(),
            solicited_node(lan_v6()),
            255,
            ns.clone(),
        ),
        icmp6_frame(MU, LAN, lan_v6(), g1_v6(), 255, na),
        icmp6_frame(MU, LAN, lan_v6(), g1_v6(), 255, ns),
        eth_tagged(
            BCAST,
            G1,
            &[(0x88a8, 7), (0x8100, 8)],
            ETH_ARP,
            &arp(1, G1, G1_IP, ZERO, ROUTER_IP),
        ),
    ]
}
