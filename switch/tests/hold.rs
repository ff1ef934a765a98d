//! Backpressure with real kernel sockets: a destination whose receive
//! queue is bounded by `net.unix.max_dgram_qlen` (an unconnected client, as
//! UML leaves its data socket) makes the switch hold unicast for it, deliver
//! it in order as the client reads, and give up after the hold limit.

mod common;
mod sockets;

use sockets::{frame, seq, SocketTx, TempDir};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_switch::hold::{Held, HOLD_LIMIT, HOLD_MAX, STALL_BACKOFF};
use switchyard_switch::port::{Port, PortId, SendError, Transmit};
use switchyard_switch::{DropReason, EngineConfig, FdbConfig, Frames, Mode, Overflow, Switch};

/// Takes everything (the ingress port's own transmit).
struct Sink;

impl Transmit for Sink {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        (frames.len(), None)
    }
}

struct Rig {
    switch: Arc<Switch>,
    ingress: Arc<Port>,
    dest: Arc<Port>,
    /// The destination's client: unconnected, so its queue is bounded.
    client: UnixDatagram,
    /// A third port that takes everything (flood target).
    _bystander: Arc<Port>,
    _dir: TempDir,
}

const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// How many datagrams fit in the queue toward an unconnected unix
/// datagram socket: the kernel refuses once more than
/// `net.unix.max_dgram_qlen` are queued, so one more than that.
fn qlen() -> usize {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(10)
        + 1
}

fn rig() -> Rig {
    let dir = TempDir::new("hold");
    let client_path = dir.0.join("client");
    let client = UnixDatagram::bind(&client_path).expect("bind client");
    let ours = UnixDatagram::unbound().expect("socket");
    ours.connect(&client_path).expect("connect to client");
    ours.set_nonblocking(true).expect("nonblocking");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let switch = Switch::new(EngineConfig::new(Mode::Switch, FdbConfig::default()));
    let port = |name: &str, tx: Box<dyn Transmit>| {
        let p = Arc::new(Port::new(switch.allocate_id(), name, "test", "test", tx));
        switch.add_port(p.clone());
        p
    };
    let ingress = port("a", Box::new(Sink));
    let dest = port("b", Box::new(SocketTx(Arc::new(ours))));
    let bystander = port("c", Box::new(Sink));
    // Teach the switch where B is.
    switch.forward(
        &dest,
        Frames::Plain(&[&frame(A, B, 0)]),
        Overflow::Drop,
        switch.now(),
    );
    Rig {
        switch,
        ingress,
        dest,
        client,
        _bystander: bystander,
        _dir: dir,
    }
}

impl Rig {
    fn send(&self, frames: &[Vec<u8>], held: &mut Held) {
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        self.switch.forward(
            &self.ingress,
            Frames::Plain(&refs),
            Overflow::Hold(held),
            self.switch.now(),
        );
    }

    fn drain(&self) -> Vec<u32> {
        self.client
            .set_nonblocking(true)
            .expect("nonblocking client");
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.client.recv(&mut buf) {
            got.push(seq(&buf[..n]));
        }
        self.client.set_nonblocking(false).expect("blocking client");
        got
    }
}

fn batch(from: u32, n: u32) -> Vec<Vec<u8>> {
    (from..from + n).map(|s| frame(B, A, s)).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_full_client_gets_every_frame_in_order_as_it_reads() {
    let q = qlen();
    assert!(
        q < 32,
        "max_dgram_qlen {q} leaves no room to fill the queue"
    );
    let r = rig();
    let mut held = Held::default();
    r.send(&batch(1, 32), &mut held);
    assert!(
        !held.is_empty(),
        "frames beyond the client's queue are held"
    );
    let c = r.dest.counters().snapshot();
    assert_eq!(c.tx_frames as usize, q, "the queue took {q}");
    assert_eq!(c.tx_held as usize, 32 - q);
    assert_eq!(c.drops(DropReason::EgressFull), 0);

    // The client reads slowly in its own thread while the hold waits.
    let client = r.client.try_clone().expect("clone client");
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < 32 {
            match client.recv(&mut buf) {
                Ok(n) => got.push(seq(&buf[..n])),
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        got
    });
    let sw = r.switch.clone();
    runtime().block_on(held.release(|| sw.now()));
    assert!(held.is_empty());
    let got = reader.join().expect("reader");
    assert_eq!(got, (1..=32).collect::<Vec<u32>>(), "all, in order");
    let c = r.dest.counters().snapshot();
    assert_eq!(c.tx_frames, 32);
    assert_eq!(c.drops(DropReason::EgressFull), 0);
}

#[test]
fn later_frames_queue_behind_held_ones() {
    let q = qlen() as u32;
    let r = rig();
    let mut held = Held::default();
    r.send(&batch(1, q + 2), &mut held);
    // The client reads now, but the next batch must still not overtake.
    let first = r.drain();
    r.send(&batch(q + 3, 3), &mut held);
    assert_eq!(first, (1..=q).collect::<Vec<u32>>());
    let sw = r.switch.clone();
    runtime().block_on(held.release(|| sw.now()));
    assert_eq!(r.drain(), (q + 1..=q + 5).collect::<Vec<u32>>());
}

#[test]
fn a_client_that_reads_nothing_gets_tail_drop_for_a_while_after_the_hold_limit() {
    let q = qlen() as u32;
    let r = rig();
    let mut held = Held::default();
    r.send(&batch(1, 32), &mut held);
    let sw = r.switch.clone();
    let t0 = Instant::now();
    runtime().block_on(held.release(|| sw.now()));
    let waited = t0.elapsed();
    assert!(
        waited >= HOLD_LIMIT,
        "gave up after {waited:?}, before the limit"
    );
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    let c = r.dest.counters().snapshot();
    assert_eq!(c.drops(DropReason::EgressFull) as u32, 32 - q);

    // Stalled: the next overflow is dropped at once, not held.
    r.send(&batch(100, 4), &mut held);
    assert!(held.is_empty(), "a stalled client pauses nobody");
    let after = r.dest.counters().snapshot();
    assert_eq!(
        after.drops(DropReason::EgressFull),
        c.drops(DropReason::EgressFull) + 4
    );

    // Even reading again, it gets tail drop for the back-off...
    assert_eq!(r.drain().len() as u32, q);
    r.send(&batch(200, 32), &mut held);
    assert!(held.is_empty(), "held within the back-off");
    assert_eq!(r.drain().len() as u32, q);
    // ...and backpressure after it.
    std::thread::sleep(STALL_BACKOFF + Duration::from_millis(50));
    r.send(&batch(300, 32), &mut held);
    assert!(!held.is_empty(), "not held again after the back-off");
}

#[test]
fn floods_are_never_held() {
    let r = rig();
    let mut held = Held::default();
    let bcast: Vec<Vec<u8>> = (0..32).map(|s| frame([0xff; 6], A, s)).collect();
    r.send(&bcast, &mut held);
    assert!(held.is_empty());
    let c = r.dest.counters().snapshot();
    assert_eq!(c.tx_held, 0);
    assert_eq!(c.drops(DropReason::EgressFull) as usize, 32 - qlen());
}

#[test]
fn with_backpressure_off_a_full_client_loses_the_rest() {
    let r = rig();
    r.switch.set_backpressure(false);
    let mut held = Held::default();
    r.send(&batch(1, 32), &mut held);
    assert!(held.is_empty());
    let c = r.dest.counters().snapshot();
    assert_eq!(c.tx_held, 0);
    assert_eq!(c.drops(DropReason::EgressFull) as usize, 32 - qlen());
}

#[test]
fn a_client_that_reads_too_slowly_is_given_up_on_after_the_hold_maximum() {
    let q = qlen() as u32;
    let r = rig();
    let mut held = Held::default();
    r.send(&batch(1, 32), &mut held);
    // One frame every 5 ms: progress well within HOLD_LIMIT each time, but
    // the 21 held frames would take over 100 ms.
    let client = r.client.try_clone().expect("clone client");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut last = Instant::now();
        let mut max_gap = Duration::ZERO;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            if client.recv(&mut buf).is_ok() {
                max_gap = max_gap.max(last.elapsed());
                last = Instant::now();
            }
        }
        max_gap
    });
    let sw = r.switch.clone();
    let t0 = Instant::now();
    runtime().block_on(held.release(|| sw.now()));
    let waited = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let max_gap = reader.join().expect("reader");
    // A reader the machine starved for HOLD_LIMIT is given up on earlier,
    // rightly; otherwise only the maximum ends the wait.
    assert!(
        (waited >= HOLD_MAX || max_gap >= HOLD_LIMIT)
            && waited < HOLD_MAX + Duration::from_millis(500),
        "gave up after {waited:?} (longest gap between reads {max_gap:?})"
    );
    let c = r.dest.counters().snapshot();
    assert!(c.tx_frames as u32 > q, "some held frames went: {c:?}");
    assert!(c.drops(DropReason::EgressFull) > 0, "the rest was dropped");
    assert_eq!(c.tx_frames + c.drops(DropReason::EgressFull), 32);
}

#[test]
fn a_super_frame_from_a_tap_is_cut_and_every_piece_held_in_order() {
    let q = qlen();
    let r = rig();
    let mut held = Held::default();
    // 40 segments of 1448 bytes, more than the client's queue holds.
    let (hdr, sf) = common::super_frame(B, 40 * 1448);
    let sw = r.switch.clone();
    sw.forward(
        &r.ingress,
        Frames::Offloaded(&hdr, &sf),
        Overflow::Hold(&mut held),
        sw.now(),
    );
    assert!(!held.is_empty(), "pieces beyond the queue are held");
    assert_eq!(r.dest.counters().snapshot().tx_frames as usize, q);
    let client = r.client.try_clone().expect("clone client");
    let reader = std::thread::spawn(move || {
        let mut seqs = Vec::new();
        let mut buf = [0u8; 2048];
        while seqs.len() < 40 {
            match client.recv(&mut buf) {
                // The TCP sequence number of each piece.
                Ok(n) if n >= 54 => {
                    seqs.push(u32::from_be_bytes([buf[38], buf[39], buf[40], buf[41]]))
                }
                _ => break,
            }
        }
        seqs
    });
    runtime().block_on(held.release(|| sw.now()));
    let seqs = reader.join().expect("reader");
    let want: Vec<u32> = (0..40).map(|i| 1 + i * 1448).collect();
    assert_eq!(seqs, want, "every piece, in order");
    let c = r.dest.counters().snapshot();
    assert_eq!(c.drops(DropReason::EgressFull), 0);
    assert_eq!(c.tx_held as usize, 40 - q);
}
