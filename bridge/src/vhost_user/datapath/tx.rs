//! The guest's TX queue drained into the switch in batches, on the
//! backend's worker thread.

use super::{next_chain, Bad, Rings};
use std::sync::{Arc, Mutex};
use switchyard_switch::egress::{Frames, Overflow};
use switchyard_switch::gso::{VnetHdr, MAX_GSO_FRAME};
use switchyard_switch::{DropReason, Port, Switch};
use vhost_user_backend::{VringMutex, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryMmap};

/// Chains taken off the TX queue per batch.
const TX_BATCH: usize = 64;

/// The longest chain a guest may post on its TX queue: a header and the
/// largest super-frame (HOST_TSO4/6).
const MAX_CHAIN: usize = super::HDR_LEN + MAX_GSO_FRAME;

/// Bytes of the TX batch buffer: `TX_BATCH` full-size plain frames, or
/// seven super-frames, per batch.
const TX_BUFFER: usize = 512 * 1024;

/// One frame of a batch: where it is in the buffer and, for a partial
/// checksum or a super-frame, its offload header.
#[derive(Clone, Copy, Default)]
struct Taken {
    start: usize,
    end: usize,
    offload: Option<VnetHdr>,
}

/// The guest's side: its TX queue drained into the switch.
pub(in crate::vhost_user) struct FromGuest {
    rings: Arc<Rings>,
    switch: Arc<Switch>,
    port: Arc<Port>,
    /// Reused for every batch: no allocation per frame.
    buf: Mutex<Vec<u8>>,
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
            buf: Mutex::new(Vec::new()),
        }
    }

    /// Drains TX queue `queue`: batches of frames copied out of the guest's
    /// buffers, the chains returned, then the batch forwarded; guest
    /// notifications stay off while a batch is in flight and the queue is
    /// looked at again before they are turned back on (EVENT_IDX).
    pub(in crate::vhost_user) fn drain(&self, queue: usize) {
        let Some(vring) = self.rings.get(queue) else {
            return;
        };
        let mut buf = match self.buf.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        if buf.len() < TX_BUFFER {
            buf.resize(TX_BUFFER, 0);
        }
        let mut taken = [Taken::default(); TX_BATCH];
        loop {
            let _ = vring.disable_notification();
            let mut progressed = false;
            loop {
                let (n, popped) = self.take_batch(vring, &mut buf, &mut taken);
                progressed |= popped > 0;
                if popped == 0 {
                    break;
                }
                self.forward(&buf, &taken[..n]);
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
    fn forward(&self, buf: &[u8], taken: &[Taken]) {
        let mut frames: [&[u8]; TX_BATCH] = [&[]; TX_BATCH];
        let mut run = 0;
        let now = self.switch.now();
        for t in taken {
            let frame = &buf[t.start..t.end];
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
                        let f = Frames::Offloaded(hdr, frame);
                        self.switch.forward(&self.port, f, Overflow::Drop, now);
                    }
                }
            }
        }
        self.flush(&frames[..run], now);
    }

    fn flush(&self, frames: &[&[u8]], now: std::time::Duration) {
        if !frames.is_empty() {
            let f = Frames::Plain(frames);
            self.switch.forward(&self.port, f, Overflow::Drop, now);
        }
    }

    /// Copies up to `TX_BATCH` frames out of the TX queue into `buf`,
    /// returns their chains to the guest (one notification) and says how
    /// many frames `taken` holds and how many chains were taken.
    fn take_batch(
        &self,
        vring: &VringMutex,
        buf: &mut [u8],
        taken: &mut [Taken; TX_BATCH],
    ) -> (usize, usize) {
        let mut state = vring.get_mut();
        if !state.is_enabled() || !state.get_queue().ready() {
            return (0, 0);
        }
        let header_len = self.rings.accepted().header_len();
        let mem = self.rings.mem.memory();
        let (mut n, mut popped, mut fill) = (0, 0usize, 0usize);
        while n < TX_BATCH && buf.len() - fill >= MAX_CHAIN {
            let queue = state.get_queue_mut();
            let chain = match next_chain(queue, &mem) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(_) => {
                    self.bad("the TX avail index is further ahead than the queue is long");
                    break;
                }
            };
            let head = chain.head_index();
            let read = read_chain(chain, &mem, &mut buf[fill..fill + MAX_CHAIN]);
            if queue.add_used(&*mem, head, 0).is_err() {
                self.bad("the TX used ring is outside the guest's memory");
                break;
            }
            popped += 1;
            match read {
                Ok(len) if len >= header_len => {
                    // Little-endian, as VERSION_1 says and every legacy
                    // guest on a little-endian host writes.
                    let hdr = VnetHdr::parse_le(&buf[fill..]).unwrap_or_default();
                    taken[n] = Taken {
                        start: fill + header_len,
                        end: fill + len,
                        offload: (!hdr.is_plain()).then_some(hdr),
                    };
                    fill += len;
                    n += 1;
                }
                Ok(_) => self.bad("a TX chain shorter than the virtio-net header"),
                Err(Bad::TooSmall) => self.bad("a TX chain longer than the largest frame"),
                Err(Bad::Descriptor) => self.bad(
                    "a TX descriptor outside the guest's memory, writable, \
                     or in a chain that loops or points past the table",
                ),
            }
        }
        if popped > 0 && state.needs_notification().unwrap_or(true) {
            if let Err(e) = state.signal_used_queue() {
                tracing::debug!(port = %self.port.name(), "cannot notify the guest: {e}");
            }
        }
        (n, popped)
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

/// Copies the readable descriptors of `chain` into `out`.
fn read_chain(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    out: &mut [u8],
) -> Result<usize, Bad> {
    let mut len = 0usize;
    let mut more = false;
    let mut seen = false;
    for desc in chain {
        seen = true;
        more = desc.has_next();
        if desc.is_write_only() {
            return Err(Bad::Descriptor);
        }
        let n = desc.len() as usize;
        let end = len.checked_add(n).ok_or(Bad::TooSmall)?;
        let dst = out.get_mut(len..end).ok_or(Bad::TooSmall)?;
        mem.read_slice(dst, desc.addr())
            .map_err(|_| Bad::Descriptor)?;
        len = end;
    }
    // See `Placing::fill`: no descriptor, or a chain cut short.
    if !seen || more {
        return Err(Bad::Descriptor);
    }
    Ok(len)
}
