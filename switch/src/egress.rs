//! The one way frames leave a port: a value saying what to send
//! ([`Outgoing`]) and what to do with what a full peer refuses
//! ([`Overflow`]), given to [`Port::send`].
//!
//! Everything the switch sends goes through here: learned unicast, flood
//! copies, VLAN-retagged forms, offloaded super-frames whole or cut into
//! segments, and frames a receive loop held and now releases. So the
//! counting, capture copies, segmentation and the hold policy live in one
//! place, whatever the transport.

use crate::counters::DropReason;
use crate::gather::{with_joined, Gathered};
use crate::gso::VnetHdr;
use crate::hold::Held;
use crate::port::{Port, PortId};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Frames that travel together.
#[derive(Debug, Clone, Copy)]
pub enum Frames<'a> {
    /// Plain frames, in order.
    Plain(&'a [&'a [u8]]),
    /// One frame with a virtio-net header (from a tap with offloads): a
    /// TSO/GSO super-frame or a frame whose checksum is partial.
    Offloaded(&'a VnetHdr, &'a [u8]),
    /// Plain frames, in order, each a private head and a foreign rest (see
    /// [`crate::gather`]).
    Gathered(&'a [Gathered<'a>]),
    /// One offloaded frame, likewise in two parts.
    OffloadedGathered(&'a VnetHdr, &'a Gathered<'a>),
}

/// Frames on their way to one port, and the port they came in on.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The port the frames arrived on.
    pub ingress: PortId,
    /// What to send.
    pub frames: Frames<'a>,
}

/// What happens to frames a full peer refuses.
pub enum Overflow<'h> {
    /// Dropped and counted as [`DropReason::EgressFull`]: floods, and
    /// senders that cannot wait.
    Drop,
    /// Held for the receive loop to deliver before it reads more (see
    /// [`crate::hold`]), when the peer can say when it is writable again
    /// and is not stalled; dropped otherwise.
    Hold(&'h mut Held),
}

impl Overflow<'_> {
    /// The same policy, borrowed for one more send.
    pub fn reborrow(&mut self) -> Overflow<'_> {
        match self {
            Overflow::Drop => Overflow::Drop,
            Overflow::Hold(h) => Overflow::Hold(h),
        }
    }
}

thread_local! {
    /// Where software segmentation of a frame in two parts builds each
    /// segment's headers: reused, so cutting allocates nothing once grown.
    static SEGMENT_HEADERS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };

    /// Where software segmentation builds each segment: reused, so cutting
    /// a super-frame allocates nothing once the buffer has grown.
    static SEGMENT_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Port {
    /// Sends `out` to this port's peer without blocking, counting every
    /// frame as sent or dropped. Offloaded frames go whole to a transport
    /// that takes them and are cut into plain frames (checksum completed,
    /// TCP segmented) for the others; a frame that cannot be cut is
    /// dropped as [`DropReason::Unsegmentable`]. A peer found gone marks
    /// the port closing; its owner removes it.
    pub fn send(self: &Arc<Self>, out: Outgoing<'_>, mut overflow: Overflow<'_>, now: Duration) {
        let ingress = out.ingress;
        match out.frames {
            Frames::Plain(frames) => self.send_plain(ingress, frames, &mut overflow, now),
            Frames::Offloaded(hdr, frame) => {
                match self.tx().transmit_offloaded(ingress, hdr, frame) {
                    Some(Ok(())) => self.note_sent(frame),
                    // Transports that take offloaded frames cannot wait:
                    // whatever the policy, a refusal is a drop.
                    Some(Err(e)) => {
                        self.count_failure(e, now);
                    }
                    None => {
                        let result = SEGMENT_BUF.with_borrow_mut(|buf| {
                            crate::gso::segment(hdr, frame, buf, |piece| {
                                self.send_plain(ingress, &[piece], &mut overflow, now)
                            })
                        });
                        if let Err(e) = result {
                            self.drop_uncut(e, now);
                        }
                    }
                }
            }
            Frames::Gathered(frames) => self.send_gathered(ingress, frames, overflow, now),
            Frames::OffloadedGathered(hdr, frame) => {
                match self.tx().transmit_offloaded_gathered(ingress, hdr, frame) {
                    Some(Ok(())) => self.note_sent_gathered(frame),
                    Some(Err(e)) => {
                        self.count_failure(e, now);
                    }
                    // Not whole: cut in software, each segment in pieces.
                    None => self.send_segments(ingress, hdr, frame, overflow, now),
                }
            }
        }
    }

    /// Cuts an offloaded frame in two parts into plain segments (or
    /// completes its checksum), each a private header and pieces of the
    /// frame where it is, and sends them as gathered frames: a transport
    /// that takes those copies each segment once. A frame that cannot be
    /// cut so is cut joined.
    fn send_segments(
        self: &Arc<Self>,
        ingress: PortId,
        hdr: &VnetHdr,
        frame: &Gathered<'_>,
        mut overflow: Overflow<'_>,
        now: Duration,
    ) {
        let mut cut = |headers: &mut Vec<u8>| {
            crate::gso::segment_gathered(hdr, frame, headers, |segment| {
                self.send_gathered(ingress, &[segment], overflow.reborrow(), now)
            })
        };
        let result = SEGMENT_HEADERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut headers) => cut(&mut headers),
            Err(_) => cut(&mut Vec::new()),
        });
        match result {
            Ok(Some(_)) => {}
            Ok(None) => with_joined(std::slice::from_ref(frame), |joined| {
                if let [joined] = joined {
                    let out = Outgoing {
                        ingress,
                        frames: Frames::Offloaded(hdr, joined),
                    };
                    self.send(out, overflow.reborrow(), now);
                }
            }),
            Err(e) => self.drop_uncut(e, now),
        }
    }

    /// Counts an offloaded frame that could not be cut.
    fn drop_uncut(&self, e: crate::gso::GsoError, now: Duration) {
        let reason = match e {
            crate::gso::GsoError::TooSmall(_) => DropReason::GsoTooSmall,
            _ => DropReason::Unsegmentable,
        };
        self.drop_frame_because(reason, now, || {
            io::Error::new(io::ErrorKind::InvalidData, e)
        });
    }

    /// Sends gathered plain frames: in pieces to a transport that takes
    /// them so (one copy), joined to the others, and joined when frames
    /// must be held (held frames are copies anyway).
    fn send_gathered(
        self: &Arc<Self>,
        ingress: PortId,
        frames: &[Gathered<'_>],
        mut overflow: Overflow<'_>,
        now: Duration,
    ) {
        if let Overflow::Drop = overflow {
            let transmit = |f: &[Gathered<'_>]| self.tx().transmit_gathered(ingress, f);
            let note = |f: Gathered<'_>| self.note_sent_gathered(&f);
            if let Some(done) = self.send_until_full_with(frames, transmit, note, now) {
                // What a full peer did not take is dropped, as for plain
                // frames with nowhere to hold them.
                for _ in &frames[done..] {
                    self.drop_frame(DropReason::EgressFull, now, None);
                }
                return;
            }
        }
        with_joined(frames, |plain| {
            self.send_plain(ingress, plain, &mut overflow, now)
        })
    }

    /// Sends plain frames; what the peer refuses goes as `overflow` says.
    /// Frames behind ones already held for this port are held too, to keep
    /// their order.
    fn send_plain(
        self: &Arc<Self>,
        ingress: PortId,
        frames: &[&[u8]],
        overflow: &mut Overflow<'_>,
        now: Duration,
    ) {
        let held = match overflow {
            Overflow::Hold(h) => Some(&mut **h),
            Overflow::Drop => None,
        };
        let done = match &held {
            Some(h) if h.holds_for(self) => 0,
            _ => self.send_until_full(ingress, frames, now),
        };
        let rest = &frames[done..];
        if rest.is_empty() {
            return;
        }
        match held {
            Some(h) if crate::hold::may_hold(self, now) => h.push(self, ingress, rest),
            _ => {
                for _ in rest {
                    self.drop_frame(DropReason::EgressFull, now, None);
                }
            }
        }
    }
}
