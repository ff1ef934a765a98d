//! The bad-input battery: every kind of bad input a local client can send
//! to the unix control protocol and to a stream listener, from malformed
//! handshakes to a million frames with random source addresses. After each
//! case a reference pair of clients exchanges a counted burst in both
//! directions and must lose nothing, the daemon's resident memory must stay
//! within a bound of where it started, its descriptors must come back
//! down, and a counter in `switchyard ctl -j stats` or `ctl -j ports`
//! must show what was rejected.
//!
//! (`handshake.rs` checks what each bad request gets back, EOF and never a
//! hang; `transports_bad_input.rs` the udp, vxlan and stream drop reasons.
//! This file proves that none of it costs anyone else anything.)

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::battery::{
    self, handshake_refusals, is_multicast, stat, wait_refusals, Crowd, Rig, Rng, FD_SLACK,
};
use switchyard_tests::proto::{self, raw_handshake, request, sockaddr_path, Client, Outcome};
use switchyard_tests::transports::{counter, drops, json::Json};
use switchyard_tests::{preflight, unique_name, wait_until, Netns};

/// How much the daemon's resident memory may grow over its start value
/// during the battery. Everything it holds is bounded: the FDB at 65 536
/// entries (a few MiB), 128 waiting handshakes per control socket, 256
/// connections per stream listener (16 KiB receive buffer and up to 256 KiB
/// of send queue each); the 1 000 real ports of the crowd case are the
/// largest single item (about 4 MiB).
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// The daemon's limit on connections waiting for their request
/// (`switch/src/ports/unix/handshakes.rs`).
const MAX_PENDING: usize = 128;
/// The daemon's limit on connections per stream listener
/// (`switch/src/ports/stream.rs`).
const MAX_STREAM_CONNECTIONS: usize = 256;

/// A [`Rig`] with the battery's memory bound.
fn rig(tag: &str, extra: &[&str]) -> Result<Rig> {
    let mut rig = Rig::start(tag, extra)?;
    rig.rss_bound_kib = RSS_BOUND_KIB;
    Ok(rig)
}

/// What the switch did with one bad request.
fn refused(rig: &Rig, bytes: &[u8], what: &str) -> Result<()> {
    // Writing a large blob may fail half-way: the switch reads the start,
    // refuses, closes.
    let outcome = match raw_handshake(&rig.ctl_path(), bytes, Duration::from_secs(3)) {
        Ok(o) => o,
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
                    )
                })
            }) =>
        {
            Outcome::Reset
        }
        Err(e) => return Err(e).context(what.to_string()),
    };
    match outcome {
        Outcome::Eof(got) if got.is_empty() => Ok(()),
        Outcome::Reset => Ok(()),
        other => bail!("{what}: expected the switch to close the connection, got {other:?}"),
    }
}

/// A connection that sends nothing: when (if within 30 s) the switch
/// closed it.
fn silent_for_30s(ctl: PathBuf) -> Result<Option<Duration>> {
    let mut s = UnixStream::connect(&ctl).context("the silent connection")?;
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => Ok(Some(start.elapsed())),
        Ok(n) => bail!("the switch wrote {n} bytes to a client that never sent a request"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(Some(start.elapsed())),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(e).context("waiting on the silent connection"),
    }
}

/// Handshakes: short, long (a 4 KiB description and a 1 MiB blob),
/// garbage, wrong magic, wrong version; a client silent for 30 s (running
/// meanwhile); 1 000 silent connections at once; 1 000 real clients at
/// once. After each: the pair loses nothing, memory is bounded, the
/// descriptors come back, and `ctl stats` counts the refusal by reason.
#[test]
fn bad_handshakes_cost_nothing_else() -> Result<()> {
    preflight()?;
    let mut rig = rig("bh", &[])?;
    let ctl_path = rig.ctl_path();
    let scratch = rig.tmp.path().to_path_buf();
    let silent = {
        let p = ctl_path.clone();
        std::thread::spawn(move || silent_for_30s(p))
    };

    let sock_path = scratch.join(format!(".{}", unique_name("raw")));
    let _sock = UnixDatagram::bind(&sock_path)?;
    let sa = sockaddr_path(&sock_path)?;
    let good = request(3, 0, 0, &sa, b"battery");
    let mut rng = Rng::new(0x5eed);

    refused(&rig, &good[..10], "a 10-byte request")?;
    rig.check("short request")?;
    refused(&rig, &rng.bytes(150), "150 bytes of garbage")?;
    rig.check("garbage")?;
    refused(
        &rig,
        &proto::request_with_magic(0x1bad_b002, 3, 0, &sa, b"x"),
        "wrong magic",
    )?;
    rig.check("wrong magic")?;
    refused(&rig, &request(2, 0, 0, &sa, b"x"), "version 2")?;
    rig.check("wrong version")?;
    let mut blob = rng.bytes(1 << 20);
    blob[..4].copy_from_slice(&0xdead_beefu32.to_ne_bytes());
    refused(&rig, &blob, "a 1 MiB blob")?;
    rig.check("1 MiB blob")?;

    // A long but valid request: accepted, its description cut to 128
    // bytes; the rest is ignored (clients may write after the request).
    let long = request(3, 0, 0, &sa, &vec![b'd'; 4096]);
    let mut conn = UnixStream::connect(&ctl_path)?;
    conn.write_all(&long)?;
    match proto::read_outcome(&mut conn, Duration::from_secs(3))? {
        Outcome::Reply(_) => {}
        other => bail!("a valid request with a 4 KiB description: {other:?}"),
    }
    let peers: Vec<String> = rig
        .ctl
        .ports()?
        .iter()
        .filter_map(|p| p.get("peer").and_then(Json::as_str).map(str::to_string))
        .collect();
    let longest = peers.iter().map(String::len).max().unwrap_or(0);
    ensure!(
        longest < 200,
        "a port's description is {longest} bytes long (the limit is 128): {peers:?}"
    );
    rig.check("a 4 KiB description")?;
    drop(conn);
    wait_until(
        Duration::from_secs(5),
        "the long request's port to go",
        || rig.ports().is_ok_and(|n| n == 2),
    )?;

    // The silent client: cut off after the request timeout (5 s), long
    // before its 30 s are up, while everything above went on.
    let closed_after = silent
        .join()
        .map_err(|_| anyhow::anyhow!("the silent client's thread panicked"))??;
    match closed_after {
        Some(t) if t <= Duration::from_secs(7) => eprintln!("silent client closed after {t:?}"),
        Some(t) => bail!("a silent client was closed only after {t:?} (the limit is 5 s)"),
        None => bail!("a client that sent nothing for 30 s was never closed"),
    }
    rig.check("a client silent for 30 s")?;

    // 1 000 silent connections at once: at most 128 wait at a time; the
    // longest-waiting one is closed after a second to make room. A real
    // client still gets in meanwhile, the pair still talks, descriptors
    // stay bounded.
    let flood = battery::silent_connections(&ctl_path, 1000)?;
    std::thread::sleep(Duration::from_millis(500));
    let during = rig.check("1 000 silent connections")?;
    ensure!(
        during.fds <= rig.base.fds + MAX_PENDING + FD_SLACK,
        "1 000 silent connections made the daemon hold {} descriptors (started with {}, \
         at most {MAX_PENDING} may wait)",
        during.fds,
        rig.base.fds
    );
    let t = Instant::now();
    let c = Client::attach(&rig.dir, 0, &scratch, proto::mac(0xc1))
        .context("a real client while 1 000 silent connections wait")?;
    eprintln!(
        "a real client got in after {:?} during the flood",
        t.elapsed()
    );
    switchyard_tests::scenarios::pass_frame(&c, &rig.pair.a, proto::BROADCAST, 64, 1)?;
    wait_refusals(&rig.ctl, "crowded", 100, Duration::from_secs(15))?;
    drop(flood);
    drop(c);
    rig.fds_back(0, "after the silent flood ended")?;
    rig.check("after the silent flood")?;

    // 1 000 real clients at once: every one gets a port (--numports 1024),
    // and when they leave every descriptor comes back.
    let (crowd, ok) = Crowd::attach(&ctl_path, &scratch, 1000)?;
    ensure!(
        ok == 1000,
        "{ok} of 1 000 clients attaching at once got a port"
    );
    let n = rig.ports()?;
    ensure!(n == 1002, "`ctl ports` lists {n} ports, expected 1 002");
    rig.check("1 000 clients attached")?;
    drop(crowd);
    wait_until(Duration::from_secs(20), "the 1 000 ports to go", || {
        rig.ports().is_ok_and(|n| n == 2)
    })?;
    let after = rig.fds_back(0, "after 1 000 clients left")?;
    rig.check("1 000 clients gone")?;

    // Every refusal is counted by reason.
    let r = handshake_refusals(&rig.ctl)?;
    let get = |k: &str| r.get(k).copied().unwrap_or(0);
    ensure!(
        get("malformed") >= 1
            && get("bad_magic") >= 3
            && get("bad_version") >= 1
            && get("silent") >= 1
            && get("crowded") >= 100,
        "`ctl stats` handshakes_refused: {r:?}; expected malformed >= 1, bad_magic >= 3 \
         (garbage, magic, blob), bad_version >= 1, silent >= 1, crowded >= 100"
    );
    let s = battery::stats(&rig.ctl)?;
    ensure!(
        stat(&s, "handshakes_waiting") == 0,
        "connections still counted as waiting after all left: {s}"
    );
    eprintln!("refusals: {r:?}; end: {after}");
    rig.sw.assert_running()?;
    Ok(())
}

/// Unix datagrams of 0, 13, 65 536 and 100 000 bytes; a client that never
/// reads while broadcasts flow; a million frames with random source MACs
/// (half of them multicast, which a source may not be) to one port. The
/// drops are counted on the sender's port, the FDB stops at its limit and
/// empties again when the flooder leaves, and the pair never loses a frame,
/// not even while the flood runs.
#[test]
fn bad_datagrams_and_floods_cost_nothing_else() -> Result<()> {
    preflight()?;
    let mut rig = rig("bd", &[])?;
    let scratch = rig.tmp.path().to_path_buf();
    // Runts and giants.
    let ((x_ctl, raw), x_port) =
        rig.attach_tracked(|| battery::attach_raw(&rig.ctl_path(), &scratch, "runts and giants"))?;
    battery::set_send_buffer(&raw, 1 << 20)?;
    for len in [0usize, 13, 65_536, 100_000] {
        let sent = raw
            .send(&vec![0xffu8; len])
            .with_context(|| format!("sending a {len}-byte datagram"))?;
        ensure!(sent == len, "short send of a {len}-byte datagram");
    }
    let p = rig
        .wait_port(&x_port, |p| {
            drops(p, "too_short") == 2 && drops(p, "too_long") == 2
        })
        .context("counting 0/13 bytes as too_short and 65 536/100 000 as too_long")?;
    eprintln!("runts and giants: {p}");
    for c in [&rig.pair.a, &rig.pair.b] {
        if let Some(f) = c.recv(Duration::from_millis(300))? {
            bail!("a {}-byte bad datagram was forwarded", f.len());
        }
    }
    rig.check("datagrams of 0, 13, 65 536 and 100 000 bytes")?;
    drop((x_ctl, raw));

    // A client that never reads: broadcasts fill its queue; its drops are
    // tail drops on its port, nobody else's.
    let (deaf, deaf_port) =
        rig.attach_tracked(|| Client::attach(&rig.dir, 0, &scratch, proto::mac(0xd1)))?;
    let a = &rig.pair.a;
    let b = &rig.pair.b;
    let got = battery::burst(a, b, proto::BROADCAST, 2000, 1000, 0xee)?;
    ensure!(
        got.lost() == 0,
        "B lost {} of 2 000 broadcasts while a client on the switch never read",
        got.lost()
    );
    let p = rig
        .wait_port(&deaf_port, |p| drops(p, "egress_full") > 1000)
        .context("the deaf client's tail drops")?;
    eprintln!("deaf client: {}", p);
    rig.check("a client that never reads")?;

    // A million frames from random source addresses to one port (which
    // never reads either), while the pair keeps exchanging bursts.
    let sink = Client::attach(&rig.dir, 0, &scratch, proto::mac(0x51))?;
    sink.send(&proto::frame(proto::BROADCAST, sink.mac(), 60, 0))?;
    let (flooder, flood_port) =
        rig.attach_tracked(|| Client::attach(&rig.dir, 0, &scratch, proto::mac(0xf1)))?;
    const FLOOD: u32 = 1_000_000;
    let sink_mac = sink.mac();
    let started = Instant::now();
    let flood = std::thread::spawn(move || -> Result<(Client, u64)> {
        let mut rng = Rng::new(0xf100d);
        let mut frame = proto::frame(sink_mac, [0; 6], 64, 9);
        let mut multicast = 0;
        for _ in 0..FLOOD {
            let src = rng.mac();
            multicast += u64::from(is_multicast(src));
            frame[6..12].copy_from_slice(&src);
            flooder.send(&frame)?;
        }
        Ok((flooder, multicast))
    });
    let mut bursts = 0;
    let mut peak = 0;
    while !flood.is_finished() {
        peak = peak.max(rig.measure("during the MAC flood")?.rss_kib);
        bursts += 1;
    }
    let (flooder, multicast) = flood
        .join()
        .map_err(|_| anyhow::anyhow!("the flooding thread panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "flood: {FLOOD} frames in {secs:.1} s ({:.0}/s), {bursts} clean bursts meanwhile, \
         peak RSS {peak} KiB",
        f64::from(FLOOD) / secs
    );
    let p = rig
        .wait_port(&flood_port, |p| {
            counter(p, "rx_frames") + drops(p, "multicast_source") >= u64::from(FLOOD)
        })
        .context("the flooder's frames")?;
    ensure!(
        drops(&p, "multicast_source") == multicast,
        "{multicast} frames had a multicast source; the port counted {}: {p}",
        drops(&p, "multicast_source")
    );
    let s = battery::stats(&rig.ctl)?;
    let (entries, max, refused) = (
        stat(&s, "fdb_entries"),
        stat(&s, "fdb_max_entries"),
        stat(&s, "fdb_refused"),
    );
    ensure!(
        entries <= max && refused > 0,
        "after the flood the FDB has {entries} entries (limit {max}) and refused {refused}: {s}"
    );
    eprintln!("FDB after the flood: {entries} of {max}, {refused} addresses refused");
    rig.check("after the MAC flood")?;

    // The flooder leaves: its addresses go with it.
    drop(flooder);
    wait_until(Duration::from_secs(10), "the FDB to empty", || {
        battery::stats(&rig.ctl).is_ok_and(|s| stat(&s, "fdb_entries") < 10)
    })?;
    drop((sink, deaf));
    rig.fds_back(0, "after the flooder, the sink and the deaf client left")?;
    rig.check("after the flooder left")?;
    Ok(())
}

/// A stream listener: 1 000 TCP connections at once (at most 256 become
/// ports, the rest are closed and counted), and a connection that never
/// reads while broadcasts flow (its send queue stays bounded, the excess
/// is tail-dropped on its port).
#[test]
fn stream_floods_cost_nothing_else() -> Result<()> {
    preflight()?;
    let mut rig = rig("bs", &["--port", "stream,name=st,listen=127.0.0.1:7210"])?;
    let connect =
        |ns: &Netns| -> Result<TcpStream> { Ok(ns.run(|| TcpStream::connect("127.0.0.1:7210"))??) };

    // A connection that never reads. Small TCP buffers in the namespace
    // (the defaults let loopback TCP absorb megabytes), so the switch's own
    // queue for it fills within the burst.
    rig.ns.run(|| -> Result<()> {
        for (knob, value) in [
            ("tcp_wmem", "4096 16384 65536"),
            ("tcp_rmem", "4096 16384 65536"),
        ] {
            let path = format!("/proc/sys/net/ipv4/{knob}");
            std::fs::write(&path, value).with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    })??;
    let deaf = connect(&rig.ns)?;
    wait_until(Duration::from_secs(5), "st:1", || {
        rig.ctl.port("st:1").is_ok()
    })?;
    let got = battery::burst(&rig.pair.a, &rig.pair.b, proto::BROADCAST, 3000, 1400, 0xed)?;
    ensure!(
        got.lost() == 0,
        "B lost {} of 3 000 broadcasts while a stream peer never read",
        got.lost()
    );
    let p = rig
        .wait_port("st:1", |p| drops(p, "egress_full") > 0)
        .context("the deaf stream peer's tail drops")?;
    eprintln!("deaf stream peer: {p}");
    rig.check("a stream peer that never reads")?;
    drop(deaf);
    wait_until(Duration::from_secs(5), "st:1 to go", || {
        rig.ports().is_ok_and(|n| n == 2)
    })?;

    // 1 000 connections at once.
    let conns: Vec<TcpStream> = rig.ns.run(|| {
        (0..1000)
            .map(|_| TcpStream::connect("127.0.0.1:7210"))
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    wait_until(
        Duration::from_secs(20),
        "the listener to serve its maximum",
        || {
            battery::stats(&rig.ctl).is_ok_and(|s| {
                stat(&s, "stream_connections_refused") >= (1000 - MAX_STREAM_CONNECTIONS) as u64
            })
        },
    )?;
    let during = rig.check("1 000 stream connections")?;
    let streams = rig
        .ctl
        .ports()?
        .iter()
        .filter(|p| p.get("type").and_then(Json::as_str) == Some("stream"))
        .count();
    ensure!(
        streams == MAX_STREAM_CONNECTIONS,
        "{streams} stream ports for 1 000 connections (the limit is {MAX_STREAM_CONNECTIONS})"
    );
    ensure!(
        during.fds <= rig.base.fds + MAX_STREAM_CONNECTIONS + FD_SLACK,
        "1 000 stream connections made the daemon hold {} descriptors (started with {})",
        during.fds,
        rig.base.fds
    );
    let s = battery::stats(&rig.ctl)?;
    ensure!(
        stat(&s, "stream_connections_refused") == (1000 - MAX_STREAM_CONNECTIONS) as u64,
        "`ctl stats` counts {} refused stream connections, expected {}",
        stat(&s, "stream_connections_refused"),
        1000 - MAX_STREAM_CONNECTIONS
    );
    drop(conns);
    wait_until(Duration::from_secs(20), "the stream ports to go", || {
        rig.ports().is_ok_and(|n| n == 2)
    })?;
    rig.fds_back(0, "after 1 000 stream connections closed")?;
    rig.check("after the stream connections closed")?;
    Ok(())
}
