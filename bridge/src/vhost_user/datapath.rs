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
            let mut progressed = false;
            loop {
                let (n, popped) = self.take_batch(vring, &mut buf, &mut ranges);
                progressed |= popped > 0;
                if popped == 0 {
                    break;
                }
                if n == 0 {
                    continue;
                }
                let mut frames: [&[u8]; TX_BATCH] = [&[]; TX_BATCH];
                for (f, (start, end)) in frames.iter_mut().zip(&ranges[..n]) {
                    *f = &buf[*start..*end];
                }
                let now = self.switch.now();
                self.switch
                    .forward(&self.port, Frames::Plain(&frames[..n]), Overflow::Drop, now);
            }
            // True: the guest posted more while notifications were off. A
            // ring that claims more but yields no chain (a hostile index)
            // must not keep this thread spinning: wait for the next kick.
            match vring.enable_notification() {
                Ok(true) if progressed => continue,
                _ => break,
            }
        }
    }

    /// Copies up to `TX_BATCH` frames out of the TX queue into `buf`,
    /// returns their chains to the guest (one notification) and says how
    /// many frames `ranges` holds and how many chains were taken.
    fn take_batch(
        &self,
        vring: &VringMutex,
        buf: &mut [u8],
        ranges: &mut [(usize, usize); TX_BATCH],
    ) -> (usize, usize) {
        let mut state = vring.get_mut();
        if !state.is_enabled() || !state.get_queue().ready() {
            return (0, 0);
        }
        let mem = self.rings.mem.memory();
        let (mut n, mut popped, mut fill) = (0, 0usize, 0usize);
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
            popped += 1;
            match read {
                Some(len) if len >= HDR_LEN => {
                    ranges[n] = (fill + HDR_LEN, fill + len);
                    fill += len;
                    n += 1;
                }
                Some(_) | None => self.bad(DropReason::BadDescriptor),
            }
        }
        if popped > 0 && state.needs_notification().unwrap_or(true) {
            if let Err(e) = state.signal_used_queue() {
                tracing::debug!(port = %self.port.name(), "cannot notify the guest: {e}");
            }
        }
        (n, popped)
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

#[cfg(test)]
mod tests {
    //! A fake guest: 64 KiB of memory holding an 8-entry split queue
    //! (descriptors at 0, avail ring at 0x1000, used ring at 0x2000).
    use super::*;
    use switchyard_switch::EngineConfig;
    use vm_memory::GuestAddress;

    const WRITE: u16 = 2;
    const NEXT: u16 = 1;

    struct Guest {
        mem: Memory,
        vring: VringMutex,
        avail: u16,
    }

    impl Guest {
        fn new() -> Guest {
            let mmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("mem");
            let mem = GuestMemoryAtomic::new(mmap);
            let vring = VringMutex::new(mem.clone(), 8).expect("vring");
            vring.set_queue_size(8);
            vring.set_queue_info(0, 0x1000, 0x2000).expect("addresses");
            vring.set_queue_ready(true);
            vring.set_enabled(true);
            Guest {
                mem,
                vring,
                avail: 0,
            }
        }

        /// Posts a chain of (addr, len, flags) starting at descriptor `head`.
        fn post(&mut self, head: u16, descs: &[(u64, u32, u16)]) {
            let m = self.mem.memory();
            for (i, (addr, len, flags)) in descs.iter().enumerate() {
                let at = GuestAddress(16 * (u64::from(head) + i as u64));
                let next = head + i as u16 + 1;
                let flags = if i + 1 < descs.len() {
                    flags | NEXT
                } else {
                    *flags
                };
                m.write_obj(*addr, at).expect("addr");
                m.write_obj(*len, GuestAddress(at.0 + 8)).expect("len");
                m.write_obj(flags, GuestAddress(at.0 + 12)).expect("flags");
                m.write_obj(next, GuestAddress(at.0 + 14)).expect("next");
            }
            let slot = GuestAddress(0x1004 + 2 * u64::from(self.avail % 8));
            m.write_obj(head, slot).expect("ring");
            self.avail = self.avail.wrapping_add(1);
            m.write_obj(self.avail, GuestAddress(0x1002)).expect("idx");
        }

        fn used(&self) -> u16 {
            self.mem
                .memory()
                .read_obj(GuestAddress(0x2002))
                .expect("used idx")
        }
    }

    fn rings(rx: &Guest, tx: &Guest) -> Arc<Rings> {
        let rings = Arc::new(Rings::new(rx.mem.clone()));
        rings.adopt(&[rx.vring.clone(), tx.vring.clone()]);
        rings
    }

    fn frame(n: u8) -> Vec<u8> {
        let mut f = vec![n; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f
    }

    #[test]
    fn frames_fill_posted_buffers_and_bad_chains_are_refused() {
        let mut rx = Guest::new();
        let tx = Guest::new();
        let to_guest = ToGuest {
            rings: rings(&rx, &tx),
        };
        let f = frame(7);
        // A header in one buffer, the frame in the next.
        rx.post(0, &[(0x4000, 12, WRITE), (0x5000, 2048, WRITE)]);
        let (sent, err) = to_guest.transmit(PortId(1), &[&f]);
        assert_eq!((sent, err.is_none()), (1, true));
        assert_eq!(rx.used(), 1);
        let mut got = vec![0u8; f.len()];
        rx.mem
            .memory()
            .read_slice(&mut got, GuestAddress(0x5000))
            .expect("read");
        assert_eq!(got, f);

        // Outside the guest's memory, read-only, too small, none posted.
        rx.post(2, &[(0xffff_0000, 2048, WRITE)]);
        let (sent, err) = to_guest.transmit(PortId(1), &[&f]);
        assert!(matches!(
            (sent, err),
            (0, Some(SendError::Refused(DropReason::BadDescriptor)))
        ));
        rx.post(3, &[(0x4000, 2048, 0)]);
        let (_, err) = to_guest.transmit(PortId(1), &[&f]);
        assert!(matches!(
            err,
            Some(SendError::Refused(DropReason::BadDescriptor))
        ));
        rx.post(4, &[(0x4000, 20, WRITE)]);
        let (_, err) = to_guest.transmit(PortId(1), &[&f]);
        assert!(matches!(
            err,
            Some(SendError::Refused(DropReason::EgressError))
        ));
        assert_eq!(rx.used(), 4, "refused chains go back to the guest");
        let (_, err) = to_guest.transmit(PortId(1), &[&f]);
        assert!(matches!(err, Some(SendError::Full)));
    }

    #[test]
    fn the_tx_queue_is_drained_and_bad_chains_are_counted() {
        // Both queues over the TX guest's memory (the RX queue is unused).
        let rx = Guest::new();
        let mut tx = Guest::new();
        let rings = Arc::new(Rings::new(tx.mem.clone()));
        rings.adopt(&[rx.vring.clone(), tx.vring.clone()]);
        let switch = Switch::new(EngineConfig::default());
        let port = Arc::new(Port::new(
            switch.allocate_id(),
            "v",
            "vhost-user",
            "test",
            Box::new(ToGuest {
                rings: rings.clone(),
            }),
        ));
        switch.add_port(port.clone());
        let from_guest = FromGuest::new(rings, switch.clone(), port.clone());
        let f = frame(9);
        let m = tx.mem.memory();
        m.write_slice(&[0u8; HDR_LEN], GuestAddress(0x4000))
            .expect("hdr");
        m.write_slice(&f, GuestAddress(0x4000 + HDR_LEN as u64))
            .expect("frame");
        drop(m);
        tx.post(0, &[(0x4000, (HDR_LEN + f.len()) as u32, 0)]);
        // Outside memory, writable, and a header alone.
        tx.post(1, &[(0xffff_0000, 100, 0)]);
        tx.post(2, &[(0x4000, 100, WRITE)]);
        tx.post(3, &[(0x4000, 4, 0)]);
        from_guest.drain();
        assert_eq!(tx.used(), 4);
        let c = port.counters().snapshot();
        assert_eq!(c.rx_frames, 1);
        assert_eq!(c.drops(DropReason::BadDescriptor), 3);
    }

    #[test]
    fn a_ring_that_claims_more_than_it_yields_does_not_spin() {
        // The data path reads the ring through other memory than the
        // library's: the avail index says 1, every pop finds nothing.
        let rx = Guest::new();
        let mut tx = Guest::new();
        let rings = rings(&rx, &tx);
        let switch = Switch::new(EngineConfig::default());
        let port = Arc::new(Port::new(
            switch.allocate_id(),
            "v",
            "vhost-user",
            "test",
            Box::new(ToGuest {
                rings: rings.clone(),
            }),
        ));
        tx.post(0, &[(0x4000, 60, 0)]);
        FromGuest::new(rings, switch, port).drain();
    }
}
