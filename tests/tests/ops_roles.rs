//! Roles on the control socket: a member of the guests' group attaches a
//! guest and reads, captures and removes only its own guest's port; the
//! requests that reach the host or other users' guests need the admin
//! role (root, or the admin group). Also: `--group` owns the config
//! file's sockets, and a capture stopped by SIGINT leaves whole records.
//!
//! Users and groups are plain numbers (`setpriv`): none of them exists in
//! /etc/passwd or /etc/group, which is what the daemon must cope with.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_tests::ops::{
    as_user, bin_for_unprivileged, ctl, ctl_ports, free_port, http_get, parse_exposition,
    parse_pcap, Outcome, PlugLan,
};
use switchyard_tests::switch::switchyard_bin;
use switchyard_tests::util::{output, require_tool};
use switchyard_tests::{preflight, wait_until, Netns, Proc, Stdin, SwitchCmd, TempDir};

/// The guests' group (`--group`).
const GUESTS: u32 = 42_420;
/// The admin group (`control.admin_group`).
const ADMINS: u32 = 42_430;
/// A member of the guests' group only.
const OBSERVER: u32 = 42_001;
/// A member of the guests' group with the admin group as a supplementary
/// group only.
const ADMIN: u32 = 42_003;

/// Someone running `switchyard ctl`.
#[derive(Debug, Clone, Copy)]
struct User {
    uid: u32,
    gid: u32,
    groups: &'static [u32],
}

const ROOT: User = User {
    uid: 0,
    gid: 0,
    groups: &[],
};
const GUEST_OWNER: User = User {
    uid: OBSERVER,
    gid: GUESTS,
    groups: &[],
};
const ADMIN_MEMBER: User = User {
    uid: ADMIN,
    gid: GUESTS,
    groups: &[ADMINS],
};

/// `switchyard ctl -s SOCK ARGS` as `who`.
fn ctl_as(bin: &Path, who: User, sock: &Path, args: &[&str]) -> Result<Outcome> {
    if who.uid == 0 {
        return ctl(sock, args);
    }
    let mut cmd = as_user(who.uid, who.gid, who.groups, bin)?;
    cmd.arg("ctl").arg("-s").arg(sock).args(args);
    Ok(Outcome::from_output(output(&mut cmd)?))
}

/// Fails unless `args` exits 0 for `who`; returns stdout.
fn allowed(bin: &Path, who: User, sock: &Path, args: &[&str]) -> Result<String> {
    let out = ctl_as(bin, who, sock, args)?;
    out.expect_code(0, &format!("uid {}: ctl {}", who.uid, args.join(" ")))?;
    Ok(out.stdout)
}

/// Fails unless `args` is refused for `who` with a clear message.
fn refused(bin: &Path, who: User, sock: &Path, args: &[&str]) -> Result<()> {
    let out = ctl_as(bin, who, sock, args)?;
    let you = format!("you are uid {}, an observer", who.uid);
    ensure!(
        out.code == Some(1)
            && out.stderr.contains("permission denied")
            && out.stderr.contains("needs the admin role")
            && out.stderr.contains(&you),
        "uid {}: ctl {}: expected exit 1 and a refusal naming the admin role and {you:?}; \
         got {out:?}",
        who.uid,
        args.join(" ")
    );
    Ok(())
}

/// A `vde_plug DIR` guest (frames on its stdin/stdout) running as `who`.
fn guest(dir: &Path, who: User) -> Result<Proc> {
    let vde_plug = require_tool("vde_plug")?;
    let cmd = if who.uid == 0 {
        let mut c = Command::new(vde_plug);
        c.arg(dir);
        c
    } else {
        let mut c = as_user(who.uid, who.gid, who.groups, &vde_plug)?;
        c.arg(dir);
        c
    };
    Proc::spawn(&format!("vde_plug as uid {}", who.uid), cmd, Stdin::Pipe)
}

/// The name of the port whose peer is process `plug`.
fn port_of(sock: &Path, plug: &mut Proc) -> Result<String> {
    let pid = format!("pid {}", plug.pid());
    let mut name = None;
    wait_until(
        Duration::from_secs(10),
        &format!("a port for {pid}"),
        || {
            if !plug.is_running().unwrap_or(false) {
                return true;
            }
            name = ctl_ports(sock).ok().and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p["peer"].as_str().is_some_and(|s| s.contains(&pid)))
                    .and_then(|p| p["name"].as_str().map(String::from))
            });
            name.is_some()
        },
    )?;
    name.with_context(|| format!("{} exited:\n{}", plug.name(), plug.output()))
}

/// `ctl capture PORT -w FILE` as `who`, started.
fn start_capture(bin: &Path, who: User, sock: &Path, port: &str, file: &Path) -> Result<Proc> {
    let mut cmd = if who.uid == 0 {
        Command::new(bin)
    } else {
        as_user(who.uid, who.gid, who.groups, bin)?
    };
    cmd.arg("ctl")
        .arg("-s")
        .arg(sock)
        .args(["capture", port, "-w"]);
    cmd.arg(file);
    Proc::spawn(&format!("capture {port}"), cmd, Stdin::Null)
}

/// Captures `port` as `who` until the file has its header, then stops the
/// capture with SIGINT: it must end at once, with success, leaving a
/// pcap file of whole records.
fn capture_briefly(bin: &Path, who: User, sock: &Path, port: &str, file: &Path) -> Result<()> {
    let mut cap = start_capture(bin, who, sock, port, file)?;
    wait_until(Duration::from_secs(5), "the capture file's header", || {
        std::fs::metadata(file).is_ok_and(|m| m.len() >= 24) || !cap.is_running().unwrap_or(false)
    })?;
    cap.signal(Signal::SIGINT)?;
    let status = cap.wait_exit(Duration::from_secs(5))?;
    ensure!(
        status.success(),
        "uid {}: ctl capture {port} stopped by SIGINT: {status:?}\n{}",
        who.uid,
        cap.output()
    );
    parse_pcap(&std::fs::read(file)?)?;
    Ok(())
}

/// A directory `who` may write its capture files to.
fn scratch_for(tmp: &TempDir, who: User) -> Result<PathBuf> {
    let dir = tmp.join(format!("u{}", who.uid));
    std::fs::create_dir_all(&dir)?;
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(who.uid)),
        Some(nix::unistd::Gid::from_raw(who.gid)),
    )?;
    Ok(dir)
}

/// The whole of the issue's first "done when": an observer in the guests'
/// group attaches a guest and reads `ctl ports`, captures and removes its
/// own guest, and is refused `port add pcap`, capture and `port del` of
/// root's guest, `fdb flush` and `reload`; the refusals are counted in the
/// metrics and logged with pid and uid. Root and a member of the admin
/// group (a supplementary group only) may do all of it.
#[test]
fn observers_touch_only_their_own_guests_and_admins_everything() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("roles")?;
    let ns = Netns::new()?;
    let bin = bin_for_unprivileged(tmp.path())?;
    let dir = tmp.join("vde");
    let sock = tmp.join("control.sock");
    let metrics = format!("127.0.0.1:{}", free_port(&ns)?);
    let cfg = tmp.join("switchyard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "ports:\n  - {{ type: unix, directory: {} }}\n\
             control: {{ path: {}, admin_group: \"{ADMINS}\" }}\n\
             metrics: {{ listen: \"{metrics}\" }}\n",
            dir.display(),
            sock.display()
        ),
    )?;
    let mut sw = SwitchCmd::native()?
        .arg("--config")
        .arg(&cfg)
        .args(["--group", &GUESTS.to_string()])
        .expect_socket(&dir.join("ctl"))
        .start(Some(&ns))?;

    // The file's VDE directory belongs to the guests' group (--group):
    // that is what lets the observer's guest in.
    let meta = std::fs::metadata(dir.join("ctl"))?;
    ensure!(
        meta.gid() == GUESTS && meta.permissions().mode() & 0o060 == 0o060,
        "--group {GUESTS} did not reach the config file's VDE socket: group {}, mode {:o}",
        meta.gid(),
        meta.permissions().mode() & 0o777
    );

    let mut own_guest = guest(&dir, GUEST_OWNER)?;
    let mut roots_guest = guest(&dir, ROOT)?;
    let own = port_of(&sock, &mut own_guest)?;
    let roots = port_of(&sock, &mut roots_guest)?;

    // The observer reads.
    let listing = allowed(&bin, GUEST_OWNER, &sock, &["ports"])?;
    ensure!(
        listing.contains(&own) && listing.contains(&roots),
        "the observer's `ctl ports` lists both guests ({own}, {roots}):\n{listing}"
    );
    for read in [&["fdb"][..], &["stats"], &["-j", "ports"]] {
        allowed(&bin, GUEST_OWNER, &sock, read)?;
    }

    // ...and is refused everything that reaches the host or another user.
    let spec = "pcap,device=lo";
    for args in [
        &["port", "add", spec][..],
        &["port", "add", "udp,local=127.0.0.1:9,remote=127.0.0.1:10"],
        &["capture", &roots],
        &["port", "del", &roots],
        &["fdb", "flush"],
        &["fdb", "flush", &own],
        &["reload"],
    ] {
        refused(&bin, GUEST_OWNER, &sock, args)?;
    }
    let other = ctl_as(&bin, GUEST_OWNER, &sock, &["capture", &roots])?;
    ensure!(
        other.stderr.contains(&format!("{roots}'s client is uid 0")),
        "the refusal says whose port it is: {other:?}"
    );
    ensure!(
        ctl_ports(&sock)?.len() == 2,
        "a refused request changed nothing"
    );

    // The refusals are counted by request and logged with pid and uid.
    let scrape = ns.run(|| http_get(metrics.parse()?, "/metrics"))??;
    let e = parse_exposition(&scrape.body)?;
    for (request, n) in [
        ("port_add", 2.0),
        ("capture", 2.0),
        ("port_del", 1.0),
        ("fdb_flush", 2.0),
        ("reload", 1.0),
        ("ports", 0.0),
    ] {
        let got = e.value("switchyard_control_refused_total", &[("request", request)])?;
        ensure!(
            got == n,
            "switchyard_control_refused_total{{request=\"{request}\"}} is {got}, expected {n}"
        );
    }
    let log = sw.proc.output();
    let line = log
        .lines()
        .find(|l| {
            l.contains("control request refused") && l.contains("request=\"port_add\"")
                || l.contains("control request refused") && l.contains("request=port_add")
        })
        .with_context(|| format!("no refusal log line:\n{log}"))?;
    ensure!(
        line.contains(&format!("uid={OBSERVER}")) && line.contains("pid=") && line.contains("WARN"),
        "the refusal's log line names pid and uid at warn: {line}"
    );

    // The observer captures and removes its own guest's port.
    let own_dir = scratch_for(&tmp, GUEST_OWNER)?;
    capture_briefly(&bin, GUEST_OWNER, &sock, &own, &own_dir.join("own.pcap"))?;
    let closed = allowed(&bin, GUEST_OWNER, &sock, &["port", "del", &own])?;
    ensure!(closed.contains(&format!("closed {own}")), "{closed}");
    wait_until(Duration::from_secs(5), "the observer's port to go", || {
        ctl_ports(&sock).is_ok_and(|p| p.iter().all(|p| p["name"].as_str() != Some(&own)))
    })?;

    // A member of the admin group (supplementary only) and root do it all.
    for (who, net) in [(ADMIN_MEMBER, 1u16), (ROOT, 2)] {
        let mut g = guest(&dir, GUEST_OWNER)?;
        let theirs = port_of(&sock, &mut g)?;
        let scratch = scratch_for(&tmp, who)?;
        capture_briefly(&bin, who, &sock, &theirs, &scratch.join("other.pcap"))?;
        capture_briefly(&bin, who, &sock, &roots, &scratch.join("root.pcap"))?;
        allowed(&bin, who, &sock, &["fdb", "flush"])?;
        allowed(&bin, who, &sock, &["fdb", "flush", &roots])?;
        let added = allowed(&bin, who, &sock, &["port", "add", spec])?;
        let pcap = added
            .lines()
            .find_map(|l| l.strip_prefix("ok: added "))
            .with_context(|| format!("port add {spec}: {added}"))?
            .trim()
            .to_string();
        let udp = format!("udp,local=127.0.0.1:{},remote=127.0.0.1:9", 40_000 + net);
        allowed(&bin, who, &sock, &["port", "add", &udp])?;
        allowed(&bin, who, &sock, &["port", "del", &pcap])?;
        allowed(&bin, who, &sock, &["port", "del", &theirs])?;
        allowed(&bin, who, &sock, &["reload"])?;
        drop(g);
    }
    allowed(&bin, ROOT, &sock, &["port", "del", &roots])?;
    sw.assert_running()?;
    Ok(())
}

/// Sockets that come from the config file take `--group` (and its 660
/// mode) as the flag's own sockets do; `--group` never makes an admin.
#[test]
fn group_owns_the_config_files_sockets() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("rgrp")?;
    let ns = Netns::new()?;
    let bin = bin_for_unprivileged(tmp.path())?;
    let uml = tmp.join("uml.ctl");
    let sock = tmp.join("control.sock");
    let cfg = tmp.join("switchyard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "ports:\n  - {{ type: unix, path: {} }}\ncontrol: {{ path: {} }}\n",
            uml.display(),
            sock.display()
        ),
    )?;
    let _sw = SwitchCmd::native()?
        .arg("--config")
        .arg(&cfg)
        .args(["--group", &GUESTS.to_string()])
        .expect_socket(&uml)
        .start(Some(&ns))?;
    for s in [&uml, &sock] {
        let meta = std::fs::metadata(s)?;
        ensure!(
            meta.gid() == GUESTS && meta.permissions().mode() & 0o777 == 0o660,
            "{}: group {} mode {:o}, expected {GUESTS} and 660",
            s.display(),
            meta.gid(),
            meta.permissions().mode() & 0o777
        );
    }
    allowed(&bin, GUEST_OWNER, &sock, &["ports"])?;
    refused(&bin, GUEST_OWNER, &sock, &["fdb", "flush"])?;
    Ok(())
}

/// `ctl capture -w FILE` stopped by SIGINT while frames stream in leaves a
/// file of whole records (tcpdump reads it without "truncated dump
/// file"), whose header's snap length covers a tap's 65,558-byte
/// super-frames. Twelve stops at different moments, under a ping flood.
#[test]
fn a_capture_stopped_mid_stream_holds_whole_records() -> Result<()> {
    preflight()?;
    let tcpdump = require_tool("tcpdump")?;
    let lan = PlugLan::start("rcap", 76, &[])?;
    lan.ping_both_ways()?;
    let port = lan.port_of(&lan.plug_a)?["name"]
        .as_str()
        .context("port name")?
        .to_string();
    let mut flood = lan.ns_a.command("ping");
    flood.args(["-f", "-s", "1400", "-w", "60", &lan.ip_b]);
    let _flood = Proc::spawn("ping -f", flood, Stdin::Null)?;
    let bin = switchyard_bin()?;
    // The old copy (a chunk as read, killed by the signal) tore a record
    // about once in 30 stops; it also died of the signal instead of exiting.
    for (i, ms) in (0..12u64).map(|k| 50 + k * 47).enumerate() {
        let file = lan.tmp.join(format!("cut{i}.pcap"));
        let mut cap = start_capture(&bin, ROOT, &lan.ctl, &port, &file)?;
        wait_until(Duration::from_secs(5), "frames in the capture file", || {
            std::fs::metadata(&file).is_ok_and(|m| m.len() > 24 + 1400)
        })?;
        std::thread::sleep(Duration::from_millis(ms));
        cap.signal(Signal::SIGINT)?;
        let status = cap.wait_exit(Duration::from_secs(5))?;
        ensure!(
            status.success(),
            "capture {i} stopped by SIGINT: {status:?}"
        );
        let bytes = std::fs::read(&file)?;
        let (snaplen, records) =
            parse_pcap(&bytes).with_context(|| format!("capture {i} ({} bytes)", bytes.len()))?;
        ensure!(snaplen >= 65_558, "snap length {snaplen} < 65,558");
        ensure!(!records.is_empty(), "capture {i} holds no record");
        let read = Command::new(&tcpdump)
            .args(["-n", "-r"])
            .arg(&file)
            .output()?;
        let said = String::from_utf8_lossy(&read.stderr);
        ensure!(
            read.status.success() && !said.contains("truncated"),
            "tcpdump -r capture {i}: {said}"
        );
    }
    Ok(())
}
