//! The ring parsing under arbitrary guest memory, for the `vhost_rings`
//! fuzz target in fuzz/ (public only for it; not an interface to build
//! on).
//!
//! Layout of the fake guest's 64 KiB, whose first bytes are the fuzzer's
//! input (the rest zero): RX queue descriptors at 0x000, its avail ring
//! at 0x100, used ring at 0x200; TX queue descriptors at 0x400, avail
//! 0x500, used 0x600; the features the guest accepted at 0x7f8 (8 bytes,
//! masked to what the port offers); buffers anywhere, addresses as the
//! descriptors say.

use super::backend::NetBackend;
use super::datapath::{FromGuest, Rings, ToGuest};
use super::VhostUserConfig;
use std::sync::{Arc, Mutex};
use switchyard_switch::gather::Gathered;
use switchyard_switch::gso::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, MAX_GSO_FRAME};
use switchyard_switch::port::{PortId, SendError, Transmit};
use switchyard_switch::{EngineConfig, Port, Switch};
use vhost_user_backend::{VringMutex, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

/// Entries per queue.
const QUEUE: u16 = 16;

/// What one run did, for the target's checks.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Frames the TX queue yielded to the switch: (offloaded, length).
    pub forwarded: Vec<(bool, usize)>,
    /// Chains the guest made available on TX.
    pub tx_avail: u16,
    /// Used entries returned on TX (the device's count: a buffer may
    /// overwrite the used ring in guest memory).
    pub tx_used: u16,
    /// Frames the RX queue took of the two offered (plain, super-frame).
    pub rx_sent: usize,
    /// Chains the guest made available on RX.
    pub rx_avail: u16,
    /// Used entries returned on RX (the device's count).
    pub rx_used: u16,
}

type Seen = Arc<Mutex<Vec<(bool, usize)>>>;

/// Keeps what the switch sends it: whole, offloaded frames included.
struct Sink(Seen);

impl Transmit for Sink {
    fn transmit(&self, _: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        if let Ok(mut s) = self.0.lock() {
            s.extend(frames.iter().map(|f| (false, f.len())));
        }
        (frames.len(), None)
    }

    fn transmit_offloaded(
        &self,
        _: PortId,
        _: &VnetHdr,
        frame: &[u8],
    ) -> Option<Result<(), SendError>> {
        if let Ok(mut s) = self.0.lock() {
            s.push((true, frame.len()));
        }
        Some(Ok(()))
    }

    /// Whole, after reading every byte where the guest wrote it (as a
    /// destination's copy would).
    fn transmit_offloaded_gathered(
        &self,
        _: PortId,
        _: &VnetHdr,
        frame: &Gathered<'_>,
    ) -> Option<Result<(), SendError>> {
        let mut whole = Vec::new();
        frame.append_to(&mut whole);
        if let Ok(mut s) = self.0.lock() {
            s.push((true, whole.len()));
        }
        Some(Ok(()))
    }
}

fn queue(
    mem: &GuestMemoryAtomic<GuestMemoryMmap>,
    base: u64,
    event_idx: bool,
) -> Option<VringMutex> {
    let vring = VringMutex::new(mem.clone(), QUEUE).ok()?;
    vring.set_queue_size(QUEUE);
    vring
        .set_queue_info(base, base + 0x100, base + 0x200)
        .ok()?;
    vring.set_queue_event_idx(event_idx);
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    Some(vring)
}

fn read_u16(mem: &GuestMemoryMmap, at: u64) -> u16 {
    mem.read_obj::<u16>(GuestAddress(at))
        .map(u16::from_le)
        .unwrap_or(0)
}

/// Drains the TX queue into a switch and offers the RX queue a plain frame
/// and a TCP super-frame, over guest memory made of `data`.
pub fn run(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let Ok(mmap) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]) else {
        return out;
    };
    let image = &data[..data.len().min(0x10000)];
    if mmap.write_slice(image, GuestAddress(0)).is_err() {
        return out;
    }
    // The used rings are the device's to write: they start empty.
    for used in [0x200u64, 0x600] {
        let _ = mmap.write_slice(&[0u8; 4 + 8 * QUEUE as usize], GuestAddress(used));
    }
    let features = mmap
        .read_obj::<u64>(GuestAddress(0x7f8))
        .map(u64::from_le)
        .unwrap_or(0)
        & NetBackend::offered(&VhostUserConfig::new("fuzz", "/nonexistent"));
    // Read before the run: a buffer may point at the rings themselves.
    out.tx_avail = read_u16(&mmap, 0x502);
    out.rx_avail = read_u16(&mmap, 0x102);
    let event_idx = features & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
    let mem = GuestMemoryAtomic::new(mmap);
    let (Some(rx), Some(tx)) = (queue(&mem, 0, event_idx), queue(&mem, 0x400, event_idx)) else {
        return out;
    };
    let rings = Arc::new(Rings::new(mem.clone()));
    rings.adopt(&[rx.clone(), tx.clone()]);
    rings.accept(features);

    let switch = Switch::new(EngineConfig::default());
    let to_guest = ToGuest {
        rings: rings.clone(),
    };
    let port = port_over(&switch, &rings);
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::new(Port::new(
        switch.allocate_id(),
        "sink",
        "test",
        "fuzz",
        Box::new(Sink(seen.clone())),
    ));
    switch.add_port(port.clone());
    switch.add_port(sink);
    FromGuest::new(rings, switch, port).drain(super::datapath::TX);

    let mut frame = vec![0u8; 3000];
    frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let (sent, _) = to_guest.transmit(PortId(9), &[&frame[..60]]);
    out.rx_sent = sent;
    let tso = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    if let Some(Ok(())) = to_guest.transmit_offloaded(PortId(9), &tso, &frame) {
        out.rx_sent += 1;
    }

    out.rx_used = rx.get_ref().get_queue().next_used();
    out.tx_used = tx.get_ref().get_queue().next_used();
    if let Ok(s) = seen.lock() {
        out.forwarded = s.clone();
    }
    out
}

/// A vhost-user port of `switch` over `rings` (not added to it); the
/// data path's unit tests use it too.
pub(super) fn port_over(switch: &Switch, rings: &Arc<Rings>) -> Arc<Port> {
    Arc::new(Port::new(
        switch.allocate_id(),
        "v",
        "vhost-user",
        "fake guest",
        Box::new(ToGuest {
            rings: rings.clone(),
        }),
    ))
}

/// The largest frame [`run`] may report as forwarded.
pub const MAX_FORWARDED: usize = MAX_GSO_FRAME;
