//! An idle switch sleeps with no timer armed: every thread of the daemon
//! that waits in `epoll_wait` waits without a timeout, with unix ports
//! attached, a vhost-user guest connected (it has sent and been sent
//! frames, then stays quiet), the control socket and the metrics endpoint
//! on.
//!
//! Why it matters: on a virtual machine arming and cancelling a timer on
//! every sleep costs each frame microseconds, and each microsecond shows
//! several times over in the latency (README, "Latency"). Housekeeping
//! takes its ticks from a plain thread (`switchyard_switch::tick`) and the
//! unix ports' data plane waits without a timeout; a periodic
//! `tokio::time::interval` added anywhere would break this test.
//!
//! The metrics address is inside the test's own network namespace.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::process::{Proc, Stdin};
use switchyard_tests::proto::{self, Client};
use switchyard_tests::scenarios::pass_frame;
use switchyard_tests::transports::wait_attached;
use switchyard_tests::{preflight, Netns, SwitchCmd, TempDir};

const METRICS: &str = "127.0.0.1:9590";

/// System calls that wait on an epoll set, with the index (in
/// `/proc/<pid>/task/<tid>/syscall`, after the number) of the timeout.
fn epoll_waits() -> Vec<(i64, usize)> {
    let mut calls = vec![(libc::SYS_epoll_pwait, 3)];
    #[cfg(target_arch = "x86_64")]
    calls.push((libc::SYS_epoll_wait, 3));
    calls
}

/// (thread name, syscall number, timeout argument) of every thread of
/// `pid` blocked in a system call.
fn blocked_threads(pid: i32) -> Result<Vec<(String, i64, String)>> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).context("listing threads")?;
    for t in tasks {
        let t = t?.path();
        let (Ok(comm), Ok(call)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("syscall")),
        ) else {
            continue; // the thread just ended
        };
        let fields: Vec<&str> = call.split_whitespace().collect();
        // "running", or a number followed by six arguments, sp and pc.
        let Some(nr) = fields.first().and_then(|f| f.parse::<i64>().ok()) else {
            continue;
        };
        let timeout = epoll_waits()
            .iter()
            .find(|(n, _)| *n == nr)
            .and_then(|(_, i)| fields.get(1 + i))
            .map(|s| s.to_string())
            .unwrap_or_default();
        out.push((comm.trim().to_string(), nr, timeout));
    }
    Ok(out)
}

/// An `int` timeout of -1 as /proc shows it (the register, in hex).
fn is_infinite(hex: &str) -> bool {
    u64::from_str_radix(hex.trim_start_matches("0x"), 16)
        .map(|v| v as u32 == u32::MAX)
        .unwrap_or(false)
}

#[test]
fn an_idle_switch_sleeps_without_a_timer() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("idle")?;
    let ns = Netns::new()?;
    let dir = tmp.join("vde");
    let ctl = tmp.join("control.sock");
    let vhost = tmp.join("v.sock");
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .arg("--control")
        .arg(&ctl)
        .arg("--metrics")
        .arg(METRICS)
        .arg("--port")
        .arg(format!("vhost-user,name=v,path={}", vhost.display()))
        .start(Some(&ns))?;
    // A quiet guest: 20 frames, then connected and silent for a minute.
    let mut frontend = Command::new(env!("CARGO_BIN_EXE_sy-vhost-frontend"));
    frontend
        .arg(&vhost)
        .args(["good", "--frames", "20", "--linger-ms", "60000"]);
    let mut guest = Proc::spawn("vhost-user guest", frontend, Stdin::Null)?;
    wait_attached(&mut sw, "v", 1)?;
    let scratch = tmp.path().to_path_buf();
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0xa1))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0xb1))?,
        ))
    })??;
    pass_frame(&a, &b, b.mac(), 60, 1)?;
    pass_frame(&b, &a, a.mac(), 60, 2)?;
    let pid = sw.proc.pid().as_raw();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    ensure!(
        comm.trim() == "switchyard",
        "pid {pid} is {comm:?}, not the daemon"
    );

    // Past a few housekeeping ticks (FDB aging every second, the control
    // socket's file check every two).
    std::thread::sleep(Duration::from_millis(2500));
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for (name, nr, timeout) in blocked_threads(pid)? {
            if epoll_waits().iter().any(|(n, _)| *n == nr) {
                if !is_infinite(&timeout) {
                    bail!(
                        "thread {name:?} of the idle daemon waits in epoll (syscall {nr}) with \
                         timeout {timeout}, not -1: a periodic timer on the data path"
                    );
                }
                if !seen.iter().any(|(n, _)| *n == name) {
                    seen.push((name, timeout));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    ensure!(
        names.contains(&"switchyard-data") && names.contains(&"switchyard"),
        "expected the runtime thread and the data plane thread in epoll_wait, saw {names:?}"
    );
    // The vhost-user device's worker (vhost-user-backend's name).
    ensure!(
        names.contains(&"vring_worker"),
        "expected the vhost-user port's worker in epoll_wait, saw {names:?}"
    );
    let _ = guest.kill();
    sw.assert_running()?;
    Ok(())
}
