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
    /// The untagged, retagged and joined copies of the frame being
    /// forwarded: built at most once per frame, in buffers that outlive
    /// it, so VLAN translation allocates nothing per frame.
    pub(crate) static VLAN_FORMS: RefCell<Bufs> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// The untagged copy, the tagged copy, and the frame joined (when it came
/// in two parts and a copy of it is needed).
pub(crate) type Bufs = (Vec<u8>, Vec<u8>, Vec<u8>);

/// A frame as it came: whole, or in two parts (see [`crate::gather`]).
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Whole(&'a [u8]),
    Gathered(Gathered<'a>),
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Whole(f) => f.len(),
            Source::Gathered(g) => g.len(),
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
    /// `bufs.2` holds the frame joined.
    joined: bool,
    bufs: &'a mut Bufs,
    /// The offload header of the frame as it arrived; `None`: a plain frame.
    offload: Option<&'a VnetHdr>,
}

/// `bytes` from `ingress`, plain or offloaded as `hdr` describes.
#[inline]
pub(crate) fn outgoing<'a>(
    ingress: PortId,
    hdr: Option<&'a VnetHdr>,
    bytes: &'a &'a [u8],
) -> Outgoing<'a> {
    let frames = match hdr {
        None => Frames::Plain(std::slice::from_ref(bytes)),
        Some(h) => Frames::Offloaded(h, bytes),
    };
    Outgoing { ingress, frames }
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
            joined: false,
            bufs,
            offload,
        }
    }

    /// The bytes a port with this egress form must receive (tagged or
    /// untagged copies built once per frame); `None`: the frame as it came.
    fn bytes_for(&mut self, egress: Egress) -> Option<&[u8]> {
        if self.class.leaves_as_is(egress) {
            return None;
        }
        let (untagged, tagged, joined) = &mut *self.bufs;
        let whole = match self.frame {
            Source::Whole(f) => f,
            Source::Gathered(g) => {
                if !self.joined {
                    joined.clear();
                    g.append_to(joined);
                    self.joined = true;
                }
                &joined[..]
            }
        };
        match egress {
            Egress::Untagged => {
                if !self.untagged {
                    crate::vlan::untag_into(whole, untagged);
                    self.untagged = true;
                }
                Some(&self.bufs.0)
            }
            Egress::Tagged => {
                if !self.tagged {
                    crate::vlan::tag_into(whole, self.class.vid, tagged);
                    self.tagged = true;
                }
                Some(&self.bufs.1)
            }
        }
    }

    /// How the frame leaves `port`: in the form its membership asks for,
    /// with the offload header shifted by a tag added or removed.
    fn form(&mut self, port: &Port) -> Form<'_> {
        let Some(egress) = port.egress(self.class.vid) else {
            return Form::Outside;
        };
        let (offload, original_len) = (self.offload, self.frame.len());
        let Some(bytes) = self.bytes_for(egress) else {
            return Form::AsIs;
        };
        match offload.map(|h| h.shifted(bytes.len() as isize - original_len as isize)) {
            None => Form::Send(None, bytes),
            Some(Some(h)) => Form::Send(Some(h), bytes),
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
        let (frame, offload) = (self.frame, self.offload);
        let frame = &frame;
        match self.form(port) {
            Form::Send(hdr, bytes) => {
                port.send(outgoing(ingress, hdr.as_ref(), &bytes), overflow, now)
            }
            Form::AsIs => {
                let frames = match (frame, offload) {
                    (Source::Whole(f), None) => Frames::Plain(std::slice::from_ref(f)),
                    (Source::Whole(f), Some(h)) => Frames::Offloaded(h, f),
                    (Source::Gathered(g), None) => Frames::Gathered(std::slice::from_ref(g)),
                    (Source::Gathered(g), Some(h)) => Frames::OffloadedGathered(h, g),
                };
                port.send(Outgoing { ingress, frames }, overflow, now)
            }
            Form::Unsegmentable => port.drop_frame(crate::DropReason::Unsegmentable, now, None),
            Form::Outside => {}
        }
    }
}

/// How one frame leaves one port.
enum Form<'b> {
    /// As it came (and with the offload header it came with).
    AsIs,
    /// These bytes, offloaded as the header says or plain.
    Send(Option<VnetHdr>, &'b [u8]),
    /// Not at all: the port is outside the frame's VLAN.
    Outside,
    /// A tag added or removed left the offload header out of range.
    Unsegmentable,
}
