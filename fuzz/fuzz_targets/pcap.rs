//! What the pcap port does to a captured frame before guests see it:
//! `complete_l4_checksum` (bridge/src/checksum.rs: offloading senders leave
//! only the pseudo-header sum) and, for a frame larger than the NIC's MTU,
//! the segmentation plan (`plan` in bridge/src/pcap/segment.rs) carried out
//! by `gso::segment`. Seeds: captured TCP, UDP, ICMP frames and GRO-sized
//! TCP super-frames, IPv4 and IPv6.
//!
//! Input: the MTU (2 bytes, big-endian, taken modulo 9,000 and at least
//! 68, the IPv4 minimum), then the frame.
//!
//! Checks, besides "never panics":
//! - completion keeps the frame's length and every byte but the TCP/UDP
//!   checksum field; afterwards the checksum verifies (independent
//!   verifier) wherever there is one to verify; completing twice changes
//!   nothing;
//! - `Fits` means the IP packet is at most the MTU;
//! - a cut's segments each hold an IP packet of at most the MTU (as its
//!   own length field says and as long as it is), with right IPv4 header
//!   and TCP checksums, and their payloads put together are the input's
//!   TCP payload; a cut refused as too small had a `gso_size` below the
//!   floor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_bridge::checksum::complete_l4_checksum;
use switchyard_bridge::pcap::segment::{plan, Plan};
use switchyard_fuzz::{ipv4_header_ok, l4_checksum_ok};
use switchyard_switch::gso::{self, GsoError, MIN_GSO_SIZE};
use switchyard_wire::ethernet;

fuzz_target!(|data: &[u8]| {
    let [m0, m1, frame @ ..] = data else {
        return;
    };
    let mtu = usize::from(u16::from_be_bytes([*m0, *m1])) % 9_000;
    let mtu = mtu.max(68);
    check_completion(frame);
    match plan(frame, mtu) {
        Plan::Fits => {
            let ip = ip_len(frame).unwrap_or_else(|| panic!("Fits without an IP length"));
            assert!(ip <= mtu, "Fits but the IP packet is {ip} > {mtu}");
        }
        Plan::TooLong => {}
        Plan::Cut(hdr) => {
            let mut out = Vec::new();
            let mut pieces: Vec<Vec<u8>> = Vec::new();
            match gso::segment(&hdr, frame, &mut out, |p| pieces.push(p.to_vec())) {
                Ok(n) => {
                    assert_eq!(n, pieces.len());
                    check_cut(frame, mtu, usize::from(hdr.hdr_len), &pieces);
                }
                Err(GsoError::TooSmall(s)) => assert!(s < MIN_GSO_SIZE),
                Err(_) => assert!(pieces.is_empty()),
            }
        }
    }
});

fn check_completion(frame: &[u8]) {
    let mut f = frame.to_vec();
    complete_l4_checksum(&mut f);
    assert_eq!(f.len(), frame.len(), "completion changed the length");
    let changed: Vec<usize> = (0..f.len()).filter(|&i| f[i] != frame[i]).collect();
    if let (Some(first), Some(last)) = (changed.first(), changed.last()) {
        assert!(
            last - first <= 1,
            "bytes {changed:?} changed: more than a checksum"
        );
    }
    if let Some(ok) = l4_checksum_ok(&f) {
        assert!(ok, "completed checksum does not verify");
    }
    let once = f.clone();
    complete_l4_checksum(&mut f);
    assert_eq!(f, once, "a second completion changed the frame");
}

/// The IP packet's length as its header says (IPv4 total length, IPv6
/// 40 + payload length).
fn ip_len(frame: &[u8]) -> Option<usize> {
    let l = ethernet::layout(frame).ok()?;
    let ip = frame.get(l.payload..)?;
    match l.ethertype {
        ethernet::IPV4 => Some(usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]))),
        ethernet::IPV6 => Some(40 + usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]))),
        _ => None,
    }
}

fn check_cut(frame: &[u8], mtu: usize, headers: usize, pieces: &[Vec<u8>]) {
    let l2 = match ethernet::layout(frame) {
        Ok(l) => l.payload,
        Err(e) => panic!("cut a frame without an Ethernet header: {e:?}"),
    };
    let mut payload = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let len = ip_len(p).unwrap_or_else(|| panic!("segment {i} is not IP"));
        assert_eq!(len, p.len() - l2, "segment {i}: IP length field");
        assert!(len <= mtu, "segment {i}: {len} > MTU {mtu}");
        if frame[l2] >> 4 == 4 {
            assert!(
                ipv4_header_ok(&p[l2..]),
                "segment {i}: IPv4 header checksum"
            );
        }
        assert_eq!(l4_checksum_ok(p), Some(true), "segment {i}: TCP checksum");
        payload.extend_from_slice(&p[headers..]);
    }
    let total = ip_len(frame).unwrap_or(0);
    assert_eq!(
        payload,
        &frame[headers..l2 + total],
        "segments' payload != the input's"
    );
}
