//! Faults: what dies or vanishes around the switch while traffic flows. A
//! guest killed mid-traffic, its data socket gone, the switch's own socket
//! files deleted, a tap deleted, a NIC taken down, the daemon at its
//! descriptor limit, SIGHUP after SIGHUP. In every case the switch keeps
//! running, frees what died (ports, FDB entries, descriptors), says so in
//! its log and counters, and a reference pair of clients exchanging
//! counted bursts loses nothing.
//!
//! (`lifecycle.rs` kills an idle client and restarts the switch;
//! `pcap_port.rs` deletes and recreates a NIC; `reload_capture.rs` reloads
//! once under a ping. These tests do it under load and count the cost.)

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_tests::battery::{self, handshake_refusals, usage, RefPair, Rig, FD_SLACK};
use switchyard_tests::proto::{self, Client};
use switchyard_tests::switch::switchyard_bin;
use switchyard_tests::transports::{drops, need, wait_link_gone};
use switchyard_tests::util::exists;
use switchyard_tests::{preflight, unique_name, wait_until, Netns, Proc, Stdin, SwitchCmd};

const T: Duration = Duration::from_secs(10);

/// Feeds `vde_plug`'s standard input (2-byte big-endian length, then the
/// frame) with frames from `src` to `dst` until `stop` or the plug is
/// gone; returns how many it wrote.
fn feed_plug(pipe: OwnedFd, src: [u8; 6], dst: [u8; 6], stop: &AtomicBool) -> u64 {
    let mut w = File::from(pipe);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let f = battery::numbered_frame(dst, src, 200, 0x77, n as u32);
        let mut rec = (f.len() as u16).to_be_bytes().to_vec();
        rec.extend_from_slice(&f);
        if w.write_all(&rec).is_err() {
            break;
        }
        n += 1;
        std::thread::sleep(Duration::from_micros(500));
    }
    n
}

/// Runs `fault` on a thread while the reference pair exchanges counted
/// bursts (100 frames each way) on this one, and for a second after the
/// fault is done; fails on the first lost frame. Returns what `fault`
/// returned.
fn under_load<R: Send>(
    pair: &mut RefPair,
    what: &str,
    fault: impl FnOnce() -> Result<R> + Send,
) -> Result<R> {
    std::thread::scope(|s| {
        let h = s.spawn(fault);
        let mut n = 0;
        let mut done_at: Option<Instant> = None;
        loop {
            pair.exchange(100, 200)
                .with_context(|| format!("burst {} while {what}", n + 1))?;
            n += 1;
            if h.is_finished()
                && done_at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1)
            {
                break;
            }
        }
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("the fault's thread panicked"))?
            .with_context(|| what.to_string())?;
        eprintln!("{what}: {n} clean bursts of 100 frames each way meanwhile");
        Ok(r)
    })
}

/// The switch's last `port detached` line for port `name` (numbers are
/// reused), if any.
fn detach_line(rig: &Rig, name: &str) -> Option<String> {
    let field = format!("port={name} ");
    rig.sw
        .proc
        .output()
        .lines()
        .rev()
        .find(|l| l.contains("port detached") && l.contains(&field))
        .map(str::to_string)
}

/// The FDB's MAC addresses (`ctl -j fdb`).
fn fdb_macs(rig: &Rig) -> Result<Vec<String>> {
    let j = rig.ctl.json(&["fdb"])?;
    Ok(j.get("fdb")
        .and_then(|f| f.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("mac").and_then(|m| m.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// A guest (a real `vde_plug`, fed frames on its stdin) exchanging traffic
/// with a sink client is killed with SIGKILL mid-traffic: its port goes,
/// with its FDB entry and descriptors. A client whose data socket closes
/// (and whose socket file is deleted) while its control connection stays
/// open loses its port at the next frame sent to it, and its control
/// connection is closed. The switch's own data socket file and then its
/// control socket are deleted: attached clients keep talking, the control
/// socket is bound again and new clients attach. The pair runs bursts
/// throughout and loses nothing.
#[test]
fn dead_guests_and_deleted_sockets_are_freed() -> Result<()> {
    preflight()?;
    let mut rig = Rig::start("fg", &[])?;
    let scratch = rig.tmp.path().to_path_buf();
    let sink = Client::attach(&rig.dir, 0, &scratch, proto::mac(0x5c))?;
    sink.send(&proto::frame(proto::BROADCAST, sink.mac(), 60, 1))?;
    let guest_mac = proto::mac(0x6e);
    let (pipe_r, pipe_w) = nix::unistd::pipe().context("a pipe for vde_plug's stdin")?;
    let vde_plug = need("vde_plug", "vdeplug")?;
    let mut cmd = rig.ns.command(vde_plug);
    cmd.arg(&rig.dir);
    let (mut plug, guest_port) = rig.attach_tracked(|| {
        let p = Proc::spawn("vde_plug (guest)", cmd, Stdin::Fd(pipe_r))?;
        wait_until(T, "the guest's port", || rig.sw.attached_ports().len() >= 4)?;
        Ok(p)
    })?;
    let guest_fdb = switchyard_tests::scenarios::mac_string(guest_mac);
    let stop = AtomicBool::new(false);
    let fed = std::thread::scope(|s| -> Result<u64> {
        // Traffic both ways: the guest to the sink, the sink to the guest.
        let feeder = s.spawn(|| feed_plug(pipe_w, guest_mac, sink.mac(), &stop));
        s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let f = battery::numbered_frame(guest_mac, sink.mac(), 200, 0x78, n);
                if sink.send(&f).is_err() {
                    break;
                }
                n += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        let result = (|| -> Result<()> {
            let p = rig.wait_port(&guest_port, |p| {
                battery::stat(p, "rx_frames") > 200 && battery::stat(p, "tx_frames") > 200
            })?;
            eprintln!("guest under traffic: {p}");
            ensure!(
                fdb_macs(&rig)?.contains(&guest_fdb),
                "the guest's MAC was not learned"
            );
            under_load(&mut rig.pair, "a guest was killed mid-traffic", || {
                plug.kill()?;
                Ok(())
            })
        })();
        stop.store(true, Ordering::Relaxed);
        result?;
        feeder
            .join()
            .map_err(|_| anyhow::anyhow!("the feeding thread panicked"))
    })?;
    eprintln!("the guest was killed after it sent {fed} frames");
    wait_until(T, "the killed guest's port to go", || {
        rig.port_names().is_ok_and(|n| !n.contains(&guest_port))
    })?;
    wait_until(T, "the killed guest's MAC to leave the FDB", || {
        fdb_macs(&rig).is_ok_and(|m| !m.contains(&guest_fdb))
    })?;
    ensure!(
        detach_line(&rig, &guest_port).is_some(),
        "no `port detached` line for the killed guest's port {guest_port}"
    );
    drop(sink);
    rig.fds_back(0, "after the killed guest")?;
    rig.check("after the killed guest")?;

    // A client whose data socket is closed and its file deleted while its
    // control connection stays: the next frame to it finds it gone.
    let ((mut x_ctl, x_sock), x_port) =
        rig.attach_tracked(|| battery::attach_raw(&rig.ctl_path(), &scratch, "loses its socket"))?;
    drop(x_sock);
    rig.pair
        .a
        .send(&proto::frame(proto::BROADCAST, rig.pair.a.mac(), 60, 2))?;
    wait_until(T, "the port of the client without a socket to go", || {
        rig.port_names().is_ok_and(|n| !n.contains(&x_port))
    })?;
    ensure!(
        battery::read_reply(&mut x_ctl, Duration::from_secs(3)).is_ok_and(|got| !got),
        "the switch did not close the control connection of a port whose socket is gone"
    );
    wait_until(
        T,
        "the `port detached` line for the client whose socket went",
        || detach_line(&rig, &x_port).is_some_and(|l| l.contains("loses its socket")),
    )?;
    let line = detach_line(&rig, &x_port).unwrap_or_default();
    ensure!(line.contains("peer socket gone"), "detach reason: {line}");
    let _ = rig.pair.b.recv(Duration::from_millis(200));
    rig.fds_back(0, "after the client lost its socket")?;
    rig.check("after a client's socket vanished")?;

    // The switch's own files: a port's data socket, then the control socket.
    let data_sockets: Vec<_> = std::fs::read_dir(&rig.dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "ctl"))
        .collect();
    ensure!(data_sockets.len() == 2, "data sockets: {data_sockets:?}");
    for p in &data_sockets {
        std::fs::remove_file(p)?;
    }
    rig.check("the pair's data socket files deleted")?;
    std::fs::remove_file(rig.ctl_path())?;
    rig.sw
        .proc
        .wait_for_output("control socket was deleted; bound it again", T)?;
    ensure!(
        exists(&rig.ctl_path()),
        "the control socket was not bound again"
    );
    let c = Client::attach(&rig.dir, 0, &scratch, proto::mac(0xc3))
        .context("a new client after the control socket was deleted")?;
    switchyard_tests::scenarios::pass_frame(&c, &rig.pair.a, proto::BROADCAST, 64, 3)?;
    let _ = rig.pair.b.recv(Duration::from_millis(200));
    rig.check("the control socket deleted and bound again")?;

    // The whole VDE directory.
    drop(c);
    std::fs::remove_dir_all(&rig.dir)?;
    wait_until(
        T,
        "the VDE directory and control socket to come back",
        || exists(&rig.ctl_path()),
    )?;
    let d = Client::attach(&rig.dir, 0, &scratch, proto::mac(0xc4))
        .context("a new client after the VDE directory was deleted")?;
    switchyard_tests::scenarios::pass_frame(&d, &rig.pair.a, proto::BROADCAST, 64, 4)?;
    let _ = rig.pair.b.recv(Duration::from_millis(200));
    rig.check("the VDE directory deleted and made again")?;
    drop(d);
    rig.fds_back(0, "at the end")?;

    // SIGTERM still cleans up after all that.
    rig.sw.terminate()?;
    ensure!(
        !exists(&rig.ctl_path()),
        "the control socket bound again was left behind at exit"
    );
    Ok(())
}

/// A guest (vde_plug with a tap, in its own namespace) pings the host side
/// of a tap port and, through a pcap port on a veth pair, a "LAN" in a
/// third namespace. The tap is deleted under that traffic: its port goes,
/// with its descriptor. The NIC under the pcap port is taken down for a
/// few seconds and brought back: the switch says so, keeps running, and
/// the guest reaches the LAN again. The reference pair loses nothing.
#[test]
fn deleted_tap_and_downed_nic_are_survived() -> Result<()> {
    preflight()?;
    need("ping", "iputils-ping")?;
    let lan = Netns::new()?;
    let guest = Netns::new()?;
    let tap = unique_name("syf");
    let nic = unique_name("fn");
    let lan_dev = unique_name("fl");
    let mut rig = Rig::start_with("ft", |dir, ctl| {
        Ok(SwitchCmd::native()?
            .vde(dir)
            .args(ctl.args())
            .arg("--tap")
            .arg(&tap))
    })?;
    // The switch's namespace: the tap (host side 198.51.100.1) and one
    // end of the veth pair under the pcap port; the LAN end is 192.0.2.9.
    wait_until(T, "the tap", || rig.ns.has_link(&tap))?;
    rig.ns.addr_up(&tap, "198.51.100.1/24")?;
    rig.ns.ip([
        "link",
        "add",
        &nic,
        "type",
        "veth",
        "peer",
        "name",
        &lan_dev,
        "netns",
        lan.name(),
    ])?;
    rig.ns.ip(["link", "set", &nic, "up"])?;
    lan.addr_up(&lan_dev, "192.0.2.9/24")?;
    let out = rig
        .ctl
        .json(&["port", "add", &format!("pcap,name=nic,device={nic}")]);
    let _ = out; // `ctl -j port add` answers {"ok": …}; checked through `ctl ports` below.
    wait_until(T, "the pcap port", || {
        rig.port_names().is_ok_and(|n| n.iter().any(|p| p == "nic"))
    })?;
    let guest_tap = unique_name("fg");
    let _plug =
        switchyard_tests::tools::vde_plug_tap(&guest, &rig.dir, &guest_tap, "192.0.2.1/24")?;
    guest.ip(["addr", "add", "198.51.100.2/24", "dev", &guest_tap])?;
    guest
        .ping_eventually("198.51.100.1", 10)
        .context("the guest to the tap")?;
    guest
        .ping_eventually("192.0.2.9", 10)
        .context("the guest to the LAN")?;
    let tap_port = format!("tap:{tap}");
    ensure!(
        rig.port_names()?.contains(&tap_port),
        "no port {tap_port}: {:?}",
        rig.port_names()?
    );
    // The pcap port maps a 32 MiB capture ring: measure from here.
    let before = usage(rig.sw.proc.pid())?;
    rig.base = before;
    eprintln!("with the tap, the pcap port and the guest: {before}");

    // Background pings through both while the faults happen.
    let mut pinger = Proc::spawn(
        "ping (guest to tap and LAN)",
        {
            let mut c = guest.command("sh");
            c.args([
                "-c",
                "ping -n -q -i 0.05 -w 30 198.51.100.1 & ping -n -q -i 0.05 -w 30 192.0.2.9 & wait",
            ]);
            c
        },
        Stdin::Null,
    )?;

    // The tap is deleted under traffic.
    let ns_name = rig.ns.name().to_string();
    under_load(&mut rig.pair, "the tap was deleted under traffic", || {
        std::thread::sleep(Duration::from_millis(500));
        switchyard_tests::util::run(
            std::process::Command::new("ip").args(["-n", &ns_name, "link", "del", &tap]),
        )?;
        Ok(())
    })?;
    wait_link_gone(&rig.ns, &tap)?;
    wait_until(T, "the tap's port to go", || {
        rig.port_names().is_ok_and(|n| !n.contains(&tap_port))
    })?;
    let line = detach_line(&rig, &tap_port).context("no `port detached` line for the tap")?;
    eprintln!("{line}");
    wait_fds_below(&rig, before.fds, "after the tap was deleted")?;
    rig.check("after the tap was deleted")?;

    // The NIC goes down for three seconds, then comes back.
    let ns_name = rig.ns.name().to_string();
    let nic2 = nic.clone();
    under_load(&mut rig.pair, "the NIC was down", || {
        let ip = |state: &str| {
            switchyard_tests::util::run(
                std::process::Command::new("ip")
                    .args(["-n", &ns_name, "link", "set", &nic2, state]),
            )
        };
        std::thread::sleep(Duration::from_millis(500));
        ip("down")?;
        std::thread::sleep(Duration::from_secs(3));
        ip("up")?;
        Ok(())
    })?;
    rig.sw.assert_running()?;
    let log = rig.sw.proc.output();
    let nic_p = rig.ctl.port("nic").ok();
    // Capture on a downed NIC just goes quiet; sending to it fails. The
    // switch reports that as the NIC lost, or as drops on its port with a
    // warning naming the cause (libpcap says "Network is down").
    let reported = log.contains("NIC lost")
        || nic_p.as_ref().is_some_and(|p| drops(p, "egress_down") > 0)
        || (nic_p.as_ref().is_some_and(|p| drops(p, "egress_error") > 0)
            && log.lines().any(|l| {
                l.contains("WARN") && l.contains("port=nic") && l.contains("Network is down")
            }));
    ensure!(
        reported,
        "the NIC was down for 3 s and the switch said nothing (no `NIC lost` line, no \
         drops with a warning on port nic: {nic_p:?})"
    );
    eprintln!("port nic after the NIC was down: {nic_p:?}");
    guest
        .ping_eventually("192.0.2.9", 15)
        .context("the guest to the LAN after the NIC came back")?;
    rig.check("after the NIC came back")?;
    let _ = pinger.kill();
    Ok(())
}

/// Waits until the daemon holds fewer descriptors than `than`.
fn wait_fds_below(rig: &Rig, than: usize, what: &str) -> Result<()> {
    battery::wait_fds_at_most(rig.sw.proc.pid(), than.saturating_sub(1), T, what)?;
    Ok(())
}

/// The descriptor limit the daemon runs with in the limit test: room for
/// its own dozen-odd descriptors and a handful of ports (two each).
const NOFILE: usize = 64;

/// The daemon runs with RLIMIT_NOFILE = 64 (`prlimit`): clients attach
/// until it runs out of descriptors. The next client is refused at once
/// (EOF, not a hang in the listen queue), the refusal is logged and
/// counted, the attached ports keep passing traffic, and once a few
/// clients leave new ones attach again and `switchyard ctl` answers. When
/// all are gone the descriptors are back where they started, and SIGTERM
/// still cleans up.
#[test]
fn running_out_of_descriptors_is_survived() -> Result<()> {
    preflight()?;
    let prlimit = need("prlimit", "util-linux")?;
    let mut rig = Rig::start_with("fd", |dir, ctl| {
        Ok(
            SwitchCmd::program(&prlimit, "switchyard (prlimit --nofile=64)")
                .arg(format!("--nofile={NOFILE}:{NOFILE}"))
                .arg("--")
                .arg(switchyard_bin()?)
                .vde(dir)
                .args(ctl.args()),
        )
    })?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", rig.sw.proc.pid()))?;
    ensure!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("64")),
        "the daemon does not run with a limit of {NOFILE} open files:\n{limits}"
    );
    let scratch = rig.tmp.path().to_path_buf();

    // Attach until refused.
    let mut clients = Vec::new();
    let refused_after = loop {
        ensure!(
            clients.len() < NOFILE,
            "{} clients attached under a limit of {NOFILE} descriptors",
            clients.len()
        );
        let t = Instant::now();
        match Client::attach(
            &rig.dir,
            0,
            &scratch,
            proto::mac(0x100 + clients.len() as u16),
        ) {
            Ok(c) => clients.push(c),
            Err(e) => {
                eprintln!(
                    "client {} refused after {:?}: {e:#}",
                    clients.len() + 1,
                    t.elapsed()
                );
                break t.elapsed();
            }
        }
    };
    let at_limit = usage(rig.sw.proc.pid())?;
    eprintln!(
        "{} clients attached at the limit: {at_limit}",
        clients.len()
    );
    ensure!(
        clients.len() >= 10,
        "only {} clients attached before the daemon ran out of descriptors",
        clients.len()
    );
    ensure!(
        refused_after < Duration::from_secs(2),
        "the client that found the daemon out of descriptors waited {refused_after:?} \
         (it should be refused at once)"
    );
    rig.sw
        .proc
        .wait_for_output("out of file descriptors", T)
        .context("the daemon did not report running out of descriptors")?;
    // More at the limit: a silent connection and a real client, both
    // refused at once; the attached ports work.
    let mut s = std::os::unix::net::UnixStream::connect(rig.ctl_path())?;
    ensure!(
        battery::read_reply(&mut s, Duration::from_secs(3)).is_ok_and(|got| !got),
        "a connection at the descriptor limit was not closed at once"
    );
    rig.check("at the descriptor limit")?;
    let last = clients.last().context("no clients")?;
    switchyard_tests::scenarios::pass_frame(last, &rig.pair.a, proto::BROADCAST, 64, 1)?;
    let _ = rig.pair.b.recv(Duration::from_millis(200));

    // Four leave: new clients get in, `ctl` answers, the refusals show.
    clients.truncate(clients.len() - 4);
    let again = wait_until_ok(T, "a client to attach after four left", || {
        Client::attach(&rig.dir, 0, &scratch, proto::mac(0x1ff))
    })?;
    switchyard_tests::scenarios::pass_frame(&again, &rig.pair.a, proto::BROADCAST, 64, 2)?;
    let _ = rig.pair.b.recv(Duration::from_millis(200));
    drop(again);
    let r = handshake_refusals(&rig.ctl)?;
    ensure!(
        r.get("no_descriptors").copied().unwrap_or(0) >= 1,
        "`ctl stats` does not count the clients refused for lack of descriptors: {r:?}"
    );
    eprintln!("refusals: {r:?}");

    // All leave: the descriptors come back.
    drop(clients);
    let end = rig.fds_back(0, "after every client left")?;
    rig.check("after every client left")?;
    ensure!(
        end.fds <= rig.base.fds + FD_SLACK,
        "descriptors: {} at the end, {} at the start",
        end.fds,
        rig.base.fds
    );
    let status = rig.sw.terminate()?;
    ensure!(
        status.success(),
        "SIGTERM after the descriptor shortage: {status}"
    );
    ensure!(
        !exists(&rig.ctl_path()),
        "the control socket was left behind"
    );
    Ok(())
}

/// Retries `f` until it succeeds or `timeout` passes (then its last error).
fn wait_until_ok<R>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<R>) -> Result<R> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(r) => return Ok(r),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("{what} (gave up after {timeout:?})"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A configuration with the VDE directory `dir` and one udp port `name`
/// on local port `port`.
fn reload_config(dir: &Path, name: &str, port: u16) -> String {
    format!(
        "ports:\n  - {{ name: vde, type: unix, directory: {} }}\n  \
         - {{ name: {name}, type: udp, local: \"127.0.0.1:{port}\", remote: \"127.0.0.1:{}\" }}\n",
        dir.display(),
        port + 1
    )
}

/// Twelve SIGHUPs while the reference pair runs bursts: ten with the same
/// file, one that swaps the udp port for another, one that swaps it back.
/// Nothing is lost, no client port is dropped, every reload is logged, and
/// the descriptors end where they started. A switch started without a
/// file logs that there is nothing to reload and runs on.
#[test]
fn sighup_under_traffic_loses_nothing() -> Result<()> {
    preflight()?;
    let tmp_cfg = switchyard_tests::TempDir::new("fhc")?;
    let cfg = tmp_cfg.join("switchyard.yaml");
    let cfg2 = cfg.clone();
    let mut rig = Rig::start_with("fh", move |dir, ctl| {
        std::fs::write(&cfg2, reload_config(dir, "q1", 7401))?;
        Ok(SwitchCmd::native()?
            .arg("--config")
            .arg(&cfg2)
            .args(ctl.args())
            .expect_socket(&dir.join("ctl")))
    })?;
    let pid = rig.sw.proc.pid();
    let dir = rig.dir.clone();
    let swapped = cfg.clone();
    under_load(&mut rig.pair, "12 reloads on SIGHUP", move || {
        let hup = || nix::sys::signal::kill(pid, Signal::SIGHUP).context("kill -HUP switchyard");
        for _ in 0..10 {
            hup()?;
            std::thread::sleep(Duration::from_millis(150));
        }
        std::fs::write(&swapped, reload_config(&dir, "q2", 7403))?;
        hup()?;
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&swapped, reload_config(&dir, "q1", 7401))?;
        hup()?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    })?;
    wait_until(T, "12 `configuration reloaded` lines", || {
        rig.sw.proc.count_lines("configuration reloaded") >= 12
    })
    .with_context(|| format!("switch log:\n{}", rig.sw.proc.output()))?;
    let log = rig.sw.proc.output();
    ensure!(
        log.contains("added [q2], removed [q1]") && log.contains("added [q1], removed [q2]"),
        "the reload that swapped the udp port did not say so:\n{log}"
    );
    ensure!(!log.contains("reload failed"), "a reload failed:\n{log}");
    ensure!(
        rig.sw.proc.count_lines("port detached port=unix") == 0,
        "a reload dropped a client's port"
    );
    let names = rig.port_names()?;
    ensure!(
        names.iter().any(|n| n == "q1") && !names.iter().any(|n| n == "q2"),
        "ports after the reloads: {names:?}"
    );
    rig.fds_back(0, "after 12 reloads")?;
    rig.check("after 12 reloads")?;

    // Without a configuration file there is nothing to reload.
    let mut plain = SwitchCmd::native()?
        .vde(&rig.tmp.join("plain"))
        .arg("--control")
        .arg(rig.tmp.join("plain.sock"))
        .start(Some(&rig.ns))?;
    plain.proc.signal(Signal::SIGHUP)?;
    plain
        .proc
        .wait_for_output("nothing to reload", T)
        .context("SIGHUP without --config")?;
    std::thread::sleep(Duration::from_millis(300));
    plain.assert_running()?;
    Ok(())
}
