//! switchyard-soak: a compressed soak of the daemon. For `--minutes` it
//! churns ports while traffic flows and samples the daemon's resident
//! memory and open descriptors; it fails (exit 1) if either grows instead
//! of staying flat, or if the reference pair ever loses a frame.
//!
//! Each cycle: the reference pair exchanges a counted burst; eight clients
//! attach by hand, send a broadcast, frames from 50 random source MACs and
//! a unicast, and leave; two TCP connections to a stream listener send
//! records and close; a udp port is added and removed with `switchyard
//! ctl`; a garbage handshake and a silent connection are refused. Every
//! tenth cycle one client sends from 1 000 random source MACs. The daemon
//! runs in a private network namespace; everything is on 127.0.0.1 there.
//!
//! Not part of `cargo test` (it takes minutes): run `tests/soak.sh`, or
//! as root after `cargo build --workspace`:
//! `cargo run -p switchyard-tests --bin switchyard-soak -- --minutes 10`.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchyard_tests::battery::{self, usage, Rig, Rng, Usage};
use switchyard_tests::proto::{self, Client};
use switchyard_tests::util::require_root;
use switchyard_tests::SwitchCmd;

const USAGE: &str = "\
usage: switchyard-soak [options]

Churns ports on a switchyard daemon while traffic flows, samples its
resident memory and open descriptors, prints a table, and fails (exit 1)
if they grow or a frame of the reference pair is lost. Needs root (it
creates a network namespace).

options:
  --minutes M          how long (default 10; fractions allowed)
  --sample SECS        seconds between samples (default 10)
  --warmup SECS        samples before this are shown but not judged
                       (default: a fifth of the run, at least 60 s)
  --max-rss-growth KIB allowed growth of resident memory from the first
                       to the last third of the judged samples (default 2048)
  --switchyard PATH    the daemon (default: beside this binary)
  -h, --help           this text
";

/// The stream listener the churn connects to (inside the namespace).
const STREAM_ADDR: &str = "127.0.0.1:7500";
/// The udp port added and removed each cycle, and its peer.
const UDP_LOCAL: &str = "127.0.0.1:7600";
const UDP_PEER: &str = "127.0.0.1:7601";

#[derive(Debug)]
struct Args {
    minutes: f64,
    sample: f64,
    warmup: Option<f64>,
    max_rss_growth_kib: u64,
    switchyard: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Args>> {
    let mut a = Args {
        minutes: 10.0,
        sample: 10.0,
        warmup: None,
        max_rss_growth_kib: 2048,
        switchyard: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            print!("{USAGE}");
            return Ok(None);
        }
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value (see --help)"))
        };
        let number = |v: String| -> Result<f64> {
            let x: f64 = v
                .parse()
                .with_context(|| format!("{arg}: bad number {v:?}"))?;
            if !(x.is_finite() && x > 0.0) {
                bail!("{arg}: {x} must be positive");
            }
            Ok(x)
        };
        match arg.as_str() {
            "--minutes" => a.minutes = number(value()?)?,
            "--sample" => a.sample = number(value()?)?,
            "--warmup" => a.warmup = Some(number(value()?)?),
            "--max-rss-growth" => a.max_rss_growth_kib = number(value()?)? as u64,
            "--switchyard" => a.switchyard = Some(PathBuf::from(value()?)),
            _ => bail!("unknown argument {arg:?} (see --help)"),
        }
    }
    Ok(Some(a))
}

/// What the churn has done so far.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    cycles: u64,
    bursts: u64,
    frames: u64,
    clients: u64,
    streams: u64,
    udp_ports: u64,
    refused: u64,
}

/// One sample, taken between cycles when only the pair and the sink are
/// attached.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    usage: Usage,
    fdb: u64,
    totals: Totals,
}

/// The soak's world: the rig (switch, namespace, pair), a client that
/// never reads (the target of the churn's unicast), the udp peer socket.
struct Soak {
    rig: Rig,
    sink: Client,
    udp_peer: UdpSocket,
    rng: Rng,
    totals: Totals,
    /// Ports with only the pair and the sink attached.
    idle_ports: usize,
}

impl Soak {
    fn start(switchyard: &std::path::Path) -> Result<Soak> {
        // The harness finds the daemon (and `switchyard ctl`) through this.
        std::env::set_var(switchyard_tests::switch::BIN_ENV, switchyard);
        // Warnings only: thousands of attach lines would bury the table
        // (the harness prints a daemon's output when it ends). Readiness
        // is then the control socket accepting, not a log line.
        let rig = Rig::start_with("soak", |dir, ctl| {
            Ok(SwitchCmd::program(switchyard, "switchyard")
                .vde(dir)
                .args(ctl.args())
                .args(["--log-level", "warn", "--port"])
                .arg(format!("stream,name=st,listen={STREAM_ADDR}")))
        })?;
        let sink = Client::attach(&rig.dir, 0, rig.tmp.path(), proto::mac(0x5c))
            .context("the sink client")?;
        sink.send(&proto::frame(proto::BROADCAST, sink.mac(), 60, 0))?;
        let udp_peer = rig
            .ns
            .run(|| UdpSocket::bind(UDP_PEER))?
            .with_context(|| format!("binding the udp peer {UDP_PEER}"))?;
        udp_peer.connect(UDP_LOCAL)?;
        let idle_ports = rig.ports()?;
        Ok(Soak {
            rig,
            sink,
            udp_peer,
            rng: Rng::new(0x50a6),
            totals: Totals::default(),
            idle_ports,
        })
    }

    /// One cycle of traffic and churn.
    fn cycle(&mut self) -> Result<()> {
        let t = &mut self.totals;
        self.rig.sw.assert_running()?;
        self.rig.pair.drain()?;
        self.rig
            .pair
            .exchange(200, 200)
            .with_context(|| format!("cycle {}", t.cycles + 1))?;
        t.bursts += 1;
        t.frames += 400;

        // The sink never reads; a frame to itself (dropped, no hairpin)
        // keeps its address learned, so the churn's unicast to it is not
        // flooded once the entry would have aged.
        self.sink
            .send(&proto::frame(self.sink.mac(), self.sink.mac(), 60, 4))?;

        // Clients come and go.
        let ctl = self.rig.ctl_path();
        let scratch = self.rig.tmp.path().to_path_buf();
        let mut clients = Vec::new();
        for i in 0..8u16 {
            let (conn, sock) = battery::attach_raw(&ctl, &scratch, "soak churn")?;
            let mac = proto::mac(0x1000 + i);
            sock.send(&proto::frame(proto::BROADCAST, mac, 60, 1))?;
            let n = if t.cycles.is_multiple_of(10) && i == 0 {
                1000
            } else {
                50
            };
            let mut f = proto::frame(self.sink.mac(), mac, 64, 2);
            for _ in 0..n {
                let mut src = self.rng.mac();
                src[0] &= 0xfe;
                f[6..12].copy_from_slice(&src);
                // A full queue at the sink is the sink's loss, not ours.
                let _ = sock.send(&f);
            }
            sock.send(&proto::frame(self.rig.pair.a.mac(), mac, 60, 3))?;
            clients.push((conn, sock));
            t.clients += 1;
        }
        drop(clients);

        // Stream connections come and go.
        for _ in 0..2 {
            let mut c: TcpStream = self
                .rig
                .ns
                .run(|| TcpStream::connect(STREAM_ADDR))?
                .with_context(|| format!("connecting to {STREAM_ADDR}"))?;
            for k in 0..20u8 {
                let f = proto::frame(self.sink.mac(), proto::mac(0x2000), 100, k);
                let mut rec = (f.len() as u32).to_be_bytes().to_vec();
                rec.extend_from_slice(&f);
                c.write_all(&rec)?;
            }
            t.streams += 1;
        }

        // A configured port comes and goes.
        self.rig.ctl.json(&[
            "port",
            "add",
            &format!("udp,name=churn,local={UDP_LOCAL},remote={UDP_PEER}"),
        ])?;
        for k in 0..5u8 {
            let _ = self
                .udp_peer
                .send(&proto::frame(self.sink.mac(), proto::mac(0x3000), 80, k));
        }
        self.rig.ctl.json(&["port", "del", "churn"])?;
        t.udp_ports += 1;

        // Bad handshakes.
        let mut g = UnixStream::connect(&ctl)?;
        let _ = g.write_all(&self.rng.bytes(150));
        drop(g);
        drop(UnixStream::connect(&ctl)?);
        t.refused += 2;
        t.cycles += 1;
        Ok(())
    }

    /// Waits until the churn has left (only the pair and the sink remain,
    /// no handshake waiting) and samples the daemon.
    fn sample(&mut self, at: Duration) -> Result<Sample> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = battery::stats(&self.rig.ctl)?;
            let settled = self.rig.ports()? == self.idle_ports
                && battery::stat(&s, "handshakes_waiting") == 0;
            if settled {
                return Ok(Sample {
                    at,
                    usage: usage(self.rig.sw.proc.pid())?,
                    fdb: battery::stat(&s, "fdb_entries"),
                    totals: self.totals,
                });
            }
            if Instant::now() >= deadline {
                bail!(
                    "the churn's ports did not go within 10 s: {:?}",
                    self.rig.port_names()?
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Least-squares slope of resident memory, KiB per minute.
fn slope_kib_per_min(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let xs: Vec<f64> = samples.iter().map(|s| s.at.as_secs_f64() / 60.0).collect();
    let ys: Vec<f64> = samples.iter().map(|s| s.usage.rss_kib as f64).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// The verdict on the judged samples.
struct Verdict {
    rss_first: u64,
    rss_last: u64,
    slope: f64,
    fds_min: usize,
    fds_max: usize,
    flat: bool,
}

fn judge(judged: &[Sample], max_growth: u64) -> Verdict {
    let third = (judged.len() / 3).max(1);
    let rss = |s: &[Sample]| median(s.iter().map(|x| x.usage.rss_kib).collect());
    let rss_first = rss(&judged[..third.min(judged.len())]);
    let rss_last = rss(&judged[judged.len().saturating_sub(third)..]);
    let fds_min = judged.iter().map(|s| s.usage.fds).min().unwrap_or(0);
    let fds_max = judged.iter().map(|s| s.usage.fds).max().unwrap_or(0);
    let rss_flat = rss_last <= rss_first + max_growth;
    // Descriptors are sampled with the same ports attached: any change is
    // a leak (two allow for a log line or ctl connection in flight).
    let fds_flat = fds_max - fds_min <= 2;
    Verdict {
        rss_first,
        rss_last,
        slope: slope_kib_per_min(judged),
        fds_min,
        fds_max,
        flat: rss_flat && fds_flat,
    }
}

fn print_table(samples: &[Sample], every: Duration) {
    println!("| time | RSS (KiB) | open fds | FDB entries | clients attached | stream conns | udp ports added | bursts (frames), none lost |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut next = Duration::ZERO;
    for (i, s) in samples.iter().enumerate() {
        if s.at < next && i + 1 != samples.len() {
            continue;
        }
        next = s.at + every;
        let secs = s.at.as_secs();
        println!(
            "| {}:{:02} | {} | {} | {} | {} | {} | {} | {} ({}) |",
            secs / 60,
            secs % 60,
            s.usage.rss_kib,
            s.usage.fds,
            s.fdb,
            s.totals.clients,
            s.totals.streams,
            s.totals.udp_ports,
            s.totals.bursts,
            s.totals.frames
        );
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} × {model}, Linux {}", kernel.trim())
}

fn run(args: Args) -> Result<bool> {
    require_root()?;
    let bin = match args.switchyard {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("switchyard"))
            .context("locating the daemon beside this binary")?,
    };
    if !bin.is_file() {
        bail!(
            "the switchyard daemon is missing at {} (build it: `cargo build --workspace`, \
             or pass --switchyard PATH)",
            bin.display()
        );
    }
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let every = Duration::from_secs_f64(args.sample);
    let warmup = Duration::from_secs_f64(
        args.warmup
            .unwrap_or_else(|| (args.minutes * 60.0 / 5.0).max(60.0)),
    )
    .min(total / 2);
    eprintln!(
        "switchyard-soak: {} for {:.1} min, a sample every {:.0} s, judged after {:.0} s",
        bin.display(),
        args.minutes,
        args.sample,
        warmup.as_secs_f64()
    );
    let mut soak = Soak::start(&bin)?;
    let start = Instant::now();
    let mut samples = vec![soak.sample(Duration::ZERO)?];
    let mut next = every;
    while start.elapsed() < total {
        soak.cycle()?;
        if start.elapsed() >= next {
            let s = soak.sample(start.elapsed())?;
            eprintln!(
                "{:>6.0} s: {}, FDB {}, {} cycles",
                s.at.as_secs_f64(),
                s.usage,
                s.fdb,
                s.totals.cycles
            );
            samples.push(s);
            next += every;
        }
    }
    samples.push(soak.sample(start.elapsed())?);
    let judged: Vec<Sample> = samples.iter().copied().filter(|s| s.at >= warmup).collect();
    if judged.len() < 3 {
        bail!(
            "only {} samples after the warm-up: run longer or sample more often",
            judged.len()
        );
    }
    let v = judge(&judged, args.max_rss_growth_kib);
    let t = soak.totals;
    println!(
        "switchyard soak, {} min, {}, {}",
        args.minutes,
        machine(),
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    println!();
    print_table(&samples, Duration::from_secs(60));
    println!();
    println!(
        "{} cycles: {} clients attached and detached, {} stream connections, {} udp ports \
         added and removed, {} bad handshakes, {} bursts ({} frames) with no loss.",
        t.cycles, t.clients, t.streams, t.udp_ports, t.refused, t.bursts, t.frames
    );
    println!(
        "After the {:.0} s warm-up: RSS median {} KiB in the first third, {} KiB in the last \
         (limit +{} KiB), trend {:+.1} KiB/min; open fds {}..{}. {}",
        warmup.as_secs_f64(),
        v.rss_first,
        v.rss_last,
        args.max_rss_growth_kib,
        v.slope,
        v.fds_min,
        v.fds_max,
        if v.flat { "FLAT" } else { "GROWING" }
    );
    soak.rig.sw.terminate()?;
    Ok(v.flat)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("switchyard-soak: memory or descriptors grew (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("switchyard-soak: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, rss: u64, fds: usize) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            usage: Usage { rss_kib: rss, fds },
            fdb: 0,
            totals: Totals::default(),
        }
    }

    #[test]
    fn flat_and_growing_runs_are_told_apart() {
        let flat: Vec<Sample> = (0..12)
            .map(|i| at(i * 10, 20_000 + (i % 3) * 50, 21))
            .collect();
        let v = judge(&flat, 2048);
        assert!(v.flat && v.slope.abs() < 500.0);
        let leaky: Vec<Sample> = (0..12).map(|i| at(i * 10, 20_000 + i * 500, 21)).collect();
        assert!(!judge(&leaky, 2048).flat);
        let fd_leak: Vec<Sample> = (0..12)
            .map(|i| at(i * 10, 20_000, 21 + i as usize))
            .collect();
        assert!(!judge(&fd_leak, 2048).flat);
    }
}
