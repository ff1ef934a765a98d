//! A fake guest: 64 KiB of memory holding an 8-entry split queue
//! (descriptors at 0, avail ring at 0x1000, used ring at 0x2000).
use super::*;
use std::sync::{Arc, Mutex};
use switchyard_switch::gso::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use switchyard_switch::port::{PortId, SendError, Transmit};
use switchyard_switch::{DropReason, EngineConfig, Port, Switch};
use switchyard_wire::checksum::{fold, sum};
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::VIRTIO_NET_F_HOST_TSO4;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

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

    /// Writes descriptor `index` as it is, `next` included.
    fn desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let m = self.mem.memory();
        let at = GuestAddress(16 * u64::from(index));
        m.write_obj(addr, at).expect("addr");
        m.write_obj(len, GuestAddress(at.0 + 8)).expect("len");
        m.write_obj(flags, GuestAddress(at.0 + 12)).expect("flags");
        m.write_obj(next, GuestAddress(at.0 + 14)).expect("next");
    }

    /// Makes the chain at `head` available.
    fn publish(&mut self, head: u16) {
        let m = self.mem.memory();
        let slot = GuestAddress(0x1004 + 2 * u64::from(self.avail % 8));
        m.write_obj(head, slot).expect("ring");
        self.avail = self.avail.wrapping_add(1);
        m.write_obj(self.avail, GuestAddress(0x1002)).expect("idx");
    }

    /// The used element `i`: (head, len).
    fn used_elem(&self, i: u16) -> (u32, u32) {
        let m = self.mem.memory();
        let at = 0x2004 + 8 * u64::from(i % 8);
        let id: u32 = m.read_obj(GuestAddress(at)).expect("id");
        let len: u32 = m.read_obj(GuestAddress(at + 4)).expect("len");
        (id, len)
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .memory()
            .read_slice(&mut v, GuestAddress(addr))
            .expect("read");
        v
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
    rings.accept(1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1);
    rings
}

/// A switch and a vhost-user port over `rings` (not added to the switch).
fn vhost_port(rings: &Arc<Rings>) -> (Arc<Switch>, Arc<Port>) {
    let switch = Switch::new(EngineConfig::default());
    let port = crate::vhost_user::fuzzing::port_over(&switch, rings);
    (switch, port)
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
    rings.accept(1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1);
    let (switch, port) = vhost_port(&rings);
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
    from_guest.drain(TX);
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
    let (switch, port) = vhost_port(&rings);
    tx.post(0, &[(0x4000, 60, 0)]);
    FromGuest::new(rings, switch, port).drain(TX);
}

/// The features of a guest that takes merged buffers and TCP super-frames.
fn offloading_guest() -> u64 {
    use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    use virtio_bindings::virtio_net::*;
    [
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
    ]
    .iter()
    .fold(0u64, |f, b| f | 1 << b)
}

/// A TCP/IPv4 super-frame's header, checksum partial.
fn tso4() -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    }
}

#[test]
fn a_super_frame_spans_merged_buffers_and_says_how_many() {
    let mut rx = Guest::new();
    let tx = Guest::new();
    let rings = rings(&rx, &tx);
    rings.accept(offloading_guest());
    let to_guest = ToGuest { rings };
    let frame: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    let hdr = tso4();
    for (i, at) in [0x4000u64, 0x5000, 0x6000].iter().enumerate() {
        rx.post(i as u16, &[(*at, 1000, WRITE)]);
    }
    let sent = to_guest.transmit_offloaded(PortId(1), &hdr, &frame);
    assert!(matches!(sent, Some(Ok(()))));
    assert_eq!(rx.used(), 3);
    assert_eq!(rx.used_elem(0), (0, 1000));
    assert_eq!(rx.used_elem(1), (1, 1000));
    assert_eq!(rx.used_elem(2), (2, 2512 - 2000));
    let header = rx.read(0x4000, HDR_LEN);
    assert_eq!(header[0], F_NEEDS_CSUM);
    assert_eq!(header[1], GSO_TCPV4);
    assert_eq!(u16::from_le_bytes([header[4], header[5]]), 1448);
    assert_eq!(
        u16::from_le_bytes([header[10], header[11]]),
        3,
        "num_buffers"
    );
    let mut got = rx.read(0x4000 + HDR_LEN as u64, 1000 - HDR_LEN);
    got.extend(rx.read(0x5000, 1000));
    got.extend(rx.read(0x6000, 512));
    assert_eq!(got, frame);
}

#[test]
fn too_few_buffers_take_nothing_and_the_frame_waits() {
    let mut rx = Guest::new();
    let tx = Guest::new();
    let rings = rings(&rx, &tx);
    rings.accept(offloading_guest());
    let to_guest = ToGuest { rings };
    let frame = vec![7u8; 2500];
    let hdr = tso4();
    rx.post(0, &[(0x4000, 1000, WRITE)]);
    let sent = to_guest.transmit_offloaded(PortId(1), &hdr, &frame);
    assert!(matches!(sent, Some(Err(SendError::Full))));
    assert_eq!(rx.used(), 0, "the one posted buffer is still the guest's");
    rx.post(1, &[(0x5000, 1000, WRITE)]);
    rx.post(2, &[(0x6000, 1000, WRITE)]);
    assert!(matches!(
        to_guest.transmit_offloaded(PortId(1), &hdr, &frame),
        Some(Ok(()))
    ));
    assert_eq!(rx.used(), 3);
    assert_eq!(rx.used_elem(0).0, 0, "the first buffer is used first");
}

#[test]
fn a_guest_without_the_offload_gets_the_frame_cut_by_the_switch() {
    let rx = Guest::new();
    let tx = Guest::new();
    let rings = rings(&rx, &tx);
    let to_guest = ToGuest {
        rings: rings.clone(),
    };
    let hdr = tso4();
    assert!(to_guest
        .transmit_offloaded(PortId(1), &hdr, &[0u8; 2500])
        .is_none());
    // GUEST_CSUM alone: partial checksums whole, super-frames cut.
    rings.accept(1 << virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_CSUM);
    assert!(to_guest
        .transmit_offloaded(PortId(1), &hdr, &[0u8; 2500])
        .is_none());
    assert!(rings.accepted().takes(&VnetHdr { gso_type: 0, ..hdr }));
}

#[test]
fn looping_chains_and_a_jumping_index_cost_only_the_chain() {
    let mut rx = Guest::new();
    let tx = Guest::new();
    let to_guest = ToGuest {
        rings: rings(&rx, &tx),
    };
    // Descriptor 0 points at itself: the chain never ends.
    rx.desc(0, 0x4000, 8, WRITE | NEXT, 0);
    rx.publish(0);
    let (_, err) = to_guest.transmit(PortId(1), &[&frame(1)]);
    assert!(matches!(
        err,
        Some(SendError::Refused(DropReason::BadDescriptor))
    ));
    assert_eq!(rx.used(), 1, "returned empty");
    // A head past the table.
    rx.publish(200);
    let (_, err) = to_guest.transmit(PortId(1), &[&frame(1)]);
    assert!(matches!(
        err,
        Some(SendError::Refused(DropReason::BadDescriptor))
    ));
    // The avail index 100 ahead of an 8-entry queue.
    rx.mem
        .memory()
        .write_obj(rx.avail.wrapping_add(100), GuestAddress(0x1002))
        .expect("idx");
    let (sent, err) = to_guest.transmit(PortId(1), &[&frame(1)]);
    assert_eq!(sent, 0);
    assert!(matches!(
        err,
        Some(SendError::Refused(DropReason::BadDescriptor))
    ));
}

/// A port that keeps what it is sent, offloaded frames whole.
type Recorded = Arc<Mutex<Vec<(Option<VnetHdr>, Vec<u8>)>>>;

struct Recorder(Recorded);

impl Transmit for Recorder {
    fn transmit(&self, _: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        let mut got = self.0.lock().expect("lock");
        got.extend(frames.iter().map(|f| (None, f.to_vec())));
        (frames.len(), None)
    }

    fn transmit_offloaded(
        &self,
        _: PortId,
        hdr: &VnetHdr,
        frame: &[u8],
    ) -> Option<Result<(), SendError>> {
        let mut got = self.0.lock().expect("lock");
        got.push((Some(*hdr), frame.to_vec()));
        Some(Ok(()))
    }

    fn transmit_offloaded_gathered(
        &self,
        _: PortId,
        hdr: &VnetHdr,
        frame: &switchyard_switch::gather::Gathered<'_>,
    ) -> Option<Result<(), SendError>> {
        let mut whole = Vec::new();
        frame.append_to(&mut whole);
        let mut got = self.0.lock().expect("lock");
        got.push((Some(*hdr), whole));
        Some(Ok(()))
    }
}

#[test]
fn offloaded_frames_from_the_guest_pass_whole_and_in_order() {
    let rx = Guest::new();
    let mut tx = Guest::new();
    let features = offloading_guest() | 1 << VIRTIO_NET_F_HOST_TSO4;
    let (from_guest, _, recorded) = sending_to_recorder(&rx, &tx, features);
    // A plain frame, a super-frame split over three descriptors, a plain
    // frame: forwarded in that order, the super-frame whole.
    let m = tx.mem.memory();
    let plain = |n: u8, at: u64| {
        m.write_slice(&[0u8; HDR_LEN], GuestAddress(at))
            .expect("hdr");
        m.write_slice(&frame(n), GuestAddress(at + HDR_LEN as u64))
            .expect("frame");
    };
    plain(1, 0x4000);
    plain(3, 0x4800);
    let mut big = frame(2);
    big.resize(3000, 2);
    let mut h = [0u8; HDR_LEN];
    h[..VnetHdr::LEN].copy_from_slice(&tso4().to_le_bytes());
    m.write_slice(&h, GuestAddress(0x6000)).expect("hdr");
    m.write_slice(&big[..1000], GuestAddress(0x7000))
        .expect("a");
    m.write_slice(&big[1000..], GuestAddress(0x8000))
        .expect("b");
    drop(m);
    tx.post(0, &[(0x4000, (HDR_LEN + 60) as u32, 0)]);
    tx.post(
        1,
        &[
            (0x6000, HDR_LEN as u32, 0),
            (0x7000, 1000, 0),
            (0x8000, 2000, 0),
        ],
    );
    tx.post(4, &[(0x4800, (HDR_LEN + 60) as u32, 0)]);
    from_guest.drain(TX);
    let got = recorded.lock().expect("lock");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], (None, frame(1)));
    let (hdr, bytes) = &got[1];
    assert_eq!(bytes, &big);
    let hdr = hdr.expect("offloaded");
    assert_eq!(
        (hdr.gso_type, hdr.gso_size, hdr.csum_start),
        (GSO_TCPV4, 1448, 34)
    );
    assert_eq!(got[2], (None, frame(3)));
}

#[test]
fn the_control_queue_sets_the_pairs_and_refuses_the_rest() {
    let mut ctrl = Guest::new();
    let rings = Arc::new(Rings::new(ctrl.mem.clone()));
    let answer_of = |g: &Guest, at: u64| g.read(at, 1)[0];
    let m = ctrl.mem.memory();
    // VIRTIO_NET_CTRL_MQ, VQ_PAIRS_SET, 2 pairs; then 9 pairs; then class 0.
    m.write_slice(&[4, 0, 2, 0], GuestAddress(0x4000))
        .expect("cmd");
    m.write_slice(&[4, 0, 9, 0], GuestAddress(0x4100))
        .expect("cmd");
    m.write_slice(&[0, 0, 1], GuestAddress(0x4200))
        .expect("cmd");
    drop(m);
    ctrl.post(0, &[(0x4000, 4, 0), (0x5000, 1, WRITE)]);
    ctrl.post(2, &[(0x4100, 4, 0), (0x5100, 1, WRITE)]);
    ctrl.post(4, &[(0x4200, 3, 0), (0x5200, 1, WRITE)]);
    // No room for the answer: the guest's fault, counted.
    ctrl.post(6, &[(0x4000, 4, 0)]);
    assert_eq!(control::answer(&rings, &ctrl.vring, 4), 1);
    assert_eq!(ctrl.used(), 4);
    assert_eq!(answer_of(&ctrl, 0x5000), 0, "2 of 4 pairs: OK");
    assert_eq!(answer_of(&ctrl, 0x5100), 1, "9 of 4 pairs: refused");
    assert_eq!(answer_of(&ctrl, 0x5200), 1, "not a command we offer");
    assert_eq!(rings.pairs.load(std::sync::atomic::Ordering::Acquire), 2);
}

/// Rings whose TX queue is `tx`'s, over `tx`'s memory: a guest that sends.
fn sender(rx: &Guest, tx: &Guest, features: u64) -> Arc<Rings> {
    let rings = Arc::new(Rings::new(tx.mem.clone()));
    rings.adopt(&[rx.vring.clone(), tx.vring.clone()]);
    rings.accept(features);
    rings
}

/// A guest that sends (on `tx`, accepting `features`) through a
/// vhost-user port of a switch whose only other port records what it
/// gets: the drain, the guest's port, the record.
fn sending_to_recorder(rx: &Guest, tx: &Guest, features: u64) -> (FromGuest, Arc<Port>, Recorded) {
    let rings = sender(rx, tx, features);
    let (switch, port) = vhost_port(&rings);
    let recorded: Recorded = Arc::new(Mutex::new(Vec::new()));
    let other = Arc::new(Port::new(
        switch.allocate_id(),
        "r",
        "test",
        "test",
        Box::new(Recorder(recorded.clone())),
    ));
    switch.add_port(port.clone());
    switch.add_port(other);
    (FromGuest::new(rings, switch, port.clone()), port, recorded)
}

mod one_copy;
