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
use switchyard_tests::scenarios::{pass_frame, unicast_reaches_third_port};
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
