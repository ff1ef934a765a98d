//! systemd integration: the shipped units pass `systemd-analyze verify`,
//! and the daemon speaks the Type=notify protocol (READY=1 once its
//! sockets are bound, STOPPING=1 on SIGTERM).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::ops::{ctl, deploy_dir, systemd_verify, unit_copy, NotifySocket};
use switchyard_tests::process::describe;
use switchyard_tests::switch::switchyard_bin;
use switchyard_tests::util::exists;
use switchyard_tests::{preflight, Netns, Proc, Stdin, TempDir};

const UNITS: [&str; 2] = ["switchyard.service", "switchyard@.service"];

/// Copies both units into `tmp` with the built binary in place of
/// /usr/bin/switchyard, plus an instance `switchyard@lab.service` of the
/// template; returns the three paths.
fn unit_copies(tmp: &TempDir) -> Result<Vec<std::path::PathBuf>> {
    let bin = switchyard_bin()?;
    let mut units = Vec::new();
    for u in UNITS {
        units.push(unit_copy(&deploy_dir().join(u), tmp.path(), &bin)?);
    }
    let instance = tmp.join("switchyard@lab.service");
    std::fs::copy(tmp.join("switchyard@.service"), &instance)?;
    units.push(instance);
    Ok(units)
}

fn verify_all(units: &[std::path::PathBuf], check_man: bool) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for u in units {
        let out = systemd_verify(u, check_man)?;
        let said = format!("{}{}", out.stdout, out.stderr);
        if out.code != Some(0) || !said.trim().is_empty() {
            problems.push(format!(
                "{}: exit {:?}\n{}",
                u.file_name().unwrap_or_default().to_string_lossy(),
                out.code,
                said.trim_end()
            ));
        }
    }
    Ok(problems)
}

/// deploy/switchyard.service and deploy/switchyard@.service (and an
/// instance of the template) pass `systemd-analyze verify` without a
/// single warning, once their ExecStart binary exists. (`--man=no`: the
/// Documentation= check is the next test's.)
#[test]
fn systemd_units_verify_cleanly() -> Result<()> {
    let tmp = TempDir::new("sdv")?;
    let units = unit_copies(&tmp)?;
    let problems = verify_all(&units, false)?;
    ensure!(
        problems.is_empty(),
        "systemd-analyze verify --man=no complained:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// The units' Documentation= references resolve: plain `systemd-analyze
/// verify` (which also looks up man: pages) passes without a warning.
#[test]
fn systemd_units_documentation_resolves() -> Result<()> {
    let tmp = TempDir::new("sdm")?;
    let units = unit_copies(&tmp)?;
    let problems = verify_all(&units, true)?;
    ensure!(
        problems.is_empty(),
        "systemd-analyze verify (with the man page check) complained:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// A config file with one VDE directory port `vde` at `dir`, then `extra`.
fn write_vde_config(cfg: &Path, dir: &Path, extra: &str) -> std::io::Result<()> {
    std::fs::write(
        cfg,
        format!(
            "ports:\n  - {{ name: vde, type: unix, directory: {} }}\n{extra}",
            dir.display()
        ),
    )
}

/// Receives notifications until one contains `state`, collecting all.
fn wait_state(
    n: &NotifySocket,
    state: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(m) = n.recv(deadline.saturating_duration_since(Instant::now()))? {
            let hit = m.lines().any(|l| l == state);
            seen.push(m);
            if hit {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Started as the units start it (`--config FILE --control PATH`) with
/// NOTIFY_SOCKET set, the daemon sends READY=1 once, after the control
/// socket and its ports' sockets exist and `ctl` is answered; on SIGTERM it
/// sends STOPPING=1, exits 0 and removes its sockets.
#[test]
fn notify_ready_after_sockets_and_stopping_on_sigterm() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("sdn")?;
    let ns = Netns::new()?;
    let notify = NotifySocket::bind(&tmp.join("notify.sock"))?;
    let dir = tmp.join("vde");
    let uml = tmp.join("uml.ctl");
    let ctl_path = tmp.join("run").join("control.sock");
    let cfg = tmp.join("switchyard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "ports:\n  - {{ name: vde, type: unix, directory: {} }}\n  - {{ name: uml, type: unix, path: {} }}\n",
            dir.display(),
            uml.display()
        ),
    )?;
    let mut cmd = ns.command(switchyard_bin()?);
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--control")
        .arg(&ctl_path)
        .env("NOTIFY_SOCKET", &notify.path);
    let mut sw = Proc::spawn("switchyard (notify)", cmd, Stdin::Null)?;

    let mut seen = Vec::new();
    if !wait_state(&notify, "READY=1", Duration::from_secs(10), &mut seen)? {
        bail!(
            "no READY=1 within 10 s (got {seen:?}); output:\n{}",
            sw.output()
        );
    }
    // At the moment READY=1 arrives, everything must already be served.
    let vde_ctl = dir.join("ctl");
    let sockets = [ctl_path.as_path(), vde_ctl.as_path(), uml.as_path()];
    let missing: Vec<&Path> = sockets.into_iter().filter(|p| !exists(p)).collect();
    ensure!(
        missing.is_empty(),
        "READY=1 arrived before {missing:?} existed; output:\n{}",
        sw.output()
    );
    ctl(&ctl_path, &["stats"])?.expect_code(0, "ctl stats right after READY=1")?;
    std::os::unix::net::UnixStream::connect(&vde_ctl)
        .context("the VDE control socket does not accept right after READY=1")?;

    sw.signal(nix::sys::signal::Signal::SIGTERM)?;
    if !wait_state(&notify, "STOPPING=1", Duration::from_secs(5), &mut seen)? {
        bail!(
            "no STOPPING=1 within 5 s of SIGTERM (got {seen:?}); output:\n{}",
            sw.output()
        );
    }
    let status = sw.wait_exit(Duration::from_secs(5))?;
    ensure!(
        status.code() == Some(0),
        "SIGTERM should end the daemon with exit 0, got {}",
        describe(status)
    );
    let ready = seen
        .iter()
        .filter(|m| m.lines().any(|l| l == "READY=1"))
        .count();
    ensure!(ready == 1, "READY=1 was sent {ready} times: {seen:?}");
    let left: Vec<&Path> = sockets.into_iter().filter(|p| exists(p)).collect();
    ensure!(left.is_empty(), "sockets left after SIGTERM: {left:?}");
    Ok(())
}

/// A reload under systemd: SIGHUP sends RELOADING=1, then READY=1 again
/// once the new file is applied (`systemctl reload` waits for that). Under
/// journald (JOURNAL_STREAM set) log lines carry no timestamp of their own.
#[test]
fn notify_reloading_then_ready_and_journald_lines() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("sdr")?;
    let ns = Netns::new()?;
    let notify = NotifySocket::bind(&tmp.join("notify.sock"))?;
    let dir = tmp.join("vde");
    let cfg = tmp.join("switchyard.yaml");
    let write = |extra: &str| write_vde_config(&cfg, &dir, extra);
    write("")?;
    let mut cmd = ns.command(switchyard_bin()?);
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--control")
        .arg(tmp.join("control.sock"))
        .env("NOTIFY_SOCKET", &notify.path)
        .env("JOURNAL_STREAM", "8:12345");
    let mut sw = Proc::spawn("switchyard (reload notify)", cmd, Stdin::Null)?;
    let mut seen = Vec::new();
    ensure!(
        wait_state(&notify, "READY=1", Duration::from_secs(10), &mut seen)?,
        "no READY=1 (got {seen:?}); output:\n{}",
        sw.output()
    );
    write("  - { name: q1, type: udp, local: \"127.0.0.1:7501\", remote: \"127.0.0.1:7502\" }\n")?;
    sw.signal(nix::sys::signal::Signal::SIGHUP)?;
    ensure!(
        wait_state(&notify, "RELOADING=1", Duration::from_secs(5), &mut seen)?,
        "no RELOADING=1 after SIGHUP (got {seen:?}); output:\n{}",
        sw.output()
    );
    ensure!(
        wait_state(&notify, "READY=1", Duration::from_secs(5), &mut seen)?,
        "no READY=1 after the reload (got {seen:?}); output:\n{}",
        sw.output()
    );
    sw.wait_for_output("configuration reloaded", Duration::from_secs(5))?;
    let log = sw.stderr();
    let stamped: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("20") && l.as_bytes().get(4) == Some(&b'-'))
        .collect();
    ensure!(
        stamped.is_empty(),
        "log lines under journald carry their own timestamp: {stamped:?}"
    );
    ensure!(log.contains("INFO"), "no log lines at all:\n{log}");
    sw.signal(nix::sys::signal::Signal::SIGTERM)?;
    sw.wait_exit(Duration::from_secs(5))?;
    Ok(())
}

/// The value of `key=` in a unit file (the first such line).
fn unit_value(unit: &str, key: &str) -> Result<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .with_context(|| format!("no {key}= line"))
}

/// Both units reload through `switchyard ctl -s SOCKET reload` on the
/// socket their ExecStart binds (not a bare SIGHUP, which returns before
/// the reload is done), and keep their runtime directory traversable for
/// the group the sockets are given (0755; the sockets' modes gate).
#[test]
fn units_reload_synchronously_on_their_control_socket() -> Result<()> {
    for u in UNITS {
        let text = std::fs::read_to_string(deploy_dir().join(u))?;
        let start = unit_value(&text, "ExecStart")?;
        let reload = unit_value(&text, "ExecReload")?;
        let words: Vec<&str> = reload.split_whitespace().collect();
        let socket = start
            .split_whitespace()
            .skip_while(|w| *w != "--control")
            .nth(1)
            .with_context(|| format!("{u}: ExecStart has no --control"))?;
        ensure!(
            words == ["/usr/bin/switchyard", "ctl", "-s", socket, "reload"],
            "{u}: ExecReload={reload}"
        );
        ensure!(
            unit_value(&text, "RuntimeDirectoryMode")? == "0755",
            "{u}: RuntimeDirectoryMode"
        );
    }
    Ok(())
}

/// The unit's ExecReload command line, run as systemd runs it against a
/// daemon started as its ExecStart starts it, returns only once the new
/// file is in force (the added port is listed the moment it exits 0) and
/// exits non-zero with the reason when the file is broken (`systemctl
/// reload` then fails and says so).
#[test]
fn exec_reload_returns_once_the_reload_is_done() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("sdx")?;
    let ns = Netns::new()?;
    let dir = tmp.join("vde");
    let cfg = tmp.join("switchyard.yaml");
    let ctl_path = tmp.join("control.sock");
    let write = |extra: &str| write_vde_config(&cfg, &dir, extra);
    write("")?;
    let bin = switchyard_bin()?;
    let mut cmd = ns.command(&bin);
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--control")
        .arg(&ctl_path);
    let mut sw = Proc::spawn("switchyard (ExecReload)", cmd, Stdin::Null)?;
    sw.wait_for_output("listening", Duration::from_secs(10))?;
    let text = std::fs::read_to_string(deploy_dir().join("switchyard.service"))?;
    let line = unit_value(&text, "ExecReload")?
        .replace("/usr/bin/switchyard", &bin.display().to_string())
        .replace(
            "/run/switchyard/control.sock",
            &ctl_path.display().to_string(),
        );
    let exec_reload = || -> Result<std::process::Output> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (program, args) = words.split_first().context("empty ExecReload")?;
        std::process::Command::new(program)
            .args(args)
            .output()
            .context("run ExecReload")
    };

    write("  - { name: q1, type: udp, local: \"127.0.0.1:7521\", remote: \"127.0.0.1:7522\" }\n")?;
    let out = exec_reload()?;
    ensure!(out.status.success(), "ExecReload failed: {out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    ensure!(said.contains("added [q1]"), "ExecReload said {said:?}");
    let ports = ctl(&ctl_path, &["-j", "ports"])?;
    ensure!(
        ports.stdout.contains("\"q1\""),
        "q1 not listed right after ExecReload returned: {}",
        ports.stdout
    );

    std::fs::write(&cfg, "ports:\n  - { type: udp, lcoal: x }\n")?;
    let out = exec_reload()?;
    let why = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && why.contains("lcoal"),
        "a broken file: ExecReload exited {:?} saying {why:?}",
        out.status.code()
    );
    sw.signal(nix::sys::signal::Signal::SIGTERM)?;
    sw.wait_exit(Duration::from_secs(5))?;
    Ok(())
}
