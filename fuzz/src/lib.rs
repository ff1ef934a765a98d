//! Helpers shared by the fuzz targets in `fuzz_targets/`: the record
//! format that carries a sequence of operations in one input, and an
//! independent Internet-checksum verifier used to check that the MAC-NAT
//! rewriters leave every checksum they touch valid.
//!
//! The record format keeps real frames verbatim in the input, so that the
//! seed corpus in `fuzz/corpus/` is made of captured bytes and a mutation
//! of one frame stays a frame.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use switchyard_mac_nat::{ConflictPolicy, DhcpMode, HostAddr, MacNatConfig, OtherEthertypes};
use switchyard_wire::ethernet;

/// One operation of a sequence target: an opcode, a small argument (a port
/// number, a time step) and a payload (usually an Ethernet frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// What to do; each target maps it with `op % N`.
    pub op: u8,
    /// A port number, a time step or a selector.
    pub arg: u8,
    /// The bytes the operation works on.
    pub payload: &'a [u8],
}

/// The bytes before each record's payload: op, arg, big-endian length.
pub const RECORD_HEADER: usize = 4;

/// Splits `data` into records: `op(1) arg(1) len(2, big-endian) payload`.
/// A truncated last record keeps what is there, so every input is valid.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        if data.len() < RECORD_HEADER {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let end = (RECORD_HEADER + len).min(data.len());
        let r = Record {
            op: data[0],
            arg: data[1],
            payload: &data[RECORD_HEADER..end],
        };
        data = &data[end..];
        Some(r)
    })
}

/// Encodes one record (for building seed inputs).
pub fn encode_record(out: &mut Vec<u8>, op: u8, arg: u8, payload: &[u8]) {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.push(op);
    out.push(arg);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload[..usize::from(len)]);
}

/// The uplink (station) MAC the MAC-NAT targets use; the seed corpus's
/// inbound frames are addressed to it (fuzz/seeds/split.py).
pub const UPLINK: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A MAC-NAT configuration chosen by one input byte, so that the fuzzer
/// explores every mode: bit 0 DHCP impersonation, 1 last-claimant-wins,
/// 2 single-owner for other ethertypes, 3 guest servers allowed, 4 strict
/// source, 5 tiny table limits (eviction and refusal paths), 6 the minimum
/// MTU (DHCP growth refused). Bit 7 is read by [`macnat_host_addrs`].
pub fn macnat_config(bits: u8) -> MacNatConfig {
    let mut c = MacNatConfig::default();
    if bits & 1 != 0 {
        c.dhcp = DhcpMode::Impersonate;
    }
    if bits & 2 != 0 {
        c.conflict = ConflictPolicy::LastWins;
    }
    if bits & 4 != 0 {
        c.other_ethertypes = OtherEthertypes::SingleOwner;
    }
    c.allow_guest_servers = bits & 8 != 0;
    c.strict_source = bits & 16 != 0;
    if bits & 32 != 0 {
        let l = &mut c.limits;
        l.per_guest_v4 = 1;
        l.per_guest_v6 = 1;
        l.total = 4;
        l.guests = 2;
        l.wire = 2;
        l.xids = 1;
    }
    if bits & 64 != 0 {
        c.mtu = 576;
    }
    c
}

/// The host's own addresses when bit 7 of the config byte is set: inside
/// the seed capture's LAN (198.51.100.0/24, 2001:db8:77::/64), so that
/// frames for the host are recognised.
pub fn macnat_host_addrs(bits: u8) -> Vec<HostAddr> {
    if bits & 128 == 0 {
        return Vec::new();
    }
    vec![
        HostAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 50)), 24),
        HostAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 0x50)),
            64,
        ),
    ]
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The ones'-complement sum of `bytes` (odd length padded with a zero),
/// added to `acc` without folding.
fn sum(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// True when the folded ones'-complement sum is all ones, i.e. the
/// checksum field inside the summed bytes is right.
fn sums_to_ones(acc: u64) -> bool {
    let mut s = acc;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// The names of the checksums in `frame` that are present and wrong: the
/// IPv4 header, and UDP / ICMP / ICMPv6 directly after an IPv4 or IPv6
/// header (extension headers and fragments are not followed). Up to two
/// VLAN tags are skipped. A frame this cannot parse has no checksums.
pub fn bad_checksums(frame: &[u8]) -> Vec<&'static str> {
    let mut bad = Vec::new();
    let Ok(l) = ethernet::layout(frame) else {
        return bad;
    };
    let l3 = &frame[l.payload.min(frame.len())..];
    match l.ethertype {
        ethernet::IPV4 => ipv4(l3, &mut bad),
        ethernet::IPV6 => ipv6(l3, &mut bad),
        _ => {}
    }
    bad
}

fn ipv4(p: &[u8], bad: &mut Vec<&'static str>) {
    let Some(&vihl) = p.first() else { return };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let Some(total) = be16(p, 2).map(usize::from) else {
        return;
    };
    if vihl >> 4 != 4 || ihl < 20 || total < ihl || total > p.len() {
        return;
    }
    if !sums_to_ones(sum(0, &p[..ihl])) {
        bad.push("ipv4 header");
    }
    let Some(frag) = be16(p, 6) else { return };
    if frag & 0x3fff != 0 {
        return; // a fragment: the transport checksum spans several packets
    }
    let proto = p[9];
    let payload = &p[ihl..total];
    let pseudo = sum(sum(0, &p[12..20]), &[0, proto]);
    match proto {
        1 if payload.len() >= 4 && !sums_to_ones(sum(0, payload)) => bad.push("icmp"),
        17 => {
            let Some(ulen) = be16(payload, 4).map(usize::from) else {
                return;
            };
            let Some(csum) = be16(payload, 6) else { return };
            if csum == 0 || ulen < 8 || ulen > payload.len() {
                return; // no checksum, or a length the rewriters refuse
            }
            let u = &payload[..ulen];
            if !sums_to_ones(sum(pseudo + ulen as u64, u)) {
                bad.push("udp/ipv4");
            }
        }
        _ => {}
    }
}

fn ipv6(p: &[u8], bad: &mut Vec<&'static str>) {
    let Some(&v) = p.first() else { return };
    let Some(plen) = be16(p, 4).map(usize::from) else {
        return;
    };
    if v >> 4 != 6 || 40 + plen > p.len() {
        return;
    }
    let next = p[6];
    let payload = &p[40..40 + plen];
    let pseudo = sum(sum(0, &p[8..40]), &[0, next]) + plen as u64;
    match next {
        17 => {
            let Some(ulen) = be16(payload, 4).map(usize::from) else {
                return;
            };
            if ulen != plen || ulen < 8 {
                return;
            }
            if !sums_to_ones(sum(pseudo, payload)) {
                bad.push("udp/ipv6");
            }
        }
        58 if plen >= 4 && !sums_to_ones(sum(pseudo, payload)) => bad.push("icmpv6"),
        _ => {}
    }
}

/// True when a ones'-complement sum (unfolded) is zero in ones'-complement
/// arithmetic: the summed bytes include a right checksum.
pub fn ones_sum_is_zero(acc: u64) -> bool {
    acc.is_multiple_of(0xffff)
}

/// The ones'-complement sum of `bytes` added to `acc` (exposed for the
/// targets' own checks).
pub fn ones_sum(acc: u64, bytes: &[u8]) -> u64 {
    sum(acc, bytes)
}

/// Whether the TCP or UDP checksum of an unfragmented IPv4 or IPv6 frame
/// (after up to two VLAN tags, IPv6 without extension headers) verifies,
/// with the transport length the IP header gives; `None` when the frame
/// has no such checksum to verify (other protocols, fragments, lengths
/// that do not fit, a UDP/IPv4 checksum of 0, a UDP length that disagrees
/// with the IP header). Written apart from the switch's own code.
pub fn l4_checksum_ok(frame: &[u8]) -> Option<bool> {
    let l = ethernet::layout(frame).ok()?;
    let p = frame.get(l.payload..)?;
    let (proto, l4, pseudo, v4) = match l.ethertype {
        ethernet::IPV4 => {
            let ihl = usize::from(*p.first()? & 0x0f) * 4;
            let total = usize::from(be16(p, 2)?);
            if *p.first()? >> 4 != 4 || ihl < 20 || total < ihl || total > p.len() {
                return None;
            }
            if be16(p, 6)? & 0x3fff != 0 {
                return None;
            }
            let l4 = &p[ihl..total];
            let pseudo = sum(sum(0, &p[12..20]), &[0, p[9]]) + l4.len() as u64;
            (p[9], l4, pseudo, true)
        }
        ethernet::IPV6 => {
            let plen = usize::from(be16(p, 4)?);
            if *p.first()? >> 4 != 6 || 40 + plen > p.len() {
                return None;
            }
            let l4 = &p[40..40 + plen];
            let pseudo = sum(sum(0, &p[8..40]), &[0, p[6]]) + plen as u64;
            (p[6], l4, pseudo, false)
        }
        _ => return None,
    };
    match proto {
        6 if l4.len() >= 20 => Some(ones_sum_is_zero(sum(pseudo, l4))),
        17 if l4.len() >= 8 => {
            if usize::from(be16(l4, 4)?) != l4.len() || (v4 && be16(l4, 6)? == 0) {
                return None;
            }
            Some(ones_sum_is_zero(sum(pseudo, l4)))
        }
        _ => None,
    }
}

/// Whether the IPv4 header at the start of `ip` has a right checksum
/// (`false` when it is not a whole IPv4 header).
pub fn ipv4_header_ok(ip: &[u8]) -> bool {
    let Some(&vihl) = ip.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    ihl >= 20 && ip.len() >= ihl && ones_sum_is_zero(sum(0, &ip[..ihl]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut v = Vec::new();
        encode_record(&mut v, 1, 2, b"abc");
        encode_record(&mut v, 3, 4, b"");
        v.extend_from_slice(&[5, 6, 0, 9, b'x']);
        let r: Vec<_> = records(&v).collect();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].payload, b"abc");
        assert_eq!((r[1].op, r[1].arg, r[1].payload), (3, 4, &b""[..]));
        assert_eq!(r[2].payload, b"x", "a truncated record keeps its bytes");
    }

    /// The guest frames of the seed corpus (captured with checksum offload
    /// off) all verify, and breaking one byte of an IP payload is noticed:
    /// the verifier agrees with the kernel that built them.
    #[test]
    fn captured_frames_verify() -> Result<(), std::io::Error> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/macnat_outbound");
        let (mut checked, mut caught) = (0, 0);
        for entry in std::fs::read_dir(dir)? {
            let data = std::fs::read(entry?.path())?;
            let frame = &data[2..];
            assert_eq!(bad_checksums(frame), Vec::<&str>::new(), "{frame:02x?}");
            assert_ne!(l4_checksum_ok(frame), Some(false), "{frame:02x?}");
            checked += 1;
            let mut broken = frame.to_vec();
            let last = broken.len() - 1;
            broken[last] ^= 0x10;
            caught += usize::from(!bad_checksums(&broken).is_empty());
        }
        assert!(checked >= 10, "only {checked} seed frames");
        assert!(
            caught >= checked / 2,
            "only {caught} of {checked} broken frames caught"
        );
        Ok(())
    }
}
