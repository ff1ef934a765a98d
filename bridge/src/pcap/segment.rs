//! Cutting offloaded TCP super-frames back into frames that fit the NIC's
//! MTU. With GRO/LRO on the NIC (most drivers' default), or a local sender's
//! TSO/GSO seen through a veth, a capture returns one frame carrying many
//! TCP segments (up to 64 KiB). Guests' links carry at most the MTU, and
//! some clients truncate anything larger (vde_plug does), so the stream
//! crawls through retransmissions. Each piece gets the original headers,
//! its own length, sequence number, IPv4 id and checksums; FIN and PSH stay
//! on the last piece, CWR on the first.

use switchyard_switch::gso::{self, VnetHdr};
use switchyard_wire::ethernet;

/// Where the IP header starts (after up to two VLAN tags) and which IP
/// version it is.
fn l3(frame: &[u8]) -> Option<(usize, u16)> {
    let l = ethernet::layout(frame).ok()?;
    matches!(l.ethertype, ethernet::IPV4 | ethernet::IPV6).then_some((l.payload, l.ethertype))
}

/// How one oversize frame is to be handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Its IP packet fits the MTU after all (padding, tags): forward it.
    Fits,
    /// A TCP super-frame: cut it as this offload header describes
    /// (`gso::segment`), every IP packet at most the MTU. On a link whose
    /// MTU leaves less than [`gso::MIN_GSO_SIZE`] bytes of TCP payload,
    /// `gso::segment` refuses it as too small.
    Cut(VnetHdr),
    /// Larger than the MTU and not a TCP segment we can cut.
    TooLong,
}

/// Decides what to do with `frame`, larger than `mtu` plus its
/// link-layer header. Pure; public for the fuzz target `pcap` (fuzz/).
pub fn plan(frame: &[u8], mtu: usize) -> Plan {
    let Some((ip, version)) = l3(frame) else {
        return Plan::TooLong;
    };
    let Some(hdr) = frame.get(ip..) else {
        return Plan::TooLong;
    };
    // (IP header length, IP packet length, next protocol)
    let (ihl, total, proto) = if version == ethernet::IPV4 {
        if hdr.len() < 20 || hdr[0] >> 4 != 4 {
            return Plan::TooLong;
        }
        let ihl = usize::from(hdr[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        // A fragment cannot be cut again here.
        if u16::from_be_bytes([hdr[6], hdr[7]]) & 0x3fff != 0 {
            return if total <= mtu {
                Plan::Fits
            } else {
                Plan::TooLong
            };
        }
        (ihl, total, hdr[9])
    } else {
        if hdr.len() < 40 || hdr[0] >> 4 != 6 {
            return Plan::TooLong;
        }
        (
            40,
            40 + usize::from(u16::from_be_bytes([hdr[4], hdr[5]])),
            hdr[6],
        )
    };
    if total <= mtu {
        return Plan::Fits;
    }
    if proto != 6 || ihl < 20 || total > hdr.len() || ihl + 20 > total {
        return Plan::TooLong;
    }
    let thl = usize::from(hdr[ihl + 12] >> 4) * 4;
    if thl < 20 || ihl + thl > total || ihl + thl >= mtu {
        return Plan::TooLong;
    }
    let (Ok(mss), Ok(hdr_len)) = (
        u16::try_from(mtu - ihl - thl),
        u16::try_from(ip + ihl + thl),
    ) else {
        return Plan::TooLong;
    };
    Plan::Cut(VnetHdr {
        flags: 0,
        gso_type: if version == ethernet::IPV4 {
            gso::GSO_TCPV4
        } else {
            gso::GSO_TCPV6
        },
        hdr_len,
        gso_size: mss,
        csum_start: 0,
        csum_offset: 0,
    })
}

/// How one oversize frame came out (for the tests).
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Oversize {
    Fits,
    Pieces(Vec<Vec<u8>>),
    TooLong,
}

/// [`plan`] carried out, the pieces collected (for the tests).
#[cfg(test)]
pub(super) fn cut(frame: &[u8], mtu: usize) -> Oversize {
    match plan(frame, mtu) {
        Plan::Fits => Oversize::Fits,
        Plan::TooLong => Oversize::TooLong,
        Plan::Cut(hdr) => {
            let mut pieces = Vec::new();
            let mut out = Vec::new();
            match gso::segment(&hdr, frame, &mut out, |p| pieces.push(p.to_vec())) {
                Ok(_) => Oversize::Pieces(pieces),
                Err(_) => Oversize::TooLong,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use switchyard_wire::checksum::fold;

    fn sum(data: &[u8]) -> u64 {
        switchyard_wire::checksum::sum(data, 0)
    }

    /// A TCP/IPv4 frame with `n` payload bytes 0, 1, 2, … (mod 251),
    /// flags PSH|ACK|FIN|CWR, seq 1000, id 7.
    fn tcp4(n: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = 20 + 20 + n;
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            7,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ];
        ip.extend_from_slice(&[198, 51, 100, 2, 198, 51, 100, 150]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x13, 0x89, 0xc0, 0x00, 0, 0, 0x03, 0xe8, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x50, 0x80 | 0x10 | 0x08 | 0x01, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend((0..n).map(|i| (i % 251) as u8));
        f
    }

    #[test]
    fn a_super_frame_becomes_mtu_sized_segments() {
        let f = tcp4(4000);
        let Oversize::Pieces(p) = cut(&f, 1500) else {
            panic!("not cut");
        };
        assert_eq!(p.len(), 3, "1460 + 1460 + 1080");
        let mut payload = Vec::new();
        for (i, s) in p.iter().enumerate() {
            let ip = &s[14..];
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            assert_eq!(total, s.len() - 14);
            assert!(total <= 1500);
            assert_eq!(fold(sum(&ip[..20])), 0, "IPv4 header checksum");
            assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 7 + i as u16);
            let seq = u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]);
            assert_eq!(seq, 1000 + 1460 * i as u32);
            let flags = ip[33];
            assert_eq!(flags & 0x80 != 0, i == 0, "CWR on the first only");
            assert_eq!(flags & 0x09 != 0, i == 2, "FIN/PSH on the last only");
            assert!(flags & 0x10 != 0, "ACK on all");
            payload.extend_from_slice(&ip[40..]);
        }
        assert_eq!(payload, f[54..].to_vec());
    }

    #[test]
    fn what_fits_or_cannot_be_cut_is_said_so() {
        assert_eq!(cut(&tcp4(1400), 1500), Oversize::Fits);
        let mut udp = tcp4(3000);
        udp[14 + 9] = 17;
        assert_eq!(cut(&udp, 1500), Oversize::TooLong);
        let mut frag = tcp4(3000);
        frag[14 + 6] = 0x20; // MF
        assert_eq!(cut(&frag, 1500), Oversize::TooLong);
        assert_eq!(cut(&[0u8; 13], 1500), Oversize::TooLong);
        // Truncated capture: IP total length beyond the frame.
        let f = tcp4(3000);
        assert_eq!(cut(&f[..2000], 1500), Oversize::TooLong);
    }

    /// A link MTU that leaves fewer than `MIN_GSO_SIZE` payload bytes per
    /// segment would cut a 64 KiB capture into thousands of frames: the
    /// plan's segment size is below the floor and `gso::segment` refuses.
    #[test]
    fn segments_below_the_floor_are_refused() {
        let f = tcp4(60_000);
        let small = 40 + usize::from(gso::MIN_GSO_SIZE) - 1;
        let Plan::Cut(hdr) = plan(&f, small) else {
            panic!("not planned as a cut");
        };
        assert!(hdr.gso_too_small());
        assert_eq!(cut(&f, small), Oversize::TooLong);
        let mut out = Vec::new();
        assert_eq!(
            gso::segment(&hdr, &f, &mut out, |_| {}),
            Err(gso::GsoError::TooSmall(gso::MIN_GSO_SIZE - 1))
        );
        let Oversize::Pieces(p) = cut(&f, small + 1) else {
            panic!("at the floor: not cut");
        };
        assert_eq!(
            p.len(),
            60_000usize.div_ceil(usize::from(gso::MIN_GSO_SIZE))
        );
    }

    #[test]
    fn ipv6_super_frames_are_cut_too() {
        let n = 3000;
        let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((20 + n) as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        f.extend_from_slice(&[0x13, 0x89, 0xc0, 0x00, 0, 0, 0, 1, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend(std::iter::repeat_n(0xab, n));
        let Oversize::Pieces(p) = cut(&f, 1500) else {
            panic!("not cut");
        };
        assert_eq!(p.len(), 3, "1440 + 1440 + 120");
        for s in &p {
            let plen = usize::from(u16::from_be_bytes([s[18], s[19]]));
            assert_eq!(plen + 40 + 14, s.len());
            assert!(plen + 40 <= 1500);
        }
    }
}
