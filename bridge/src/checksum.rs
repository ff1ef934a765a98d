//! Completing TCP and UDP checksums of captured frames. A frame captured
//! on an interface whose sender offloads checksums (veth, tap, many NICs
//! for locally sent traffic) carries only the pseudo-header sum; a guest
//! would drop it. Recomputing is harmless for frames that were already
//! right.

use switchyard_switch::checksum::{fold, sum};

/// Rewrites the TCP or UDP checksum of an Ethernet frame carrying IPv4 or
/// IPv6 (after up to two VLAN tags). Anything else, fragments and
/// truncated frames are left alone; a UDP/IPv4 checksum of 0 ("none")
/// stays 0.
pub(crate) fn complete_l4_checksum(frame: &mut [u8]) {
    let mut off = 12;
    let mut ethertype = match frame.get(off..off + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => return,
    };
    for _ in 0..2 {
        if matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
            off += 4;
            ethertype = match frame.get(off..off + 2) {
                Some(b) => u16::from_be_bytes([b[0], b[1]]),
                None => return,
            };
        }
    }
    let ip = off + 2;
    let (proto, l4, l4_len, pseudo) = match ethertype {
        0x0800 => {
            let Some(h) = frame.get(ip..ip + 20) else {
                return;
            };
            if h[0] >> 4 != 4 {
                return;
            }
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if ihl < 20 || total < ihl || frame.len() < ip + total || frag & 0x3fff != 0 {
                return;
            }
            let proto = h[9];
            let l4_len = total - ihl;
            let mut p = sum(&h[12..20], 0);
            p += u64::from(proto) + l4_len as u64;
            (proto, ip + ihl, l4_len, p)
        }
        0x86dd => {
            let Some(h) = frame.get(ip..ip + 40) else {
                return;
            };
            if h[0] >> 4 != 6 {
                return;
            }
            let l4_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if frame.len() < ip + 40 + l4_len {
                return;
            }
            let proto = h[6];
            let mut p = sum(&h[8..40], 0);
            p += u64::from(proto) + l4_len as u64;
            (proto, ip + 40, l4_len, p)
        }
        _ => return,
    };
    let field = match proto {
        6 if l4_len >= 20 => l4 + 16,
        17 if l4_len >= 8 => l4 + 6,
        _ => return,
    };
    if proto == 17 && ethertype == 0x0800 && frame[field] == 0 && frame[field + 1] == 0 {
        return;
    }
    frame[field] = 0;
    frame[field + 1] = 0;
    let mut c = fold(sum(&frame[l4..l4 + l4_len], pseudo));
    if proto == 17 && c == 0 {
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
