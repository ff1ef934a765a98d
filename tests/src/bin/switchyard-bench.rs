//! switchyard-bench: a load generator that speaks the uml_switch / VDE
//! control protocol itself and measures switchyard, uml_switch and
//! vde_switch with the same client, in the same run, inside a private
//! network namespace. It reports numbers; it never asserts.
//!
//! Run it through `tests/bench/run.sh`, or directly as root:
//! `target/release/switchyard-bench [--duration 3] [--only NAME,...]`.

#[path = "bench/mod.rs"]
mod bench;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use bench::json::Json;
use bench::macnat;
use bench::measure::{self, Config, Measurement};
use bench::qemu;
use bench::report::{self, Outcome, Results};
use bench::sys;
use bench::tcp;
use bench::uml;
use bench::world::{self, Netns, SwitchKind, SwitchProc, TempDir};

const USAGE: &str = "\
usage: switchyard-bench [options]

Measures switchyard, uml_switch and vde_switch with one client inside a
private network namespace (needs root). Prints a markdown table on stdout,
progress on stderr, and writes a JSON record.

options:
  --switchyard PATH   switchyard binary (default: next to this binary, then
                      <workspace>/target/release/switchyard; skipped with a
                      warning when the default is missing)
  --switchyard-arg A  extra argument for switchyard (repeatable)
  --duration SECS     measurement window per throughput run (default 3)
  --warmup SECS       warm-up before each window (default 0.5)
  --reps N            repetitions per measurement; the median is reported
                      (default 5: on two shared vCPUs a single 64-byte run
                      moves by +-20 % with where the scheduler puts the
                      threads, and a median of 3 still moved by +-10 %)
  --pings N           ping-pong round trips per latency run (default 20000)
  --latency-reps N    repetitions of latency and latency_busy_poll (default 3 x
                      --reps: each takes ~1.5 s, and which vCPUs the scheduler
                      puts the threads on moves a run's p50 by +-30 %)
  --batch N           frames per sendmmsg call (default 32)
  --iperf-time SECS   iperf3 -t of the TCP runs, iperf3_tap and uml_tcp (default 5)
  --iperf-reps N      repetitions of iperf3_tap (default 3, at most --reps;
                      each is a 5 s TCP run, and one run's rate moves by
                      +-25 % from run to run)
  --uml-reps N        repetitions of uml_tcp and uml_virtio_tcp (default 2,
                      at most --reps; each
                      boots two UML guests, ~7.5 s per switch)
  --only NAMES        comma-separated switches (switchyard, uml_switch,
                      vde_switch) and/or measurements; repeatable:
                        unicast_64     64 B A->B, sendmmsg/recvmmsg batches
                        unicast_1514   the same with 1514 B frames
                        broadcast_3    64 B broadcast from A to B, C and D
                        latency        64 B ping-pong A<->B
                        latency_busy_poll
                                       the same, switchyard only, started
                                       with --busy-poll 20us (uml_switch and
                                       vde_switch show their latency values)
                        pairs_64       64 B A->B and C->D at once, 2 sending threads
                        sendto_64      64 B A->B, unconnected sockets, one
                                       sendto()/recvfrom() per frame (as UML)
                        cpu_100k_1514  switch CPU with 1514 B paced at 100 kframes/s
                        iperf3_tap     TCP between taps in two namespaces, via
                                       the switch's own taps (needs iperf3)
                        uml_tcp        TCP (iperf3) between two User-mode Linux
                                       guests on the daemon transport (needs
                                       user-mode-linux and iperf3)
                        uml_virtio_tcp switchyard only: the same two guests on
                                       virtio_uml, one vhost-user port each
                                       (compared with uml_tcp in a table
                                       of its own)
                        qemu_vhost_user
                                       switchyard only: TCP (iperf3, 1 and 4
                                       streams, both directions) between two
                                       QEMU guests (TCG, 1 vCPU, 256 MB) on
                                       vhost-user ports (needs
                                       qemu-system-x86, linux-image-amd64,
                                       busybox-static and iperf3)
                        qemu_vde       the same on -netdev vde (switchyard's
                                       --vde directory, vde_switch's -s)
                        qemu_bridge    the same on two taps of a Linux bridge
                                       (no switch; runs in switchyard's
                                       column); the qemu_* rows share a table
                        fdb_64k        64 B A->B after 65,536 source MACs
                                       (switchyard without a per-port limit)
                        mac_flood      64 B A->B alone, while C sends 20 k
                                       frames/s from one MAC, then from
                                       100,000 chosen source MACs; is
                                       bystander D's address still learned?
                        macnat_pcap    switchyard only: a pcap port on a veth
                                       pair with MAC-NAT off vs on, 64 B
                                       IPv4/UDP guest->LAN and LAN->guest
                                       (needs nft, from nftables)
  --qemu-reps N       repetitions of the qemu_* rows (default 1, at most
                      --reps; each boots two TCG guests per transport and runs
                      iperf3 four times: both directions, 1 and 4 streams)
  --json PATH         JSON output (default target/bench/results.json)
  --netns NAME        name of the namespace to create (default swbench-<pid>)
  --logs DIR          keep each switch's stdout/stderr in DIR
  -h, --help          this text
";

struct Args {
    switchyard: Option<PathBuf>,
    switchyard_args: Vec<String>,
    duration: f64,
    warmup: f64,
    reps: usize,
    pings: usize,
    batch: usize,
    iperf_time: f64,
    iperf_reps: usize,
    uml_reps: usize,
    qemu_reps: usize,
    latency_reps: usize,
    switches: Vec<SwitchKind>,
    measurements: Vec<Measurement>,
    json: PathBuf,
    netns: String,
    logs: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Args>> {
    let mut a = Args {
        switchyard: None,
        switchyard_args: Vec::new(),
        duration: 3.0,
        warmup: 0.5,
        reps: 5,
        pings: 20_000,
        batch: 32,
        iperf_time: 5.0,
        iperf_reps: 3,
        uml_reps: 2,
        qemu_reps: 1,
        latency_reps: 0,
        switches: Vec::new(),
        measurements: Vec::new(),
        json: PathBuf::from("target/bench/results.json"),
        netns: format!("swbench-{}", std::process::id()),
        logs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            print!("{USAGE}");
            return Ok(None);
        }
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .with_context(|| format!("{flag} needs a value (see --help)")),
            }
        };
        let secs = |v: String| -> Result<f64> {
            let x: f64 = v
                .parse()
                .with_context(|| format!("{flag}: bad number {v:?}"))?;
            if !(x.is_finite() && x > 0.0 && x < 3600.0) {
                bail!("{flag}: {x} is out of range");
            }
            Ok(x)
        };
        let count = |v: String| -> Result<usize> {
            let n: usize = v
                .parse()
                .with_context(|| format!("{flag}: bad count {v:?}"))?;
            if n == 0 {
                bail!("{flag} must be at least 1");
            }
            Ok(n)
        };
        match flag.as_str() {
            "--switchyard" => a.switchyard = Some(PathBuf::from(value()?)),
            "--switchyard-arg" => a.switchyard_args.push(value()?),
            "--duration" => a.duration = secs(value()?)?,
            "--warmup" => a.warmup = secs(value()?)?,
            "--reps" => a.reps = count(value()?)?,
            "--pings" => a.pings = count(value()?)?,
            "--batch" => a.batch = count(value()?)?.min(1024),
            "--iperf-time" => a.iperf_time = secs(value()?)?,
            "--iperf-reps" => a.iperf_reps = count(value()?)?,
            "--uml-reps" => a.uml_reps = count(value()?)?,
            "--qemu-reps" => a.qemu_reps = count(value()?)?,
            "--latency-reps" => a.latency_reps = count(value()?)?,
            "--json" => a.json = PathBuf::from(value()?),
            "--netns" => a.netns = value()?,
            "--logs" => a.logs = Some(PathBuf::from(value()?)),
            "--only" => {
                for name in value()?.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if let Some(k) = SwitchKind::parse(name) {
                        a.switches.push(k);
                    } else if let Some(m) = Measurement::parse(name) {
                        a.measurements.push(m);
                    } else {
                        let all: Vec<&str> = Measurement::ALL.iter().map(|m| m.name()).collect();
                        bail!(
                            "--only: unknown name {name:?}; use switchyard, uml_switch, vde_switch \
                             or a measurement: {}",
                            all.join(", ")
                        );
                    }
                }
            }
            _ => bail!("unknown argument {arg:?} (see --help)"),
        }
    }
    if a.switches.is_empty() {
        a.switches = SwitchKind::ALL.to_vec();
    }
    if a.measurements.is_empty() {
        a.measurements = Measurement::ALL.to_vec();
    }
    a.switches.sort();
    a.switches.dedup();
    a.iperf_reps = a.iperf_reps.min(a.reps);
    a.uml_reps = a.uml_reps.min(a.reps);
    a.qemu_reps = a.qemu_reps.min(a.reps);
    if a.latency_reps == 0 {
        a.latency_reps = 3 * a.reps;
    }
    a.measurements.sort();
    a.measurements.dedup();
    Ok(Some(a))
}

/// The default switchyard binary: beside this one (both live in
/// target/release), else the workspace's target/release.
fn default_switchyard() -> PathBuf {
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("switchyard")))
        .filter(|p| p.is_file())
    {
        return p;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join("target/release/switchyard")
}

/// Resolve the executable of every selected switch. A missing uml_switch
/// or vde_switch is an error; a missing default switchyard is skipped.
fn resolve_switches(args: &Args, notes: &mut Vec<String>) -> Result<Vec<(SwitchKind, PathBuf)>> {
    let mut out = Vec::new();
    for &k in &args.switches {
        match k {
            SwitchKind::Switchyard => match &args.switchyard {
                Some(p) if p.is_file() => out.push((k, p.clone())),
                Some(p) => bail!("--switchyard {}: no such file", p.display()),
                None => {
                    let p = default_switchyard();
                    if p.is_file() {
                        out.push((k, p));
                    } else {
                        let msg = format!(
                            "switchyard skipped: {} does not exist (build it with \
                             `cargo build --release -p switchyard-cli` or pass --switchyard PATH)",
                            p.display()
                        );
                        eprintln!("warning: {msg}");
                        notes.push(msg);
                    }
                }
            },
            SwitchKind::UmlSwitch => {
                let p = world::find_in_path("uml_switch").context(
                    "uml_switch is not installed (Debian package uml-utilities: \
                     `apt-get install uml-utilities`), or use --only to leave it out",
                )?;
                out.push((k, p));
            }
            SwitchKind::VdeSwitch => {
                let p = world::find_in_path("vde_switch").context(
                    "vde_switch is not installed (Debian package vde-switch, from vde2: \
                     `apt-get install vde2`), or use --only to leave it out",
                )?;
                out.push((k, p));
            }
        }
    }
    if out.is_empty() {
        bail!("no switch left to measure");
    }
    Ok(out)
}

fn versions_json(exes: &[(SwitchKind, PathBuf)]) -> Json {
    let mut v = Json::obj();
    for (k, exe) in exes {
        let info = match k {
            SwitchKind::Switchyard => {
                let git = world::probe_output(
                    Path::new("git"),
                    &[
                        "-C",
                        env!("CARGO_MANIFEST_DIR"),
                        "describe",
                        "--always",
                        "--dirty",
                    ],
                );
                Json::obj()
                    .with("binary", exe.display().to_string())
                    .with("version", world::probe_output(exe, &["--version"]))
                    .with("git", git)
            }
            SwitchKind::UmlSwitch => Json::obj()
                .with("binary", exe.display().to_string())
                .with("debian_package", "uml-utilities")
                .with("version", world::dpkg_version("uml-utilities")),
            SwitchKind::VdeSwitch => Json::obj()
                .with("binary", exe.display().to_string())
                .with("debian_package", "vde-switch")
                .with("version", world::dpkg_version("vde-switch"))
                .with(
                    "reports",
                    world::probe_output(exe, &["-v"])
                        .and_then(|s| s.lines().next().map(str::to_owned)),
                ),
        };
        v.set(k.name(), info);
    }
    v.set(
        "generator",
        format!("switchyard-bench {}", env!("CARGO_PKG_VERSION")),
    );
    v
}

/// One fresh switch, one measurement, one sample.
#[allow(clippy::too_many_arguments)]
fn run_one(
    kind: SwitchKind,
    exe: &Path,
    args: &Args,
    m: Measurement,
    rep: usize,
    cfg: &Config,
    tmp: &Path,
    netns: &str,
    macnat_tools: Option<&macnat::Tools>,
) -> Result<measure::Sample> {
    let tag = format!("{}-{}-r{rep}", kind.name(), m.name());
    let log = args.logs.as_ref().map(|d| d.join(format!("{tag}.log")));
    let with_own: Vec<String>;
    let extra: &[String] = if kind == SwitchKind::Switchyard {
        if m.switchyard_args().is_empty() {
            &args.switchyard_args
        } else {
            check_switchyard_knows(exe, m)?;
            with_own = args
                .switchyard_args
                .iter()
                .cloned()
                .chain(m.switchyard_args().iter().map(|a| (*a).to_owned()))
                .collect();
            &with_own
        }
    } else {
        &[]
    };
    if m == Measurement::QemuBridge {
        // The kernel's bridge: no switch to start.
        let target = measure::Target {
            ctl: tmp,
            pid: 0,
            workdir: tmp,
            tag: &tag,
            netns,
        };
        return measure::run(m, &target, cfg);
    }
    if m == Measurement::MacNatPcap {
        let tools =
            macnat_tools.context("macnat_pcap: its tools were not checked at start-up (a bug)")?;
        let setup = macnat::Setup {
            exe,
            extra,
            workdir: tmp,
            tag: &tag,
            logs: args.logs.as_deref(),
            tools,
        };
        return Ok(measure::Sample::MacNat(macnat::run(&setup, rep, cfg)?));
    }
    let with_taps: Vec<String>;
    let qemu_setup = match m {
        Measurement::QemuVhostUser => Some(qemu::Setup::VhostUser),
        Measurement::QemuVde => Some(qemu::Setup::Vde),
        _ => None,
    };
    let extra = if let (Some(setup), SwitchKind::Switchyard) = (qemu_setup, kind) {
        if setup == qemu::Setup::VhostUser {
            check_switchyard_port(exe, m, "vhost-user")?;
        }
        with_taps = extra
            .iter()
            .cloned()
            .chain(qemu::switchyard_args(setup, tmp, &tag))
            .collect();
        &with_taps[..]
    } else if m == Measurement::UmlVirtioTcp {
        check_switchyard_port(exe, m, "vhost-user")?;
        with_taps = extra
            .iter()
            .cloned()
            .chain(uml::virtio_ports(tmp, &tag))
            .collect();
        &with_taps[..]
    } else if m == Measurement::Iperf {
        // Each switch opens the two taps itself (switchyard with its
        // offloads, vde_switch with its -t), and the run moves them into
        // the iperf3 namespaces.
        let mut v = extra.to_vec();
        for tap in tcp::TAPS {
            v.push(
                if kind == SwitchKind::Switchyard {
                    "--tap"
                } else {
                    "-t"
                }
                .into(),
            );
            v.push(tap.into());
        }
        with_taps = v;
        &with_taps[..]
    } else {
        extra
    };
    let mut sw = SwitchProc::start(kind, exe, extra, tmp, &tag, log)?;
    sw.wait_ready(Duration::from_secs(10))?;
    let target = measure::Target {
        ctl: sw.ctl(),
        pid: sw.pid(),
        workdir: tmp,
        tag: &tag,
        netns,
    };
    let sample = measure::run(m, &target, cfg);
    // A crash explains a failed measurement better than the client's error.
    sw.check_alive()?;
    sample
}

/// Fail with a clear message when this switchyard binary predates the
/// option that measurement `m` starts it with (instead of a bare "exited
/// early" from the switch rejecting its arguments).
fn check_switchyard_knows(exe: &Path, m: Measurement) -> Result<()> {
    match m.switchyard_args().first() {
        Some(flag) => check_switchyard_help(exe, m, &format!("{flag} option"), flag),
        None => Ok(()),
    }
}

/// Fail with a clear message when this switchyard binary has no port of
/// type `port`, which measurement `m` needs.
fn check_switchyard_port(exe: &Path, m: Measurement, port: &str) -> Result<()> {
    check_switchyard_help(exe, m, &format!("{port} port"), port)
}

/// Fail unless `exe --help` mentions `needle` (`what` names it for the
/// message), which measurement `m` needs.
fn check_switchyard_help(exe: &Path, m: Measurement, what: &str, needle: &str) -> Result<()> {
    let help = world::probe_output(exe, &["--help"]).unwrap_or_default();
    if !help.contains(needle) {
        bail!(
            "{} needs switchyard's {what}, which `{} --help` does not list: rebuild \
             switchyard (cargo build --release -p switchyard-cli) or leave {} out with --only",
            m.name(),
            exe.display(),
            m.name()
        );
    }
    Ok(())
}

fn summary(s: &measure::Sample) -> String {
    let cpu = |c: Option<f64>| c.map_or("?".into(), |c| format!("{c:.0}%"));
    match s {
        measure::Sample::MacNat(n) => {
            let one = |r: &macnat::PcapRun| {
                format!(
                    "out {:.1}k fps (CPU {}), in {:.1}k fps (CPU {})",
                    r.out.rx_fps(0) / 1000.0,
                    cpu(r.out.switch_cpu_pct()),
                    r.inbound.rx_fps(0) / 1000.0,
                    cpu(r.inbound.switch_cpu_pct())
                )
            };
            format!(
                "MAC-NAT off: {}; on: {}; on/off out {:.2}, in {:.2}",
                one(&n.off),
                one(&n.on),
                n.on.out.rx_fps(0) / n.off.out.rx_fps(0),
                n.on.inbound.rx_fps(0) / n.off.inbound.rx_fps(0),
            )
        }
        measure::Sample::Paced { flood: f, .. } => format!(
            "switch CPU {}, tx {:.1}k fps, rx {:.1}k fps, loss {:.1}%",
            cpu(f.switch_cpu_pct()),
            f.tx_fps() / 1000.0,
            f.rx_fps(0) / 1000.0,
            f.loss_pct()
        ),
        measure::Sample::Tcp(t) => format!(
            "{:.2} Gbit/s, {} retransmits, switch CPU {}",
            t.bits_per_s / 1e9,
            t.retransmits,
            cpu(t.switch_cpu_pct)
        ),
        measure::Sample::UmlTcp(t) => format!(
            "{:.0} Mbit/s, {} retransmits, sending guest's tx_dropped {}, switch CPU {}",
            t.bits_per_s / 1e6,
            t.retransmits,
            t.tx_dropped,
            cpu(t.switch_cpu_pct)
        ),
        measure::Sample::QemuTcp(q) => {
            let runs: Vec<String> = q
                .runs
                .iter()
                .map(|r| {
                    format!(
                        "{}x{} from .{}: {:.2} Gbit/s (CPU {})",
                        r.streams,
                        if r.streams == 1 { "stream" } else { "streams" },
                        r.sender + 1,
                        r.bits_per_s / 1e9,
                        cpu(r.switch_cpu_pct)
                    )
                })
                .collect();
            format!("{}; offloads: {}", runs.join("; "), q.offloads.join(" "))
        }
        measure::Sample::MacFlood(m) => format!(
            "A->B {:.1}, {:.1} with one-MAC C, {:.1} kframes/s under attack ({:.1}% lost, \
             {:.1}% against one-MAC C), attacker {:.1} kframes/s, bystander kept: {}",
            m.base.rx_fps(0) / 1e3,
            m.control.rx_fps(0) / 1e3,
            m.attacked.rx_fps(0) / 1e3,
            m.slowdown_pct(),
            m.fdb_slowdown_pct(),
            m.attack_fps / 1e3,
            m.bystander_kept
        ),
        measure::Sample::Fdb(d) => format!(
            "{} MACs in {:.2} s, {:.0}% of {} probes learned, RSS {:.1} -> {:.1} MiB; \
             {}",
            d.macs,
            d.fill_s,
            d.learned_pct(),
            d.probes,
            d.rss_before_kib.unwrap_or(f64::NAN) / 1024.0,
            d.rss_after_kib.unwrap_or(f64::NAN) / 1024.0,
            summary(&measure::Sample::Flood(d.flood.clone()))
        ),
        measure::Sample::Flood(f) => {
            let rx: Vec<String> = (0..f.rx_frames.len())
                .map(|i| format!("{:.1}k", f.rx_fps(i) / 1000.0))
                .collect();
            format!(
                "rx {} fps, tx {:.1}k fps, loss {:.1}%, switch CPU {}{}",
                rx.join("+"),
                f.tx_fps() / 1000.0,
                f.loss_pct(),
                f.switch_cpu_pct()
                    .map_or("?".into(), |c| format!("{c:.0}%")),
                if f.odd_frames > 0 {
                    format!(", {} odd frames", f.odd_frames)
                } else {
                    String::new()
                }
            )
        }
        measure::Sample::Latency(l) => format!(
            "p50 {:.1} µs, p99 {:.1} µs ({} round trips, {} lost), switch CPU {}",
            l.p50_us,
            l.p99_us,
            l.count,
            l.lost,
            l.switch_cpu_pct.map_or("?".into(), |c| format!("{c:.0}%"))
        ),
    }
}

/// Sending rate of cpu_100k_1514.
const PACED_FPS: f64 = 100_000.0;
/// Source MACs the switch sees in fdb_64k (its ports' included).
const FDB_MACS: usize = 65_536;

/// How the scenarios from the speed issue work, for the notes under the table.
fn scenario_notes(ms: &[Measurement], cfg: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    for m in ms {
        match m {
            Measurement::LatencyBusyPoll => notes.push(format!(
                "busy-poll: the same ping-pong as the latency rows, against switchyard started \
                 with `--busy-poll {bp}` (after any --switchyard-arg): once a port's queue runs \
                 empty, switchyard keeps polling for {bp} before it goes to sleep, so a frame \
                 that arrives soon after finds it awake instead of paying for a thread wake-up \
                 (tens of µs on a VM). The price is CPU: it keeps a core busy while frames \
                 flow (its switch CPU row). uml_switch and vde_switch have no such option: \
                 their columns in the busy-poll rows repeat their default `latency` medians \
                 from this run, so those ratios are switchyard with busy-poll ÷ the other \
                 switch as it is (— when latency did not run).",
                bp = measure::BUSY_POLL
            )),
            Measurement::Pairs64 => notes.push(
                "2 pairs: A→B and C→D blast at once from two threads (two more receive); \
                 loss is against the frames both senders got out."
                    .to_owned(),
            ),
            Measurement::Sendto64 => notes.push(
                "sendto: the client's data sockets stay unconnected, as UML's daemon transport \
                 leaves them; one sendto() per frame to the address in the switch's reply \
                 (blocking, so a full switch queue makes it wait rather than drop), one \
                 recvfrom() per frame on the receiving side."
                    .to_owned(),
            ),
            Measurement::Paced1514 => notes.push(format!(
                "Fixed rate: A sends batches of {} frames of 1514 B paced by a token bucket to \
                 {:.0} kframes/s; switch CPU is utime+stime from /proc/PID/stat over the \
                 window. Lower is better; compare the received rate too (a switch that drops \
                 frames has less to do).",
                cfg.batch,
                cfg.paced_fps / 1000.0
            )),
            Measurement::Iperf => notes.push(format!(
                "tap ↔ tap: the switch opens two taps itself (switchyard `--tap`, with its \
                 TSO/checksum offloads; vde_switch `-t`, one read/write per frame), each moved \
                 into an extra namespace; `iperf3 -c -t {} -J` in one, `iperf3 -s` in the \
                 other, {} run(s) per switch (--iperf-reps), MTU 1500.",
                cfg.iperf_time.as_secs_f64(),
                cfg.iperf_reps
            )),
            Measurement::UmlTcp => notes.push(format!(
                "UML guests (uml_tcp): two User-mode Linux guests boot the host's / over \
                 hostfs with `eth0=daemon,MAC,unix,CTL` on the switch (vde_switch: DIR/ctl of \
                 its `-s DIR`), 192.0.2.1/24 and 192.0.2.2/24, in the benchmark's namespace; \
                 `iperf3 -c -t {} -J` in one, `iperf3 -s` in the other, {} run(s) per switch \
                 (--uml-reps). The guests' send path is UML's driver: one frame per system \
                 call (sendto), no offloads, and a frame the switch's socket cannot take at \
                 once is dropped, counted as tx_dropped in the sending guest. switchyard's \
                 backpressure (on by default) holds unicast for a full guest instead of \
                 dropping it, so the receiving guest's 10-datagram socket queue \
                 (net.unix.max_dgram_qlen) does not tail-drop TCP segments; the loss that \
                 remains shows up as the sending guest's tx_dropped. Retransmissions above \
                 tx_dropped are frames lost further on (uml_switch and vde_switch drop a \
                 frame for a full guest) or spurious (timeouts on a busy machine). Switch \
                 CPU is counted from the client's start of iperf3 to its result (seen on its \
                 console), per Gbit/s: % of one core ÷ Gbit/s.",
                cfg.iperf_time.as_secs_f64(),
                cfg.uml_reps
            )),
            Measurement::UmlVirtioTcp => notes.push(format!(
                "UML guests on vhost-user (uml_virtio_tcp): the guests of uml_tcp, booted with \
                 `virtio_uml.device=SOCK:1` instead of `eth0=daemon`, on switchyard started \
                 with one `--port vhost-user,path=SOCK,mac=MAC` per guest; their init loads \
                 failover.ko, net_failover.ko and virtio_net.ko from /usr/lib/uml/modules. \
                 Same addresses, same `iperf3 -c -t {} -J` client → server, {} run(s) \
                 (--uml-reps), right after uml_tcp in each repetition; the guest table \
                 compares the two transports through switchyard.",
                cfg.iperf_time.as_secs_f64(),
                cfg.uml_reps
            )),
            Measurement::QemuVhostUser => notes.push(format!(
                "QEMU guests (qemu_vhost_user, qemu_vde, qemu_bridge): Debian's \
                 linux-image-amd64 kernel with a busybox initramfs (tests/src/qemu.rs), TCG, \
                 1 vCPU, 256 MB in a shared memfd, one virtio-net NIC (vectors=0), \
                 192.0.2.1/24 and 192.0.2.2/24 in the benchmark's namespace. Per run a server \
                 guest (`iperf3 -s`) boots on 192.0.2.2 and a client guest on .1 runs \
                 `iperf3 -c -t {} -P 1`, then `-P 4`, then both again with `-R` (the \
                 server sends); the table shows the mean of the two directions (JSON: each), {} run(s) (--qemu-reps). \
                 qemu_vhost_user: switchyard with one `--port vhost-user,path=SOCK,mac=MAC` \
                 per guest, QEMU `-chardev socket,reconnect=1` + `-netdev vhost-user`. \
                 Switch CPU: the switch process's CPU time from the client's SY_READY to its \
                 result, over iperf3's seconds.",
                cfg.iperf_time.as_secs(),
                cfg.qemu_reps
            )),
            Measurement::QemuVde => notes.push(
                "qemu_vde: QEMU `-netdev vde,sock=DIR` on switchyard's `--vde DIR` (a unix \
                 port per guest) or vde_switch's `-s DIR`."
                    .to_owned(),
            ),
            Measurement::QemuBridge => notes.push(format!(
                "qemu_bridge: two persistent taps on a Linux bridge in the benchmark's \
                 namespace, QEMU `-netdev tap,ifname=TAP` (vnet_hdr and the guest's \
                 offloads on), no switch process; the frames move through {}.",
                qemu::bridge_backend()
            )),
            Measurement::Fdb64k => notes.push(format!(
                "64 k MACs: after A, B and C attach, C sends one 64 B frame (to itself) from \
                 each of {} more source MACs, so the switch has seen {} in all; A then sends \
                 to {} of them one by one (learned = reached only C, not also B); then A→B \
                 as in the 64 B unicast row while C counts A→B frames flooded to it. RSS is \
                 VmRSS after the ports attached and after the run.",
                cfg.fdb_macs.saturating_sub(3),
                cfg.fdb_macs,
                256
            )),
            Measurement::MacNatPcap => notes.push(format!(
                "MAC-NAT (macnat_pcap): switchyard with `--port pcap,device=NIC[,mac_nat=on]` on \
                 one end of a veth pair and a guest on a unix port; each repetition starts two, \
                 MAC-NAT off and on, side by side (own veth pair and guest each), and alternates \
                 slices of about {} ms (after {} ms of warm-up each) between them, so that both \
                 share whatever else loads the machine; each setting gets {:.1} s per direction. guest → \
                 LAN: the guest sends batches of {} 64 B IPv4/UDP frames (203.0.113.10 → \
                 198.51.100.1) and the LAN end's rx_packets counts what switchyard injected; LAN \
                 → guest: an AF_PACKET socket on the LAN end sends batches of the reverse frames \
                 as fast as it can, to the NIC's MAC with MAC-NAT (mapped back to the guest by \
                 IP address) and to the guest's MAC without, and the guest counts them. Before \
                 measuring, the LAN must see the guest's frames from the NIC's MAC with MAC-NAT \
                 and from the guest's own without. Both veth ends drop every frame at the \
                 netfilter ingress hook, after capture, so the kernel does the same in both \
                 settings. The ratios in that table are MAC-NAT on ÷ off; the cost is 1 − that.",
                macnat::slicing(cfg).1.duration.as_millis(),
                macnat::slicing(cfg).1.warmup.as_millis(),
                cfg.duration.as_secs_f64(),
                cfg.batch
            )),
            _ => {}
        }
    }
    notes
}

fn real_main(args: Args) -> Result<bool> {
    let mut footer: Vec<String> = Vec::new();
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("switchyard-bench must run as root: it creates a network namespace (try tests/bench/run.sh)");
    }
    let exes = resolve_switches(&args, &mut footer)?;
    let iperf3 = if args.measurements.contains(&Measurement::Iperf) {
        let iperf3 = world::find_in_path("iperf3").context(
            "iperf3 is not installed (needed by iperf3_tap): `apt-get install iperf3` \
             (tests/bench/run.sh does that), or leave iperf3_tap out with --only",
        )?;
        Some(iperf3)
    } else {
        None
    };

    let uml_virtio = args.measurements.contains(&Measurement::UmlVirtioTcp);
    let linux = if args.measurements.contains(&Measurement::UmlTcp) || uml_virtio {
        world::find_in_path("iperf3").context(
            "iperf3 is not installed (needed by uml_tcp, inside the guests): `apt-get install \
             iperf3` (tests/bench/run.sh does that), or leave uml_tcp out with --only",
        )?;
        if uml_virtio {
            switchyard_tests::vhost_user::virtio_modules()
                .context("uml_virtio_tcp needs virtio_net.ko for the UML kernel")?;
        }
        Some(uml::find_linux()?)
    } else {
        None
    };

    let wants_qemu = args.measurements.iter().any(|m| {
        matches!(
            m,
            Measurement::QemuVhostUser | Measurement::QemuVde | Measurement::QemuBridge
        )
    });

    let macnat_tools = if args.measurements.contains(&Measurement::MacNatPcap)
        && exes.iter().any(|(k, _)| *k == SwitchKind::Switchyard)
    {
        Some(macnat::Tools::find()?)
    } else {
        None
    };

    sys::install_signal_handlers()?;
    // Declared first so it is dropped last, after every switch is gone.
    let netns = Netns::create_and_enter(&args.netns)?;
    let tmp = TempDir::new("switchyard-bench")?;
    if let Some(d) = &args.logs {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let qemu_image = if wants_qemu {
        eprintln!("switchyard-bench: building the QEMU guest image");
        Some(qemu::image(&tmp.path().join("qemu-image"))?)
    } else {
        None
    };

    let date = report::utc_now();
    let load1: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    if load1 > 0.5 {
        let msg = format!(
            "The machine was not idle at the start (1-minute load average {load1:.2}): \
             other work competes for the CPUs and the numbers are noisier than usual."
        );
        eprintln!("warning: {msg}");
        footer.push(msg);
    }
    let machine = report::machine_json();
    let versions = versions_json(&exes);
    let cfg = Config {
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        batch: args.batch,
        pings: args.pings,
        ping_warmup: (args.pings / 20).clamp(10, 1000),
        paced_fps: PACED_FPS,
        fdb_macs: FDB_MACS,
        iperf_time: Duration::from_secs_f64(args.iperf_time),
        iperf_reps: args.iperf_reps,
        iperf3,
        uml_reps: args.uml_reps,
        linux,
        qemu_reps: args.qemu_reps,
        qemu_image,
    };

    let runs: Vec<(Measurement, SwitchKind)> = args
        .measurements
        .iter()
        .flat_map(|&m| exes.iter().map(move |(k, _)| (m, *k)))
        .filter(|(m, k)| m.not_applicable(*k).is_none())
        .collect();
    let reps_of = |m: Measurement| match m {
        Measurement::Iperf => args.iperf_reps,
        Measurement::UmlTcp | Measurement::UmlVirtioTcp => args.uml_reps,
        Measurement::QemuVhostUser | Measurement::QemuVde | Measurement::QemuBridge => {
            args.qemu_reps
        }
        Measurement::Latency | Measurement::LatencyBusyPoll => args.latency_reps,
        _ => args.reps,
    };
    let max_reps = args
        .measurements
        .iter()
        .map(|m| reps_of(*m))
        .max()
        .unwrap_or(args.reps);
    let estimate = runs
        .iter()
        .map(|(m, _)| reps_of(*m) as f64 * (m.estimate_s(&cfg) + 0.2))
        .sum::<f64>();
    eprintln!(
        "switchyard-bench: namespace {}, {} switch(es), {} measurement(s) x {} reps; about {:.0} s",
        netns.name(),
        exes.len(),
        args.measurements.len(),
        args.reps,
        estimate
    );

    let started = Instant::now();
    let mut results: Results = Results::new();
    let total: usize = runs.iter().map(|(m, _)| reps_of(*m)).sum();
    let mut done = 0;
    // Interleave the switches inside each repetition so that slow drift of
    // the machine affects all of them alike, and rotate which one goes
    // first: the first run of a measurement follows the last run of the
    // one before (a blast whose queued buffers are still being freed, a
    // switch still exiting), and with a fixed order that fell on
    // switchyard every time.
    for rep in 1..=max_reps {
        let first = (rep - 1) % exes.len().max(1);
        let order = exes[first..].iter().chain(&exes[..first]);
        for &m in &args.measurements {
            for (kind, exe) in order.clone() {
                let outcome: &mut Outcome = results.entry((m, *kind)).or_default();
                if let Some(why) = m.not_applicable(*kind) {
                    outcome.not_applicable = Some(why.to_owned());
                    continue;
                }
                if rep > reps_of(m) {
                    continue;
                }
                done += 1;
                if rep > 1 && outcome.samples.is_empty() && !outcome.errors.is_empty() {
                    continue; // failed before; do not waste the time budget
                }
                sys::check_interrupted()?;
                let t = Instant::now();
                let ran = run_one(
                    *kind,
                    exe,
                    &args,
                    m,
                    rep,
                    &cfg,
                    tmp.path(),
                    netns.name(),
                    macnat_tools.as_ref(),
                );
                match ran {
                    Ok(s) => {
                        eprintln!(
                            "[{done}/{total}] {} rep {rep} {:<10}: {} ({:.1} s)",
                            m.name(),
                            kind.name(),
                            summary(&s),
                            t.elapsed().as_secs_f64()
                        );
                        outcome.samples.push(s);
                    }
                    Err(e) => {
                        sys::check_interrupted()?;
                        eprintln!(
                            "[{done}/{total}] {} rep {rep} {:<10}: FAILED: {e:#}",
                            m.name(),
                            kind.name()
                        );
                        outcome.errors.push(format!("rep {rep}: {e:#}"));
                    }
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let any_error = results.values().any(|o| !o.errors.is_empty());
    let mut na_noted = Vec::new();
    for ((m, k), o) in &results {
        if let Some(why) = &o.not_applicable {
            // A measurement with a stand-in explains that in its own note.
            if !na_noted.contains(m) && m.stand_in().is_none() {
                footer.push(format!("{} for {}: n/a. {why}", m.name(), k.name()));
                na_noted.push(*m);
            }
        }
    }
    footer.extend(scenario_notes(&args.measurements, &cfg));
    footer.extend(report::busy_poll_effect(&results));
    footer.extend(report::macnat_spread(&results));
    footer.extend(bench::guests::qemu_offloads(&results));
    for ((m, k), o) in &results {
        if let Some(e) = o.errors.first() {
            footer.push(format!(
                "{} failed {} of {} runs of {} (first error: {e})",
                k.name(),
                o.errors.len(),
                o.errors.len() + o.samples.len(),
                m.name()
            ));
        }
    }
    let cpu = match &machine {
        Json::Obj(f) => f
            .iter()
            .find(|(k, _)| k == "cpu_model")
            .and_then(|(_, v)| match v {
                Json::Str(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "unknown CPU".into()),
        _ => "unknown CPU".into(),
    };
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen").unwrap_or_default();
    let header = vec![
        format!("### switchyard benchmark, {date}"),
        String::new(),
        format!(
            "{nproc} CPUs ({cpu}), kernel {}, net.unix.max_dgram_qlen = {}. Median of {} runs; \
             throughput counted over {} s after {} s of warm-up, batches of {} frames \
             (sendmmsg/recvmmsg); latency over {} round trips. Frame sizes are datagram \
             sizes (Ethernet header + payload, no FCS). Each run starts the switch afresh, \
             and which switch runs first rotates from one repetition to the next; \
             latency rows are the median of {} runs.",
            kernel.trim(),
            qlen.trim(),
            args.reps,
            args.duration,
            args.warmup,
            args.batch,
            args.pings,
            args.latency_reps
        ),
    ];
    footer.insert(
        0,
        "Ratios are switchyard ÷ the other switch. Throughput rows: above 1 means switchyard \
         is faster. Latency rows: below 1 means switchyard is faster (lower latency)."
            .into(),
    );
    footer.push(format!("Total measuring time {elapsed:.0} s."));
    let table = report::markdown(&results, &header, &footer);

    let (res_json, ratios_json) = report::results_json(&results);
    let record = Json::obj()
        .with("date", date)
        .with("machine", machine)
        .with("versions", versions)
        .with(
            "config",
            Json::obj()
                .with("duration_s", args.duration)
                .with("warmup_s", args.warmup)
                .with("reps", args.reps)
                .with("pings", args.pings)
                .with("ping_warmup", cfg.ping_warmup)
                .with("batch", args.batch)
                .with("small_frame_bytes", measure::SMALL_FRAME)
                .with("large_frame_bytes", measure::LARGE_FRAME)
                .with("paced_fps", cfg.paced_fps)
                .with("fdb_macs", cfg.fdb_macs)
                .with("iperf_time_s", args.iperf_time)
                .with("iperf_reps", args.iperf_reps)
                .with("uml_reps", args.uml_reps)
                .with("qemu_reps", args.qemu_reps)
                .with("latency_reps", args.latency_reps)
                .with("elapsed_s", elapsed)
                .with(
                    "switches",
                    exes.iter()
                        .map(|(k, _)| Json::from(k.name()))
                        .collect::<Vec<_>>(),
                ),
        )
        .with("results", res_json)
        .with("ratios", ratios_json)
        .with(
            "notes",
            footer
                .iter()
                .map(|s| Json::from(s.as_str()))
                .collect::<Vec<_>>(),
        );
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.json, record.pretty())
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("wrote {}", args.json.display());

    print!("{table}");
    Ok(!any_error)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match real_main(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("switchyard-bench: some runs failed (see the notes under the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("switchyard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
