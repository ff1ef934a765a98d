//! Bounded listeners: a flood of idle connections to the metrics endpoint
//! and the control socket, more than the daemon may hold descriptors,
//! leaves a scrape and `switchyard ctl ports` answering within a second,
//! new guests attaching and frames flowing.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use switchyard_tests::ops::{ctl_ports, free_port, http_get, require_program};
use switchyard_tests::process::{Proc, Stdin};
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::util::run;
use switchyard_tests::{preflight, unique_name, Netns, SwitchCmd, TempDir};

/// Connections of each kind, together well over the daemon's limit.
const FLOOD: usize = 12_000;
/// The daemon's descriptor limit, soft and hard.
const DAEMON_NOFILE: u64 = 4096;
/// The head of a request that never ends.
const PARTIAL_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: switchyard\r\nUser-Agent: slow";

/// A connection to the unix socket `path` that never waits: the listen
/// backlog being full (EAGAIN) is retried for at most `patience`.
fn unix_connect(path: &Path, patience: Duration) -> Result<OwnedFd> {
    let addr = UnixAddr::new(path)?;
    let deadline = Instant::now() + patience;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => return Ok(fd),
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => bail!("connect to {}: {e}", path.display()),
        }
    }
}

/// One idle metrics connection; every other one sends half a request head.
fn tcp_idle(addr: SocketAddr, partial: bool) -> Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    if partial {
        // The daemon may have closed it already to make room: no matter.
        let _ = s.write_all(PARTIAL_HEAD);
    }
    Ok(s)
}

/// Keeps `FLOOD` idle connections made by `open` and, until `stop`,
/// replaces the oldest by a new one about a thousand times a second, so
/// the flood goes on while the checks run. Returns how many it replaced.
fn hold<C>(
    open: impl Fn(usize) -> Result<C>,
    ready: impl FnOnce(),
    stop: &AtomicBool,
) -> Result<usize> {
    let mut held = std::collections::VecDeque::with_capacity(FLOOD);
    for i in 0..FLOOD {
        held.push_back(open(i)?);
    }
    ready();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        held.pop_front();
        held.push_back(open(FLOOD + n)?);
        n += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(n)
}

/// Where the helper process finds the metrics endpoint.
const HOLDER_ENV: &str = "SWITCHYARD_TEST_FLOOD_METRICS";

/// The helper process that holds the metrics flood (one process may not
/// hold both floods: its descriptor limit is 20,000 here and not to be
/// raised without CAP_SYS_RESOURCE): the test below re-run inside the
/// switch's namespace with [`HOLDER_ENV`] set. Prints `opened` once its
/// connections are open, and stops when its stdin closes.
fn metrics_flood_holder(addr: &str) -> Result<()> {
    let addr: SocketAddr = addr.parse()?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        done.store(true, Ordering::Relaxed);
    });
    let ready = || {
        println!("opened {FLOOD}");
        let _ = std::io::stdout().flush();
    };
    let n = hold(|i| tcp_idle(addr, i % 2 == 0), ready, &stop)?;
    println!("replaced {n}");
    Ok(())
}

fn elapsed_ms(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

/// 12,000 idle TCP connections to the metrics endpoint (half with a
/// partial request head) and 12,000 to the control socket, against a
/// daemon limited to 4,096 descriptors (soft and hard, set after start so
/// the daemon's own raise cannot lift it), and still opening new ones
/// while the checks run: a scrape and `ctl ports` each answer within 1 s,
/// two new vde_plug guests attach and ping each other, and the daemon's
/// counters show the idle connections it closed to make room.
#[test]
fn flood_of_idle_connections_leaves_the_switch_serving() -> Result<()> {
    if let Ok(addr) = std::env::var(HOLDER_ENV) {
        return metrics_flood_holder(&addr);
    }
    preflight()?;
    let prlimit = require_program("prlimit", "util-linux")?;
    let tmp = TempDir::new("limits")?;
    let (ns_sw, ns_a, ns_b) = (Netns::new()?, Netns::new()?, Netns::new()?);
    let dir = tmp.join("vde");
    let ctl = tmp.join("control.sock");
    let port = free_port(&ns_sw)?;
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .arg("--control")
        .arg(&ctl)
        .arg("--metrics")
        .arg(metrics.to_string())
        .start(Some(&ns_sw))?;
    let pid = sw.proc.pid().to_string();
    let nofile = format!("--nofile={DAEMON_NOFILE}:{DAEMON_NOFILE}");
    run(std::process::Command::new(&prlimit).args(["--pid", &pid, &nofile]))?;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-file limit in /proc/PID/limits")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        fields.get(3) == Some(&"4096") && fields.get(4) == Some(&"4096"),
        "the daemon's limit did not hold: {line}"
    );

    // The metrics flood from a helper process in the switch's namespace,
    // the control flood from this one.
    let started = Instant::now();
    let mut cmd = ns_sw.command(std::env::current_exe()?);
    cmd.args([
        "flood_of_idle_connections_leaves_the_switch_serving",
        "--exact",
        "--nocapture",
    ])
    .env(HOLDER_ENV, metrics.to_string());
    let mut holder = Proc::spawn("metrics flood holder", cmd, Stdin::Pipe)?;
    let stop = AtomicBool::new(false);
    let checked = std::thread::scope(|s| -> Result<()> {
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let control = s.spawn(|| {
            let open = |_| unix_connect(&ctl, Duration::from_secs(5));
            hold(
                open,
                move || {
                    let _ = opened_tx.send(());
                },
                &stop,
            )
        });
        let result = (|| -> Result<()> {
            holder.wait_for_output(&format!("opened {FLOOD}"), Duration::from_secs(120))?;
            opened_rx
                .recv_timeout(Duration::from_secs(120))
                .context("the control flood did not open")?;
            eprintln!(
                "{FLOOD} + {FLOOD} idle connections opened in {} ms",
                elapsed_ms(started)
            );
            check_while_flooded(&ns_sw, metrics, &ctl, (&ns_a, &ns_b), &dir)
        })();
        stop.store(true, Ordering::Relaxed);
        holder.close_stdin();
        let churned = match control.join() {
            Ok(r) => r?,
            Err(p) => std::panic::resume_unwind(p),
        };
        eprintln!("{churned} more control connections opened during the checks");
        result
    });
    checked?;
    holder.wait_for_output("replaced", Duration::from_secs(10))?;
    eprintln!("metrics flood holder: {}", holder.stdout().trim());

    // The daemon says what it shed, and is within its bounds.
    let text = ns_sw.run(|| http_get(metrics, "/metrics"))??.body;
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    for listener in ["metrics", "control"] {
        let evicted = value(&format!(
            "switchyard_listener_shed_total{{listener=\"{listener}\",reason=\"evicted\"}}"
        ));
        ensure!(
            evicted >= (FLOOD - 64) as f64,
            "{listener}: only {evicted} idle connections shed of {FLOOD}:\n{text}"
        );
        let live = value(&format!(
            "switchyard_listener_connections{{listener=\"{listener}\"}}"
        ));
        ensure!(
            (0.0..=64.0).contains(&live),
            "{listener}: {live} connections"
        );
    }
    sw.assert_running()?;
    Ok(())
}

/// The checks, while another thread keeps opening idle connections.
fn check_while_flooded(
    ns_sw: &Netns,
    metrics: SocketAddr,
    ctl: &Path,
    (ns_a, ns_b): (&Netns, &Netns),
    dir: &Path,
) -> Result<()> {
    for round in 0..3 {
        let t = Instant::now();
        let scrape = ns_sw.run(|| http_get(metrics, "/metrics"))??;
        let ms = elapsed_ms(t);
        ensure!(
            scrape.status == 200 && scrape.body.contains("switchyard_build_info"),
            "scrape {round}: HTTP {} {}",
            scrape.status,
            scrape.body
        );
        ensure!(ms < 1000, "scrape {round} took {ms} ms under the flood");
        let t = Instant::now();
        ctl_ports(ctl).with_context(|| format!("ctl ports, round {round}"))?;
        let ms = elapsed_ms(t);
        ensure!(ms < 1000, "ctl ports {round} took {ms} ms under the flood");
        eprintln!("round {round}: scrape and ctl ports answered");
    }
    let (tap_a, tap_b) = (unique_name("lma"), unique_name("lmb"));
    let _a = vde_plug_tap(ns_a, dir, &tap_a, "192.0.2.1/24")?;
    let _b = vde_plug_tap(ns_b, dir, &tap_b, "192.0.2.2/24")?;
    ns_a.ping_eventually("192.0.2.2", 10)?;
    ns_b.ping("192.0.2.1", 3)?;
    let t = Instant::now();
    let ports = ctl_ports(ctl)?;
    ensure!(
        ports.len() >= 2 && elapsed_ms(t) < 1000,
        "ctl ports after the guests attached: {ports:?} in {} ms",
        elapsed_ms(t)
    );
    Ok(())
}
