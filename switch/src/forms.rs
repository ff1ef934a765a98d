//! One frame's bytes in the form each egress port must receive it: as it
//! came, untagged or tagged for a VLAN, its offload header shifted by the
//! tag added or removed. Each copy is built at most once per frame, in
//! buffers reused frame after frame.

use crate::egress::{Frames, Outgoing, Overflow};
use crate::gather::Gathered;
use crate::gso::VnetHdr;
use crate::port::{Port, PortId};
use crate::vlan::{Classified, Egress};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

thread_local! {
    /// The untagged and retagged copies of the frame being forwarded (of
    /// its head, for a frame in two parts): built at most once per frame,
    /// in buffers that outlive it, so VLAN translation allocates nothing
    /// per frame.
    pub(crate) static VLAN_FORMS: RefCell<Bufs> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The untagged copy and the tagged copy.
pub(crate) type Bufs = (Vec<u8>, Vec<u8>);

/// A frame as it came: whole, or in two parts (see [`crate::gather`]).
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Whole(&'a [u8]),
    Gathered(Gathered<'a>),
}

impl<'a> Source<'a> {
    fn len(&self) -> usize {
        match self {
            Source::Whole(f) => f.len(),
            Source::Gathered(g) => g.len(),
        }
    }

    /// The bytes a tag is added to or removed from: the whole frame, or
    /// the head, which holds the tag (everything the engine reads).
    fn front(&self) -> &'a [u8] {
        match self {
            Source::Whole(f) => f,
            Source::Gathered(g) => g.head(),
        }
    }

    /// The same frame with its front replaced by `front`.
    fn with_front<'b>(&self, front: &'b [u8]) -> Source<'b>
    where
        'a: 'b,
    {
        match self {
            Source::Whole(_) => Source::Whole(front),
            Source::Gathered(g) => Source::Gathered(Gathered::new(front, g.rest())),
        }
    }

    /// The frame (offloaded as `hdr` says, or plain), ready to send.
    fn frames<'b>(&'b self, hdr: Option<&'b VnetHdr>) -> Frames<'b> {
        match (self, hdr) {
            (Source::Whole(f), None) => Frames::Plain(std::slice::from_ref(f)),
            (Source::Whole(f), Some(h)) => Frames::Offloaded(h, f),
            (Source::Gathered(g), None) => Frames::Gathered(std::slice::from_ref(g)),
            (Source::Gathered(g), Some(h)) => Frames::OffloadedGathered(h, g),
        }
    }
}

/// One frame's bytes as each kind of egress port must receive them.
pub(crate) struct Forms<'a> {
    frame: Source<'a>,
    class: Classified,
    /// `bufs.0` holds the untagged copy.
    untagged: bool,
    /// `bufs.1` holds the tagged copy.
    tagged: bool,
    bufs: &'a mut Bufs,
    /// The offload header of the frame as it arrived; `None`: a plain frame.
    offload: Option<&'a VnetHdr>,
}

impl<'a> Forms<'a> {
    pub(crate) fn new(
        frame: Source<'a>,
        class: Classified,
        bufs: &'a mut Bufs,
        offload: Option<&'a VnetHdr>,
    ) -> Self {
        Forms {
            frame,
            class,
            untagged: false,
            tagged: false,
            bufs,
            offload,
        }
    }

    /// The frame a port with this egress form must receive (tagged or
    /// untagged copies built once per frame: of a frame in two parts,
    /// of its head only, the rest stays where it is).
    fn form_for(&mut self, egress: Egress) -> Source<'_> {
        if self.class.leaves_as_is(egress) {
            return self.frame;
        }
        let front = self.frame.front();
        let bytes = match egress {
            Egress::Untagged => {
                if !self.untagged {
                    crate::vlan::untag_into(front, &mut self.bufs.0);
                    self.untagged = true;
                }
                &self.bufs.0
            }
            Egress::Tagged => {
                if !self.tagged {
                    crate::vlan::tag_into(front, self.class.vid, &mut self.bufs.1);
                    self.tagged = true;
                }
                &self.bufs.1
            }
        };
        self.frame.with_front(bytes)
    }

    /// How the frame leaves `port`: in the form its membership asks for,
    /// with the offload header shifted by a tag added or removed.
    fn form(&mut self, port: &Port) -> Form<'_> {
        let Some(egress) = port.egress(self.class.vid) else {
            return Form::Outside;
        };
        let (offload, original_len) = (self.offload, self.frame.len());
        let frame = self.form_for(egress);
        match offload.map(|h| h.shifted(frame.len() as isize - original_len as isize)) {
            None => Form::Send(None, frame),
            Some(Some(h)) => Form::Send(Some(h), frame),
            Some(None) => Form::Unsegmentable,
        }
    }

    /// Sends the frame through `port` in the form its membership asks for,
    /// or not at all when the port is outside the frame's VLAN.
    pub(crate) fn send(
        &mut self,
        ingress: PortId,
        port: &Arc<Port>,
        overflow: Overflow<'_>,
        now: Duration,
    ) {
        match self.form(port) {
            Form::Send(hdr, frame) => {
                let frames = frame.frames(hdr.as_ref());
                port.send(Outgoing { ingress, frames }, overflow, now)
            }
            Form::Unsegmentable => port.drop_frame(crate::DropReason::Unsegmentable, now, None),
            Form::Outside => {}
        }
    }
}

/// How one frame leaves one port.
enum Form<'b> {
    /// This frame, offloaded as the header says or plain.
    Send(Option<VnetHdr>, Source<'b>),
    /// Not at all: the port is outside the frame's VLAN.
    Outside,
    /// A tag added or removed left the offload header out of range.
    Unsegmentable,
}
