//! Software segmentation of a frame in two parts (see [`crate::gather`])
//! without joining it first: headers built in the switch's memory, the
//! payload left where the sender wrote it.

use super::{
    finish_segment, fold, sum, tcp_layout_in, FirstSegment, GsoError, Segment, VnetHdr,
    F_NEEDS_CSUM, GSO_NONE, MIN_GSO_SIZE,
};
use crate::gather::{Foreign, Gathered};

/// The most pieces a segment of a frame in two parts may take; a frame
/// whose segments need more is cut joined.
pub const SEGMENT_PIECES: usize = 72;

/// The most header bytes (Ethernet through TCP) of a frame in two parts
/// segmented without joining it.
const MAX_HEADERS: usize = 256;

/// [`segment`] for a frame in two parts (see [`crate::gather`]) without
/// joining it: each segment's headers are built in `headers` from a
/// private copy of the frame's, its payload is pieces of the frame where
/// it is, and its checksum is summed reading them there; `emit` gets each
/// segment in two parts, so a destination's copy is its only one. A frame
/// that only needs its checksum completed gets it in `headers` likewise.
/// `Ok(None)`: headers longer than [`MAX_HEADERS`] or a segment in more
/// than [`SEGMENT_PIECES`] pieces: cut the frame joined instead (nothing
/// was emitted). Errors as [`segment`]'s.
pub fn segment_gathered(
    hdr: &VnetHdr,
    frame: &Gathered<'_>,
    headers: &mut Vec<u8>,
    mut emit: impl FnMut(Gathered<'_>),
) -> Result<Option<usize>, GsoError> {
    let len = frame.len();
    let mut pieces = [Foreign::EMPTY; SEGMENT_PIECES];
    if hdr.gso_type == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM == 0 {
            emit(*frame);
            return Ok(Some(1));
        }
        let start = usize::from(hdr.csum_start);
        let field = start + usize::from(hdr.csum_offset);
        if field + 2 > len {
            return Err(GsoError::Malformed);
        }
        // The switch's own copy through the checksum field (and a byte
        // more when that keeps the summed words aligned): the seed in the
        // field is read once, from the copy.
        let own = (field + 2 + (field + 2 - start) % 2).min(len);
        let Some(n) = frame.pieces(own, len, &mut pieces) else {
            return Ok(None);
        };
        headers.clear();
        headers.resize(own, 0);
        frame.copy_range(0, headers);
        let mut c = fold(sum_range(frame, own, len, sum(&headers[start..own], 0)));
        if c == 0 {
            c = 0xffff;
        }
        headers[field..field + 2].copy_from_slice(&c.to_be_bytes());
        emit(Gathered::new(headers, &pieces[..n]));
        return Ok(Some(1));
    }
    let mut copy = [0u8; MAX_HEADERS];
    let copied = len.min(MAX_HEADERS);
    frame.copy_range(0, &mut copy[..copied]);
    let l = match tcp_layout_in(hdr, &copy[..copied], len) {
        Ok(l) if l.payload <= copied => l,
        // Headers past the copy (IPv6 extensions, say): the verdict is
        // the joined frame's.
        _ if copied < len => return Ok(None),
        Ok(_) => return Err(GsoError::Malformed),
        Err(e) => return Err(e),
    };
    if hdr.gso_size < MIN_GSO_SIZE {
        return Err(GsoError::TooSmall(hdr.gso_size));
    }
    let mss = usize::from(hdr.gso_size);
    let first = FirstSegment::of(&copy[..l.payload], &l)?;
    let data = l.end - l.payload;
    let count = data.div_ceil(mss).max(1);
    // Every segment's pieces are found before the first is emitted: a
    // frame cut joined instead must not have been half sent.
    for i in 0..count {
        let from = l.payload + i * mss;
        if frame
            .pieces(from, (from + mss).min(l.end), &mut pieces)
            .is_none()
        {
            return Ok(None);
        }
    }
    for i in 0..count {
        let from = l.payload + i * mss;
        let to = (from + mss).min(l.end);
        let n = frame.pieces(from, to, &mut pieces).unwrap_or(0);
        headers.clear();
        headers.extend_from_slice(&copy[..l.payload]);
        let seg = Segment {
            index: i,
            last: i + 1 == count,
            offset: i * mss,
            payload_len: to - from,
            payload_sum: sum_range(frame, from, to, 0),
        };
        finish_segment(headers, &l, &first, &seg)?;
        emit(Gathered::new(headers, &pieces[..n]));
    }
    Ok(Some(count))
}

/// The checksum sum of `frame`'s bytes `from..to`, read where they are
/// through a small buffer, in even steps so that the words line up.
fn sum_range(frame: &Gathered<'_>, from: usize, to: usize, mut acc: u64) -> u64 {
    let mut buf = [0u8; 2048];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len());
        frame.copy_range(at, &mut buf[..n]);
        acc = sum(&buf[..n], acc);
        at += n;
    }
    acc
}
