//! Frames the switch forwards without first copying them whole: their
//! first bytes (everything the switch decides on) copied into its own
//! memory, the rest still in memory another process shares with it and
//! may rewrite at any moment (a vhost-user guest's transmit buffers).
//!
//! Such a frame reaches each destination with one copy of its bytes (into
//! the destination guest's ring, or by the kernel out of an iovec into a
//! socket) instead of two (into a batch buffer, then out). The head is
//! private on purpose: what a guest writes after the engine has decided
//! cannot change where the frame goes, which VLAN it lands in, or what
//! addresses its receivers see. The rest is only ever copied out, never
//! read as a Rust slice: the compiler may assume a slice does not change
//! under it, and this memory can.

use std::cell::RefCell;

/// Bytes of a frame the switch copies privately before deciding: the
/// Ethernet header, up to two VLAN tags and a loop probe's body fit.
pub const HEAD: usize = 64;

pub use crate::sys::Foreign;

/// A frame as a private head and the foreign rest behind it.
#[derive(Debug, Clone, Copy)]
pub struct Gathered<'a> {
    head: &'a [u8],
    rest: &'a [Foreign<'a>],
    len: usize,
}

impl<'a> Gathered<'a> {
    /// The frame made of `head` (the switch's own copy of its first bytes,
    /// at most [`HEAD`] unless the frame is no longer) and then `rest`.
    pub fn new(head: &'a [u8], rest: &'a [Foreign<'a>]) -> Gathered<'a> {
        let len = head.len() + rest.iter().map(Foreign::len).sum::<usize>();
        Gathered { head, rest, len }
    }

    /// The private head: everything the engine reads.
    pub fn head(&self) -> &'a [u8] {
        self.head
    }

    /// The foreign pieces behind the head, in order.
    pub fn rest(&self) -> &'a [Foreign<'a>] {
        self.rest
    }

    /// The frame's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the whole frame to `out`: for the transports and
    /// transformations (VLAN forms, software segmentation, MAC-NAT, a
    /// capture) that need it in one piece.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head);
        for piece in self.rest {
            let at = out.len();
            out.resize(at + piece.len(), 0);
            piece.copy_to(0, &mut out[at..]);
        }
    }

    /// The pieces covering the frame's bytes `from..to` (the head's own
    /// bytes among them), written to the front of `out`; how many, or
    /// `None` when `out` has too few slots.
    pub fn pieces(&self, from: usize, to: usize, out: &mut [Foreign<'a>]) -> Option<usize> {
        let mut n = 0;
        let mut at = 0;
        let head = std::iter::once(Foreign::from_slice(self.head));
        for piece in head.chain(self.rest.iter().copied()) {
            let (start, end) = (at, at + piece.len());
            at = end;
            let (s, e) = (from.max(start), to.min(end));
            if s < e {
                *out.get_mut(n)? = piece.sub(s - start, e - s);
                n += 1;
            }
        }
        Some(n)
    }

    /// Copies the frame's bytes `from..from + dst.len()` into `dst`.
    ///
    /// # Panics
    /// When that range is past the frame's end.
    pub fn copy_range(&self, from: usize, dst: &mut [u8]) {
        let mut skip = from;
        let mut done = 0usize;
        if skip < self.head.len() {
            let n = (self.head.len() - skip).min(dst.len());
            dst[..n].copy_from_slice(&self.head[skip..skip + n]);
            done = n;
            skip = 0;
        } else {
            skip -= self.head.len();
        }
        for piece in self.rest {
            if done == dst.len() {
                break;
            }
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            let n = (piece.len() - skip).min(dst.len() - done);
            piece.copy_to(skip, &mut dst[done..done + n]);
            done += n;
            skip = 0;
        }
        assert_eq!(done, dst.len(), "copy past a gathered frame's end");
    }
}

/// `frame` as a gathered frame: its first [`HEAD`] bytes as the head, the
/// rest cut into `pieces` foreign pieces (filled into `slots`), for tests
/// of transports that play both sides.
#[doc(hidden)]
pub fn split<'a>(frame: &'a [u8], pieces: usize, slots: &'a mut Vec<Foreign<'a>>) -> Gathered<'a> {
    let (head, rest) = frame.split_at(frame.len().min(HEAD));
    let step = rest.len().div_ceil(pieces.max(1)).max(1);
    slots.clear();
    slots.extend(rest.chunks(step).map(Foreign::from_slice));
    Gathered::new(head, slots)
}

thread_local! {
    /// Where gathered frames are joined for a transport or transformation
    /// that needs them whole: reused, so joining allocates nothing once it
    /// has grown.
    static JOINED: RefCell<(Vec<u8>, Vec<std::ops::Range<usize>>)> =
        const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Calls `f` with `frames` joined (each into one piece), in order, as
/// plain frames, a batch ([`crate::sys::MMSG_BATCH`]) at a time: the
/// second copy gathering otherwise saves, for the paths that need it.
pub fn with_joined(frames: &[Gathered<'_>], mut f: impl FnMut(&[&[u8]])) {
    let mut join = |(bytes, ranges): &mut (Vec<u8>, Vec<std::ops::Range<usize>>)| {
        for batch in frames.chunks(crate::sys::MMSG_BATCH) {
            bytes.clear();
            ranges.clear();
            for g in batch {
                let start = bytes.len();
                g.append_to(bytes);
                ranges.push(start..bytes.len());
            }
            let mut out: [&[u8]; crate::sys::MMSG_BATCH] = [&[]; crate::sys::MMSG_BATCH];
            for (o, r) in out.iter_mut().zip(ranges.iter()) {
                *o = &bytes[r.clone()];
            }
            f(&out[..ranges.len()]);
        }
    };
    JOINED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => join(&mut bufs),
        // Re-entered (a transformation of a joined frame gathering
        // again): a buffer of its own, once.
        Err(_) => join(&mut (Vec::new(), Vec::new())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn foreign(bytes: &[u8]) -> Foreign<'_> {
        Foreign::from_slice(bytes)
    }

    #[test]
    fn a_gathered_frame_reads_as_its_pieces_in_order() {
        let frame: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let rest = [
            foreign(&frame[64..100]),
            foreign(&frame[100..100]),
            foreign(&frame[100..1000]),
        ];
        let g = Gathered::new(&frame[..64], &rest);
        assert_eq!(g.len(), 1000);
        let mut joined = Vec::new();
        g.append_to(&mut joined);
        assert_eq!(joined, frame);
        for (from, n) in [
            (0, 1000),
            (10, 60),
            (60, 10),
            (64, 36),
            (99, 2),
            (500, 500),
            (1000, 0),
        ] {
            let mut dst = vec![0u8; n];
            g.copy_range(from, &mut dst);
            assert_eq!(dst, &frame[from..from + n], "{from}+{n}");
        }
    }

    #[test]
    fn joined_frames_keep_their_bounds() {
        let a: Vec<u8> = vec![1; 70];
        let b: Vec<u8> = vec![2; 30];
        let ra = [foreign(&a[64..])];
        let frames = [Gathered::new(&a[..64], &ra), Gathered::new(&b, &[])];
        let mut calls = 0;
        with_joined(&frames, |plain| {
            calls += 1;
            assert_eq!(plain.len(), 2);
            assert_eq!(plain[0], &a[..]);
            assert_eq!(plain[1], &b[..]);
            // Re-entered: still right.
            with_joined(&frames[1..], |inner| assert_eq!(inner, [&b[..]]));
        });
        assert_eq!(calls, 1);
        // More than a batch: every frame, a batch at a time.
        let many = vec![frames[1]; crate::sys::MMSG_BATCH + 3];
        let mut seen = Vec::new();
        with_joined(&many, |plain| seen.push(plain.len()));
        assert_eq!(seen, [crate::sys::MMSG_BATCH, 3]);
    }

    #[test]
    #[should_panic(expected = "past")]
    fn copying_past_the_end_is_a_bug_caught() {
        let a = [0u8; 10];
        let g = Gathered::new(&a[..4], &[]);
        g.copy_range(2, &mut [0u8; 3]);
    }
}
