//! The daemon invoked as `uml_switch` and as `vde_switch` (symlinks in a
//! temp dir) honours those programs' command lines and life cycles.
//!
//! With `SWITCHYARD_TESTS_REFERENCE=1` the symlinks point at the original
//! programs instead, which checks these tests against the real thing.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_tests::process::{describe, PidGuard, Pty};
use switchyard_tests::switch::{compat_symlink, reference_mode};
use switchyard_tests::util::{exists, require_tool};
use switchyard_tests::{
    preflight, scenarios, unique_name, Netns, Stdin, Switch, SwitchCmd, TempDir, Uml,
};

/// `uml_switch ARGS` through a symlink (line-buffered through `stdbuf` in
/// reference mode: the original block-buffers its stdout).
fn uml_switch_cmd(tmp: &TempDir) -> Result<SwitchCmd> {
    let link = compat_symlink(tmp.path(), "uml_switch")?;
    Ok(if reference_mode() {
        SwitchCmd::program(&require_tool("stdbuf")?, "uml_switch")
            .arg("-oL")
            .arg(link)
    } else {
        SwitchCmd::program(&link, "uml_switch")
    })
}

fn vde_switch_cmd(tmp: &TempDir) -> Result<SwitchCmd> {
    let link = compat_symlink(tmp.path(), "vde_switch")?;
    Ok(SwitchCmd::program(&link, "vde_switch"))
}

fn attached_line(ctl: &Path) -> String {
    format!("uml_switch attached to unix socket '{}'", ctl.display())
}

/// Guest 1 pings guest 2; both in `ns`, on the given transports.
fn guest_pair_pings(ns: &Netns, tmp: &TempDir, g1: Uml, g2: Uml) -> Result<()> {
    let _g2 = g2.wait(60).start(ns, tmp)?;
    let mut g1 = g1.ping("192.0.2.2").start(ns, tmp)?;
    g1.wait_ping_ok()
}

/// Test 5a: `uml_switch -unix CTL` prints its startup line on stdout, two
/// UML guests ping through it, a non-terminal stdin (/dev/null) does not
/// end it, and SIGINT removes the control socket.
#[test]
fn uml_switch_name_serves_guests() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cu")?;
    let ns = Netns::new()?;
    let ctl = tmp.join("uml.ctl");
    let mut sw = uml_switch_cmd(&tmp)?
        .arg("-unix")
        .arg(&ctl)
        .expect_socket(&ctl)
        .stdin(Stdin::Null)
        .start(Some(&ns))?;
    sw.proc
        .wait_for_output(&attached_line(&ctl), Duration::from_secs(5))?;
    ensure!(
        sw.proc.stdout().contains(&attached_line(&ctl)),
        "the startup line must be on stdout; stdout: {:?}",
        sw.proc.stdout()
    );
    ensure!(
        !sw.proc.output().contains("will be a hub"),
        "no -hub given, but it says it is a hub"
    );

    guest_pair_pings(
        &ns,
        &tmp,
        Uml::new("g1").daemon("02:00:00:00:05:01", &ctl, "192.0.2.1/24"),
        Uml::new("g2").daemon("02:00:00:00:05:02", &ctl, "192.0.2.2/24"),
    )?;

    // stdin is /dev/null (EOF at once, but not a terminal): still running.
    sw.assert_running()?;
    sw.proc.signal(Signal::SIGINT)?;
    sw.proc.wait_exit(Duration::from_secs(5))?;
    ensure!(
        !exists(&ctl),
        "SIGINT left the control socket {} behind",
        ctl.display()
    );
    Ok(())
}

/// Test 5b: `uml_switch -unix CTL -hub` with a terminal on stdin: prints the
/// hub line, keeps running while the terminal is open, and exits 0 on
/// terminal EOF (the pty master closed), removing its socket.
#[test]
fn uml_switch_name_hub_line_and_terminal_eof() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cp")?;
    let ns = Netns::new()?;
    let ctl = tmp.join("uml.ctl");
    let pty = Pty::open()?;
    let mut sw = uml_switch_cmd(&tmp)?
        .arg("-unix")
        .arg(&ctl)
        .arg("-hub")
        .expect_socket(&ctl)
        .stdin(Stdin::Fd(pty.slave))
        .start(Some(&ns))?;
    let master = pty.master;
    sw.proc
        .wait_for_output(&attached_line(&ctl), Duration::from_secs(5))?;
    sw.proc
        .wait_for_output("will be a hub instead of a switch", Duration::from_secs(5))?;
    ensure!(
        sw.proc
            .stdout()
            .contains("uml_switch will be a hub instead of a switch"),
        "expected `uml_switch will be a hub instead of a switch` on stdout; stdout: {:?}",
        sw.proc.stdout()
    );
    std::thread::sleep(Duration::from_millis(300));
    sw.assert_running()
        .context("the switch must keep running while its terminal is open")?;

    drop(master);
    let status = sw
        .proc
        .wait_exit(Duration::from_secs(5))
        .context("closing the terminal must end uml_switch")?;
    ensure!(
        status.code() == Some(0),
        "exit on terminal EOF: {}, expected exit code 0",
        describe(status)
    );
    ensure!(!exists(&ctl), "terminal EOF left the control socket behind");
    Ok(())
}

/// Test 5c: `uml_switch -unix CTL -tap IF` prints the tap in its startup
/// line and creates the tap.
#[test]
fn uml_switch_name_tap_line() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("ct")?;
    let ns = Netns::new()?;
    let ctl = tmp.join("uml.ctl");
    let tap = unique_name("syu");
    let mut sw = uml_switch_cmd(&tmp)?
        .arg("-unix")
        .arg(&ctl)
        .arg("-tap")
        .arg(&tap)
        .expect_socket(&ctl)
        .start(Some(&ns))?;
    let line = format!("{} tap device '{tap}'", attached_line(&ctl));
    sw.proc.wait_for_output(&line, Duration::from_secs(5))?;
    ensure!(ns.has_link(&tap), "tap {tap} was not created");
    sw.assert_running()?;
    Ok(())
}

/// Test 5d: `vde_switch -s DIR` with a pipe on stdin serves a UML guest on
/// `eth0=vde,DIR` and one on `eth0=daemon,,unix,DIR/ctl`; closing stdin
/// (EOF on a non-terminal) ends it with exit code 0 and removes the socket.
#[test]
fn vde_switch_name_serves_guests_and_exits_on_stdin_eof() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cv")?;
    let ns = Netns::new()?;
    let dir = tmp.join("vde");
    let ctl = dir.join("ctl");
    let mut sw = vde_switch_cmd(&tmp)?
        .arg("-s")
        .arg(&dir)
        .expect_socket(&ctl)
        .stdin(Stdin::Pipe)
        .start(Some(&ns))?;

    guest_pair_pings(
        &ns,
        &tmp,
        Uml::new("g1").vde(&dir, "02:00:00:00:05:11", "192.0.2.1/24"),
        Uml::new("g2").daemon("02:00:00:00:05:12", &ctl, "192.0.2.2/24"),
    )?;

    sw.assert_running()?;
    sw.proc.close_stdin();
    let status = sw
        .proc
        .wait_exit(Duration::from_secs(5))
        .context("stdin EOF must end a foreground vde_switch")?;
    ensure!(
        status.code() == Some(0),
        "exit on stdin EOF: {}, expected exit code 0",
        describe(status)
    );
    ensure!(!exists(&ctl), "stdin EOF left {} behind", ctl.display());
    ensure!(
        !exists(&dir),
        "stdin EOF left the directory {} behind (vde_switch removes it)",
        dir.display()
    );
    Ok(())
}

/// Test 5e: `vde_switch -x -d -p PIDFILE -m 660 -n 8 -t TAP -s DIR`: daemonizes
/// (the launcher exits 0), writes the pid file, the ctl socket gets mode
/// 0660, hub mode floods a known unicast to a third port, the tap is a
/// port, and SIGTERM removes the control socket and the pid file.
#[test]
fn vde_switch_name_daemon_hub_mode() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cd")?;
    let ns = Netns::new()?;
    let dir = tmp.join("vde");
    let ctl = dir.join("ctl");
    let pidfile = tmp.join("vde.pid");
    let tap = unique_name("syd");
    let mut launcher: Switch = vde_switch_cmd(&tmp)?
        .args(["-x", "-d", "-m", "660", "-n", "8", "-t", &tap, "-p"])
        .arg(&pidfile)
        .arg("-s")
        .arg(&dir)
        .spawn(Some(&ns))?;
    let status = launcher.proc.wait_exit(Duration::from_secs(10))?;
    ensure!(
        status.success(),
        "vde_switch -d: launcher {}",
        describe(status)
    );
    // The original vde_switch writes its pid file after detaching: allow that.
    switchyard_tests::wait_until(Duration::from_secs(5), "the pid file", || exists(&pidfile))?;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("reading the pid file {}", pidfile.display()))?
        .trim()
        .parse()
        .context("pid file content")?;
    let daemon = PidGuard {
        pid: nix::unistd::Pid::from_raw(pid),
    };
    ensure!(daemon.alive(), "the daemon (pid {pid}) is not running");
    switchyard_tests::wait_until(Duration::from_secs(5), "the ctl socket", || exists(&ctl))?;

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ctl)?.permissions().mode() & 0o777;
    ensure!(mode == 0o660, "-m 660 gave the ctl socket mode {mode:o}");

    let scratch = tmp.path().to_path_buf();
    let third_hears = ns.run(|| scenarios::unicast_reaches_third_port(&dir, &scratch))??;
    ensure!(
        third_hears,
        "in hub mode (-x) a known unicast must reach every port"
    );

    // The -t tap is a port too.
    ensure!(ns.has_link(&tap), "-t {tap}: no such tap");
    ns.addr_up(&tap, "192.0.2.254/24")?;
    scenarios::arp_via(&ns, &dir, &scratch, 1).context("ARP through the -t tap")?;

    nix::sys::signal::kill(daemon.pid, Signal::SIGTERM)?;
    daemon.wait_gone(Duration::from_secs(5))?;
    ensure!(!exists(&ctl), "SIGTERM left {} behind", ctl.display());
    ensure!(
        !exists(&pidfile),
        "SIGTERM left the pid file behind (vde_switch removes it)"
    );
    Ok(())
}

/// Test 5f: `uml_switch -unix CTL -daemon` detaches (the launcher exits 0)
/// and keeps serving; SIGINT still cleans up the (absolute) socket path.
#[test]
fn uml_switch_name_daemon_flag() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cm")?;
    let ns = Netns::new()?;
    let ctl = tmp.join("uml.ctl");
    let mut launcher = uml_switch_cmd(&tmp)?
        .arg("-unix")
        .arg(&ctl)
        .arg("-daemon")
        .spawn(Some(&ns))?;
    let status = launcher.proc.wait_exit(Duration::from_secs(10))?;
    ensure!(
        status.success(),
        "uml_switch -daemon: launcher {}",
        describe(status)
    );
    let pid = find_pid_with_arg(&ctl).context("finding the daemonized uml_switch")?;
    let daemon = PidGuard { pid };
    ensure!(exists(&ctl), "no control socket after -daemon returned");
    std::os::unix::net::UnixStream::connect(&ctl)
        .context("the daemonized switch does not accept")?;
    nix::sys::signal::kill(daemon.pid, Signal::SIGINT)?;
    daemon.wait_gone(Duration::from_secs(5))?;
    ensure!(!exists(&ctl), "SIGINT left {} behind", ctl.display());
    Ok(())
}

/// The pid of a live process one of whose arguments is `arg`.
fn find_pid_with_arg(arg: &Path) -> Result<nix::unistd::Pid> {
    use std::os::unix::ffi::OsStrExt;
    let want = arg.as_os_str().as_bytes();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == want) {
            return Ok(nix::unistd::Pid::from_raw(pid));
        }
    }
    anyhow::bail!("no process has {} on its command line", arg.display())
}
