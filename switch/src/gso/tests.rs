//! Segmentation and checksum completion, checked from scratch.

use super::*;

const MAC: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

/// A TCP super-frame as a tap hands it over: IP lengths of the whole,
/// TCP checksum field holding only the pseudo-header sum.
fn super_frame(v4: bool, vlan: bool, payload: &[u8], flags: u8) -> (VnetHdr, Vec<u8>) {
    let mut f = MAC.to_vec();
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    }
    let ip = f.len() + 2;
    let tcp_len = 20 + 12 + payload.len(); // with a timestamp option
    if v4 {
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + tcp_len) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
        f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
        let c = fold(sum(&f[ip..ip + 20], 0));
        f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 6, 64]);
        f[ip + 4..ip + 6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = 1;
        f.extend_from_slice(&a);
        a[15] = 2;
        f.extend_from_slice(&a);
    }
    let l4 = f.len();
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0xff, 0xff, 0xff, 0x00]); // seq near wrap
    f.extend_from_slice(&[0, 0, 0, 1, 0x80, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend_from_slice(payload);
    let pseudo = if v4 {
        sum(&f[ip + 12..ip + 20], 6 + tcp_len as u64)
    } else {
        sum(&f[ip + 8..ip + 40], 6 + tcp_len as u64)
    };
    // The partial checksum: the folded, uncomplemented pseudo sum.
    let partial = !fold(pseudo);
    f[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: (l4 + 32) as u16,
        gso_size: 1448,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    (hdr, f)
}

/// Checks one segment from scratch; returns (seq, flags, payload).
fn check_segment(f: &[u8], v4: bool, vlan: bool) -> (u32, u8, Vec<u8>) {
    let ip = if vlan { 18 } else { 14 };
    let (l4, tcp_len) = if v4 {
        assert_eq!(fold(sum(&f[ip..ip + 20], 0)), 0, "IPv4 header checksum");
        let total = usize::from(u16::from_be_bytes([f[ip + 2], f[ip + 3]]));
        assert_eq!(total, f.len() - ip, "IPv4 total length");
        (ip + 20, total - 20)
    } else {
        let plen = usize::from(u16::from_be_bytes([f[ip + 4], f[ip + 5]]));
        assert_eq!(plen, f.len() - ip - 40, "IPv6 payload length");
        (ip + 40, plen)
    };
    let pseudo = if v4 {
        sum(&f[ip + 12..ip + 20], 6 + tcp_len as u64)
    } else {
        sum(&f[ip + 8..ip + 40], 6 + tcp_len as u64)
    };
    assert_eq!(fold(sum(&f[l4..], pseudo)), 0, "TCP checksum");
    let seq = u32::from_be_bytes([f[l4 + 4], f[l4 + 5], f[l4 + 6], f[l4 + 7]]);
    (seq, f[l4 + 13], f[l4 + 32..].to_vec())
}

fn run(v4: bool, vlan: bool, len: usize, mss: u16, flags: u8) -> Vec<Vec<u8>> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let (mut hdr, f) = super_frame(v4, vlan, &payload, flags);
    hdr.gso_size = mss;
    let mut out = Vec::new();
    let mut segs = Vec::new();
    let n = segment(&hdr, &f, &mut out, |s| segs.push(s.to_vec())).expect("segments");
    assert_eq!(n, segs.len());
    let mut joined = Vec::new();
    let mut next_seq = 0xffff_ff00u32;
    for (i, s) in segs.iter().enumerate() {
        let (seq, fl, data) = check_segment(s, v4, vlan);
        assert_eq!(seq, next_seq, "segment {i} sequence number");
        assert!(data.len() <= usize::from(mss));
        let last = i + 1 == segs.len();
        assert_eq!(fl & tcp::FIN != 0, last && flags & tcp::FIN != 0, "FIN");
        assert_eq!(fl & tcp::PSH != 0, last && flags & tcp::PSH != 0, "PSH");
        assert_eq!(fl & tcp::CWR != 0, i == 0 && flags & tcp::CWR != 0, "CWR");
        if v4 {
            let ip = if vlan { 18 } else { 14 };
            let id = u16::from_be_bytes([s[ip + 4], s[ip + 5]]);
            assert_eq!(id, 0x1234u16.wrapping_add(i as u16), "IPv4 id");
        }
        next_seq = next_seq.wrapping_add(data.len() as u32);
        joined.extend_from_slice(&data);
    }
    assert_eq!(joined, payload, "segments re-assemble to the payload");
    segs
}

#[test]
fn tcp4_and_tcp6_super_frames_are_cut_into_valid_segments() {
    for v4 in [true, false] {
        for vlan in [false, true] {
            let segs = run(v4, vlan, 10_000, 1448, 0x18 | tcp::FIN | tcp::CWR);
            assert_eq!(segs.len(), 7);
            run(v4, vlan, 1448 * 3, 1448, 0x10);
            run(v4, vlan, 63_000, 1400, tcp::PSH | 0x10);
        }
    }
}

#[test]
fn a_payload_of_one_mss_or_less_is_one_segment_with_a_checksum() {
    let segs = run(true, false, 100, 1448, 0x18);
    assert_eq!(segs.len(), 1);
    let segs = run(false, false, 0, 1448, 0x10);
    assert_eq!(segs.len(), 1);
}

#[test]
fn a_partial_checksum_is_completed() {
    let (mut hdr, f) = super_frame(true, false, b"hello", 0x18);
    hdr.gso_type = GSO_NONE;
    let mut out = Vec::new();
    let n = segment(&hdr, &f, &mut out, |s| {
        check_segment(s, true, false);
    })
    .expect("completes");
    assert_eq!(n, 1);
}

#[test]
fn what_cannot_be_segmented_is_refused() {
    let (mut hdr, f) = super_frame(true, false, &[0; 3000], 0x10);
    let mut out = Vec::new();
    hdr.gso_type = GSO_UDP;
    assert_eq!(
        segment(&hdr, &f, &mut out, |_| {}),
        Err(GsoError::UnsupportedType(GSO_UDP))
    );
    hdr.gso_type = GSO_TCPV6; // but an IPv4 frame
    assert_eq!(
        segment(&hdr, &f, &mut out, |_| {}),
        Err(GsoError::Malformed)
    );
    hdr.gso_type = GSO_TCPV4;
    hdr.gso_size = 0;
    assert_eq!(
        segment(&hdr, &f, &mut out, |_| {}),
        Err(GsoError::TooSmall(0))
    );
    hdr.gso_size = 1448;
    assert_eq!(
        segment(&hdr, &f[..40], &mut out, |_| {}),
        Err(GsoError::Malformed)
    );
    let plain = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 60,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    assert_eq!(
        complete_checksum(&plain, &f[..70], &mut out),
        Err(GsoError::Malformed)
    );
}

/// A forged `gso_size` of 1 would make about 64 k segments of one
/// super-frame: below the floor nothing is emitted; at it, segments.
#[test]
fn a_gso_size_below_the_floor_is_refused() {
    let (mut hdr, f) = super_frame(true, false, &[7; 60_000], 0x10);
    let mut out = Vec::new();
    for small in [1, 2, MIN_GSO_SIZE - 1] {
        hdr.gso_size = small;
        assert!(hdr.gso_too_small());
        let mut emitted = 0;
        assert_eq!(
            segment(&hdr, &f, &mut out, |_| emitted += 1),
            Err(GsoError::TooSmall(small))
        );
        assert_eq!(emitted, 0);
    }
    hdr.gso_size = MIN_GSO_SIZE;
    assert!(!hdr.gso_too_small());
    let n = segment(&hdr, &f, &mut out, |_| {}).expect("at the floor");
    assert_eq!(n, 60_000usize.div_ceil(usize::from(MIN_GSO_SIZE)));
    let plain = VnetHdr {
        gso_size: 1,
        ..VnetHdr::default()
    };
    assert!(!plain.gso_too_small(), "not a super-frame: no floor");
}

#[test]
fn header_round_trips_and_shifts() {
    let (hdr, _) = super_frame(true, false, b"x", 0);
    assert_eq!(VnetHdr::parse(&hdr.to_bytes()), Some(hdr));
    assert_eq!(VnetHdr::parse(&[0; 9]), None);
    let tagged = hdr.shifted(4).expect("fits");
    assert_eq!(tagged.csum_start, hdr.csum_start + 4);
    assert_eq!(tagged.hdr_len, hdr.hdr_len + 4);
    assert_eq!(tagged.shifted(-4), Some(hdr));
    assert_eq!(VnetHdr::default().shifted(-4), Some(VnetHdr::default()));
    // Regression (tap_vnet fuzz target): hdr_len 4 untagged would read
    // as "no hdr_len" and not shift back.
    let tiny = VnetHdr { hdr_len: 4, ..hdr };
    assert_eq!(tiny.shifted(-4), None);
    assert_eq!(tiny.shifted(4).and_then(|h| h.shifted(-4)), Some(tiny));
}

proptest::proptest! {
    #[test]
    fn segments_always_reassemble(
        len in 0usize..20_000,
        mss in MIN_GSO_SIZE..3000,
        v4 in proptest::bool::ANY,
        vlan in proptest::bool::ANY,
        flags in proptest::num::u8::ANY,
    ) {
        run(v4, vlan, len, mss, flags & !0x06); // no SYN/RST games
    }

    #[test]
    fn never_panics(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        h in proptest::collection::vec(proptest::num::u8::ANY, 10),
    ) {
        let hdr = VnetHdr::parse(&h).expect("10 bytes");
        let mut out = Vec::new();
        let _ = segment(&hdr, &bytes, &mut out, |_| {});
    }
}
