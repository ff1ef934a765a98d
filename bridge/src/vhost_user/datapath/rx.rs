//! Frames from the switch into the buffers the guest posted on its RX
//! queue: one chain per frame, or with MRG_RXBUF as many chains as the
//! frame needs.

use super::{next_chain, Accepted, Bad, Rings, HDR_LEN};
use std::sync::Arc;
use switchyard_switch::gather::{Foreign, Gathered};
use switchyard_switch::gso::VnetHdr;
use switchyard_switch::port::{PortId, SendError, Transmit};
use switchyard_switch::DropReason;
use vhost_user_backend::{VringState, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap,
};

/// The most chains one frame may span: a 64 KiB super-frame in the
/// smallest buffers Linux posts for MRG_RXBUF (1,500 bytes and up) needs
/// 45.
const MAX_BUFFERS: usize = 64;

/// The plain frame's header: no flags, no GSO, `num_buffers` 1.
const PLAIN: VnetHdr = VnetHdr {
    flags: 0,
    gso_type: 0,
    hdr_len: 0,
    gso_size: 0,
    csum_start: 0,
    csum_offset: 0,
};

/// The switch's side of a vhost-user port: frames into the guest's RX
/// queue.
pub(in crate::vhost_user) struct ToGuest {
    pub(in crate::vhost_user) rings: Arc<Rings>,
}

impl ToGuest {
    /// Places each frame behind its header, in order, under one lock of the
    /// queue, and notifies the guest once for all of them (when it asked
    /// to be). Stops at the first frame that cannot be placed.
    fn place<'f>(
        &self,
        ingress: PortId,
        frames: impl Iterator<Item = (&'f VnetHdr, Body<'f>)>,
    ) -> (usize, Option<SendError>) {
        let Some(vring) = self.rings.rx_for(ingress) else {
            return (0, Some(SendError::Down));
        };
        if self.rings.guard.faulted() {
            // The port hangs up on this frontend (see `guard`); nothing
            // more goes into its memory.
            let why = "the frontend cut its memory file short under the switch's mapping";
            let gone = std::io::Error::new(std::io::ErrorKind::InvalidData, why);
            return (0, Some(SendError::Gone(gone)));
        }
        let guest = self.rings.accepted();
        let mut state = vring.get_mut();
        if !state.is_enabled() || !state.get_queue().ready() {
            return (0, Some(SendError::Down));
        }
        let mem = self.rings.mem.memory();
        let mut filler = Filler {
            mem: &mem,
            guest,
            returned: false,
        };
        let mut sent = 0;
        let mut err = None;
        for (hdr, frame) in frames {
            match filler.put(&mut state, hdr, frame) {
                Ok(()) => sent += 1,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if filler.returned && state.needs_notification().unwrap_or(true) {
            if let Err(e) = state.signal_used_queue() {
                tracing::debug!("vhost-user: cannot notify the guest: {e}");
            }
        }
        (sent, err)
    }
}

impl Transmit for ToGuest {
    fn transmit(&self, ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        self.place(ingress, frames.iter().map(|f| (&PLAIN, Body::Whole(f))))
    }

    /// Copied from where the sending guest wrote them: the one copy.
    fn transmit_gathered(
        &self,
        ingress: PortId,
        frames: &[Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        Some(self.place(ingress, frames.iter().map(|f| (&PLAIN, Body::Gathered(*f)))))
    }

    fn transmit_offloaded_gathered(
        &self,
        ingress: PortId,
        hdr: &VnetHdr,
        frame: &Gathered<'_>,
    ) -> Option<Result<(), SendError>> {
        if !self.rings.accepted().takes(hdr) {
            return None;
        }
        self.place_one(ingress, hdr, Body::Gathered(*frame))
    }

    /// Whole when the guest accepted this kind of offload (GUEST_CSUM,
    /// GUEST_TSO4/6); cut by the switch otherwise.
    fn transmit_offloaded(
        &self,
        ingress: PortId,
        hdr: &VnetHdr,
        frame: &[u8],
    ) -> Option<Result<(), SendError>> {
        if !self.rings.accepted().takes(hdr) {
            return None;
        }
        self.place_one(ingress, hdr, Body::Whole(frame))
    }
}

impl ToGuest {
    /// Places one offloaded frame the guest takes whole.
    fn place_one(
        &self,
        ingress: PortId,
        hdr: &VnetHdr,
        body: Body<'_>,
    ) -> Option<Result<(), SendError>> {
        match self.place(ingress, std::iter::once((hdr, body))) {
            (1, _) => Some(Ok(())),
            (_, Some(e)) => Some(Err(e)),
            (_, None) => Some(Err(SendError::Full)),
        }
    }
}

/// A frame's bytes as the switch hands them over: whole, or in two parts
/// (its head, then pieces of the sending guest's memory).
#[derive(Clone, Copy)]
enum Body<'a> {
    Whole(&'a [u8]),
    Gathered(Gathered<'a>),
}

/// At most `max` bytes of a frame from one place.
enum Chunk<'a> {
    Own(&'a [u8]),
    /// `len` bytes of a foreign piece from `offset`.
    Foreign(&'a Foreign<'a>, usize, usize),
}

impl<'a> Body<'a> {
    fn len(&self) -> usize {
        match self {
            Body::Whole(f) => f.len(),
            Body::Gathered(g) => g.len(),
        }
    }

    /// The bytes from `at`, at most `max`, as far as one place holds them.
    fn chunk(&self, at: usize, max: usize) -> Chunk<'a> {
        let own = |b: &'a [u8], at: usize| Chunk::Own(&b[at..b.len().min(at + max)]);
        match self {
            Body::Whole(f) => own(f, at),
            Body::Gathered(g) => {
                let head = g.head();
                if at < head.len() {
                    return own(head, at);
                }
                let mut off = at - head.len();
                for piece in g.rest() {
                    if off < piece.len() {
                        return Chunk::Foreign(piece, off, (piece.len() - off).min(max));
                    }
                    off -= piece.len();
                }
                Chunk::Own(&[])
            }
        }
    }
}

/// Places frames into posted chains of one locked RX queue.
struct Filler<'m> {
    mem: &'m GuestMemoryMmap,
    guest: Accepted,
    /// Some chain went back to the guest: it may need a notification.
    returned: bool,
}

type State = VringState<super::Memory>;

impl Filler<'_> {
    /// Places one frame: the chains it used go back to the guest filled;
    /// when the guest posted too few, none is taken (they wait for the
    /// next frame) and the frame is refused as full; a chain the guest got
    /// wrong goes back empty and the frame is refused with the reason.
    fn put(&mut self, state: &mut State, hdr: &VnetHdr, frame: Body<'_>) -> Result<(), SendError> {
        let header = self.guest.header_for(hdr);
        let header = &header[..self.guest.header_len()];
        let merge = self.guest.merges();
        let queue = state.get_queue_mut();
        let start = queue.next_avail();
        let mut place = Placing {
            header,
            body: frame,
            done: 0,
            num_buffers_at: [None; 2],
        };
        let mut chains = [(0u16, 0u32); MAX_BUFFERS];
        let mut n = 0;
        let outcome = loop {
            let chain = match next_chain(queue, self.mem) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    // Nothing taken: the chains popped so far are the
                    // guest's still, for the next frame.
                    queue.set_next_avail(start);
                    return Err(SendError::Full);
                }
                Err(bad) => break Err(bad),
            };
            let head = chain.head_index();
            let filled = place.fill(chain, self.mem);
            chains[n] = (head, *filled.as_ref().unwrap_or(&0));
            n += 1;
            match filled {
                Err(bad) => break Err(bad),
                Ok(_) if place.finished() => break Ok(()),
                Ok(_) if !merge || n == MAX_BUFFERS => break Err(Bad::TooSmall),
                Ok(_) => {}
            }
        };
        if outcome.is_ok() && merge {
            // The header went first, into the first chain; only now is it
            // known how many chains the frame took.
            let count = u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes();
            for (byte, at) in count.iter().zip(place.num_buffers_at) {
                if let Some(at) = at {
                    let _ = self.mem.write_obj(*byte, at);
                }
            }
        }
        let mut outcome = outcome;
        for (head, len) in &chains[..n] {
            // A refused frame's chains go back empty, for the guest to post
            // again.
            let len = if outcome.is_ok() { *len } else { 0 };
            match queue.add_used(self.mem, *head, len) {
                Ok(()) => self.returned = true,
                // The used ring is outside the guest's memory.
                Err(_) => outcome = Err(Bad::Descriptor),
            }
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(Bad::Descriptor) => Err(SendError::Refused(DropReason::BadDescriptor)),
            Err(Bad::TooSmall | Bad::TooMany) => Err(SendError::Refused(DropReason::EgressError)),
        }
    }
}

/// One frame (its header, then its bytes) being copied into chains.
struct Placing<'a> {
    header: &'a [u8],
    body: Body<'a>,
    /// Bytes of both parts copied so far.
    done: usize,
    /// Where the header's `num_buffers` landed in guest memory.
    num_buffers_at: [Option<GuestAddress>; 2],
}

impl Placing<'_> {
    fn total(&self) -> usize {
        self.header.len() + self.body.len()
    }

    fn finished(&self) -> bool {
        self.done == self.total()
    }

    /// Copies what is left into the writable descriptors of `chain`;
    /// returns the bytes this chain took.
    fn fill(
        &mut self,
        chain: DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> Result<u32, Bad> {
        let total = self.total();
        let mut took = 0usize;
        let mut more = false;
        let mut seen = false;
        for desc in chain {
            seen = true;
            if self.done == total {
                more = false;
                break;
            }
            more = desc.has_next();
            if !desc.is_write_only() {
                return Err(Bad::Descriptor);
            }
            let mut addr = desc.addr();
            let mut room = desc.len() as usize;
            while room > 0 && self.done < total {
                let head = self.header.len();
                let chunk = if self.done < head {
                    let n = room.min(head - self.done);
                    self.note_num_buffers(addr, n);
                    Chunk::Own(&self.header[self.done..self.done + n])
                } else {
                    self.body.chunk(self.done - head, room)
                };
                let n = match chunk {
                    Chunk::Own(bytes) => {
                        mem.write_slice(bytes, addr).map_err(|_| Bad::Descriptor)?;
                        bytes.len()
                    }
                    Chunk::Foreign(piece, offset, n) => {
                        write_foreign(mem, addr, piece, offset, n)?;
                        n
                    }
                };
                if n == 0 {
                    // A body shorter than it said: nothing more to place.
                    return Err(Bad::Descriptor);
                }
                self.done += n;
                took += n;
                room -= n;
                addr = addr.checked_add(n as u64).ok_or(Bad::Descriptor)?;
            }
        }
        // No descriptor at all (a head past the table), or the chain ended
        // on one that points on: it loops, is longer than the queue, or
        // points past the table.
        if !seen || more {
            return Err(Bad::Descriptor);
        }
        u32::try_from(took).map_err(|_| Bad::Descriptor)
    }

    /// Notes where header bytes 10 and 11 (`num_buffers`) go when the `n`
    /// header bytes from `self.done` are copied to `addr`.
    fn note_num_buffers(&mut self, addr: GuestAddress, n: usize) {
        for (i, slot) in self.num_buffers_at.iter_mut().enumerate() {
            let pos = HDR_LEN - 2 + i;
            if (self.done..self.done + n).contains(&pos) {
                *slot = addr.checked_add((pos - self.done) as u64);
            }
        }
    }
}

/// Copies `n` bytes of `piece` from `offset` into guest memory at `addr`
/// (which may span regions).
fn write_foreign(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    piece: &Foreign<'_>,
    offset: usize,
    n: usize,
) -> Result<(), Bad> {
    let mut done = 0;
    for slice in mem.get_slices(addr, n) {
        let slice = slice.map_err(|_| Bad::Descriptor)?;
        crate::sys::copy_foreign(piece, offset + done, &slice);
        done += slice.len();
    }
    if done == n {
        Ok(())
    } else {
        Err(Bad::Descriptor)
    }
}
