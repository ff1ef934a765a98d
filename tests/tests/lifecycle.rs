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
use switchyard_tests::util::exists;
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

    let scratch = tmp.path().to_path_buf();
    let mut first = cmd()?.start(Some(&ns))?;
    // Leave client ports behind too (their data sockets go stale).
    let stale = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0xa8))?,
            Client::attach_ctl(&ctl, 0, &scratch, proto::mac(0xb8))?,
        ))
    })??;
    first.proc.kill()?;
    drop(stale);
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

/// Test 6c: SIGTERM and SIGINT end a running daemon and remove its socket
/// files: the control sockets and the per-port data sockets.
#[test]
fn sigterm_and_sigint_remove_sockets() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("sg")?;
    let ns = Netns::new()?;
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = tmp.join(format!("vde-{sig}"));
        let ctl = tmp.join(format!("{sig}.ctl"));
        let mut sw = SwitchCmd::native()?.vde(&dir).unix(&ctl).start(Some(&ns))?;
        // Clients attached on both sockets: the daemon is fully up, and it
        // has per-port data sockets to remove as well.
        let scratch = tmp.path().to_path_buf();
        let clients = ns.run(|| -> Result<(Client, Client)> {
            Ok((
                Client::attach(&dir, 0, &scratch, proto::mac(0x11))?,
                Client::attach_ctl(&ctl, 0, &scratch, proto::mac(0x12))?,
            ))
        })??;
        sw.proc.signal(sig)?;
        let status = sw
            .proc
            .wait_exit(T)
            .with_context(|| format!("{sig} must end the daemon"))?;
        drop(clients);
        let leftovers: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            !exists(&ctl) && leftovers.is_empty(),
            "{sig} ({}) left sockets behind: {} exists: {}; in {}: {leftovers:?}",
            describe(status),
            ctl.display(),
            exists(&ctl),
            dir.display()
        );
    }
    Ok(())
}

/// Test 6c': a SIGTERM that arrives right after the `listening` line (the
/// moment a supervisor considers the daemon started) is handled like any
/// other: sockets removed. Repeated, since it probes a startup window.
#[test]
fn sigterm_right_after_listening_removes_sockets() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("sq")?;
    let ns = Netns::new()?;
    for i in 0..8 {
        let ctl = tmp.join(format!("{i}.ctl"));
        let mut sw = SwitchCmd::native()?.unix(&ctl).spawn(Some(&ns))?;
        let deadline = std::time::Instant::now() + T;
        while sw.proc.count_lines("listening") == 0 {
            ensure!(
                std::time::Instant::now() < deadline && sw.proc.is_running()?,
                "no `listening` line; output:\n{}",
                sw.proc.output()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        sw.proc.signal(Signal::SIGTERM)?;
        let status = sw.proc.wait_exit(T)?;
        ensure!(
            !exists(&ctl),
            "attempt {i}: SIGTERM right after `listening` ended the daemon with {} \
             and left {} behind (signal handling is installed too late)",
            describe(status),
            ctl.display()
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
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(args);
        let mut p = Proc::spawn(&format!("switchyard {args:?}"), cmd, Stdin::Null)?;
        let status = p.wait_exit(T)?;
        ensure!(
            status.code() == Some(2),
            "switchyard {args:?}: {}, expected exit code 2; stderr: {}",
            describe(status),
            p.stderr()
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
    // Look at the pid file the moment the launcher has exited: a caller
    // (an init script, systemd's Type=forking) reads it right then.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (status, pid_at_exit) = loop {
        if let Some(st) = launcher.proc.try_status()? {
            break (st, std::fs::read_to_string(&pidfile).ok());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the --daemon launcher did not exit"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    ensure!(
        status.success(),
        "switchyard --daemon: launcher {}; output:\n{}",
        describe(status),
        launcher.proc.output()
    );
    // Find the daemon even if the pid file came late, so it gets cleaned up.
    let _ = wait_until(T, "the pid file", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("reading {}", pidfile.display()))?
        .trim()
        .parse()
        .context("pid file content")?;
    let daemon = PidGuard {
        pid: nix::unistd::Pid::from_raw(pid),
    };
    ensure!(
        pid_at_exit.is_some_and(|s| s.trim() == pid.to_string()),
        "the pid file {} was not written yet when the --daemon launcher exited \
         (it appeared later: the parent must not exit before the pid file exists)",
        pidfile.display()
    );
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

/// Test 6g: without --unix/--vde the daemon serves the three default
/// sockets: /run/vde.ctl (VDE directory), /run/uml-utilities/uml_switch.ctl
/// and /tmp/uml.ctl. Isolated: the daemon runs under `unshare --mount` with
/// fresh tmpfs on /run and /tmp, in a fresh network namespace; the clients
/// join both namespaces.
#[test]
fn default_sockets_when_isolated() -> Result<()> {
    preflight()?;
    let ns = Netns::new()?;
    let unshare = switchyard_tests::util::require_tool("unshare")?;
    let mut cmd = ns.command(unshare);
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        // The binary is copied into the new /run first: the checkout may
        // itself live under /tmp, which the next mount hides.
        .arg(
            "mount -t tmpfs tmpfs /run && cp \"$0\" /run/sy-bin && \
             mount -t tmpfs tmpfs /tmp && exec /run/sy-bin",
        )
        .arg(switchyard_bin()?);
    let mut sw = Proc::spawn("switchyard (defaults)", cmd, Stdin::Null)?;
    sw.wait_for_lines("listening", 3, T)?;
    let pid = sw.pid();
    switchyard_tests::netns::run_in_namespaces_of(pid, || -> Result<()> {
        let scratch = std::path::Path::new("/run");
        let a = Client::attach(
            std::path::Path::new("/run/vde.ctl"),
            0,
            scratch,
            proto::mac(0xe1),
        )
        .context("/run/vde.ctl")?;
        let b = Client::attach_ctl(
            std::path::Path::new("/run/uml-utilities/uml_switch.ctl"),
            0,
            scratch,
            proto::mac(0xe2),
        )
        .context("/run/uml-utilities/uml_switch.ctl")?;
        let c = Client::attach_ctl(
            std::path::Path::new("/tmp/uml.ctl"),
            0,
            scratch,
            proto::mac(0xe3),
        )
        .context("/tmp/uml.ctl")?;
        pass_frame(&a, &b, BROADCAST, 60, 1)?;
        pass_frame(&b, &c, BROADCAST, 60, 2)?;
        pass_frame(&c, &a, a.mac(), 60, 3)?;
        Ok(())
    })??;
    ensure!(
        sw.is_running()?,
        "the daemon died; output:\n{}",
        sw.output()
    );
    Ok(())
}

/// Test 6h: a relative `--pidfile` is resolved against the directory the
/// daemon was started in (as vde_switch does), even with `--daemon`, which
/// changes directory to `/`.
#[test]
fn relative_pidfile_with_daemon() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("rp")?;
    let ns = Netns::new()?;
    let name = format!("{}.pid", switchyard_tests::unique_name("rel"));
    let ctl = tmp.join("uml.ctl");
    let mut launcher = SwitchCmd::native()?
        .current_dir(tmp.path())
        .args(["--daemon", "--pidfile", &name])
        .unix(&ctl)
        .spawn(Some(&ns))?;
    let status = launcher.proc.wait_exit(Duration::from_secs(10))?;
    ensure!(status.success(), "launcher {}", describe(status));
    let expected = tmp.join(&name);
    let misplaced = std::path::Path::new("/").join(&name);
    let found = wait_until(T, "the pid file", || {
        exists(&expected) || exists(&misplaced)
    });
    let daemon = std::fs::read_to_string(&expected)
        .or_else(|_| std::fs::read_to_string(&misplaced))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(|pid| PidGuard {
            pid: nix::unistd::Pid::from_raw(pid),
        });
    found?;
    if exists(&misplaced) {
        // Clean up what the daemon wrote outside our temp dir.
        drop(daemon);
        let _ = std::fs::remove_file(&misplaced);
        anyhow::bail!(
            "--pidfile {name} with --daemon was written to {} instead of {}",
            misplaced.display(),
            expected.display()
        );
    }
    ensure!(
        daemon.is_some_and(|d| d.alive()),
        "the daemon is not running"
    );
    Ok(())
}

/// Test 6j: `--group nogroup` gives the sockets that group with mode 0660
/// (the default with --group): an unprivileged `vde_plug` running as
/// nobody:nogroup attaches and receives frames; one running with a group
/// outside it (uid/gid 4242) is refused.
#[test]
fn group_lets_members_attach() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    preflight()?;
    let tmp = TempDir::new("gr")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &["--group", "nogroup"])?;
    let ctl = dir.join("ctl");
    let meta = std::fs::metadata(&ctl)?;
    ensure!(
        meta.gid() == 65534 && meta.mode() & 0o777 == 0o660,
        "--group nogroup: ctl has gid {} mode {:o}, expected 65534 and 660",
        meta.gid(),
        meta.mode() & 0o777
    );

    let plug_as = |uid: u32, gid: u32, label: &str| -> Result<Proc> {
        let mut cmd = ns.command(switchyard_tests::util::require_tool("vde_plug")?);
        cmd.arg(&dir).current_dir("/");
        // After the setns hook (std's uid()/gid() would drop privileges
        // before pre_exec hooks run, and setns needs them).
        // SAFETY: only async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Proc::spawn(label, cmd, Stdin::Pipe)
    };
    let before = sw.attached_ports().len();
    let member = plug_as(65534, 65534, "vde_plug as nobody:nogroup")?;
    wait_until(T, "the group member's port", || {
        sw.attached_ports().len() > before
    })
    .with_context(|| format!("switch log:\n{}", sw.proc.output()))?;
    // vde_plug writes what it receives to stdout (2-byte length + frame).
    let scratch = tmp.path().to_path_buf();
    let root_client = ns.run(|| Client::attach(&dir, 0, &scratch, proto::mac(0xf1)))??;
    let mut f = proto::frame(BROADCAST, root_client.mac(), 100, 0);
    f[14..33].copy_from_slice(b"SYMARK-group-member");
    wait_until(T, "the frame at the unprivileged vde_plug", || {
        let _ = root_client.send(&f);
        member.stdout().contains("SYMARK-group-member")
    })?;

    let attached = sw.attached_ports().len();
    let mut outsider = plug_as(4242, 4242, "vde_plug as 4242:4242")?;
    let status = outsider
        .wait_exit(T)
        .context("a client outside the group should fail to attach")?;
    ensure!(
        !status.success() && sw.attached_ports().len() == attached,
        "a client outside the group attached ({})",
        describe(status)
    );
    sw.assert_running()?;
    Ok(())
}
