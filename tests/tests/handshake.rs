//! The unix control protocol under abuse, frame sizes, and switch versus
//! hub forwarding, with the Rust protocol client (`switchyard_tests::proto`).

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::proto::{
    self, raw_handshake, request, request_with_magic, sockaddr_path, Client, Outcome, BROADCAST,
    MAGIC,
};
use switchyard_tests::scenarios::{hears_from, pass_frame, unicast_reaches_third_port};
use switchyard_tests::switch::start_vde_switch;
use switchyard_tests::tools::vde_plug;
use switchyard_tests::{preflight, unique_name, wait_until, Netns, TempDir};

/// Longest a rejected request may take to be closed.
const REJECT_TIMEOUT: Duration = Duration::from_secs(3);

fn expect_eof(ctl: &Path, what: &str, bytes: &[u8]) -> Result<()> {
    match raw_handshake(ctl, bytes, REJECT_TIMEOUT)? {
        Outcome::Eof(got) if got.is_empty() => Ok(()),
        Outcome::Reset => Ok(()),
        Outcome::Eof(got) => bail!(
            "{what}: the switch wrote {} bytes before closing",
            got.len()
        ),
        Outcome::Reply(_) => bail!("{what}: the switch accepted it (110-byte reply)"),
        Outcome::Timeout(got) => bail!(
            "{what}: no EOF within {REJECT_TIMEOUT:?} (the connection hangs; {} bytes received)",
            got.len()
        ),
    }
}

fn expect_reply(ctl: &Path, what: &str, bytes: &[u8]) -> Result<()> {
    match raw_handshake(ctl, bytes, REJECT_TIMEOUT)? {
        Outcome::Reply(r) => {
            proto::parse_reply(&r).with_context(|| format!("{what}: bad reply"))?;
            Ok(())
        }
        other => bail!("{what}: expected a 110-byte reply, got {other:?}"),
    }
}

/// Test 7a: short, garbage, wrong-magic, version 2 and 9, bad type, port
/// beyond --numports, port in use, unreachable client address: each gets
/// EOF on its own connection (never a hang), while an idle connection sits
/// open; the daemon keeps running and good clients (the Rust client and a
/// real vde_plug) still attach and pass frames afterwards. Valid requests of
/// 122 bytes (no description) and 124 bytes (UML's size) are accepted.
#[test]
fn bad_handshakes_cost_only_their_connection() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("hs")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--numports", "4"])?;
    let ctl = dir.join("ctl");
    let scratch = tmp.path().to_path_buf();

    ns.run(|| -> Result<()> {
        // A client that connects and never says anything must not block others.
        let _idle = UnixStream::connect(&ctl)?;
        let holder = Client::attach(&dir, 3, &scratch, proto::mac(0x30))?;

        let sock_path = scratch.join(format!(".{}", unique_name("raw")));
        let _sock = UnixDatagram::bind(&sock_path)?;
        let sa = sockaddr_path(&sock_path)?;
        let good = request(3, 0, 0, &sa, b"test");

        // Connect, send nothing, close at once.
        drop(UnixStream::connect(&ctl)?);

        expect_eof(&ctl, "short request (10 bytes)", &good[..10])?;
        expect_eof(&ctl, "truncated request (100 bytes)", &good[..100])?;
        let garbage: Vec<u8> = (0..150u32)
            .map(|i| (i.wrapping_mul(97) ^ 0x5a) as u8)
            .collect();
        expect_eof(&ctl, "garbage", &garbage)?;
        expect_eof(
            &ctl,
            "wrong magic",
            &request_with_magic(0xdead_beef, 3, 0, &sa, b"test"),
        )?;
        expect_eof(
            &ctl,
            "byte-swapped magic",
            &request_with_magic(MAGIC.swap_bytes(), 3, 0, &sa, b"test"),
        )?;
        expect_eof(&ctl, "version 2", &request(2, 0, 0, &sa, b"test"))?;
        expect_eof(&ctl, "version 9", &request(9, 0, 0, &sa, b"test"))?;
        expect_eof(&ctl, "request type 7", &request(3, 7, 0, &sa, b"test"))?;
        expect_eof(
            &ctl,
            "port 5 beyond --numports 4",
            &request(3, 0, 5, &sa, b"test"),
        )?;
        expect_eof(
            &ctl,
            "port 99 beyond --numports 4",
            &request(3, 0, 99, &sa, b"test"),
        )?;
        expect_eof(
            &ctl,
            "port 3 already in use",
            &request(3, 0, 3, &sa, b"test"),
        )?;
        let missing = sockaddr_path(&scratch.join("no-such-socket"))?;
        expect_eof(
            &ctl,
            "client socket that does not exist",
            &request(3, 0, 0, &missing, b"test"),
        )?;

        // Valid requests of the two minimal sizes.
        expect_reply(&ctl, "122-byte v3 request", &request(3, 0, 0, &sa, b""))?;
        expect_reply(
            &ctl,
            "124-byte v3 request (UML)",
            &request(3, 0, 0, &sa, &[0, 0]),
        )?;

        // Good clients still work, and the port holder was not disturbed.
        let a = Client::attach(&dir, 0, &scratch, proto::mac(0x31))?;
        pass_frame(&a, &holder, BROADCAST, 64, 1)?;
        pass_frame(&holder, &a, a.mac(), 64, 2)?;
        Ok(())
    })??;

    sw.assert_running()?;
    let before = sw.attached_ports().len();
    let _plug = vde_plug(Some(&ns), &dir.display().to_string(), "vde_plug")?;
    wait_until(Duration::from_secs(5), "vde_plug attached", || {
        sw.attached_ports().len() > before
    })
    .with_context(|| format!("switch log:\n{}", sw.proc.output()))?;
    sw.assert_running()?;
    Ok(())
}

/// Test 7b: frames of 60, 1514, 1518, 9000 and 65535 bytes pass whole and
/// unchanged between two clients, both broadcast and (learned) unicast.
/// (uml_switch truncates at 1514, vde_switch 2.3.2 at 1518.)
#[test]
fn large_frames_pass_whole() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("jf")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &[])?;
    let scratch = tmp.path().to_path_buf();
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0x41))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0x42))?,
        ))
    })??;
    for (i, len) in [60usize, 1514, 1518, 9000, 65535].into_iter().enumerate() {
        let seed = i as u8 * 2;
        pass_frame(&a, &b, BROADCAST, len, seed)
            .with_context(|| format!("broadcast A->B, {len} bytes"))?;
        pass_frame(&b, &a, a.mac(), len, seed + 1)
            .with_context(|| format!("unicast B->A, {len} bytes"))?;
    }
    sw.assert_running()?;
    Ok(())
}

/// Test 7c: in switch mode a unicast to a learned MAC reaches only its port.
#[test]
fn switch_mode_keeps_known_unicast_private() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("sm")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &[])?;
    let scratch = tmp.path().to_path_buf();
    let third = ns.run(|| unicast_reaches_third_port(&dir, &scratch))??;
    ensure!(
        !third,
        "switch mode flooded a unicast to a learned MAC to a third port"
    );
    sw.assert_running()?;
    Ok(())
}

/// Test 7d: with `--hub` the same unicast reaches every port.
#[test]
fn hub_mode_floods_known_unicast() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("hm")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--hub"])?;
    let scratch = tmp.path().to_path_buf();
    let third = ns.run(|| unicast_reaches_third_port(&dir, &scratch))??;
    ensure!(third, "--hub did not flood a unicast to a third port");
    sw.assert_running()?;
    Ok(())
}

/// Test 7e: a request split over two writes 20 ms apart is still accepted
/// (protocols.md §7.1: wait briefly for the rest of a short request).
#[test]
fn request_split_over_two_writes_is_accepted() -> Result<()> {
    use std::io::Write;
    preflight()?;
    let tmp = TempDir::new("sp")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &[])?;
    let scratch = tmp.path().to_path_buf();
    ns.run(|| -> Result<()> {
        let sock_path = scratch.join(format!(".{}", unique_name("split")));
        let _sock = UnixDatagram::bind(&sock_path)?;
        let req = request(3, 0, 0, &sockaddr_path(&sock_path)?, b"split request");
        let mut s = UnixStream::connect(dir.join("ctl"))?;
        s.write_all(&req[..60])?;
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(&req[60..])?;
        match proto::read_outcome(&mut s, REJECT_TIMEOUT)? {
            Outcome::Reply(_) => Ok(()),
            other => bail!("split request: expected a reply, got {other:?}"),
        }
    })??;
    sw.assert_running()?;
    Ok(())
}

/// Test 7f: when every port up to --numports is taken, one more "any port"
/// request gets EOF; a freed port is handed out again.
#[test]
fn full_switch_refuses_with_eof() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("fu")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--numports", "3"])?;
    let scratch = tmp.path().to_path_buf();
    ns.run(|| -> Result<()> {
        let mut clients = Vec::new();
        for i in 0..3u16 {
            clients.push(
                Client::attach(&dir, 0, &scratch, proto::mac(0x50 + i))
                    .with_context(|| format!("client {} of 3", i + 1))?,
            );
        }
        let sock_path = scratch.join(format!(".{}", unique_name("full")));
        let _sock = UnixDatagram::bind(&sock_path)?;
        let sa = sockaddr_path(&sock_path)?;
        expect_eof(
            &dir.join("ctl"),
            "a 4th client on a 3-port switch",
            &request(3, 0, 0, &sa, b"x"),
        )?;
        drop(clients.pop());
        wait_until(
            Duration::from_secs(3),
            "a freed port to be handed out",
            || Client::attach(&dir, 0, &scratch, proto::mac(0x5f)).is_ok(),
        )?;
        Ok(())
    })??;
    sw.assert_running()?;
    Ok(())
}

/// Test 7g: runt datagrams (0, 5 and 13 bytes) are dropped without harm:
/// nothing is delivered for them and the next frame passes.
#[test]
fn runt_datagrams_are_dropped() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("rn")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &[])?;
    let scratch = tmp.path().to_path_buf();
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0x61))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0x62))?,
        ))
    })??;
    a.send(&[])?;
    a.send(&[0xff; 5])?;
    a.send(&[0xff; 13])?;
    if let Some(f) = b.recv(Duration::from_millis(300))? {
        ensure!(f.len() >= 14, "a {}-byte runt was forwarded", f.len());
    }
    pass_frame(&a, &b, BROADCAST, 14, 1)?;
    pass_frame(&b, &a, BROADCAST, 60, 2)?;
    sw.assert_running()?;
    Ok(())
}

/// Test 7h: when a port goes away, the addresses learned on it are
/// forgotten: a unicast to such an address is flooded again (here to a new
/// port that has not sent anything yet) instead of vanishing.
#[test]
fn fdb_forgets_a_detached_port() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("fd")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &[])?;
    let scratch = tmp.path().to_path_buf();
    let moving = proto::mac(0x7b);
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0x7a))?,
            Client::attach(&dir, 0, &scratch, moving)?,
        ))
    })??;
    // Learn `moving` on B's port, with a second MAC behind it too.
    pass_frame(&b, &a, BROADCAST, 60, 1)?;
    b.send(&proto::frame(BROADCAST, proto::mac(0x7c), 60, 9))?;
    pass_frame(&a, &b, moving, 60, 2)?;
    let detached_before = sw.detached_ports().len();
    drop(b);
    wait_until(Duration::from_secs(3), "`port detached`", || {
        sw.detached_ports().len() > detached_before
    })
    .with_context(|| format!("switch log:\n{}", sw.proc.output()))?;
    let c = ns.run(|| Client::attach(&dir, 0, &scratch, proto::mac(0x7d)))??;
    pass_frame(&a, &c, moving, 60, 3).context("unicast to a MAC of a detached port")?;
    pass_frame(&a, &c, proto::mac(0x7c), 60, 4)
        .context("unicast to the second MAC of a detached port")?;
    sw.assert_running()?;
    Ok(())
}

/// Test 7i: `--fdb-aging 1`: a learned address is forgotten after about a
/// second of silence, so unicast to it floods again.
#[test]
fn fdb_aging_expires_addresses() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("ag")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--fdb-aging", "1"])?;
    let scratch = tmp.path().to_path_buf();
    let (a, b, c) = ns.run(|| -> Result<(Client, Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0x81))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0x82))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0x83))?,
        ))
    })??;
    pass_frame(&b, &a, BROADCAST, 60, 1)?;
    ensure!(hears_from(&c, b.mac())?, "C missed B's broadcast");
    pass_frame(&a, &b, b.mac(), 60, 2)?;
    ensure!(
        !hears_from(&c, a.mac())?,
        "B's address was not learned (unicast flooded)"
    );
    // Now wait for the entry to age out: unicast to B floods to C again.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut seed = 3;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        pass_frame(&a, &b, b.mac(), 60, seed)?;
        seed += 1;
        if hears_from(&c, a.mac())? {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "B's address was still learned 8 s after its last frame with --fdb-aging 1"
        );
    }
    sw.assert_running()?;
    Ok(())
}

/// Test 7j: bytes a client writes on its control connection after the
/// handshake do not tear its port down (protocols.md §7.1 step 9), and a
/// known unicast is never reflected to the port it came from (no hairpin).
#[test]
fn extra_control_bytes_and_no_hairpin() -> Result<()> {
    use std::io::Write;
    preflight()?;
    let tmp = TempDir::new("xb")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &[])?;
    let scratch = tmp.path().to_path_buf();
    let (mut a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0x91))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0x92))?,
        ))
    })??;
    a.ctl_stream().write_all(b"x")?;
    ensure!(
        !a.ctl_closed(Duration::from_millis(500))?,
        "a stray byte on the control connection closed the port"
    );
    pass_frame(&a, &b, BROADCAST, 60, 1)?;
    pass_frame(&b, &a, a.mac(), 60, 2)?;

    // A is learned on its port; a frame from A to A's own MAC must not come back.
    a.send(&proto::frame(a.mac(), a.mac(), 60, 3))?;
    ensure!(
        a.recv_matching(Duration::from_millis(500), |f| proto::is_test_frame_from(
            f,
            a.mac()
        ))?
        .is_none(),
        "a unicast was reflected to its ingress port"
    );
    sw.assert_running()?;
    Ok(())
}
