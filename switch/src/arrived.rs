//! What forwarding needs of a frame as it arrived: whole, or in two parts
//! (see [`crate::gather`]).

use crate::egress::Frames;
use crate::engine::{Decided, Decision, Engine};
use crate::forms::Source;
use crate::gather::Gathered;
use crate::gso::VnetHdr;
use crate::port::Port;
use crate::vlan::Classified;
use std::time::Duration;

/// A frame as it arrived, whole ([`&[u8]`](slice)) or in two parts
/// ([`Gathered`]): what forwarding needs of either.
pub(crate) trait Arrived<'f>: Copy + 'f {
    /// The bytes the engine decides on: the whole frame, or the head.
    fn headers(self) -> &'f [u8];
    /// The frame's length.
    fn length(self) -> usize;
    /// Counts (and, while captured, copies) it as received on `port`.
    fn count_on(self, port: &Port);
    /// `frames` (one, when `offload` is given), ready to send.
    fn frames<'a>(offload: Option<&'a VnetHdr>, frames: &'a [Self]) -> Frames<'a>
    where
        'f: 'a;
    /// The frame, for VLAN forms.
    fn source(self) -> Source<'f>;
}

impl<'f> Arrived<'f> for &'f [u8] {
    fn headers(self) -> &'f [u8] {
        self
    }
    fn length(self) -> usize {
        self.len()
    }
    fn count_on(self, port: &Port) {
        port.note_received(self)
    }
    fn frames<'a>(offload: Option<&'a VnetHdr>, frames: &'a [Self]) -> Frames<'a>
    where
        'f: 'a,
    {
        match (offload, frames) {
            (Some(h), [f]) => Frames::Offloaded(h, f),
            _ => Frames::Plain(frames),
        }
    }
    fn source(self) -> Source<'f> {
        Source::Whole(self)
    }
}

impl<'f> Arrived<'f> for Gathered<'f> {
    fn headers(self) -> &'f [u8] {
        self.head()
    }
    fn length(self) -> usize {
        self.len()
    }
    fn count_on(self, port: &Port) {
        port.note_received_gathered(&self)
    }
    fn frames<'a>(offload: Option<&'a VnetHdr>, frames: &'a [Self]) -> Frames<'a>
    where
        'f: 'a,
    {
        match (offload, frames) {
            (Some(h), [f]) => Frames::OffloadedGathered(h, f),
            _ => Frames::Gathered(frames),
        }
    }
    fn source(self) -> Source<'f> {
        Source::Gathered(self)
    }
}

/// The engine's decision for a plain `frame`: over the plain-frame limit
/// (which the engine checks on the bytes it sees, the head of a gathered
/// frame) it is dropped as too long.
pub(crate) fn decide<'f>(
    engine: &mut Engine,
    ingress: &Port,
    frame: impl Arrived<'f>,
    now: Duration,
) -> Decided {
    if frame.length() > crate::MAX_FRAME {
        return Decided {
            decision: Decision::Drop(crate::DropReason::TooLong),
            class: Classified::TRANSPARENT,
            notice: None,
        };
    }
    engine.decide(ingress.id(), frame.headers(), now)
}
