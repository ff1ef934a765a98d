//! The rings: frames from the guest's TX queue drained in batches into the
//! switch ([`FromGuest`]), and frames from the switch copied into the
//! buffers the guest posted on its RX queue ([`ToGuest`]). Offloaded
//! frames (a partial checksum, a TCP super-frame) pass whole in both
//! directions when the guest agreed to take them, and are cut in software
//! by the switch for ports that cannot. Everything the guest wrote is
//! untrusted: a descriptor outside its memory, a chain of the wrong
//! direction, a chain that loops or is cut short, or an avail index that
//! jumps costs that chain or that batch (counted as `bad_descriptor`, the
//! port's drop log says so at most once a minute), never the switch.

pub(super) mod control;
mod rx;
mod tx;

#[cfg(test)]
mod tests;

pub(super) use rx::ToGuest;
pub(super) use tx::FromGuest;

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::OnceLock;
use switchyard_switch::gso::{
    VnetHdr, F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6,
};
use vhost_user_backend::VringMutex;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_queue::{DescriptorChain, QueueOwnedT};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

/// The guest's memory as the rings see it.
pub(super) type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

/// Queue 0 is the first pair's receive queue (we fill it), 1 its
/// transmit queue; pair `i` is queues `2i` and `2i + 1`; with more than
/// one pair the control queue comes last.
pub(super) const RX: usize = 0;
/// The first pair's transmit queue (we drain it).
pub(super) const TX: usize = 1;

/// The virtio-net header in front of every frame with VERSION_1 or
/// MRG_RXBUF (`virtio_net_hdr_v1`, little-endian): the tap's 10 bytes and
/// `num_buffers`.
pub(super) const HDR_LEN: usize = 12;

/// The legacy header (neither VERSION_1 nor MRG_RXBUF): no `num_buffers`.
const LEGACY_HDR_LEN: usize = VnetHdr::LEN;

/// What both halves share: the guest's memory, the features it accepted
/// and, once the worker thread has seen them, its rings.
pub(super) struct Rings {
    pub(super) mem: Memory,
    vrings: OnceLock<Vec<VringMutex>>,
    features: AtomicU64,
    /// Queue pairs the guest uses (VQ_PAIRS_SET on the control queue).
    pairs: AtomicU16,
    /// The guest's mappings under the SIGBUS guard.
    pub(super) guard: super::guard::MemoryGuard,
}

impl Rings {
    /// Rings over `mem` (the memory the frontend's table fills in).
    pub(super) fn new(mem: Memory) -> Rings {
        Rings {
            mem,
            vrings: OnceLock::new(),
            features: AtomicU64::new(0),
            pairs: AtomicU16::new(1),
            guard: super::guard::MemoryGuard::default(),
        }
    }

    /// Keeps the backend's rings (the worker thread hands them over on its
    /// first event; every later event finds them kept, and copies nothing).
    pub(super) fn adopt(&self, vrings: &[VringMutex]) {
        if self.vrings.get().is_none() && vrings.len() > TX {
            let _ = self.vrings.set(vrings.to_vec());
        }
    }

    /// Records the virtio features the guest accepted (it may do so again
    /// after a reset, before its rings start).
    pub(super) fn accept(&self, features: u64) {
        self.features.store(features, Ordering::Release);
    }

    /// What the guest accepted.
    pub(super) fn accepted(&self) -> Accepted {
        Accepted(self.features.load(Ordering::Acquire))
    }

    /// Uses `pairs` queue pairs from now on (the guest asked).
    pub(super) fn use_pairs(&self, pairs: u16) {
        self.pairs.store(pairs.max(1), Ordering::Release);
    }

    /// Queue `index` (see [`RX`]).
    pub(super) fn get(&self, index: usize) -> Option<&VringMutex> {
        self.vrings.get().and_then(|v| v.get(index))
    }

    /// The receive queue for frames from `ingress`: one port's frames stay
    /// on one queue, in order; ports are spread over the pairs in use.
    fn rx_for(&self, ingress: switchyard_switch::port::PortId) -> Option<&VringMutex> {
        let pairs = usize::from(self.pairs.load(Ordering::Acquire).max(1));
        let pair = usize::try_from(ingress.0).unwrap_or(0) % pairs;
        self.get(2 * pair).or_else(|| self.get(RX))
    }
}

/// The virtio features a guest accepted, as the data path asks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Accepted(pub(super) u64);

impl Accepted {
    fn has(self, bit: u32) -> bool {
        self.0 & (1u64 << bit) != 0
    }

    /// The guest's receive buffers may be merged: a frame spans as many
    /// posted chains as it needs, `num_buffers` says how many.
    fn merges(self) -> bool {
        self.has(VIRTIO_NET_F_MRG_RXBUF)
    }

    /// The bytes of the virtio-net header in front of each frame.
    fn header_len(self) -> usize {
        if self.has(VIRTIO_F_VERSION_1) || self.merges() {
            HDR_LEN
        } else {
            LEGACY_HDR_LEN
        }
    }

    /// Whether the guest takes the frame `hdr` describes whole: a partial
    /// checksum needs GUEST_CSUM, a super-frame the matching GUEST_TSO.
    fn takes(self, hdr: &VnetHdr) -> bool {
        let csum = hdr.flags & F_NEEDS_CSUM == 0 || self.has(VIRTIO_NET_F_GUEST_CSUM);
        let gso = match hdr.gso_type & !GSO_ECN {
            GSO_NONE => true,
            GSO_TCPV4 => self.has(VIRTIO_NET_F_GUEST_TSO4),
            GSO_TCPV6 => self.has(VIRTIO_NET_F_GUEST_TSO6),
            _ => false,
        };
        let ecn = hdr.gso_type & GSO_ECN == 0 || self.has(VIRTIO_NET_F_GUEST_ECN);
        csum && gso && ecn
    }

    /// The header the guest reads in front of a frame described by `hdr`
    /// (`num_buffers` 1; filled in once the frame is placed).
    fn header_for(self, hdr: &VnetHdr) -> [u8; HDR_LEN] {
        let allowed = if self.has(VIRTIO_NET_F_GUEST_CSUM) {
            F_NEEDS_CSUM | F_DATA_VALID
        } else {
            0
        };
        let shown = VnetHdr {
            flags: hdr.flags & allowed,
            ..*hdr
        };
        let mut b = [0u8; HDR_LEN];
        b[..LEGACY_HDR_LEN].copy_from_slice(&shown.to_le_bytes());
        b[LEGACY_HDR_LEN..].copy_from_slice(&1u16.to_le_bytes());
        b
    }
}

/// Why a chain could not carry a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    /// Outside the guest's memory, the wrong direction, a chain that loops
    /// or is cut short, too short for even a header: the guest's fault.
    Descriptor,
    /// Posted buffers too small for this frame (a guest without MRG_RXBUF
    /// and a frame over the size of its buffers).
    TooSmall,
    /// A TX frame in more pieces than it is forwarded in: copied whole
    /// instead (no fault of the guest's).
    TooMany,
}

/// The next chain the guest posted on `queue`: `Ok(None)` when it posted
/// none, an error when its avail index is further ahead than the queue is
/// long (the library's own pop would log that once per call; this is
/// counted and logged by the port instead).
fn next_chain<'m>(
    queue: &mut virtio_queue::Queue,
    mem: &'m GuestMemoryMmap,
) -> Result<Option<DescriptorChain<&'m GuestMemoryMmap>>, Bad> {
    match queue.iter(mem) {
        Ok(mut it) => Ok(it.next()),
        Err(_) => Err(Bad::Descriptor),
    }
}
