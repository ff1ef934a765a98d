//! Malformed and unexpected input on the udp, vxlan and stream ports: each
//! bad datagram or record is dropped, counted under the right reason in
//! `switchyard ctl -j ports`, warned about in the log, and costs nothing
//! else: the same port and the other ports keep passing frames.
//!
//! The switch runs in namespace S with a VDE directory; the test's
//! "observer" is a protocol client on it (`switchyard_tests::proto`), the
//! port every good frame must reach. The test's own sockets play the
//! peers: created inside S, then used from the test thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::proto::{self, Client, BROADCAST};
use switchyard_tests::scenarios::hears_from;
use switchyard_tests::transports::{
    drops, expect_drop_warning, json::Json, wait_attached, wait_detached, Ctl,
};
use switchyard_tests::{preflight, Netns, Switch, SwitchCmd, TempDir};

const WAIT: Duration = Duration::from_secs(3);
/// The VXLAN header switchyard must send for VNI 42 (protocols.md §5.1).
const VNI42: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 0x2a, 0];

/// The observer must receive `f` (whole and unchanged).
fn observer_gets(obs: &Client, f: &[u8], what: &str) -> Result<()> {
    let got = obs.recv_matching(WAIT, |g| g == f)?;
    ensure!(got.is_some(), "the observer did not receive {what}");
    Ok(())
}

fn recv_udp(s: &UdpSocket, want: impl Fn(&[u8]) -> bool) -> Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 70000];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        s.set_read_timeout(Some(left))?;
        match s.recv(&mut buf) {
            Ok(n) if want(&buf[..n]) => return Ok(Some(buf[..n].to_vec())),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) => return Err(e).context("receiving a datagram"),
        }
    }
}

fn vxlan(header: [u8; 8], frame: &[u8]) -> Vec<u8> {
    let mut p = header.to_vec();
    p.extend_from_slice(frame);
    p
}

fn expect_drops(ctl: &Ctl, port: &str, reason: &str, n: u64) -> Result<()> {
    let p = ctl.port(port)?;
    let got = drops(&p, reason);
    ensure!(
        got == n,
        "port {port}: {reason} = {got}, expected {n}; entry: {p}"
    );
    Ok(())
}

/// Bad-input drop reasons, none of which a well-behaved port may show.
const BAD_INPUT: [&str; 6] = [
    "too_short",
    "too_long",
    "multicast_source",
    "unknown_sender",
    "bad_encapsulation",
    "wrong_vni",
];

fn expect_no_bad_input(ctl: &Ctl, port: &str) -> Result<()> {
    let p = ctl.port(port)?;
    for r in BAD_INPUT {
        ensure!(drops(&p, r) == 0, "port {port} counted {r} drops: {p}");
    }
    Ok(())
}

fn start(ns: &Netns, tmp: &TempDir, ctl: &Ctl, ports: &[&str]) -> Result<Switch> {
    let mut cmd = SwitchCmd::native()?.vde(&tmp.join("sw")).args(ctl.args());
    for p in ports {
        cmd = cmd.arg("--port").arg(p);
    }
    cmd.start(Some(ns))
}

/// The observer's port name (`unix:N`), from `ctl ports`.
fn observer_port(ctl: &Ctl) -> Result<String> {
    ctl.ports()?
        .iter()
        .filter(|p| p.get("type").and_then(Json::as_str) == Some("unix"))
        .find_map(|p| p.get("name").and_then(Json::as_str).map(str::to_string))
        .context("no unix port for the observer in `ctl ports`")
}

/// Test 6a: udp port `u1` (peer 127.0.0.1:7002) and vxlan port `vx` (VNI
/// 42, remote 127.0.0.2, where the test's VTEP socket listens). Dropped:
/// a 13-byte and an empty datagram from the peer (too_short), a valid
/// frame from a stranger (unknown_sender), a VXLAN packet with the I flag
/// clear and a truncated one (bad_encapsulation), one for VNI 43
/// (wrong_vni). None of them reaches the observer; good frames before and
/// after do, in both directions, and the observer's port counts no bad
/// input.
#[test]
fn bad_datagrams_are_dropped_counted_and_warned() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tbd")?;
    let ns = Netns::new()?;
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = start(
        &ns,
        &tmp,
        &ctl,
        &[
            "udp,name=u1,local=127.0.0.1:7001,remote=127.0.0.1:7002",
            "vxlan,name=vx,vni=42,local=127.0.0.1,remote=127.0.0.2",
        ],
    )?;
    wait_attached(&mut sw, "u1", 1)?;
    wait_attached(&mut sw, "vx", 1)?;
    let (peer, stranger, vtep) = ns.run(|| -> Result<_> {
        let peer = UdpSocket::bind("127.0.0.1:7002").context("binding the udp peer")?;
        peer.connect("127.0.0.1:7001")?;
        let stranger = UdpSocket::bind("127.0.0.1:7003").context("binding the stranger")?;
        stranger.connect("127.0.0.1:7001")?;
        let vtep = UdpSocket::bind("127.0.0.2:4789").context("binding the test VTEP")?;
        vtep.connect("127.0.0.1:4789")?;
        Ok((peer, stranger, vtep))
    })??;
    let obs = Client::attach(&tmp.join("sw"), 0, tmp.path(), proto::mac(0x0b))?;
    let obs_port = observer_port(&ctl)?;

    // Good frames first: both ports work.
    let good_udp = proto::frame(BROADCAST, proto::mac(0x01), 60, 1);
    peer.send(&good_udp)?;
    observer_gets(&obs, &good_udp, "a frame from the udp peer")?;
    let good_vx = proto::frame(BROADCAST, proto::mac(0x02), 60, 2);
    vtep.send(&vxlan(VNI42, &good_vx))?;
    observer_gets(&obs, &good_vx, "a frame from the VXLAN remote")?;

    // The bad ones.
    peer.send(&good_udp[..13])?;
    peer.send(&[])?;
    let stranger_frame = proto::frame(BROADCAST, proto::mac(0x0e), 60, 3);
    stranger.send(&stranger_frame)?;
    let bad_vx = proto::frame(BROADCAST, proto::mac(0x0f), 60, 4);
    let mut no_i_flag = VNI42;
    no_i_flag[0] = 0;
    vtep.send(&vxlan(no_i_flag, &bad_vx))?;
    vtep.send(&VNI42[..5])?;
    let mut vni43 = VNI42;
    vni43[6] = 43;
    vtep.send(&vxlan(vni43, &bad_vx))?;

    ensure!(
        !hears_from(&obs, proto::mac(0x0e))?,
        "the stranger's frame was forwarded"
    );
    ensure!(
        !hears_from(&obs, proto::mac(0x0f))?,
        "a bad VXLAN packet was forwarded"
    );
    if let Some(f) = obs.recv_matching(Duration::from_millis(300), |f| f.len() < 14)? {
        bail!("a {}-byte runt was forwarded", f.len());
    }

    // Good frames after: still both ways on both ports.
    let good_udp2 = proto::frame(BROADCAST, proto::mac(0x01), 100, 5);
    peer.send(&good_udp2)?;
    observer_gets(
        &obs,
        &good_udp2,
        "a frame from the udp peer after the bad input",
    )?;
    let good_vx2 = proto::frame(BROADCAST, proto::mac(0x02), 100, 6);
    vtep.send(&vxlan(VNI42, &good_vx2))?;
    observer_gets(&obs, &good_vx2, "a VXLAN frame after the bad input")?;
    let from_obs = proto::frame(BROADCAST, obs.mac(), 80, 7);
    obs.send(&from_obs)?;
    let got = recv_udp(&peer, |d| d == from_obs.as_slice())?;
    ensure!(
        got.is_some(),
        "the udp peer did not receive the observer's broadcast"
    );
    let want = vxlan(VNI42, &from_obs);
    let got = recv_udp(&vtep, |d| d.ends_with(&from_obs))?;
    match got {
        None => bail!("the VXLAN remote did not receive the observer's broadcast"),
        Some(d) => ensure!(
            d == want,
            "the VXLAN remote got header {:02x?}, expected {:02x?}",
            &d[..8.min(d.len())],
            VNI42
        ),
    }

    expect_drops(&ctl, "u1", "too_short", 2)?;
    expect_drops(&ctl, "u1", "unknown_sender", 1)?;
    expect_drops(&ctl, "vx", "bad_encapsulation", 2)?;
    expect_drops(&ctl, "vx", "wrong_vni", 1)?;
    expect_no_bad_input(&ctl, &obs_port)?;
    for (port, reason) in [
        ("u1", "too_short"),
        ("u1", "unknown_sender"),
        ("vx", "bad_encapsulation"),
        ("vx", "wrong_vni"),
    ] {
        expect_drop_warning(&sw, port, reason)?;
    }
    sw.assert_running()?;
    Ok(())
}

/// Writes `bytes` on a stream connection and waits for the switch to close
/// it (EOF or reset).
fn expect_closed_after(c: &mut TcpStream, bytes: &[u8], what: &str) -> Result<()> {
    c.write_all(bytes)?;
    c.set_read_timeout(Some(WAIT))?;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("{what}: the switch kept the connection open")
            }
            Err(e) => return Err(e).context(what.to_string()),
        }
        if Instant::now() >= deadline {
            bail!("{what}: the switch kept the connection open");
        }
    }
}

fn record(frame: &[u8]) -> Vec<u8> {
    let mut r = (frame.len() as u32).to_be_bytes().to_vec();
    r.extend_from_slice(frame);
    r
}

/// Reads records from `c` until one carries `want`.
fn stream_gets(c: &mut TcpStream, want: &[u8], what: &str) -> Result<()> {
    c.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + WAIT;
    let mut acc = Vec::new();
    let mut buf = vec![0u8; 70000];
    let target = record(want);
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => bail!("{what}: the connection was closed"),
            Ok(n) => acc.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context(what.to_string()),
        }
        // Walk the records received so far.
        let mut i = 0;
        while acc.len() >= i + 4 {
            let len = u32::from_be_bytes([acc[i], acc[i + 1], acc[i + 2], acc[i + 3]]) as usize;
            if acc.len() < i + 4 + len {
                break;
            }
            if acc[i..i + 4 + len] == target[..] {
                return Ok(());
            }
            i += 4 + len;
        }
    }
    bail!("{what}: not received")
}

/// Test 6b: a stream listener `st`. Connection 1 sends a zero length and
/// connection 3 a length of 65536 (one above the largest frame): the
/// switch closes each of them, with a warning naming the reason
/// (too_short, too_long), while connection 2 keeps passing frames both
/// ways, a 65535-byte frame (the largest allowed) included. The drops stay
/// counted after their connections are gone: `switchyard ctl -j stats`.
#[test]
fn bad_stream_lengths_close_only_that_connection() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tbs")?;
    let ns = Netns::new()?;
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = start(&ns, &tmp, &ctl, &["stream,name=st,listen=127.0.0.1:7100"])?;
    let connect = || -> Result<TcpStream> {
        let c = ns.run(|| TcpStream::connect("127.0.0.1:7100"))??;
        c.set_nodelay(true)?;
        Ok(c)
    };
    let mut c1 = connect()?;
    wait_attached(&mut sw, "st:1", 1)?;
    let mut c2 = connect()?;
    wait_attached(&mut sw, "st:2", 1)?;
    let obs = Client::attach(&tmp.join("sw"), 0, tmp.path(), proto::mac(0x0b))?;
    let obs_port = observer_port(&ctl)?;

    let f1 = proto::frame(BROADCAST, proto::mac(0x21), 60, 1);
    c1.write_all(&record(&f1))?;
    observer_gets(&obs, &f1, "a frame from connection 1")?;
    let f2 = proto::frame(BROADCAST, proto::mac(0x22), 60, 2);
    c2.write_all(&record(&f2))?;
    observer_gets(&obs, &f2, "a frame from connection 2")?;

    // Zero length on connection 1.
    expect_closed_after(&mut c1, &[0, 0, 0, 0], "a zero length")?;
    wait_detached(&mut sw, "st:1", 1)?;
    expect_drop_warning(&sw, "st:1", "too_short")?;

    // Connection 2 is unaffected.
    let f3 = proto::frame(BROADCAST, proto::mac(0x22), 200, 3);
    c2.write_all(&record(&f3))?;
    observer_gets(
        &obs,
        &f3,
        "a frame from connection 2 after connection 1 broke",
    )?;
    let back = proto::frame(BROADCAST, obs.mac(), 90, 4);
    obs.send(&back)?;
    stream_gets(&mut c2, &back, "the observer's broadcast on connection 2")?;

    // A length above 65535 on a new connection.
    let mut c3 = connect()?;
    wait_attached(&mut sw, "st:3", 1)?;
    let mut rec = 65_536u32.to_be_bytes().to_vec();
    rec.extend_from_slice(&[0u8; 64]);
    expect_closed_after(&mut c3, &rec, "a length of 65536")?;
    wait_detached(&mut sw, "st:3", 1)?;
    expect_drop_warning(&sw, "st:3", "too_long")?;

    // Connection 2 still works, with the largest frame too.
    let big = proto::frame(BROADCAST, proto::mac(0x22), 65_535, 5);
    c2.write_all(&record(&big))?;
    observer_gets(&obs, &big, "a 65535-byte frame from connection 2")?;
    let back2 = proto::frame(BROADCAST, obs.mac(), 90, 6);
    obs.send(&back2)?;
    stream_gets(
        &mut c2,
        &back2,
        "the observer's broadcast after connection 3 broke",
    )?;
    expect_no_bad_input(&ctl, "st:2")?;
    expect_no_bad_input(&ctl, &obs_port)?;
    sw.assert_running()?;

    // The counters: closed connections must not take their drops with
    // them. Their ports are gone from `ctl ports`; the switch-wide totals
    // in `ctl stats` keep what they counted.
    let stats = ctl.json(&["stats"])?;
    let by_reason = |reason: &str| -> u64 {
        stats
            .get("drops_by_reason")
            .and_then(|m| m.get(reason))
            .and_then(Json::as_u64)
            .unwrap_or(0)
    };
    let (short, long) = (by_reason("too_short"), by_reason("too_long"));
    ensure!(
        short == 1 && long == 1,
        "`switchyard ctl -j stats` shows too_short={short} too_long={long} (expected 1 each: \
         the zero length on st:1 and the 65536 on st:3): {stats:?}"
    );
    Ok(())
}
