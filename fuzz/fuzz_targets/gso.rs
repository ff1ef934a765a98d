//! Software segmentation: `switchyard_switch::gso::segment` on an
//! offloaded frame (what a tap with IFF_VNET_HDR hands over) for a port
//! that cannot take it whole. Seeds: TCP/IPv4 and TCP/IPv6 super-frames
//! with their virtio-net headers, and plain frames with a partial checksum.
//!
//! Input: the 10-byte virtio-net header, then the frame.
//!
//! Checks, besides "never panics":
//! - `Ok(n)` means exactly `n` frames were emitted; an error, none;
//! - a `gso_size` below `MIN_GSO_SIZE` on a super-frame is never cut;
//!   at most 65,535 / `MIN_GSO_SIZE` + 1 segments come out of one frame;
//! - a frame that is not a super-frame comes out once, as long as it went
//!   in, with only the checksum field changed;
//! - the segments of a super-frame carry at most `gso_size` payload bytes
//!   each, their payloads put together are the input's TCP payload, each
//!   has its IP length right, a right IPv4 header checksum and a TCP
//!   checksum that verifies (with an independent verifier);
//! - the same frame in two parts (a vhost-user guest's: a private head,
//!   the rest in pieces), cut with `segment_gathered`, gives the same
//!   frames and the same verdict, or is left to be cut joined.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::{ipv4_header_ok, ones_sum, ones_sum_is_zero};
use switchyard_switch::gather::split;
use switchyard_switch::gso::{
    segment, segment_gathered, VnetHdr, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4,
    MIN_GSO_SIZE,
};
use switchyard_wire::ethernet;

fuzz_target!(|data: &[u8]| {
    let Some(hdr) = VnetHdr::parse(data) else {
        return;
    };
    let frame = &data[VnetHdr::LEN..];
    let mut out = Vec::new();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let result = segment(&hdr, frame, &mut out, |p| pieces.push(p.to_vec()));
    let mut slots = Vec::new();
    let g = split(frame, 1 + data.len() % 5, &mut slots);
    let mut gathered: Vec<Vec<u8>> = Vec::new();
    let cut = segment_gathered(&hdr, &g, &mut Vec::new(), |s| {
        let mut whole = Vec::new();
        s.append_to(&mut whole);
        gathered.push(whole);
    });
    match (&result, cut) {
        (_, Ok(None)) => assert!(gathered.is_empty(), "emitted, then left to be cut joined"),
        (Ok(n), Ok(Some(m))) => {
            assert_eq!(*n, m, "counts differ");
            assert!(pieces == gathered, "in two parts, cut differently");
        }
        (Err(a), Err(b)) => {
            // The same verdict: it decides the drop reason.
            assert_eq!(a, &b, "refused differently");
            assert!(gathered.is_empty(), "emitted, then refused");
        }
        (whole, parts) => panic!("whole: {whole:?}, in two parts: {parts:?}"),
    }
    let n = match result {
        Ok(n) => n,
        Err(e) => {
            assert!(pieces.is_empty(), "{e:?} after emitting {}", pieces.len());
            return;
        }
    };
    assert_eq!(n, pieces.len(), "count returned != frames emitted");
    if hdr.gso_type == GSO_NONE {
        assert_eq!(n, 1);
        let p = &pieces[0];
        assert_eq!(p.len(), frame.len());
        let field = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
        for (i, (a, b)) in p.iter().zip(frame).enumerate() {
            if hdr.flags & F_NEEDS_CSUM == 0 || !(field..field + 2).contains(&i) {
                assert_eq!(a, b, "byte {i} changed");
            }
        }
        return;
    }
    assert!(hdr.gso_size >= MIN_GSO_SIZE, "cut below the floor: {hdr:?}");
    assert!(n <= 65_535 / usize::from(MIN_GSO_SIZE) + 1, "{n} segments");
    check_segments(&hdr, frame, &pieces);
});

/// The TCP header offset and the IP header offset of the input, found
/// apart from `gso::segment`'s own parser.
fn offsets(hdr: &VnetHdr, frame: &[u8]) -> (usize, usize, bool) {
    let l = match ethernet::layout(frame) {
        Ok(l) => l,
        Err(e) => panic!("segmented a frame without an Ethernet header: {e:?}"),
    };
    let ip = l.payload;
    let v4 = hdr.gso_type & !GSO_ECN == GSO_TCPV4;
    let l4 = if v4 {
        ip + usize::from(frame[ip] & 0x0f) * 4
    } else if hdr.flags & F_NEEDS_CSUM != 0 {
        usize::from(hdr.csum_start)
    } else {
        ip + 40
    };
    (ip, l4, v4)
}

fn check_segments(hdr: &VnetHdr, frame: &[u8], pieces: &[Vec<u8>]) {
    let (ip, l4, v4) = offsets(hdr, frame);
    let payload_at = l4 + usize::from(frame[l4 + 12] >> 4) * 4;
    let mss = usize::from(hdr.gso_size);
    let mut payload = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        assert!(
            p.len() >= payload_at,
            "segment {i} shorter than the headers"
        );
        let chunk = &p[payload_at..];
        assert!(
            chunk.len() <= mss,
            "segment {i}: {} > mss {mss}",
            chunk.len()
        );
        if i + 1 < pieces.len() {
            assert_eq!(chunk.len(), mss, "segment {i} is not full");
        }
        payload.extend_from_slice(chunk);
        assert_eq!(&p[..ip], &frame[..ip], "segment {i}: link header changed");
        let tcp_len = p.len() - l4;
        let pseudo = if v4 {
            let total = usize::from(u16::from_be_bytes([p[ip + 2], p[ip + 3]]));
            assert_eq!(total, p.len() - ip, "segment {i}: IPv4 total length");
            assert!(
                ipv4_header_ok(&p[ip..]),
                "segment {i}: IPv4 header checksum"
            );
            ones_sum(ones_sum(0, &p[ip + 12..ip + 20]), &[0, 6]) + tcp_len as u64
        } else {
            let plen = usize::from(u16::from_be_bytes([p[ip + 4], p[ip + 5]]));
            assert_eq!(plen, p.len() - ip - 40, "segment {i}: IPv6 payload length");
            ones_sum(ones_sum(0, &p[ip + 8..ip + 40]), &[0, 6]) + tcp_len as u64
        };
        assert!(
            ones_sum_is_zero(ones_sum(pseudo, &p[l4..])),
            "segment {i}: TCP checksum does not verify"
        );
    }
    let end = payload_at + payload.len();
    assert!(end <= frame.len(), "more payload out than in");
    assert_eq!(payload, &frame[payload_at..end], "payload changed");
    // Whatever follows the payload must be padding the IP length leaves
    // out, never data.
    let ip_end = if v4 {
        let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
        if total != 0 && total >= l4 - ip && ip + total <= frame.len() {
            ip + total
        } else {
            frame.len()
        }
    } else {
        let plen = usize::from(u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]));
        if plen != 0 && ip + 40 + plen <= frame.len() {
            ip + 40 + plen
        } else {
            frame.len()
        }
    };
    assert_eq!(end, ip_end.max(payload_at), "payload cut short");
}
