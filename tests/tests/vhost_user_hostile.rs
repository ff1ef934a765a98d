//! An untrusted guest on a vhost-user port: `sy-vhost-frontend` (a test
//! frontend on rust-vmm's `vhost` crate) attacks the port with bad
//! descriptors, bad indexes, a changed memory table and broken messages
//! while two `vde_plug` namespaces ping each other through the same
//! switch; and 100 frontends killed mid-traffic leave the daemon no
//! descriptor or mapping.

use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use switchyard_tests::process::{Proc, Stdin};
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::transports::{drops, wait_attached, wait_detached, Ctl};
use switchyard_tests::{preflight, unique_name, Netns, SwitchCmd, TempDir};

const FRONTEND: &str = env!("CARGO_BIN_EXE_sy-vhost-frontend");

/// Pings between the namespaces during the attacks: 35 s, longer than
/// the attacks take.
const PINGS: &str = "700";

/// What an attack must leave behind besides a running switch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// The port counts `bad_descriptor` while the attacker is connected.
    Counted,
    /// Nothing to count: the connection ends, or the attack is refused
    /// before it reaches the rings.
    Survives,
    /// The switch hangs up on the frontend at once (long before its hold
    /// ends), saying why in its log.
    HungUp(&'static str),
}

/// Every attack of `sy-vhost-frontend`, and what it must cost the port.
const ATTACKS: &[(&str, Expect)] = &[
    ("outside", Expect::Counted),
    ("loop", Expect::Counted),
    ("long", Expect::Counted),
    ("huge-len", Expect::Counted),
    ("tx-writable", Expect::Counted),
    ("rx-readonly", Expect::Counted),
    ("rx-outside", Expect::Counted),
    ("remap", Expect::Counted),
    ("avail-jump", Expect::Counted),
    ("loop-short", Expect::Counted),
    // Refused: the relay seals the memfd against shrinking.
    ("shrink", Expect::Survives),
    // A file that cannot be sealed, cut short under the switch's mapping:
    // the SIGBUS guard keeps the daemon alive and the port hangs up.
    (
        "shrink-unsealed",
        Expect::HungUp("the frontend cut its memory file short"),
    ),
    ("disconnect", Expect::Survives),
];

/// `sy-vhost-frontend SOCK MODE ARGS…` as a process.
fn frontend(label: &str, sock: &Path, mode: &str, args: &[&str]) -> Result<Proc> {
    let mut cmd = Command::new(FRONTEND);
    cmd.arg(sock).arg(mode).args(args);
    Proc::spawn(label, cmd, Stdin::Null)
}

/// `bad_descriptor` drops of port `name` (0 while it is not attached).
fn bad_descriptors(ctl: &Ctl, name: &str) -> u64 {
    ctl.port(name)
        .map(|p| drops(&p, "bad_descriptor"))
        .unwrap_or(0)
}

/// A `key=N` field of the frontend's report.
fn field(out: &str, key: &str) -> Option<u64> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// "N packets transmitted, M received" of a ping summary.
fn ping_counts(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().ok());
    Some((nums.next()??, nums.next()??))
}

/// Every attack, one after another, on port `h`, while two namespaces ping
/// each other over the switch's VDE directory and a well-behaved frontend
/// on port `f` floods counted broadcasts (so the attacked port's RX queue
/// is used too). The switch stays up, the pings lose nothing, each attack
/// is counted as `bad_descriptor` on the attacked port, and afterwards a
/// well-behaved frontend on the same socket passes frames both ways.
#[test]
fn a_hostile_frontend_costs_only_its_own_port() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("vuh")?;
    let (ns_sw, ns_a, ns_b) = (Netns::new()?, Netns::new()?, Netns::new()?);
    let dir = tmp.join("sw");
    let (h, f) = (tmp.join("h.sock"), tmp.join("f.sock"));
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .args(ctl.args())
        .arg("--port")
        .arg(format!("vhost-user,name=h,path={}", h.display()))
        .arg("--port")
        .arg(format!("vhost-user,name=f,path={}", f.display()))
        .start(Some(&ns_sw))?;
    let (tap_a, tap_b) = (unique_name("vha"), unique_name("vhb"));
    let _plug_a = vde_plug_tap(&ns_a, &dir, &tap_a, "198.51.100.1/24")?;
    let _plug_b = vde_plug_tap(&ns_b, &dir, &tap_b, "198.51.100.2/24")?;
    ns_a.ping_eventually("198.51.100.2", 10)?;

    let mut feeder = frontend(
        "feeder",
        &f,
        "good",
        &[
            "--frames",
            "1000000",
            "--interval-us",
            "60000",
            "--mac",
            "02:00:00:00:77:0f",
        ],
    )?;
    wait_attached(&mut sw, "f", 1)?;
    let mut ping = Proc::spawn(
        "ping",
        {
            let mut c = ns_a.command("ping");
            c.args([
                "-n",
                "-q",
                "-c",
                PINGS,
                "-i",
                "0.05",
                "-W",
                "2",
                "198.51.100.2",
            ]);
            c
        },
        Stdin::Null,
    )?;

    let mut missed = Vec::new();
    for (round, &(mode, expect)) in ATTACKS.iter().enumerate() {
        // The frontend stays connected for 4 s after its attack: the count
        // is read before it goes (a detached port reads 0), however slowly
        // a loaded machine runs the handshake and the attack.
        let (attack, extra): (&str, &[&str]) = match mode {
            "shrink-unsealed" => ("shrink", &["--no-seal"]),
            m => (m, &[]),
        };
        let args: Vec<&str> = ["--hold-ms", "4000"].iter().chain(extra).copied().collect();
        let mut p = frontend(mode, &h, attack, &args)?;
        wait_attached(&mut sw, "h", round + 1)?;
        if let Expect::HungUp(why) = expect {
            let attached = Instant::now();
            wait_detached(&mut sw, "h", round + 1)?;
            ensure!(
                attached.elapsed() < Duration::from_secs(3),
                "the switch did not hang up on the {mode} frontend"
            );
            ensure!(
                sw.proc.output().contains(why),
                "no {why:?} in the switch's log"
            );
            sw.assert_running()
                .with_context(|| format!("after the {mode:?} attack; frontend: {}", p.output()))?;
            p.wait_exit(Duration::from_secs(15))?;
            continue;
        }
        if expect == Expect::Counted {
            let start = Instant::now();
            while bad_descriptors(&ctl, "h") == 0 && start.elapsed() < Duration::from_secs(4) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if bad_descriptors(&ctl, "h") == 0 {
                missed.push(mode);
            }
        }
        let st = p.wait_exit(Duration::from_secs(15))?;
        wait_detached(&mut sw, "h", round + 1)?;
        sw.assert_running()
            .with_context(|| format!("after the {mode:?} attack; frontend: {}", p.output()))?;
        ensure!(st.success(), "the {mode} frontend failed: {}", p.output());
    }

    // The same socket serves a well-behaved guest: all it sent went out,
    // and the feeder's broadcasts reached it.
    let mut good = frontend(
        "good",
        &h,
        "good",
        &[
            "--frames",
            "500",
            "--linger-ms",
            "1500",
            "--mac",
            "02:00:00:00:77:0a",
        ],
    )?;
    good.wait_exit(Duration::from_secs(30))?;
    let out = good.stdout();
    ensure!(
        field(&out, "sent") == Some(500) && field(&out, "tx_done") == Some(500),
        "the good frontend after the attacks: {out}"
    );
    ensure!(
        field(&out, "received").unwrap_or(0) > 0,
        "the good frontend received nothing: {out}"
    );

    ping.wait_exit(Duration::from_secs(60))?;
    let (sent, got) = ping_counts(&ping.stdout())
        .with_context(|| format!("no ping summary: {}", ping.output()))?;
    ensure!(
        sent.to_string() == PINGS && got == sent,
        "the pings lost frames: {}",
        ping.stdout()
    );
    let _ = feeder.kill();
    sw.assert_running()?;
    ensure!(
        missed.is_empty(),
        "attacks not counted as bad_descriptor on the attacked port: {missed:?}"
    );
    Ok(())
}

/// Open descriptors of `pid`.
fn fd_count(pid: i32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .context("/proc/PID/fd")?
        .count())
}

/// Mappings of guest memory in `pid` (the frontends' memfds).
fn guest_maps(pid: i32) -> Result<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).context("/proc/PID/maps")?;
    Ok(maps.lines().filter(|l| l.contains("memfd:")).count())
}

/// 100 times: a frontend connects, traffic flows both ways, and it is
/// killed (SIGKILL) mid-traffic. Once the last one is gone the daemon has
/// as many open descriptors and guest-memory mappings as before the
/// first.
#[test]
fn a_hundred_killed_frontends_leave_no_descriptor_or_mapping() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("vuk")?;
    let ns = Netns::new()?;
    let (h, f) = (tmp.join("h.sock"), tmp.join("f.sock"));
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = SwitchCmd::native()?
        .unix(&tmp.join("uml.ctl"))
        .args(ctl.args())
        .arg("--port")
        .arg(format!("vhost-user,name=h,path={}", h.display()))
        .arg("--port")
        .arg(format!("vhost-user,name=f,path={}", f.display()))
        .start(Some(&ns))?;
    let pid = sw.proc.pid().as_raw();
    let mut feeder = frontend(
        "feeder",
        &f,
        "good",
        &[
            "--frames",
            "100000000",
            "--interval-us",
            "5000",
            "--mac",
            "02:00:00:00:77:0f",
        ],
    )?;
    wait_attached(&mut sw, "f", 1)?;

    // One full cycle first: thread pools and lazily made things exist
    // before the baseline is taken.
    let mut warm = frontend(
        "warm",
        &h,
        "good",
        &["--frames", "50", "--linger-ms", "200"],
    )?;
    warm.wait_exit(Duration::from_secs(20))?;
    wait_detached(&mut sw, "h", 1)?;
    std::thread::sleep(Duration::from_millis(300));
    let base = (fd_count(pid)?, guest_maps(pid)?);

    const CYCLES: usize = 100;
    for n in 1..=CYCLES {
        let mut p = frontend(
            "killed",
            &h,
            "good",
            &["--frames", "100000000", "--interval-us", "1000"],
        )?;
        wait_attached(&mut sw, "h", n + 1)?;
        let start = Instant::now();
        // Mid-traffic: the guest has sent and been sent frames.
        while start.elapsed() < Duration::from_secs(5) {
            let p = ctl.port("h")?;
            let (rx, tx) = (
                switchyard_tests::transports::counter(&p, "rx_frames"),
                switchyard_tests::transports::counter(&p, "tx_frames"),
            );
            if rx > 0 && tx > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        p.kill()?;
        wait_detached(&mut sw, "h", n + 1)?;
    }
    sw.assert_running()?;

    let mut now = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        now = (fd_count(pid)?, guest_maps(pid)?);
        if now == base {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = feeder.kill();
    ensure!(
        now == base,
        "after {CYCLES} killed frontends the daemon has (descriptors, guest mappings) {now:?}; \
         before the first {base:?}"
    );
    Ok(())
}
