//! Life cycle of ports and of the daemon itself: clients killed with
//! SIGKILL, the switch killed with SIGKILL and restarted, a second switch on
//! a live socket, signals, stdin, daemon mode, flags.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_tests::process::{describe, PidGuard};
use switchyard_tests::proto::{self, Client, BROADCAST};
use switchyard_tests::scenarios::pass_frame;
use switchyard_tests::switch::{start_vde_switch, switchyard_bin};
use switchyard_tests::tools::vde_plug;
use switchyard_tests::util::{exists, output};
use switchyard_tests::{preflight, wait_until, Netns, Proc, Stdin, SwitchCmd, TempDir};

const T: Duration = Duration::from_secs(5);

/// Test 6a: a `vde_plug` on port 5 killed with SIGKILL frees its port: the
/// log shows `port detached` for port 5, a new client gets port 5 again,
/// and two other ports keep exchanging frames throughout.
#[test]
fn killed_client_frees_its_port() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("kc")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--numports", "8"])?;
    let scratch = tmp.path().to_path_buf();
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0xa6))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0xb6))?,
        ))
    })??;
    pass_frame(&a, &b, BROADCAST, 100, 1)?;

    let url = format!("{}[5]", dir.display());
    let mut plug = vde_plug(Some(&ns), &url, "vde_plug[5]")?;
    wait_until(T, "`port attached` for port 5", || {
        sw.attached_ports().contains(&5)
    })
    .with_context(|| format!("switch log:\n{}", sw.proc.output()))?;
    let line = sw
        .proc
        .output()
        .lines()
        .find(|l| l.contains("port attached") && l.contains("unix:5"))
        .map(str::to_string)
        .unwrap_or_default();
    ensure!(
        line.contains(&format!("pid={}", plug.pid())),
        "the `port attached` line should name the client's pid {}: {line:?}",
        plug.pid()
    );

    plug.kill()?;
    wait_until(T, "`port detached` for port 5", || {
        sw.detached_ports().contains(&5)
    })
    .with_context(|| format!("switch log:\n{}", sw.proc.output()))?;
    pass_frame(&b, &a, BROADCAST, 100, 2)?;

    let _plug2 = vde_plug(Some(&ns), &url, "vde_plug[5] again")?;
    wait_until(T, "port 5 attached a second time", || {
        sw.attached_ports().iter().filter(|&&p| p == 5).count() == 2
    })
    .with_context(|| format!("port 5 was not reusable; switch log:\n{}", sw.proc.output()))?;
    pass_frame(&a, &b, b.mac(), 100, 3)?;
    pass_frame(&b, &a, a.mac(), 100, 4)?;
    sw.assert_running()?;
    Ok(())
}

/// Test 6b: after its own SIGKILL the switch restarts cleanly on the stale
/// sockets; a second switch on the live sockets exits 1 with a message
/// naming the socket, and the first keeps serving.
#[test]
fn restart_after_sigkill_and_live_socket_conflict() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("rs")?;
    let ns = Netns::new()?;
    let dir = tmp.join("vde");
    let ctl = tmp.join("uml.ctl");
    let cmd = || -> Result<SwitchCmd> { Ok(SwitchCmd::native()?.vde(&dir).unix(&ctl)) };

    let mut first = cmd()?.start(Some(&ns))?;
    first.proc.kill()?;
    ensure!(
        exists(&ctl) && exists(&dir.join("ctl")),
        "expected stale sockets after SIGKILL"
    );

    let mut sw = cmd()?
        .start(Some(&ns))
        .context("restart on stale sockets")?;
    let scratch = tmp.path().to_path_buf();
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0xa7))?,
            Client::attach_ctl(&ctl, 0, &scratch, proto::mac(0xb7))?,
        ))
    })??;
    pass_frame(&a, &b, BROADCAST, 80, 1)?;
    pass_frame(&b, &a, a.mac(), 80, 2)?;

    for (flag, path) in [("--vde", &dir), ("--unix", &ctl)] {
        let mut second = Proc::spawn(
            &format!("second switchyard {flag}"),
            {
                let mut c = ns.command(switchyard_bin()?);
                c.arg(flag).arg(path);
                c
            },
            Stdin::Null,
        )?;
        let status = second.wait_exit(T)?;
        ensure!(
            status.code() == Some(1),
            "a second switch on the live {flag} socket: {}, expected exit code 1; output:\n{}",
            describe(status),
            second.output()
        );
        let err = second.stderr();
        ensure!(
            err.contains(&path.display().to_string()),
            "the error message should name the socket {}; stderr: {err:?}",
            path.display()
        );
    }

    // The first switch still owns both sockets.
    sw.assert_running()?;
    let (c, d) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0xc7))?,
            Client::attach_ctl(&ctl, 0, &scratch, proto::mac(0xd7))?,
        ))
    })??;
    pass_frame(&c, &d, BROADCAST, 80, 3)?;
    pass_frame(&d, &a, BROADCAST, 80, 4)?;
    Ok(())
}

/// Test 6c: SIGTERM and SIGINT remove the socket files and end the daemon.
#[test]
fn sigterm_and_sigint_remove_sockets() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("sg")?;
    let ns = Netns::new()?;
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = tmp.join(format!("vde-{sig}"));
        let ctl = tmp.join(format!("{sig}.ctl"));
        let mut sw = SwitchCmd::native()?.vde(&dir).unix(&ctl).start(Some(&ns))?;
        sw.proc.signal(sig)?;
        let status = sw
            .proc
            .wait_exit(T)
            .with_context(|| format!("{sig} must end the daemon"))?;
        ensure!(
            !exists(&ctl) && !exists(&dir.join("ctl")),
            "{sig} ({}) left sockets behind: {} {}",
            describe(status),
            exists(&ctl),
            exists(&dir.join("ctl"))
        );
    }
    Ok(())
}

/// Test 6d: native mode does not watch stdin: EOF on a pipe changes nothing.
#[test]
fn native_mode_ignores_stdin_eof() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("si")?;
    let ns = Netns::new()?;
    let ctl = tmp.join("uml.ctl");
    let mut sw = SwitchCmd::native()?
        .unix(&ctl)
        .stdin(Stdin::Pipe)
        .start(Some(&ns))?;
    sw.proc.close_stdin();
    std::thread::sleep(Duration::from_millis(800));
    sw.assert_running()
        .context("native switchyard must ignore stdin EOF")?;
    ensure!(exists(&ctl), "control socket vanished");
    Ok(())
}

/// Test 6e: bad flags exit with code 2.
#[test]
fn bad_flags_exit_2() -> Result<()> {
    preflight()?;
    let bin = switchyard_bin()?;
    for args in [
        &["--no-such-flag"][..],
        &["--numports", "lots", "--unix", "/nonexistent/x.ctl"][..],
        &["--unix"][..],
    ] {
        let out = output(std::process::Command::new(&bin).args(args))?;
        ensure!(
            out.status.code() == Some(2),
            "switchyard {args:?}: {}, expected exit code 2; stderr: {}",
            describe(out.status),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Test 6f: `--daemon --pidfile F` returns once serving, the pid file names
/// the live daemon, `--mode 666` sets the socket modes, SIGTERM cleans up.
#[test]
fn daemon_pidfile_and_mode() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("dm")?;
    let ns = Netns::new()?;
    let dir = tmp.join("vde");
    let ctl = tmp.join("uml.ctl");
    let pidfile = tmp.join("sy.pid");
    let mut launcher = SwitchCmd::native()?
        .arg("--daemon")
        .arg("--pidfile")
        .arg(&pidfile)
        .args(["--mode", "666"])
        .vde(&dir)
        .unix(&ctl)
        .spawn(Some(&ns))?;
    let status = launcher.proc.wait_exit(Duration::from_secs(10))?;
    ensure!(
        status.success(),
        "switchyard --daemon: launcher {}; output:\n{}",
        describe(status),
        launcher.proc.output()
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("reading {}", pidfile.display()))?
        .trim()
        .parse()
        .context("pid file content")?;
    let daemon = PidGuard {
        pid: nix::unistd::Pid::from_raw(pid),
    };
    ensure!(
        daemon.alive(),
        "the daemon named in the pid file ({pid}) is not running"
    );
    ensure!(
        pid != launcher.proc.pid().as_raw(),
        "--daemon did not detach"
    );
    // Serving as soon as the launcher returned.
    for s in [&ctl, &dir.join("ctl")] {
        std::os::unix::net::UnixStream::connect(s).with_context(|| {
            format!(
                "{} not accepting right after the launcher exited",
                s.display()
            )
        })?;
        let mode = std::fs::metadata(s)?.permissions().mode() & 0o777;
        ensure!(
            mode == 0o666,
            "--mode 666 gave {} mode {mode:o}",
            s.display()
        );
    }
    nix::sys::signal::kill(daemon.pid, Signal::SIGTERM)?;
    daemon.wait_gone(T)?;
    ensure!(
        !exists(&ctl) && !exists(&dir.join("ctl")),
        "SIGTERM left sockets behind"
    );
    Ok(())
}
