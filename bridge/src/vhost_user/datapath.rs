//! The rings: frames from the guest's TX queue drained in batches into the
//! switch, and frames from the switch copied into the buffers the guest
//! posted on its RX queue. Everything the guest wrote is untrusted: a
//! descriptor outside its memory, a chain of the wrong direction or a
//! chain too long costs that chain (returned empty, counted as
//! `bad_descriptor`), never the switch.

use std::sync::{Arc, Mutex, OnceLock};
use switchyard_switch::egress::{Frames, Overflow};
use switchyard_switch::port::{PortId, SendError, Transmit};
use switchyard_switch::{DropReason, Port, Switch};
use vhost_user_backend::{VringMutex, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Address, Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// The guest's memory as the rings see it.
pub(super) type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

/// Queue 0 is the guest's receive queue (we fill it), 1 its transmit queue.
pub(super) const RX: usize = 0;
/// The guest's transmit queue (we drain it).
pub(super) const TX: usize = 1;

/// The virtio-net header in front of every frame: VERSION_1 makes it 12
/// bytes (`virtio_net_hdr_v1`) whether or not MRG_RXBUF is negotiated.
pub(super) const HDR_LEN: usize = 12;

/// The header we put in front of frames for the guest: no offload flags,
/// no GSO, `num_buffers` = 1.
const RX_HDR: [u8; HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// The longest chain a guest may post on its TX queue: a header and the
/// largest frame the switch takes.
const MAX_CHAIN: usize = HDR_LEN + switchyard_switch::MAX_FRAME;

/// Frames per TX batch handed to the switch at once.
const TX_BATCH: usize = 64;

/// Bytes of the TX batch buffer: room for `TX_BATCH` full-size (1518-byte)
/// frames and, at least, one largest chain.
const TX_BUFFER: usize = 256 * 1024;

/// What both halves share: the guest's memory and, once the worker thread
/// has seen them, its rings.
pub(super) struct Rings {
    pub(super) mem: Memory,
    vrings: OnceLock<Vec<VringMutex>>,
}

impl Rings {
    /// Rings over `mem` (the memory the frontend's table fills in).
    pub(super) fn new(mem: Memory) -> Rings {
        Rings {
            mem,
            vrings: OnceLock::new(),
        }
    }

    /// Keeps the backend's rings (the worker thread hands them over on its
    /// first event).
    pub(super) fn adopt(&self, vrings: &[VringMutex]) {
        if vrings.len() > TX {
            let _ = self.vrings.set(vrings.to_vec());
        }
    }

    fn get(&self, index: usize) -> Option<&VringMutex> {
        self.vrings.get().and_then(|v| v.get(index))
    }
}

/// Why a chain could not carry a frame.
enum Bad {
    /// Outside the guest's memory, the wrong direction, or too short for
    /// even a header: the guest's fault.
    Descriptor,
    /// Posted buffers too small for this frame (a guest without MRG_RXBUF
    /// and a frame over its MTU).
    TooSmall,
}

/// Copies `parts` (concatenated) into the writable descriptors of `chain`;
/// returns the bytes written.
fn write_chain(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    parts: [&[u8]; 2],
) -> Result<u32, Bad> {
    let total = parts[0].len() + parts[1].len();
    let mut done = 0usize;
    for desc in chain {
        if done == total {
            break;
        }
        if !desc.is_write_only() {
            return Err(Bad::Descriptor);
        }
        let mut addr = desc.addr();
        let mut room = desc.len() as usize;
        while room > 0 && done < total {
            let (src, off) = if done < parts[0].len() {
                (parts[0], done)
            } else {
                (parts[1], done - parts[0].len())
            };
            let n = room.min(src.len() - off);
            mem.write_slice(&src[off..off + n], addr)
                .map_err(|_| Bad::Descriptor)?;
            done += n;
            room -= n;
            addr = addr.checked_add(n as u64).ok_or(Bad::Descriptor)?;
        }
    }
    if done < total {
        return Err(Bad::TooSmall);
    }
    u32::try_from(done).map_err(|_| Bad::Descriptor)
}

/// The switch's side of a vhost-user port: frames into the guest's RX
/// queue.
pub(super) struct ToGuest {
    pub(super) rings: Arc<Rings>,
}

impl Transmit for ToGuest {
    /// Fills posted RX buffers in order under one lock of the queue; the
    /// guest is notified once for the batch (when it asked to be).
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        let Some(vring) = self.rings.get(RX) else {
            return (0, Some(SendError::Down));
        };
        let mut state = vring.get_mut();
        if !state.is_enabled() || !state.get_queue().ready() {
            return (0, Some(SendError::Down));
        }
        let mem = self.rings.mem.memory();
        let mut sent = 0;
        let mut used = false;
        let mut err = None;
        for frame in frames {
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(&*mem) else {
                err = Some(SendError::Full);
                break;
            };
            let head = chain.head_index();
            let written = write_chain(chain, &mem, [&RX_HDR, frame]);
            // A refused chain goes back empty, so the guest can post it again.
            let len = *written.as_ref().unwrap_or(&0);
            if state.add_used(head, len).is_err() {
                err = Some(SendError::Refused(DropReason::BadDescriptor));
                break;
            }
            used = true;
            match written {
                Ok(_) => sent += 1,
                Err(Bad::Descriptor) => {
                    err = Some(SendError::Refused(DropReason::BadDescriptor));
                    break;
                }
                Err(Bad::TooSmall) => {
                    err = Some(SendError::Refused(DropReason::EgressError));
                    break;
                }
            }
        }
        if used && state.needs_notification().unwrap_or(true) {
            if let Err(e) = state.signal_used_queue() {
                tracing::debug!("vhost-user: cannot notify the guest: {e}");
            }
        }
        (sent, err)
    }
}

/// The guest's side: its TX queue drained into the switch, on the
/// backend's worker thread.
pub(super) struct FromGuest {
    rings: Arc<Rings>,
    switch: Arc<Switch>,
    port: Arc<Port>,
    /// Reused for every batch: no allocation per frame.
    buf: Mutex<Vec<u8>>,
}

impl FromGuest {
    /// The receive half of `port`.
    pub(super) fn new(rings: Arc<Rings>, switch: Arc<Switch>, port: Arc<Port>) -> FromGuest {
        FromGuest {
            rings,
            switch,
            port,
            buf: Mutex::new(Vec::new()),
        }
    }

    /// Drains the TX queue: batches of frames copied out of the guest's
    /// buffers, the chains returned, then the batch forwarded; guest
    /// notifications stay off while a batch is in flight and the queue is
    /// looked at again before they are turned back on (EVENT_IDX).
    pub(super) fn drain(&self) {
        let Some(vring) = self.rings.get(TX) else {
            return;
        };
        let mut buf = match self.buf.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        if buf.len() < TX_BUFFER {
            buf.resize(TX_BUFFER, 0);
        }
        let mut ranges: [(usize, usize); TX_BATCH] = [(0, 0); TX_BATCH];
        loop {
            let _ = vring.disable_notification();
            loop {
                let n = self.take_batch(vring, &mut buf, &mut ranges);
                if n == 0 {
                    break;
                }
                let mut frames: [&[u8]; TX_BATCH] = [&[]; TX_BATCH];
                for (f, (start, end)) in frames.iter_mut().zip(&ranges[..n]) {
                    *f = &buf[*start..*end];
                }
                let now = self.switch.now();
                self.switch
                    .forward(&self.port, Frames::Plain(&frames[..n]), Overflow::Drop, now);
            }
            // True: the guest posted more while notifications were off.
            match vring.enable_notification() {
                Ok(true) => continue,
                _ => break,
            }
        }
    }

    /// Copies up to `TX_BATCH` frames out of the TX queue into `buf`,
    /// returns their chains to the guest (one notification) and says how
    /// many frames `ranges` holds.
    fn take_batch(
        &self,
        vring: &VringMutex,
        buf: &mut [u8],
        ranges: &mut [(usize, usize); TX_BATCH],
    ) -> usize {
        let mut state = vring.get_mut();
        if !state.is_enabled() || !state.get_queue().ready() {
            return 0;
        }
        let mem = self.rings.mem.memory();
        let (mut n, mut used, mut fill) = (0, false, 0usize);
        while n < TX_BATCH && buf.len() - fill >= MAX_CHAIN {
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(&*mem) else {
                break;
            };
            let head = chain.head_index();
            let read = read_chain(chain, &mem, &mut buf[fill..fill + MAX_CHAIN]);
            if state.add_used(head, 0).is_err() {
                self.bad(DropReason::BadDescriptor);
                break;
            }
            used = true;
            match read {
                Some(len) if len >= HDR_LEN => {
                    ranges[n] = (fill + HDR_LEN, fill + len);
                    fill += len;
                    n += 1;
                }
                Some(_) | None => self.bad(DropReason::BadDescriptor),
            }
        }
        if used && state.needs_notification().unwrap_or(true) {
            if let Err(e) = state.signal_used_queue() {
                tracing::debug!(port = %self.port.name(), "cannot notify the guest: {e}");
            }
        }
        n
    }

    fn bad(&self, reason: DropReason) {
        self.port.drop_frame(reason, self.switch.now(), None);
    }
}

/// Copies the readable descriptors of `chain` into `out`; `None` when a
/// descriptor is writable, outside the guest's memory, or the chain is
/// longer than `out`.
fn read_chain(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    out: &mut [u8],
) -> Option<usize> {
    let mut len = 0usize;
    for desc in chain {
        if desc.is_write_only() {
            return None;
        }
        let n = desc.len() as usize;
        let dst = out.get_mut(len..len.checked_add(n)?)?;
        mem.read_slice(dst, desc.addr()).ok()?;
        len += n;
    }
    Some(len)
}
