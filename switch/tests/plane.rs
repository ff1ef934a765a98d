//! The data plane thread with real kernel sockets: frames one at a time
//! and in bursts arrive whole and in order, unicast for a slow receiver is
//! held (the plane stops reading its sender until the port's task has
//! delivered it) without a loss, and a stopped port is no longer read.

mod sockets;

use sockets::{frame, seq, SocketTx, TempDir};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_switch::port::Port;
use switchyard_switch::ports::plane::{self, Receiving};
use switchyard_switch::{DropReason, EngineConfig, FdbConfig, Mode, Switch};

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

/// A port on the plane and its client's socket.
struct Attached {
    port: Arc<Port>,
    receiving: Receiving,
    client: UnixDatagram,
}

/// Makes a port whose client is `client` and attaches it to the plane.
/// `connected_client`: the client's socket is connected to the switch's
/// (as QEMU and vde_plug do); otherwise it is left unconnected (as UML
/// does), so the kernel bounds the queue toward it to
/// `net.unix.max_dgram_qlen` datagrams.
fn attach(switch: &Arc<Switch>, dir: &TempDir, name: &str, connected_client: bool) -> Attached {
    let client_path = dir.0.join(format!("{name}-client"));
    let ours_path = dir.0.join(format!("{name}-ours"));
    let client = UnixDatagram::bind(&client_path).expect("bind client");
    let ours = UnixDatagram::bind(&ours_path).expect("bind ours");
    ours.connect(&client_path).expect("connect to client");
    ours.set_nonblocking(true).expect("nonblocking");
    if connected_client {
        client.connect(&ours_path).expect("connect client");
    }
    // A stuck plane fails the test instead of hanging it.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    client
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let ours = Arc::new(ours);
    let port = Arc::new(Port::new(
        switch.allocate_id(),
        name,
        "test",
        "test",
        Box::new(SocketTx(ours.clone())),
    ));
    switch.add_port(port.clone());
    let receiving = plane::plane().expect("the data plane thread runs").attach(
        switch.clone(),
        port.clone(),
        ours,
    );
    if !connected_client {
        client.connect(&ours_path).expect("connect client");
    }
    Attached {
        port,
        receiving,
        client,
    }
}

/// A switch with ports A (client connected) and B (client connected when
/// `b_connected`), B's address already learned: B sent A frame 0.
fn two_ports(tag: &str, b_connected: bool) -> (TempDir, Arc<Switch>, Attached, Attached) {
    let dir = TempDir::new(tag);
    let switch = Switch::new(EngineConfig::new(Mode::Switch, FdbConfig::default()));
    let a = attach(&switch, &dir, "a", true);
    let b = attach(&switch, &dir, "b", b_connected);
    b.client.send(&frame(A, B, 0)).expect("send");
    assert_eq!(receive(&a.client, 1), vec![0]);
    (dir, switch, a, b)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves `a` (delivers what the plane held for full peers, as the port's
/// task does) until `work` has finished; returns its result.
fn serving<T: Send + 'static>(
    switch: &Arc<Switch>,
    a: &mut Attached,
    work: std::thread::JoinHandle<T>,
) -> T {
    let port = a.port.clone();
    runtime().block_on(async {
        let serve = a.receiving.serve(switch, &port);
        tokio::pin!(serve);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::select! {
                r = &mut serve => panic!("serving ended early: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    if work.is_finished() {
                        break;
                    }
                    assert!(Instant::now() < deadline, "stuck");
                }
            }
        }
        work.join().expect("the test's thread")
    })
}

/// Receives `n` frames on `client` and returns their sequence numbers.
fn receive(client: &UnixDatagram, n: usize) -> Vec<u32> {
    let mut got = Vec::with_capacity(n);
    let mut buf = [0u8; 2048];
    while got.len() < n {
        match client.recv(&mut buf) {
            Ok(len) => got.push(seq(&buf[..len])),
            Err(e) => panic!("after {} of {n} frames: {e}", got.len()),
        }
    }
    got
}

#[test]
fn frames_one_at_a_time_and_in_bursts_arrive_in_order() {
    let (_dir, switch, mut a, b) = two_ports("plane-order", true);

    // Ping-pong: one frame in flight, read one at a time.
    for i in 1..=200u32 {
        a.client.send(&frame(B, A, i)).expect("send");
        assert_eq!(receive(&b.client, 1), vec![i]);
        b.client.send(&frame(A, B, i)).expect("send");
        assert_eq!(receive(&a.client, 1), vec![i]);
    }

    // Bursts: 20 000 frames as fast as A can send them, B reading on
    // another thread. A's blocking sends wait when the plane stops reading
    // A (held frames for B, whose queue is full), so nothing is dropped.
    let reader = std::thread::spawn(move || {
        let got = receive(&b.client, 20_000);
        (got, b)
    });
    let a_client = a.client.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        for i in 0..20_000u32 {
            a_client.send(&frame(B, A, i)).expect("send");
        }
    });
    let (got, b) = serving(&switch, &mut a, reader);
    sender.join().expect("sender");
    let expected: Vec<u32> = (0..20_000).collect();
    assert!(got == expected, "frames lost or out of order");
    assert_eq!(b.port.counters().snapshot().tx_frames, 200 + 20_000);
    let rt = runtime();
    rt.block_on(a.receiving.stop());
    rt.block_on(b.receiving.stop());
}

#[test]
fn a_slow_receiver_pauses_its_sender_and_loses_nothing() {
    const N: u32 = 5_000;
    // B's client is unconnected: about 10 datagrams fit toward it.
    let (_dir, switch, mut a, b) = two_ports("plane-hold", false);

    let rt = runtime();
    let b_client = b.client;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(N as usize);
        let mut buf = [0u8; 2048];
        while got.len() < N as usize {
            match b_client.recv(&mut buf) {
                Ok(len) => got.push(seq(&buf[..len])),
                Err(e) => panic!("after {} frames: {e}", got.len()),
            }
            if got.len() % 100 == 0 {
                // Slow: far behind the sender, but never 20 ms without
                // taking a frame, so never marked stalled.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        got
    });
    let a_client = a.client.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        for i in 1..=N {
            a_client.send(&frame(B, A, i)).expect("send");
        }
    });
    let got = serving(&switch, &mut a, reader);
    sender.join().expect("sender");
    let expected: Vec<u32> = (1..=N).collect();
    assert!(got == expected, "frames lost or out of order");
    let c = b.port.counters().snapshot();
    assert!(c.tx_held > 0, "the switch never had to hold: {c:?}");
    assert_eq!(c.drops(DropReason::EgressFull), 0, "{c:?}");
    rt.block_on(a.receiving.stop());
    rt.block_on(b.receiving.stop());
}

#[test]
fn a_stopped_port_is_not_read() {
    let (_dir, _switch, a, b) = two_ports("plane-stop", true);
    a.client.send(&frame(B, A, 1)).expect("send");
    assert_eq!(receive(&b.client, 1), vec![1]);
    let rt = runtime();
    rt.block_on(a.receiving.stop());
    for i in 2..=10 {
        a.client.send(&frame(B, A, i)).expect("send");
    }
    std::thread::sleep(Duration::from_millis(200));
    b.client.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    assert!(
        b.client.recv(&mut buf).is_err(),
        "a frame from the stopped port was forwarded"
    );
    assert_eq!(a.port.counters().snapshot().rx_frames, 1);
    rt.block_on(b.receiving.stop());
}
