//! A guest's frames forwarded from where it wrote them: one copy to each
//! destination, headers as the switch decided on them, chains given back
//! once the batch is forwarded.
use super::*;

/// A port that, when a frame reaches it, rewrites the sending guest's
/// buffer (as a guest may at any moment) and notes whether the chain was
/// still the switch's.
struct Rewriter {
    guest: Memory,
    at: u64,
    bytes: Vec<u8>,
    used_then: Arc<Mutex<Option<u16>>>,
}

impl Rewriter {
    fn rewrite(&self) {
        let m = self.guest.memory();
        m.write_slice(&self.bytes, GuestAddress(self.at))
            .expect("rewrite");
        let used: u16 = m.read_obj(GuestAddress(0x2002)).expect("used idx");
        *self.used_then.lock().expect("lock") = Some(used);
    }
}

impl Transmit for Rewriter {
    fn transmit(&self, _: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        self.rewrite();
        (frames.len(), None)
    }

    fn transmit_gathered(
        &self,
        _: PortId,
        frames: &[switchyard_switch::gather::Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        self.rewrite();
        Some((frames.len(), None))
    }
}

#[test]
fn a_frame_goes_from_guest_to_guest_in_one_copy_its_headers_as_decided() {
    // Guest A sends (its TX queue), guest B receives (its RX queue).
    let (a_rx, mut a_tx) = (Guest::new(), Guest::new());
    let (mut b_rx, b_tx) = (Guest::new(), Guest::new());
    let a_rings = sender(
        &a_rx,
        &a_tx,
        1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1,
    );
    let b_rings = rings(&b_rx, &b_tx);
    let (switch, a) = vhost_port(&b_rings);
    let a = Arc::new(Port::new(
        a.id(),
        "a",
        "vhost-user",
        "test",
        Box::new(ToGuest {
            rings: a_rings.clone(),
        }),
    ));
    // Floods reach ports by ascending id: the rewriter sees the frame
    // after the switch decided on it and before guest B gets it.
    let f: Vec<u8> = frame(5)
        .into_iter()
        .chain((0..140).map(|i| i as u8))
        .collect();
    let used_then = Arc::new(Mutex::new(None));
    let rewriter = Arc::new(Port::new(
        switch.allocate_id(),
        "rewriter",
        "test",
        "test",
        Box::new(Rewriter {
            guest: a_tx.mem.clone(),
            // The destination address, and the frame's last byte.
            at: 0x4000 + HDR_LEN as u64,
            bytes: vec![0xff; 6],
            used_then: used_then.clone(),
        }),
    ));
    let last = Arc::new(Port::new(
        switch.allocate_id(),
        "rewriter2",
        "test",
        "test",
        Box::new(Rewriter {
            guest: a_tx.mem.clone(),
            at: 0x4000 + (HDR_LEN + f.len() - 1) as u64,
            bytes: vec![0xee],
            used_then: Arc::new(Mutex::new(None)),
        }),
    ));
    let b = crate::vhost_user::fuzzing::port_over(&switch, &b_rings);
    switch.add_port(a.clone());
    switch.add_port(rewriter);
    switch.add_port(last);
    switch.add_port(b.clone());
    let m = a_tx.mem.memory();
    m.write_slice(&[0u8; HDR_LEN], GuestAddress(0x4000))
        .expect("hdr");
    m.write_slice(&f, GuestAddress(0x4000 + HDR_LEN as u64))
        .expect("frame");
    drop(m);
    a_tx.post(0, &[(0x4000, (HDR_LEN + f.len()) as u32, 0)]);
    b_rx.post(0, &[(0x6000, 2048, WRITE)]);
    FromGuest::new(a_rings, switch.clone(), a).drain(TX);

    assert_eq!(
        *used_then.lock().expect("lock"),
        Some(0),
        "the chain stays the switch's until the frame is delivered"
    );
    assert_eq!(a_tx.used(), 1, "and goes back after");
    assert_eq!(b_rx.used(), 1);
    let got = b_rx.read(0x6000 + HDR_LEN as u64, f.len());
    // The headers as the switch decided on them, although the guest
    // rewrote them before B got the frame...
    assert_eq!(got[..6], f[..6]);
    // ...and the rest read from the guest's buffer as B got it: no copy
    // taken before.
    assert_eq!(got[..f.len() - 1], f[..f.len() - 1]);
    assert_eq!(got[f.len() - 1], 0xee);
    assert_eq!(b.counters().snapshot().tx_frames, 1);
}

#[test]
fn a_frame_in_more_pieces_than_forwarded_so_is_copied_whole() {
    // One frame in an indirect table of 80 descriptors of 10 bytes.
    let rx = Guest::new();
    let mut tx = Guest::new();
    let version_1 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    let (from_guest, port, recorded) = sending_to_recorder(&rx, &tx, version_1);
    let f: Vec<u8> = frame(6)
        .into_iter()
        .chain((0..788).map(|i| (i % 251) as u8))
        .collect();
    let mut bytes = vec![0u8; HDR_LEN];
    bytes.extend_from_slice(&f);
    let m = tx.mem.memory();
    m.write_slice(&bytes, GuestAddress(0x8000)).expect("bytes");
    let table = 0x4000u64;
    let n = bytes.len() / 10;
    assert_eq!(n * 10, bytes.len());
    for i in 0..n {
        let at = GuestAddress(table + 16 * i as u64);
        m.write_obj(0x8000u64 + 10 * i as u64, at).expect("addr");
        m.write_obj(10u32, GuestAddress(at.0 + 8)).expect("len");
        let flags: u16 = if i + 1 < n { NEXT } else { 0 };
        m.write_obj(flags, GuestAddress(at.0 + 12)).expect("flags");
        m.write_obj((i + 1) as u16, GuestAddress(at.0 + 14))
            .expect("next");
    }
    drop(m);
    const INDIRECT: u16 = 4;
    tx.post(0, &[(table, (16 * n) as u32, INDIRECT)]);
    from_guest.drain(TX);
    assert_eq!(
        port.counters().snapshot().drops(DropReason::BadDescriptor),
        0
    );
    let got = recorded.lock().expect("lock");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], (None, f));
}

/// A TCP/IPv4 super-frame of `payload` bytes as a guest sends it: the TCP
/// checksum field holds the pseudo-header sum only.
fn tcp4_super_frame(payload: usize) -> Vec<u8> {
    let mut f = frame(8)[..14].to_vec();
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = (40 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
    let c = fold(sum(&f[14..34], 0));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| (i % 249) as u8));
    let partial = !fold(sum(&f[26..34], 6 + (20 + payload) as u64));
    f[50..52].copy_from_slice(&partial.to_be_bytes());
    f
}

#[test]
fn a_super_frame_to_a_guest_without_tso_arrives_cut_from_the_senders_buffers() {
    use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    let (a_rx, mut a_tx) = (Guest::new(), Guest::new());
    let (mut b_rx, b_tx) = (Guest::new(), Guest::new());
    let a_rings = sender(
        &a_rx,
        &a_tx,
        offloading_guest() | 1 << VIRTIO_NET_F_HOST_TSO4,
    );
    // B takes neither partial checksums nor super-frames.
    let b_rings = rings(&b_rx, &b_tx);
    b_rings.accept(1 << VIRTIO_F_VERSION_1);
    let switch = Switch::new(EngineConfig::default());
    let a = crate::vhost_user::fuzzing::port_over(&switch, &a_rings);
    let b = crate::vhost_user::fuzzing::port_over(&switch, &b_rings);
    switch.add_port(a.clone());
    switch.add_port(b.clone());
    let f = tcp4_super_frame(3000);
    let mut h = [0u8; HDR_LEN];
    h[..VnetHdr::LEN].copy_from_slice(&tso4().to_le_bytes());
    let m = a_tx.mem.memory();
    m.write_slice(&h, GuestAddress(0x4000)).expect("hdr");
    // The headers and some payload in one buffer, the rest in two more.
    m.write_slice(&f[..100], GuestAddress(0x5000)).expect("a");
    m.write_slice(&f[100..1600], GuestAddress(0x6000))
        .expect("b");
    m.write_slice(&f[1600..], GuestAddress(0x7000)).expect("c");
    drop(m);
    a_tx.post(
        0,
        &[
            (0x4000, HDR_LEN as u32, 0),
            (0x5000, 100, 0),
            (0x6000, 1500, 0),
            (0x7000, (f.len() - 1600) as u32, 0),
        ],
    );
    for (i, at) in [0x8000u64, 0x9000, 0xa000].iter().enumerate() {
        b_rx.post(2 * i as u16, &[(*at, 12, WRITE), (*at + 0x10, 2000, WRITE)]);
    }
    FromGuest::new(a_rings, switch, a).drain(TX);
    assert_eq!(b_rx.used(), 3, "three segments");
    let mut payload = Vec::new();
    for i in 0..3u16 {
        let (_, len) = b_rx.used_elem(i);
        let seg = b_rx.read(
            0x8000 + 0x1000 * u64::from(i) + 0x10,
            len as usize - HDR_LEN,
        );
        let total = usize::from(u16::from_be_bytes([seg[16], seg[17]]));
        assert_eq!(total, seg.len() - 14, "IPv4 total length");
        assert_eq!(fold(sum(&seg[14..34], 0)), 0, "IPv4 header checksum");
        let pseudo = sum(&seg[26..34], 6 + (total - 20) as u64);
        assert_eq!(fold(sum(&seg[34..], pseudo)), 0, "TCP checksum");
        payload.extend_from_slice(&seg[54..]);
    }
    assert_eq!(payload, f[54..]);
    assert_eq!(b.counters().snapshot().tx_frames, 3);
}

#[test]
fn a_tx_head_past_the_queue_costs_only_itself() {
    let rx = Guest::new();
    let mut tx = Guest::new();
    let version_1 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    let (from_guest, port, recorded) = sending_to_recorder(&rx, &tx, version_1);
    let f = frame(4);
    let m = tx.mem.memory();
    m.write_slice(&[0u8; HDR_LEN], GuestAddress(0x4000))
        .expect("hdr");
    m.write_slice(&f, GuestAddress(0x4000 + HDR_LEN as u64))
        .expect("frame");
    drop(m);
    // Head 9 of an 8-entry queue, then a good chain.
    tx.publish(9);
    tx.post(0, &[(0x4000, (HDR_LEN + f.len()) as u32, 0)]);
    from_guest.drain(TX);
    assert_eq!(tx.used(), 1, "the good chain goes back");
    assert_eq!(recorded.lock().expect("lock").len(), 1);
    let c = port.counters().snapshot();
    assert_eq!(c.drops(DropReason::BadDescriptor), 1);
}
