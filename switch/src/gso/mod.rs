//! Offloaded frames: the virtio-net header a tap opened with IFF_VNET_HDR
//! puts before each frame, and the software fallbacks for a destination
//! that cannot take such a frame whole: completing a partial checksum and
//! cutting a TCP super-frame (TSO/GSO) into MSS-sized segments, as the
//! kernel's own GSO would. Pure functions, no allocation beyond the
//! caller's reused buffer.

use switchyard_wire::checksum::{fold, sum};
use switchyard_wire::ethernet;
use switchyard_wire::tcp::{self, TcpSegment};

mod gathered;
pub use gathered::{segment_gathered, SEGMENT_PIECES};

/// `flags`: the checksum from `csum_start` on is only partial (the
/// pseudo-header sum); it must be completed before a plain receiver sees it.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a super-frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (never enabled here).
pub const GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type` bit: the sender set ECN's CWR in the super-frame.
pub const GSO_ECN: u8 = 0x80;

/// The smallest `gso_size` (payload bytes per segment) taken: Linux never
/// sends TCP segments with a smaller MSS (`TCP_MIN_SND_MSS`, also the
/// lowest value the `net.ipv4.tcp_min_snd_mss` sysctl accepts), so no
/// real sender's super-frame is refused, while a forged `gso_size` of 1
/// that would cut one 64 KiB super-frame into about 64 k segments is
/// held to at most 65,535 / 48 = 1,366 of them. Below it a super-frame is
/// dropped as `gso_too_small`.
pub const MIN_GSO_SIZE: u16 = 48;

/// The largest offloaded frame taken whole: a tap's GSO limit is 64 KiB
/// of IP packet, plus the Ethernet header and two VLAN tags.
pub const MAX_GSO_FRAME: usize = 65_536 + 14 + 8;

/// `struct virtio_net_hdr` (10 bytes, the tap default size), in host
/// byte order as the kernel reads and writes it unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// [`F_NEEDS_CSUM`], [`F_DATA_VALID`].
    pub flags: u8,
    /// [`GSO_NONE`], [`GSO_TCPV4`], [`GSO_TCPV6`], maybe with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (Ethernet to TCP) of a super-frame.
    pub hdr_len: u16,
    /// The payload bytes per segment (the MSS).
    pub gso_size: u16,
    /// Where the checksummed bytes start (the TCP or UDP header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field is.
    pub csum_offset: u16,
}

/// Why an offloaded frame could not be made into plain frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// A GSO type other than TCP over IPv4 or IPv6.
    #[error("unsupported GSO type {0:#x}")]
    UnsupportedType(u8),
    /// Headers or offsets that do not fit the frame.
    #[error("malformed offloaded frame")]
    Malformed,
    /// A super-frame whose `gso_size` is below [`MIN_GSO_SIZE`].
    #[error("gso_size {0} is below the floor of {MIN_GSO_SIZE} bytes")]
    TooSmall(u16),
}

impl VnetHdr {
    /// The header's size on the wire.
    pub const LEN: usize = 10;

    /// Reads a header from the start of `b`, in host byte order (a tap's);
    /// `None` when `b` is shorter.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        Self::parse_with(b, u16::from_ne_bytes)
    }

    /// Reads a header in little-endian order (a VERSION_1 virtio device's).
    pub fn parse_le(b: &[u8]) -> Option<VnetHdr> {
        Self::parse_with(b, u16::from_le_bytes)
    }

    fn parse_with(b: &[u8], u16_from: fn([u8; 2]) -> u16) -> Option<VnetHdr> {
        let b = b.get(..Self::LEN)?;
        let u16_at = |i: usize| u16_from([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's bytes, in host byte order (a tap's).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        self.bytes_with(u16::to_ne_bytes)
    }

    /// The header's bytes in little-endian order (a VERSION_1 virtio
    /// device's).
    pub fn to_le_bytes(&self) -> [u8; Self::LEN] {
        self.bytes_with(u16::to_le_bytes)
    }

    fn bytes_with(&self, u16_to: fn(u16) -> [u8; 2]) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&u16_to(self.hdr_len));
        b[4..6].copy_from_slice(&u16_to(self.gso_size));
        b[6..8].copy_from_slice(&u16_to(self.csum_start));
        b[8..10].copy_from_slice(&u16_to(self.csum_offset));
        b
    }

    /// True for a super-frame whose segments would be smaller than
    /// [`MIN_GSO_SIZE`]: it is dropped rather than cut or passed on.
    pub fn gso_too_small(&self) -> bool {
        self.gso_type != GSO_NONE && self.gso_size < MIN_GSO_SIZE
    }

    /// True when the frame needs nothing done before a plain receiver
    /// takes it: no partial checksum, not a super-frame.
    pub fn is_plain(&self) -> bool {
        self.flags & F_NEEDS_CSUM == 0 && self.gso_type == GSO_NONE
    }

    /// The same header for the frame after `delta` bytes were inserted
    /// (positive) or removed (negative) before the IP header, as VLAN
    /// tagging and untagging do. `None` when the offsets would not fit.
    pub fn shifted(&self, delta: isize) -> Option<VnetHdr> {
        let shift = |v: u16| -> Option<u16> {
            u16::try_from(isize::try_from(v).ok()?.checked_add(delta)?).ok()
        };
        let mut h = *self;
        if h.flags & F_NEEDS_CSUM != 0 {
            h.csum_start = shift(h.csum_start)?;
        }
        if h.gso_type != GSO_NONE && h.hdr_len != 0 {
            // 0 means "not given": a length shifted to 0 could not be
            // shifted back (found by the tap_vnet fuzz target).
            h.hdr_len = shift(h.hdr_len).filter(|v| *v != 0)?;
        }
        Some(h)
    }
}

/// Copies `frame` into `out` with its partial checksum completed (what
/// the kernel's `skb_checksum_help` does): the field already holds the
/// pseudo-header sum, so summing from `csum_start` to the end finishes it.
pub fn complete_checksum(hdr: &VnetHdr, frame: &[u8], out: &mut Vec<u8>) -> Result<(), GsoError> {
    out.clear();
    out.extend_from_slice(frame);
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > out.len() {
        return Err(GsoError::Malformed);
    }
    let mut c = fold(sum(&out[start..], 0));
    if c == 0 {
        // A zero would mean "no checksum" to UDP; the kernel does the same.
        c = 0xffff;
    }
    out[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// The parsed headers of a TCP super-frame.
struct TcpLayout {
    /// IP header offset.
    ip: usize,
    v4: bool,
    /// TCP header offset.
    l4: usize,
    /// End of the TCP header: where the payload starts.
    payload: usize,
    /// End of the IP packet (frames may carry trailing padding).
    end: usize,
}

fn tcp_layout(hdr: &VnetHdr, frame: &[u8]) -> Result<TcpLayout, GsoError> {
    tcp_layout_in(hdr, frame, frame.len())
}

/// [`tcp_layout`] from `frame`'s first bytes (`headers`, which must hold
/// everything through the TCP header) and its length.
fn tcp_layout_in(hdr: &VnetHdr, headers: &[u8], len: usize) -> Result<TcpLayout, GsoError> {
    let frame = headers;
    let v4 = match hdr.gso_type & !GSO_ECN {
        GSO_TCPV4 => true,
        GSO_TCPV6 => false,
        other => return Err(GsoError::UnsupportedType(other)),
    };
    let l2 = ethernet::layout(frame).map_err(|_| GsoError::Malformed)?;
    let (ip, et) = (l2.payload, l2.ethertype);
    let (l4, end) = if v4 {
        let h = frame.get(ip..ip + 20).ok_or(GsoError::Malformed)?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if et != ethernet::IPV4 || h[0] >> 4 != 4 || ihl < 20 || h[9] != tcp::PROTOCOL {
            return Err(GsoError::Malformed);
        }
        // The total length may not fit 16 bits in a super-frame; trust
        // the frame then.
        let end = if total >= ihl && ip + total <= len && total != 0 {
            ip + total
        } else {
            len
        };
        (ip + ihl, end)
    } else {
        let h = frame.get(ip..ip + 40).ok_or(GsoError::Malformed)?;
        if et != ethernet::IPV6 || h[0] >> 4 != 6 {
            return Err(GsoError::Malformed);
        }
        // Extension headers: the kernel's csum_start says where TCP is.
        let l4 = if hdr.flags & F_NEEDS_CSUM != 0 {
            usize::from(hdr.csum_start)
        } else if h[6] == tcp::PROTOCOL {
            ip + 40
        } else {
            return Err(GsoError::Malformed);
        };
        let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
        let end = if plen != 0 && ip + 40 + plen <= len {
            ip + 40 + plen
        } else {
            len
        };
        if l4 < ip + 40 {
            return Err(GsoError::Malformed);
        }
        (l4, end)
    };
    if l4 > end {
        return Err(GsoError::Malformed);
    }
    let th = frame
        .get(l4..end.min(frame.len()))
        .ok_or(GsoError::Malformed)?;
    let th = TcpSegment::new_checked(th).map_err(|_| GsoError::Malformed)?;
    let payload = l4 + th.header_len();
    Ok(TcpLayout {
        ip,
        v4,
        l4,
        payload,
        end,
    })
}

/// Cuts a TCP super-frame into segments of at most `gso_size` payload
/// bytes, each built in `out` and handed to `emit`, with the IP length,
/// IPv4 id and header checksum, TCP sequence number, flags and checksum
/// of each segment right (`emit` may still edit a segment's addresses,
/// not what the checksums cover). A frame that is not a super-frame has its
/// checksum completed and is emitted once. Returns the number of frames
/// emitted; on an error nothing was emitted. A `gso_size` below
/// [`MIN_GSO_SIZE`] is refused as [`GsoError::TooSmall`].
pub fn segment(
    hdr: &VnetHdr,
    frame: &[u8],
    out: &mut Vec<u8>,
    mut emit: impl FnMut(&mut [u8]),
) -> Result<usize, GsoError> {
    if hdr.gso_type == GSO_NONE {
        complete_checksum(hdr, frame, out)?;
        emit(&mut out[..]);
        return Ok(1);
    }
    let l = tcp_layout(hdr, frame)?;
    if hdr.gso_size < MIN_GSO_SIZE {
        return Err(GsoError::TooSmall(hdr.gso_size));
    }
    let mss = usize::from(hdr.gso_size);
    let headers = &frame[..l.payload];
    let data = &frame[l.payload..l.end];
    let first = FirstSegment::of(headers, &l)?;
    let count = data.len().div_ceil(mss).max(1);
    let mut chunks = data.chunks(mss);
    for i in 0..count {
        let chunk = chunks.next().unwrap_or(&[]);
        out.clear();
        out.extend_from_slice(headers);
        out.extend_from_slice(chunk);
        let seg = Segment {
            index: i,
            last: i + 1 == count,
            offset: i * mss,
            payload_len: chunk.len(),
            payload_sum: sum(chunk, 0),
        };
        finish_segment(&mut out[..l.payload], &l, &first, &seg)?;
        emit(&mut out[..]);
    }
    Ok(count)
}

/// What every segment's headers start from: the super-frame's IPv4 id,
/// TCP sequence number and flags.
struct FirstSegment {
    id: u16,
    seq: u32,
    flags: u8,
}

impl FirstSegment {
    fn of(headers: &[u8], l: &TcpLayout) -> Result<FirstSegment, GsoError> {
        let tcp0 =
            TcpSegment::new_checked(&headers[l.l4..l.payload]).map_err(|_| GsoError::Malformed)?;
        Ok(FirstSegment {
            id: u16::from_be_bytes([headers[l.ip + 4], headers[l.ip + 5]]),
            seq: tcp0.seq(),
            flags: tcp0.flags(),
        })
    }
}

/// One segment: which, where its payload starts in the super-frame's,
/// how long it is and the sum of its bytes (summed wherever they are).
struct Segment {
    index: usize,
    last: bool,
    offset: usize,
    payload_len: usize,
    payload_sum: u64,
}

/// Sets a segment's IP length, IPv4 id and header checksum, TCP sequence
/// number, flags and checksum in `headers` (its headers through TCP, a
/// copy of the super-frame's).
fn finish_segment(
    headers: &mut [u8],
    l: &TcpLayout,
    first: &FirstSegment,
    seg: &Segment,
) -> Result<(), GsoError> {
    let seg_len = headers.len() + seg.payload_len;
    let seg_tcp_len = seg_len - l.l4;
    if l.v4 {
        let total = u16::try_from(seg_len - l.ip).map_err(|_| GsoError::Malformed)?;
        headers[l.ip + 2..l.ip + 4].copy_from_slice(&total.to_be_bytes());
        let id = first.id.wrapping_add(seg.index as u16);
        headers[l.ip + 4..l.ip + 6].copy_from_slice(&id.to_be_bytes());
        let ihl = l.l4 - l.ip;
        headers[l.ip + 10] = 0;
        headers[l.ip + 11] = 0;
        let c = fold(sum(&headers[l.ip..l.ip + ihl], 0));
        headers[l.ip + 10..l.ip + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        let plen = u16::try_from(seg_len - l.ip - 40).map_err(|_| GsoError::Malformed)?;
        headers[l.ip + 4..l.ip + 6].copy_from_slice(&plen.to_be_bytes());
    }
    let mut flags = first.flags;
    if !seg.last {
        flags &= !(tcp::FIN | tcp::PSH);
    }
    if seg.index > 0 {
        flags &= !tcp::CWR;
    }
    let pseudo = if l.v4 {
        sum(&headers[l.ip + 12..l.ip + 20], 6 + seg_tcp_len as u64)
    } else {
        sum(&headers[l.ip + 8..l.ip + 40], 6 + seg_tcp_len as u64)
    };
    let tcp_header = l.l4..l.payload;
    let mut th = TcpSegment::new_checked(&mut headers[tcp_header.clone()])
        .map_err(|_| GsoError::Malformed)?;
    th.set_seq(first.seq.wrapping_add(seg.offset as u32));
    th.set_flags(flags);
    th.set_checksum(0);
    // The TCP header is a multiple of 4 bytes long: its sum and the
    // payload's add up to the sum of both.
    let c = fold(sum(&headers[tcp_header.clone()], pseudo) + seg.payload_sum);
    if let Ok(mut th) = TcpSegment::new_checked(&mut headers[tcp_header]) {
        th.set_checksum(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
