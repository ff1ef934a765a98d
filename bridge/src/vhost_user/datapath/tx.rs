//! The guest's TX queue drained into the switch in batches, on the
//! backend's worker thread.

use super::{next_chain, Bad, Rings};
use std::sync::{Arc, Mutex};
use switchyard_switch::egress::{Frames, Overflow};
use switchyard_switch::gather::{Foreign, Gathered, HEAD};
use switchyard_switch::gso::{VnetHdr, MAX_GSO_FRAME};
use switchyard_switch::{DropReason, Port, Switch};
use vhost_user_backend::VringT;
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Address, Bytes, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap};

/// A queue's state, locked.
type State = vhost_user_backend::VringState<super::Memory>;

/// Chains taken off the TX queue per batch.
const TX_BATCH: usize = 64;

/// The longest chain a guest may post on its TX queue: a header and the
/// largest super-frame (HOST_TSO4/6).
const MAX_CHAIN: usize = super::HDR_LEN + MAX_GSO_FRAME;

/// Frame bytes after which a batch ends: the guest gets its chains back
/// (and its TCP stack its send budget) once a batch is forwarded, so a
/// batch of super-frames is kept to about four.
const BATCH_BYTES: usize = 256 * 1024;

/// Bytes of the TX batch buffer: room for a whole chain (a frame in too
/// many pieces is copied whole) after the heads of a batch.
const TX_BUFFER: usize = 512 * 1024;

/// The most foreign pieces (descriptors, or their parts in different
/// memory regions) one frame may be forwarded in; a frame in more is
/// copied whole instead. Linux sends a super-frame in up to 19.
const MAX_PIECES: usize = 64;

/// The most foreign pieces of one batch: a batch ends early when fewer
/// than [`MAX_PIECES`] are left (26 Linux super-frames; plain frames come
/// in one or two).
const BATCH_PIECES: usize = 512;

/// One frame of a batch: its private bytes in the buffer (the virtio-net
/// header, then the frame's head, or the whole frame when it is short or
/// in too many pieces), its foreign pieces and, for a partial checksum or
/// a super-frame, its offload header.
#[derive(Clone, Default)]
struct Taken {
    start: usize,
    end: usize,
    pieces: std::ops::Range<usize>,
    offload: Option<VnetHdr>,
}

/// What a batch keeps between taking chains and giving them back: reused
/// batch after batch, so no allocation per frame. (The foreign pieces
/// live on the stack, for as long as the memory they point into.)
#[derive(Default)]
struct Batch {
    /// Private bytes: each frame's header and head.
    buf: Vec<u8>,
    taken: Vec<Taken>,
    /// Heads of the chains taken, to give back once forwarded.
    chains: Vec<u16>,
}

/// The guest's side: its TX queue drained into the switch.
pub(in crate::vhost_user) struct FromGuest {
    rings: Arc<Rings>,
    switch: Arc<Switch>,
    port: Arc<Port>,
    batch: Mutex<Batch>,
}

impl FromGuest {
    /// The receive half of `port`.
    pub(in crate::vhost_user) fn new(
        rings: Arc<Rings>,
        switch: Arc<Switch>,
        port: Arc<Port>,
    ) -> FromGuest {
        FromGuest {
            rings,
            switch,
            port,
            batch: Mutex::new(Batch::default()),
        }
    }

    /// Drains TX queue `queue` in batches: each frame's header and first
    /// bytes copied out of the guest's buffers (what the switch decides
    /// on), the rest forwarded from where the guest wrote it, so each
    /// destination's copy is the only one; the chains go back to the guest
    /// once the batch is forwarded. Guest notifications stay off while a
    /// batch is in flight and the queue is looked at again before they are
    /// turned back on (EVENT_IDX).
    pub(in crate::vhost_user) fn drain(&self, queue: usize) {
        let Some(vring) = self.rings.get(queue) else {
            return;
        };
        let mut batch = match self.batch.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        if batch.buf.len() < TX_BUFFER {
            batch.buf.resize(TX_BUFFER, 0);
        }
        loop {
            let _ = vring.disable_notification();
            let mut progressed = false;
            loop {
                // Held until the batch's chains are back: the foreign
                // pieces borrow this mapping.
                let mem = self.rings.mem.memory();
                let mut pieces = [Foreign::EMPTY; BATCH_PIECES];
                // The queue stays locked until its chains are back: a
                // frontend that stops or resets it meanwhile (GET_VRING_BASE,
                // SET_VRING_ADDR) waits, and is told a base whose chains
                // are all returned.
                let mut state = vring.get_mut();
                let popped = self.take_batch(&mut state, &mem, &mut batch, &mut pieces);
                progressed |= popped > 0;
                if popped == 0 {
                    break;
                }
                self.forward(&batch, &pieces);
                self.give_back(&mut state, &mem, &mut batch);
            }
            // True: the guest posted more while notifications were off. A
            // ring that claims more but yields no chain (a hostile index)
            // must not keep this thread spinning: wait for the next kick.
            match vring.enable_notification() {
                Ok(true) if progressed => continue,
                _ => break,
            }
        }
        if self.rings.guard.faulted() {
            self.bad("the frontend cut its memory file short under the switch's mapping");
            self.port.close();
        }
    }

    /// Forwards a batch in order: runs of plain frames together, each
    /// offloaded frame on its own.
    fn forward(&self, batch: &Batch, pieces: &[Foreign<'_>]) {
        let empty = Gathered::new(&[], &[]);
        let mut frames = [empty; TX_BATCH];
        let mut run = 0;
        let now = self.switch.now();
        for t in &batch.taken {
            let frame = Gathered::new(&batch.buf[t.start..t.end], &pieces[t.pieces.clone()]);
            match &t.offload {
                None => {
                    frames[run] = frame;
                    run += 1;
                    continue;
                }
                Some(hdr) => {
                    self.flush(&frames[..run], now);
                    run = 0;
                    if hdr.gso_too_small() {
                        // Taken whole, a tiny segment size would make the
                        // next guest or tap cut it into thousands.
                        self.port.drop_frame(DropReason::GsoTooSmall, now, None);
                    } else {
                        let f = Frames::OffloadedGathered(hdr, &frame);
                        self.switch.forward(&self.port, f, Overflow::Drop, now);
                    }
                }
            }
        }
        self.flush(&frames[..run], now);
    }

    fn flush(&self, frames: &[Gathered<'_>], now: std::time::Duration) {
        if !frames.is_empty() {
            let f = Frames::Gathered(frames);
            self.switch.forward(&self.port, f, Overflow::Drop, now);
        }
    }

    /// Takes up to `TX_BATCH` chains off the TX queue into `batch` and
    /// says how many it took (the frames among them are in `batch.taken`,
    /// the chains to give back in `batch.chains`).
    fn take_batch<'m>(
        &self,
        state: &mut State,
        mem: &'m GuestMemoryMmap,
        batch: &mut Batch,
        pieces: &mut [Foreign<'m>; BATCH_PIECES],
    ) -> usize {
        batch.taken.clear();
        batch.chains.clear();
        let mut used = 0usize;
        let mut popped = 0usize;
        if !state.is_enabled() || !state.get_queue().ready() {
            return 0;
        }
        if !used_ring_fits(state.get_queue(), mem) {
            // Chains it could never be given back: none is taken, so no
            // frame goes out whose chain stays the switch's.
            self.bad("the TX used ring is outside the guest's memory");
            return 0;
        }
        let header_len = self.rings.accepted().header_len();
        let mut fill = 0usize;
        let mut bytes = 0usize;
        while popped < TX_BATCH
            && bytes < BATCH_BYTES
            && batch.buf.len() - fill >= MAX_CHAIN
            && BATCH_PIECES - used >= MAX_PIECES
        {
            let queue = state.get_queue_mut();
            let chain = match next_chain(queue, mem) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(_) => {
                    self.bad("the TX avail index is further ahead than the queue is long");
                    break;
                }
            };
            popped += 1;
            if chain.head_index() >= queue.size() {
                // It can never be given back: the used ring takes only
                // heads inside the queue.
                self.bad("a TX chain whose head is past the queue");
                continue;
            }
            batch.chains.push(chain.head_index());
            let private = &mut batch.buf[fill..fill + MAX_CHAIN];
            let free = &mut pieces[used..used + MAX_PIECES];
            let mut read = read_chain(chain.clone(), mem, private, header_len + HEAD, free);
            if matches!(read, Err(Bad::TooMany)) {
                // Copied whole instead.
                read = read_chain(chain, mem, private, MAX_CHAIN, free);
            }
            match read {
                Ok((own, len, n)) if len >= header_len => {
                    // Little-endian, as VERSION_1 says and every legacy
                    // guest on a little-endian host writes.
                    let hdr = VnetHdr::parse_le(&batch.buf[fill..]).unwrap_or_default();
                    batch.taken.push(Taken {
                        start: fill + header_len,
                        end: fill + own,
                        pieces: used..used + n,
                        offload: (!hdr.is_plain()).then_some(hdr),
                    });
                    fill += own;
                    used += n;
                    bytes += len;
                }
                Ok(_) => self.bad("a TX chain shorter than the virtio-net header"),
                Err(Bad::TooSmall) => self.bad("a TX chain longer than the largest frame"),
                Err(Bad::Descriptor | Bad::TooMany) => self.bad(
                    "a TX descriptor outside the guest's memory, writable, \
                     or in a chain that loops or points past the table",
                ),
            }
        }
        popped
    }

    /// Gives the batch's chains back to the guest, one notification for
    /// all (when it asked for one).
    fn give_back(&self, state: &mut State, mem: &GuestMemoryMmap, batch: &mut Batch) {
        if batch.chains.is_empty() {
            return;
        }
        let queue = state.get_queue_mut();
        for head in batch.chains.drain(..) {
            if queue.add_used(mem, head, 0).is_err() {
                self.bad("the TX used ring is outside the guest's memory");
                break;
            }
        }
        if state.needs_notification().unwrap_or(true) {
            if let Err(e) = state.signal_used_queue() {
                tracing::debug!(port = %self.port.name(), "cannot notify the guest: {e}");
            }
        }
    }

    /// Counts a chain the guest got wrong; the port logs the first one a
    /// minute with `why`.
    pub(in crate::vhost_user) fn bad(&self, why: &'static str) {
        self.port
            .drop_frame_because(DropReason::BadDescriptor, self.switch.now(), || {
                std::io::Error::new(std::io::ErrorKind::InvalidData, why)
            });
    }
}

/// Whether `queue`'s used ring lies in `mem`: chains taken from it can be
/// given back.
fn used_ring_fits(queue: &virtio_queue::Queue, mem: &GuestMemoryMmap) -> bool {
    let len = 4 + 8 * usize::from(queue.size()) + 2;
    mem.check_range(vm_memory::GuestAddress(queue.used_ring()), len)
}

/// Reads the readable descriptors of `chain`: the first `own` bytes (at
/// most `out.len()`) copied into `out`, the rest as foreign pieces of
/// guest memory into `pieces`. Returns the bytes copied, the chain's
/// length and the pieces used.
fn read_chain<'m>(
    chain: DescriptorChain<&'m GuestMemoryMmap>,
    mem: &'m GuestMemoryMmap,
    out: &mut [u8],
    own: usize,
    pieces: &mut [Foreign<'m>],
) -> Result<(usize, usize, usize), Bad> {
    let own = own.min(out.len());
    let (mut len, mut copied, mut used) = (0usize, 0usize, 0usize);
    let mut more = false;
    let mut seen = false;
    for desc in chain {
        seen = true;
        more = desc.has_next();
        if desc.is_write_only() {
            return Err(Bad::Descriptor);
        }
        let n = desc.len() as usize;
        len = len.checked_add(n).ok_or(Bad::TooSmall)?;
        if len > MAX_CHAIN {
            return Err(Bad::TooSmall);
        }
        let mine = n.min(own - copied);
        mem.read_slice(&mut out[copied..copied + mine], desc.addr())
            .map_err(|_| Bad::Descriptor)?;
        copied += mine;
        if mine == n {
            continue;
        }
        let rest = desc
            .addr()
            .checked_add(mine as u64)
            .ok_or(Bad::Descriptor)?;
        for slice in mem.get_slices(rest, n - mine) {
            let slice = slice.map_err(|_| Bad::Descriptor)?;
            let slot = pieces.get_mut(used).ok_or(Bad::TooMany)?;
            *slot = crate::sys::foreign(&slice);
            used += 1;
        }
    }
    // See `Placing::fill`: no descriptor, or a chain cut short.
    if !seen || more {
        return Err(Bad::Descriptor);
    }
    Ok((copied, len, used))
}
