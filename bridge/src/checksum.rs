//! Completing TCP and UDP checksums of captured frames. A frame captured
//! on an interface whose sender offloads checksums (veth, tap, many NICs
//! for locally sent traffic) carries only the pseudo-header sum; a guest
//! would drop it. Recomputing is harmless for frames that were already
//! right.

use switchyard_wire::checksum::{fold, pseudo_v4, pseudo_v6, sum};
use switchyard_wire::ethernet::{self, IPV4, IPV6};
use switchyard_wire::ipv4::{Ipv4Packet, PROTO_UDP};
use switchyard_wire::ipv6::{self, Ipv6Packet};
use switchyard_wire::{tcp, udp};

/// Where the transport header of an unfragmented IP packet sits.
struct Transport {
    /// IP protocol / next header.
    proto: u8,
    /// Offset of the transport header in the frame.
    l4: usize,
    /// Length of the transport header and payload.
    len: usize,
    /// The pseudo-header sum.
    pseudo: u64,
    /// IPv4, where a UDP checksum of 0 means "none".
    v4: bool,
}

/// The transport of an IPv4 or IPv6 frame (after up to two VLAN tags), as
/// the fixed IP header names it (IPv6 extension headers are not followed).
fn transport(frame: &[u8]) -> Option<Transport> {
    let l = ethernet::layout(frame).ok()?;
    let ip = frame.get(l.payload..)?;
    match l.ethertype {
        IPV4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.is_fragment() {
                return None;
            }
            let len = p.total_len() - p.header_len();
            let pseudo = pseudo_v4(p.src(), p.dst(), p.protocol(), u16::try_from(len).ok()?);
            Some(Transport {
                proto: p.protocol(),
                l4: l.payload + p.header_len(),
                len,
                pseudo,
                v4: true,
            })
        }
        IPV6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            let len = p.payload_len();
            Some(Transport {
                proto: p.next_header(),
                l4: l.payload + ipv6::HEADER_LEN,
                len,
                pseudo: pseudo_v6(p.src(), p.dst(), p.next_header(), len as u32),
                v4: false,
            })
        }
        _ => None,
    }
}

/// Rewrites the TCP or UDP checksum of an Ethernet frame carrying IPv4 or
/// IPv6 (after up to two VLAN tags). Anything else, fragments and
/// truncated frames are left alone; a UDP/IPv4 checksum of 0 ("none")
/// stays 0. Public for the fuzz target `pcap` (fuzz/).
pub fn complete_l4_checksum(frame: &mut [u8]) {
    let Some(t) = transport(frame) else {
        return;
    };
    let field = match t.proto {
        tcp::PROTOCOL if t.len >= tcp::MIN_HEADER_LEN => t.l4 + tcp::CHECKSUM_OFFSET,
        PROTO_UDP if t.len >= udp::HEADER_LEN => t.l4 + udp::CHECKSUM_OFFSET,
        _ => return,
    };
    let udp = t.proto == PROTO_UDP;
    if udp && t.v4 && frame[field] == 0 && frame[field + 1] == 0 {
        return;
    }
    frame[field] = 0;
    frame[field + 1] = 0;
    let mut c = fold(sum(&frame[t.l4..t.l4 + t.len], t.pseudo));
    if udp && c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DHCP-sized UDP/IPv4 frame from 198.51.100.1:67 to 255.255.255.255:68.
    fn udp4(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let total = 20 + 8 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0,
            0,
            64,
            17,
            0,
            0,
        ];
        ip.extend_from_slice(&[198, 51, 100, 1, 255, 255, 255, 255]);
        let hc = fold(sum(&ip, 0));
        ip[10..12].copy_from_slice(&hc.to_be_bytes());
        f.extend_from_slice(&ip);
        let ul = 8 + payload.len();
        f.extend_from_slice(&[0, 67, 0, 68, (ul >> 8) as u8, ul as u8, 0x12, 0x34]);
        f.extend_from_slice(payload);
        f
    }

    fn verify_udp4(f: &[u8]) -> bool {
        let ip = 14;
        let l4 = ip + 20;
        let len = f.len() - l4;
        let mut p = sum(&f[ip + 12..ip + 20], 0);
        p += 17 + len as u64;
        fold(sum(&f[l4..], p)) == 0
    }

    #[test]
    fn a_partial_checksum_is_completed_and_a_good_one_kept() {
        let mut f = udp4(b"hello, guest");
        assert!(!verify_udp4(&f), "starts as a partial (bogus) checksum");
        complete_l4_checksum(&mut f);
        assert!(verify_udp4(&f));
        let before = f.clone();
        complete_l4_checksum(&mut f);
        assert_eq!(f, before, "a right checksum is left as it is");
    }

    #[test]
    fn zero_udp_checksum_and_fragments_are_left_alone() {
        let mut f = udp4(b"x");
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
        let before = f.clone();
        complete_l4_checksum(&mut f);
        assert_eq!(f, before);
        let mut frag = udp4(b"y");
        frag[14 + 6] = 0x20; // more fragments
        let before = frag.clone();
        complete_l4_checksum(&mut frag);
        assert_eq!(frag, before);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            complete_l4_checksum(&mut bytes);
        }
    }
}
