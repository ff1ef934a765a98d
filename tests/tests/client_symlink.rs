//! The unix port's check of a client's socket is race-free: the switch
//! opens the path the client names without following a link
//! (`O_PATH|O_NOFOLLOW`), checks that descriptor's type and owner and
//! connects through it, so a client that swaps its socket path for a
//! symbolic link to another guest's socket (the "victim") never makes the
//! switch send frames there. Three orders: the link is there before the
//! handshake (refused); the link replaces the socket after the handshake
//! (frames keep going to the socket that was checked); the path flips
//! between the two while handshakes run (each is refused or connected to
//! the client's own socket, never to the victim).

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::proto::{
    self, raw_handshake, read_outcome, request, sockaddr_path, Client, Outcome, BROADCAST,
};
use switchyard_tests::switch::start_vde_switch;
use switchyard_tests::{preflight, Netns, TempDir};

/// Handshakes raced by the flipping path. Against the switch before this
/// check was made race-free (lstat, then connect by path), 200 of them
/// put frames on the victim's socket in two runs of three.
const HANDSHAKES: u32 = 400;

/// How long a frame that would arrive is waited for.
const QUIET: Duration = Duration::from_millis(300);

/// A datagram socket at `path` (the victim, or an attacker's own).
fn bind(path: &Path) -> Result<UnixDatagram> {
    UnixDatagram::bind(path).with_context(|| format!("binding {}", path.display()))
}

/// Puts a symbolic link to `target` at `path`, atomically (rename over
/// whatever is there), as an attacker racing the switch would.
fn swap_in_link(target: &Path, path: &Path) -> Result<()> {
    let tmp = path.with_extension("link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Puts the socket `bound` back at `path` (a hard link to its inode,
/// renamed over the link).
fn swap_in_socket(bound: &Path, path: &Path) -> Result<()> {
    let tmp = path.with_extension("sock");
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(bound, &tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Asks for a port with `path` as the client socket; the control
/// connection (kept open: closing it detaches the port) when accepted.
fn handshake(ctl: &Path, path: &Path) -> Result<Option<UnixStream>> {
    let req = request(3, 0, 0, &sockaddr_path(path)?, b"symlink test");
    let mut s = UnixStream::connect(ctl)?;
    std::io::Write::write_all(&mut s, &req)?;
    match read_outcome(&mut s, Duration::from_secs(3))? {
        Outcome::Reply(_) => Ok(Some(s)),
        Outcome::Eof(_) | Outcome::Reset => Ok(None),
        Outcome::Timeout(got) => bail!("no answer to a handshake ({} bytes)", got.len()),
    }
}

/// Fails if anything arrives at the victim within [`QUIET`].
fn victim_hears_nothing(victim: &UnixDatagram, what: &str) -> Result<()> {
    victim.set_read_timeout(Some(QUIET))?;
    let mut buf = [0u8; 2048];
    match victim.recv(&mut buf) {
        Ok(n) => bail!("{what}: a {n}-byte frame reached the victim's socket"),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e).context("reading the victim's socket"),
    }
}

/// Broadcasts from `sender` every 100 ms until one reaches `sock` (the
/// switch answers a handshake before the port joins the table), for at
/// most 3 s; true when one did. Whatever else arrived is drained.
fn until_heard(sender: &Client, sock: &UnixDatagram) -> Result<bool> {
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    for i in 0..30u8 {
        sender.send(&proto::frame(BROADCAST, sender.mac(), 60, i))?;
        if sock.recv(&mut buf).is_ok() {
            sock.set_nonblocking(true)?;
            while sock.recv(&mut buf).is_ok() {}
            sock.set_nonblocking(false)?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Counts the frames waiting on `sock`.
fn drain(sock: &UnixDatagram) -> Result<usize> {
    sock.set_read_timeout(Some(QUIET))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while sock.recv(&mut buf).is_ok() {
        n += 1;
    }
    Ok(n)
}

struct Setup {
    _tmp: TempDir,
    _ns: Netns,
    sw: switchyard_tests::switch::Switch,
    dir: PathBuf,
    scratch: PathBuf,
    victim: UnixDatagram,
    victim_path: PathBuf,
}

fn setup(label: &str) -> Result<Setup> {
    preflight()?;
    let tmp = TempDir::new(label)?;
    let ns = Netns::new()?;
    let (sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--hub"])?;
    let scratch = tmp.path().to_path_buf();
    let victim_path = scratch.join("victim");
    let victim = bind(&victim_path)?;
    Ok(Setup {
        _tmp: tmp,
        _ns: ns,
        sw,
        dir,
        scratch,
        victim,
        victim_path,
    })
}

/// A link named in the request is refused (the connection closes without
/// a reply) and the victim hears nothing; a real socket is still taken.
#[test]
fn a_symlink_named_in_the_request_is_refused() -> Result<()> {
    let mut s = setup("symlink-before")?;
    let ctl = s.dir.join("ctl");
    let evil = s.scratch.join("evil");
    swap_in_link(&s.victim_path, &evil)?;
    let req = request(3, 0, 0, &sockaddr_path(&evil)?, b"symlink test");
    match raw_handshake(&ctl, &req, Duration::from_secs(3))? {
        Outcome::Eof(got) if got.is_empty() => {}
        Outcome::Reset => {}
        other => bail!("a handshake naming a symbolic link was not refused: {other:?}"),
    }
    let sender = Client::attach(&s.dir, 0, &s.scratch, proto::mac(1))?;
    sender.send(&proto::frame(BROADCAST, sender.mac(), 60, 1))?;
    victim_hears_nothing(&s.victim, "link before the handshake")?;
    // The switch is fine and still takes a client that names a socket.
    let own = s.scratch.join("own");
    let own_sock = bind(&own)?;
    let _ctl = handshake(&ctl, &own)?.context("a plain socket was refused")?;
    ensure!(
        until_heard(&sender, &own_sock)?,
        "the accepted client got no frame"
    );
    s.sw.assert_running()
}

/// The client's path becomes a link to the victim after the handshake
/// and before the first frame: frames go on reaching the socket that was
/// checked, none reaches the victim.
#[test]
fn a_path_swapped_after_the_handshake_keeps_frames_on_the_checked_socket() -> Result<()> {
    let mut s = setup("symlink-after")?;
    let ctl = s.dir.join("ctl");
    let path = s.scratch.join("guest");
    let own = bind(&path)?;
    let _ctl = handshake(&ctl, &path)?.context("the client was refused")?;
    swap_in_link(&s.victim_path, &path)?;
    let sender = Client::attach(&s.dir, 0, &s.scratch, proto::mac(2))?;
    ensure!(
        until_heard(&sender, &own)?,
        "the checked socket got nothing"
    );
    for i in 0..5 {
        sender.send(&proto::frame(BROADCAST, sender.mac(), 60, i))?;
    }
    victim_hears_nothing(&s.victim, "link after the handshake")?;
    let got = drain(&own)?;
    ensure!(got == 5, "the checked socket got {got} of 5 frames");
    s.sw.assert_running()
}

/// The path flips between the client's socket and a link to the victim
/// as fast as it can while [`HANDSHAKES`] handshakes name it: each is refused (it saw
/// the link) or connected to the client's own socket. After each accepted
/// handshake a broadcast reaches the client's socket and not the victim.
#[test]
fn racing_swaps_never_reach_the_victim() -> Result<()> {
    let mut s = setup("symlink-race")?;
    let ctl = s.dir.join("ctl");
    let bound = s.scratch.join("guest-bound");
    let own = bind(&bound)?;
    let path = s.scratch.join("guest");
    swap_in_socket(&bound, &path)?;
    let sender = Client::attach(&s.dir, 0, &s.scratch, proto::mac(3))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, bound, path, victim) = (
            stop.clone(),
            bound.clone(),
            path.clone(),
            s.victim_path.clone(),
        );
        std::thread::spawn(move || -> Result<u64> {
            let mut flips = 0;
            while !stop.load(Ordering::Relaxed) {
                swap_in_link(&victim, &path)?;
                swap_in_socket(&bound, &path)?;
                flips += 2;
            }
            Ok(flips)
        })
    };
    let (mut kept, mut refused, mut to_victim, mut lost) = (0, 0, 0, 0);
    let mut buf = [0u8; 2048];
    for _ in 0..HANDSHAKES {
        let Some(c) = handshake(&ctl, &path)? else {
            refused += 1;
            continue;
        };
        kept += 1;
        if !until_heard(&sender, &own)? {
            lost += 1;
        }
        s.victim.set_nonblocking(true)?;
        while s.victim.recv(&mut buf).is_ok() {
            to_victim += 1;
        }
        drop(c);
    }
    stop.store(true, Ordering::Relaxed);
    let flips = match flipper.join() {
        Ok(r) => r?,
        Err(_) => bail!("the flipping thread panicked"),
    };
    s.victim.set_nonblocking(false)?;
    victim_hears_nothing(&s.victim, "racing swaps")?;
    println!("{HANDSHAKES} handshakes during {flips} flips: {refused} refused, {kept} accepted");
    ensure!(flips > 0, "the path never flipped");
    ensure!(
        to_victim == 0,
        "{to_victim} frames reached the victim ({kept} accepted, {refused} refused)"
    );
    ensure!(
        lost == 0,
        "{lost} of {kept} accepted ports sent nothing to the client"
    );
    s.sw.assert_running()
}

/// A client for uid 65534 (nobody): binds its socket at `path`, then, by
/// `mode`, names the victim's socket directly (`victim`), puts a link to
/// the victim at its path before the handshake (`link-first`), or
/// handshakes with its own socket and swaps a link in after the reply
/// (`swap-after`), then counts the frames its own socket gets. It prints
/// `accepted`/`refused`, then `swapped` and `frames N`.
const NOBODY_CLIENT: &str = r#"
import os, socket, struct, sys
ctl, path, victim, mode = sys.argv[1:5]
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
d.bind(path)
named = victim if mode == "victim" else path
sa = struct.pack("=H", socket.AF_UNIX) + named.encode().ljust(108, b"\0")
req = struct.pack("=III", 0xfeedface, 3, 0) + sa + b"nobody"
if mode == "link-first":
    os.symlink(victim, path + ".l")
    os.rename(path + ".l", path)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(ctl)
c.sendall(req)
c.settimeout(3)
r = c.recv(200)
print("accepted" if len(r) == 110 else "refused", flush=True)
if mode == "swap-after" and len(r) == 110:
    os.symlink(victim, path + ".l")
    os.rename(path + ".l", path)
    print("swapped", flush=True)
    d.settimeout(3)
    n = 0
    try:
        while True:
            d.recv(4096)
            n += 1
            d.settimeout(0.5)
    except socket.timeout:
        pass
    print("frames", n, flush=True)
"#;

/// The same checks for a client that is not root, whose own directory
/// holds its socket and its links: the owner rule and the symlink rule
/// both hold, and a swap after the handshake sends nothing to the victim
/// (a socket of root's).
#[test]
fn a_non_root_client_cannot_redirect_frames_with_a_link() -> Result<()> {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Stdio;
    use switchyard_tests::ops::{as_unprivileged, require_program};

    preflight()?;
    // The system's python: one under root's home (pyenv) is out of
    // nobody's reach.
    let system = Path::new("/usr/bin/python3");
    let python = if system.exists() {
        system.to_path_buf()
    } else {
        require_program("python3", "python3")?
    };
    let tmp = TempDir::new("symlink-nobody")?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--hub", "--mode", "0666"])?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let ctl = dir.join("ctl");
    let victim_path = tmp.path().join("victim");
    let victim = bind(&victim_path)?;
    let home = tmp.path().join("nobody");
    std::fs::create_dir(&home)?;
    std::os::unix::fs::chown(&home, Some(65534), Some(65534))?;
    let script = tmp.path().join("client.py");
    std::fs::write(&script, NOBODY_CLIENT)?;
    let sender = Client::attach(&dir, 0, tmp.path(), proto::mac(4))?;
    for (n, mode) in ["victim", "link-first", "swap-after"]
        .into_iter()
        .enumerate()
    {
        let path = home.join(format!("g{n}"));
        let mut child = as_unprivileged(65534, &python)?
            .arg(&script)
            .arg(&ctl)
            .arg(&path)
            .arg(&victim_path)
            .arg(mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the unprivileged client")?;
        let out = child.stdout.take().context("no stdout")?;
        let mut lines = std::io::BufReader::new(out).lines();
        let mut next = || -> Result<String> {
            lines
                .next()
                .context("the unprivileged client said nothing")?
                .context("reading the unprivileged client")
        };
        let verdict = next()?;
        match mode {
            "victim" | "link-first" => {
                ensure!(verdict == "refused", "{mode}: the switch said {verdict}")
            }
            _ => {
                ensure!(verdict == "accepted", "{mode}: the switch said {verdict}");
                ensure!(next()? == "swapped", "{mode}: no swap");
                // The port joins the table just after the reply: send
                // for a while; the client counts until 0.5 s of silence.
                for i in 0..10 {
                    sender.send(&proto::frame(BROADCAST, sender.mac(), 60, i))?;
                    std::thread::sleep(Duration::from_millis(50));
                }
                let frames = next()?;
                let got: u32 = frames
                    .strip_prefix("frames ")
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("{mode}: {frames:?}"))?;
                ensure!(
                    (1..=10).contains(&got),
                    "{mode}: the checked socket got {got} of 10 frames"
                );
            }
        }
        let status = child.wait()?;
        ensure!(status.success(), "{mode}: the client failed: {status}");
        sender.send(&proto::frame(BROADCAST, sender.mac(), 60, 9))?;
        victim_hears_nothing(&victim, mode)?;
    }
    sw.assert_running()
}
