//! The measurements. Each takes the control socket of a freshly started
//! switch, attaches its own ports, and reports numbers; nothing here
//! asserts anything about the switch. The scenarios from the speed issue
//! (two pairs at once, UML-style sendto clients, CPU at a fixed rate,
//! 64 k learned MACs) are in `flows.rs`, the iperf3 run in `tcp.rs`, and
//! MAC-NAT's cost on a pcap port in `macnat.rs`.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::proto::{self, Port, BROADCAST, ETHERTYPE};
use super::sys::{self, MsgBatch};
use super::world::SwitchKind;
use super::{flows, mac_flood, macnat, qemu, tcp, uml};

/// The measurements, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measurement {
    Unicast64,
    Unicast1514,
    Broadcast,
    Latency,
    /// `latency` against switchyard with `--busy-poll` [`BUSY_POLL`].
    LatencyBusyPoll,
    Pairs64,
    Sendto64,
    Paced1514,
    Iperf,
    /// TCP between two UML guests on the daemon transport.
    UmlTcp,
    /// The same two guests on virtio_uml, switchyard's vhost-user ports.
    UmlVirtioTcp,
    /// TCP between two QEMU guests on switchyard's vhost-user ports.
    QemuVhostUser,
    /// The same on `-netdev vde` (switchyard's VDE directory, vde_switch).
    QemuVde,
    /// The same on taps on a Linux bridge (no switch process).
    QemuBridge,
    Fdb64k,
    /// A→B while another port sends from 100,000 chosen source MACs.
    MacFlood,
    MacNatPcap,
}

impl Measurement {
    pub const ALL: [Measurement; 17] = [
        Measurement::Unicast64,
        Measurement::Unicast1514,
        Measurement::Broadcast,
        Measurement::Latency,
        Measurement::LatencyBusyPoll,
        Measurement::Pairs64,
        Measurement::Sendto64,
        Measurement::Paced1514,
        Measurement::Iperf,
        Measurement::UmlTcp,
        Measurement::UmlVirtioTcp,
        Measurement::QemuVhostUser,
        Measurement::QemuVde,
        Measurement::QemuBridge,
        Measurement::Fdb64k,
        Measurement::MacFlood,
        Measurement::MacNatPcap,
    ];

    /// Name used by `--only` and as the JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Measurement::Unicast64 => "unicast_64",
            Measurement::Unicast1514 => "unicast_1514",
            Measurement::Broadcast => "broadcast_3",
            Measurement::Latency => "latency",
            Measurement::LatencyBusyPoll => "latency_busy_poll",
            Measurement::Pairs64 => "pairs_64",
            Measurement::Sendto64 => "sendto_64",
            Measurement::Paced1514 => "cpu_100k_1514",
            Measurement::Iperf => "iperf3_tap",
            Measurement::UmlTcp => "uml_tcp",
            Measurement::UmlVirtioTcp => "uml_virtio_tcp",
            Measurement::QemuVhostUser => "qemu_vhost_user",
            Measurement::QemuVde => "qemu_vde",
            Measurement::QemuBridge => "qemu_bridge",
            Measurement::Fdb64k => "fdb_64k",
            Measurement::MacFlood => "mac_flood",
            Measurement::MacNatPcap => "macnat_pcap",
        }
    }

    pub fn parse(s: &str) -> Option<Measurement> {
        Measurement::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Why `kind` cannot take part in this measurement, if it cannot.
    pub fn not_applicable(self, kind: SwitchKind) -> Option<&'static str> {
        match (self, kind) {
            (Measurement::Iperf, SwitchKind::UmlSwitch) => Some(tcp::UML_SWITCH_NA),
            (Measurement::MacNatPcap, SwitchKind::UmlSwitch | SwitchKind::VdeSwitch) => {
                Some(macnat::NO_PCAP_PORT)
            }
            (Measurement::LatencyBusyPoll, SwitchKind::UmlSwitch | SwitchKind::VdeSwitch) => {
                Some(NO_BUSY_POLL)
            }
            (
                Measurement::UmlVirtioTcp | Measurement::QemuVhostUser,
                SwitchKind::UmlSwitch | SwitchKind::VdeSwitch,
            ) => Some(NO_VHOST_USER),
            (Measurement::QemuVde, SwitchKind::UmlSwitch) => Some(qemu::NO_VDE_DIR),
            (Measurement::QemuBridge, SwitchKind::UmlSwitch | SwitchKind::VdeSwitch) => {
                Some(qemu::BRIDGE_ONLY)
            }
            _ => None,
        }
    }

    /// The measurement whose values the switches that cannot take part in
    /// this one show in its rows (and are compared against), if any.
    pub fn stand_in(self) -> Option<Measurement> {
        match self {
            Measurement::LatencyBusyPoll => Some(Measurement::Latency),
            _ => None,
        }
    }

    /// switchyard's arguments that this measurement adds to any
    /// `--switchyard-arg`s.
    pub fn switchyard_args(self) -> &'static [&'static str] {
        match self {
            Measurement::LatencyBusyPoll => &["--busy-poll", BUSY_POLL],
            // 64 k addresses on one port, as uml_switch and vde_switch
            // learn them: no per-port limit.
            Measurement::Fdb64k => &["--fdb-port-max-entries", "0"],
            _ => &[],
        }
    }

    /// Rough wall-clock seconds of one run (for the time estimate).
    pub fn estimate_s(self, cfg: &Config) -> f64 {
        let window = cfg.warmup.as_secs_f64() + cfg.duration.as_secs_f64() + 0.3;
        match self {
            Measurement::Latency | Measurement::LatencyBusyPoll => 0.5 + cfg.pings as f64 * 80e-6,
            Measurement::Iperf => cfg.iperf_time.as_secs_f64() + 2.0,
            // Two guests boot (~1.5 s at once on 2 cores), warm up, and
            // power off.
            Measurement::UmlTcp | Measurement::UmlVirtioTcp => cfg.iperf_time.as_secs_f64() + 2.5,
            // Two guests boot under TCG, then four iperf3 runs.
            Measurement::QemuVhostUser | Measurement::QemuVde | Measurement::QemuBridge => {
                4.0 * (cfg.iperf_time.as_secs_f64() + 3.0) + 30.0
            }
            Measurement::Fdb64k => window + 1.0,
            Measurement::MacFlood => 3.0 * window + 2.0,
            Measurement::MacNatPcap => macnat::estimate_s(cfg),
            _ => window,
        }
    }
}

/// How long switchyard keeps polling an emptied queue in
/// `latency_busy_poll` (its `--busy-poll` value; the table's labels
/// spell it out too).
pub const BUSY_POLL: &str = "20us";

/// Why uml_switch and vde_switch sit out `latency_busy_poll`.
pub const NO_BUSY_POLL: &str = "uml_switch and vde_switch have no busy-poll option; the \
     busy-poll rows show their `latency` values instead (— when latency did not run).";

/// Why uml_switch and vde_switch sit out the vhost-user measurements.
pub const NO_VHOST_USER: &str = "uml_switch and vde_switch have no vhost-user port.";

/// Knobs shared by all measurements.
#[derive(Clone, Debug)]
pub struct Config {
    pub warmup: Duration,
    pub duration: Duration,
    pub batch: usize,
    pub pings: usize,
    pub ping_warmup: usize,
    /// Sending rate of the fixed-rate CPU measurement.
    pub paced_fps: f64,
    /// Distinct source MACs the FDB measurement makes the switch see.
    pub fdb_macs: usize,
    /// `iperf3 -t` of the TCP measurement, and how many runs it gets.
    pub iperf_time: Duration,
    pub iperf_reps: usize,
    /// Programs of the TCP measurement (checked at start-up).
    pub iperf3: Option<std::path::PathBuf>,
    /// Runs of uml_tcp (its guests take seconds to boot).
    pub uml_reps: usize,
    /// The UML kernel for uml_tcp (checked at start-up).
    pub linux: Option<std::path::PathBuf>,
    /// Runs of the qemu_* measurements (each boots two TCG guests).
    pub qemu_reps: usize,
    /// The QEMU guests' kernel and initramfs (built at start-up).
    pub qemu_image: Option<switchyard_tests::qemu::GuestImage>,
}

/// The switch under test, as a measurement sees it.
pub struct Target<'a> {
    /// Control socket (for switchyard with a VDE directory: DIR/ctl).
    pub ctl: &'a Path,
    pub pid: u32,
    /// Scratch directory of this run (helper output files).
    pub workdir: &'a Path,
    /// Unique name of this run: switch, measurement, repetition.
    pub tag: &'a str,
    /// Name of the benchmark's namespace (prefix of helper namespaces).
    pub netns: &'a str,
}

/// Size of a broadcast test frame and of the latency probe.
pub const SMALL_FRAME: usize = 64;
pub const LARGE_FRAME: usize = 1514;
pub(super) const RECV_SLOT: usize = 2048;

/// What the receivers of a flood should get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Every sent frame for receiver 0; any further receivers are
    /// bystanders that count frames flooded to them.
    Unicast,
    /// Every sent frame for every receiver.
    Broadcast,
    /// Sender i's frames for receiver i (several pairs at once).
    Pairs,
}

/// Raw counts of one flood run over the measurement window.
#[derive(Clone, Debug)]
pub struct FloodSample {
    pub shape: Shape,
    pub frame_len: usize,
    pub window_s: f64,
    /// Frames sent, all senders together.
    pub tx_frames: u64,
    /// Valid frames (right length and source) per receiver.
    pub rx_frames: Vec<u64>,
    /// Anything else the receivers saw during the whole run.
    pub odd_frames: u64,
    /// CPU time the switch process (all its threads) used in the window.
    pub switch_cpu_s: Option<f64>,
}

impl FloodSample {
    pub fn tx_fps(&self) -> f64 {
        self.tx_frames as f64 / self.window_s
    }
    pub fn rx_fps(&self, i: usize) -> f64 {
        self.rx_frames[i] as f64 / self.window_s
    }
    /// Switch CPU use over the window, in % of one core.
    pub fn switch_cpu_pct(&self) -> Option<f64> {
        self.switch_cpu_s.map(|c| 100.0 * c / self.window_s)
    }
    /// Frames delivered where they were meant to go (bystanders excluded).
    pub fn delivered(&self) -> u64 {
        match self.shape {
            Shape::Unicast => self.rx_frames.first().copied().unwrap_or(0),
            Shape::Broadcast | Shape::Pairs => self.rx_frames.iter().sum(),
        }
    }
    /// Delivered frames per CPU-second of the switch process.
    pub fn rx_per_switch_cpu_s(&self) -> Option<f64> {
        let cpu = self.switch_cpu_s?;
        (cpu > 0.0).then(|| self.delivered() as f64 / cpu)
    }
    pub fn total_rx_fps(&self) -> f64 {
        self.delivered() as f64 / self.window_s
    }
    /// Share of the frames that should have been delivered but were not.
    pub fn loss_pct(&self) -> f64 {
        let fanout = match self.shape {
            Shape::Broadcast => self.rx_frames.len(),
            Shape::Unicast | Shape::Pairs => 1,
        };
        let expected = self.tx_frames as f64 * fanout as f64;
        if expected == 0.0 {
            return f64::NAN;
        }
        (100.0 * (1.0 - self.delivered() as f64 / expected)).max(0.0)
    }
}

/// Round-trip time statistics of one ping-pong run, in microseconds.
#[derive(Clone, Debug)]
pub struct LatencySample {
    pub count: usize,
    pub lost: usize,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Switch CPU use while the measured round trips ran, in % of one core
    /// (on a VM, a busy switch keeps a vCPU awake and lowers wake-up latency).
    pub switch_cpu_pct: Option<f64>,
}

#[derive(Clone, Debug)]
pub enum Sample {
    Flood(FloodSample),
    Latency(LatencySample),
    /// A flood at a fixed sending rate (`target_fps`).
    Paced {
        flood: FloodSample,
        target_fps: f64,
    },
    Tcp(tcp::TcpSample),
    UmlTcp(uml::UmlTcpSample),
    /// Two QEMU guests, both directions, 1 and 4 streams.
    QemuTcp(qemu::QemuTcpSample),
    Fdb(flows::FdbSample),
    /// A→B without and with a MAC-flooding port.
    MacFlood(mac_flood::MacFloodSample),
    /// switchyard's pcap port with MAC-NAT off and on.
    MacNat(macnat::MacNatSample),
}

/// Run measurement `m` against the switch `t`.
pub fn run(m: Measurement, t: &Target, cfg: &Config) -> Result<Sample> {
    let (ctl, pid) = (t.ctl, t.pid);
    Ok(match m {
        Measurement::Unicast64 => Sample::Flood(flood(ctl, pid, cfg, SMALL_FRAME, 1, false)?),
        Measurement::Unicast1514 => Sample::Flood(flood(ctl, pid, cfg, LARGE_FRAME, 1, false)?),
        Measurement::Broadcast => Sample::Flood(flood(ctl, pid, cfg, SMALL_FRAME, 3, true)?),
        // The busy-poll variant differs only in how the switch was started.
        Measurement::Latency | Measurement::LatencyBusyPoll => {
            Sample::Latency(ping_pong(ctl, pid, cfg)?)
        }
        Measurement::Pairs64 => Sample::Flood(flows::pairs(ctl, pid, cfg)?),
        Measurement::Sendto64 => Sample::Flood(flows::sendto(ctl, pid, cfg)?),
        Measurement::Paced1514 => Sample::Paced {
            flood: flows::paced(ctl, pid, cfg)?,
            target_fps: cfg.paced_fps,
        },
        Measurement::Iperf => Sample::Tcp(tcp::iperf(t, cfg)?),
        Measurement::UmlTcp => Sample::UmlTcp(uml::iperf(t, cfg, uml::UmlNic::Daemon)?),
        Measurement::UmlVirtioTcp => Sample::UmlTcp(uml::iperf(t, cfg, uml::UmlNic::Virtio)?),
        Measurement::QemuVhostUser => Sample::QemuTcp(qemu::iperf(t, cfg, qemu::Setup::VhostUser)?),
        Measurement::QemuVde => Sample::QemuTcp(qemu::iperf(t, cfg, qemu::Setup::Vde)?),
        Measurement::QemuBridge => Sample::QemuTcp(qemu::iperf(t, cfg, qemu::Setup::Bridge)?),
        Measurement::Fdb64k => Sample::Fdb(flows::fdb(ctl, pid, cfg)?),
        Measurement::MacFlood => Sample::MacFlood(mac_flood::run(ctl, pid, cfg)?),
        // It starts its own switches, one per MAC-NAT setting.
        Measurement::MacNatPcap => bail!("macnat_pcap runs through macnat::run, not measure::run"),
    })
}

/// User + system CPU seconds of process `pid` (all threads), from
/// /proc/PID/stat; None if unreadable.
pub(super) fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state field (3).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf(3) has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

/// How a sender thread puts frames on its socket.
pub enum TxMode<'a> {
    /// sendmmsg batches of `Config::batch`, as fast as the switch takes them.
    Batched,
    /// One `sendto(remote)` per frame on an unconnected socket (UML style).
    SendTo(&'a SocketAddr),
    /// sendmmsg batches paced by a token bucket to this many frames/s.
    Paced(f64),
}

/// How a receiver thread reads its socket.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RxMode {
    /// recvmmsg batches.
    Batched,
    /// One `recvfrom` per frame (UML style).
    RecvFrom,
}

pub struct Tx<'a> {
    pub sock: &'a UnixDatagram,
    pub frame: Vec<u8>,
    pub mode: TxMode<'a>,
}

pub struct Rx<'a> {
    pub sock: &'a UnixDatagram,
    /// Frames from this source MAC (and of the flood's length) count.
    pub src: [u8; 6],
    pub mode: RxMode,
}

/// Port 0 blasts `frame_len`-byte frames (to port 1's MAC, or broadcast)
/// while `receivers` other ports count what arrives.
fn flood(
    ctl: &Path,
    pid: u32,
    cfg: &Config,
    frame_len: usize,
    receivers: usize,
    broadcast: bool,
) -> Result<FloodSample> {
    let ports = (0..=receivers)
        .map(|_| Port::connect(ctl))
        .collect::<Result<Vec<_>>>()?;
    proto::learn_all(&ports)?;
    let (sender, rx_ports) = ports.split_first().context("no ports")?;
    let dst = if broadcast {
        BROADCAST
    } else {
        rx_ports[0].mac
    };
    let tx = [Tx {
        sock: &sender.data,
        frame: proto::build_frame(dst, sender.mac, frame_len),
        mode: TxMode::Batched,
    }];
    let rx: Vec<Rx> = rx_ports
        .iter()
        .map(|p| Rx {
            sock: &p.data,
            src: sender.mac,
            mode: RxMode::Batched,
        })
        .collect();
    let shape = if broadcast {
        Shape::Broadcast
    } else {
        Shape::Unicast
    };
    run_flood(pid, cfg, shape, frame_len, &tx, &rx)
}

/// Run every sender and receiver in its own thread, and count over the
/// measurement window that follows the warm-up. All frames are
/// `frame_len` bytes long.
pub fn run_flood(
    pid: u32,
    cfg: &Config,
    shape: Shape,
    frame_len: usize,
    senders: &[Tx],
    receivers: &[Rx],
) -> Result<FloodSample> {
    let stop = AtomicBool::new(false);
    let tx: Vec<AtomicU64> = senders.iter().map(|_| AtomicU64::new(0)).collect();
    let rx: Vec<AtomicU64> = receivers.iter().map(|_| AtomicU64::new(0)).collect();
    let odd = AtomicU64::new(0);

    std::thread::scope(|s| {
        let send_threads: Vec<_> = senders
            .iter()
            .zip(&tx)
            .map(|(t, count)| {
                let stop = &stop;
                s.spawn(move || {
                    let r = match t.mode {
                        TxMode::Batched => send_loop(t.sock, &t.frame, cfg.batch, stop, count),
                        TxMode::SendTo(remote) => {
                            flows::sendto_loop(t.sock, remote, &t.frame, stop, count)
                        }
                        TxMode::Paced(fps) => {
                            flows::paced_loop(t.sock, &t.frame, cfg.batch, fps, stop, count)
                        }
                    };
                    if r.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    r
                })
            })
            .collect();
        let recv_threads: Vec<_> = receivers
            .iter()
            .zip(&rx)
            .map(|(r, count)| {
                let (stop, odd) = (&stop, &odd);
                s.spawn(move || {
                    let res = match r.mode {
                        RxMode::Batched => recv_loop(r.sock, r.src, frame_len, stop, count, odd),
                        RxMode::RecvFrom => {
                            flows::recvfrom_loop(r.sock, r.src, frame_len, stop, count, odd)
                        }
                    };
                    if res.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    res
                })
            })
            .collect();

        let window = (|| -> Result<(f64, u64, Vec<u64>, Option<f64>)> {
            let snap = || -> (Instant, u64, Vec<u64>, Option<f64>) {
                (
                    Instant::now(),
                    tx.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
                    rx.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
                    process_cpu_s(pid),
                )
            };
            if !sys::sleep_checked(cfg.warmup, &stop)? {
                bail!("a worker thread stopped during warm-up");
            }
            let (t0, tx0, rx0, cpu0) = snap();
            if !sys::sleep_checked(cfg.duration, &stop)? {
                bail!("a worker thread stopped during the measurement");
            }
            let (t1, tx1, rx1, cpu1) = snap();
            let rx_delta = rx1.iter().zip(&rx0).map(|(a, b)| a - b).collect();
            let cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
            Ok(((t1 - t0).as_secs_f64(), tx1 - tx0, rx_delta, cpu))
        })();
        stop.store(true, Ordering::SeqCst);

        // Worker errors explain a failed window better than the window's own.
        let mut first_err: Option<anyhow::Error> = None;
        for (i, h) in send_threads.into_iter().enumerate() {
            let res = h
                .join()
                .map_err(|_| anyhow!("sender thread {i} panicked"))
                .and_then(|r| r.with_context(|| format!("sender {i}")));
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        for (i, h) in recv_threads.into_iter().enumerate() {
            let res = h
                .join()
                .map_err(|_| anyhow!("receiver thread {i} panicked"))
                .and_then(|r| r.with_context(|| format!("receiver {i}")));
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let (window_s, tx_frames, rx_frames, switch_cpu_s) = window?;
        Ok(FloodSample {
            shape,
            frame_len,
            window_s,
            tx_frames,
            rx_frames,
            odd_frames: odd.load(Ordering::Relaxed),
            switch_cpu_s,
        })
    })
}

/// Blast `frame` with sendmmsg until `stop`; on EAGAIN wait for POLLOUT.
/// Works on a connected unix socket and on an AF_PACKET socket bound to a
/// device, where ENOBUFS means the device dropped the frame: try again.
pub(super) fn send_loop(
    sock: &impl AsRawFd,
    frame: &[u8],
    batch: usize,
    stop: &AtomicBool,
    tx: &AtomicU64,
) -> Result<()> {
    let mut msgs = MsgBatch::for_send(batch, frame);
    let n = msgs.len();
    while !stop.load(Ordering::Relaxed) {
        match msgs.send(sock, n) {
            Ok(sent) => {
                tx.fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait_fd(sock, libc::POLLOUT, Duration::from_millis(20))
                    .context("poll for POLLOUT")?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("sendmmsg"),
        }
    }
    Ok(())
}

/// Count frames with recvmmsg until `stop` and the socket is empty.
pub(super) fn recv_loop(
    sock: &UnixDatagram,
    src: [u8; 6],
    frame_len: usize,
    stop: &AtomicBool,
    count: &AtomicU64,
    odd: &AtomicU64,
) -> Result<()> {
    let good = |f: &[u8]| f.len() == frame_len && f[6..12] == src && f[12..14] == ETHERTYPE;
    recv_matching(sock, good, stop, count, odd)
}

/// Count the frames `good` accepts (and, in `odd`, the others) with
/// recvmmsg until `stop` and the socket is empty.
pub(super) fn recv_matching(
    sock: &UnixDatagram,
    good: impl Fn(&[u8]) -> bool,
    stop: &AtomicBool,
    count: &AtomicU64,
    odd: &AtomicU64,
) -> Result<()> {
    let mut msgs = MsgBatch::for_recv(64, RECV_SLOT);
    loop {
        match msgs.recv(sock) {
            Ok(n) => {
                let good = (0..n).filter(|&i| good(msgs.frame(i))).count();
                count.fetch_add(good as u64, Ordering::Relaxed);
                if good < n {
                    odd.fetch_add((n - good) as u64, Ordering::Relaxed);
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                sys::wait_fd(sock, libc::POLLIN, Duration::from_millis(20))
                    .context("poll for POLLIN")?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("recvmmsg"),
        }
    }
}

const PING_TIMEOUT: Duration = Duration::from_millis(200);

/// A sends a frame carrying a sequence number to B; B echoes it back to A;
/// one frame in flight. Returns the round-trip statistics.
fn ping_pong(ctl: &Path, pid: u32, cfg: &Config) -> Result<LatencySample> {
    let ports = [Port::connect(ctl)?, Port::connect(ctl)?];
    proto::learn_all(&ports)?;
    let [a, b] = &ports;
    let stop = AtomicBool::new(false);

    std::thread::scope(|s| {
        let echo = s.spawn(|| {
            let r = echo_loop(b, a.mac, &stop);
            if r.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            r
        });
        let res = ping_loop(a, b.mac, pid, cfg, &stop);
        stop.store(true, Ordering::SeqCst);
        let echo_res = echo
            .join()
            .map_err(|_| anyhow!("the echo thread panicked"))
            .and_then(|r| r.context("echo"));
        echo_res?;
        res
    })
}

fn echo_loop(b: &Port, a_mac: [u8; 6], stop: &AtomicBool) -> Result<()> {
    let mut buf = [0u8; RECV_SLOT];
    while !stop.load(Ordering::Relaxed) {
        match b.data.recv(&mut buf) {
            Ok(n) => {
                let f = &mut buf[..n];
                if n < 22 || f[0..6] != b.mac || f[12..14] != ETHERTYPE {
                    continue;
                }
                f[0..6].copy_from_slice(&a_mac);
                f[6..12].copy_from_slice(&b.mac);
                proto::send_one(&b.data, f, Duration::from_secs(1)).context("echo send")?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait_fd(&b.data, libc::POLLIN, Duration::from_millis(20))
                    .context("poll for POLLIN")?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("echo recv"),
        }
    }
    Ok(())
}

fn ping_loop(
    a: &Port,
    b_mac: [u8; 6],
    pid: u32,
    cfg: &Config,
    stop: &AtomicBool,
) -> Result<LatencySample> {
    let mut frame = proto::build_frame(b_mac, a.mac, SMALL_FRAME);
    let mut buf = [0u8; RECV_SLOT];
    let mut rtts: Vec<u64> = Vec::with_capacity(cfg.pings);
    let mut lost = 0usize;
    let mut lost_in_a_row = 0usize;
    let total = cfg.ping_warmup + cfg.pings;
    // Generous cap so a pathological switch cannot blow the time budget.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut cpu_start: Option<(Instant, Option<f64>)> = None;
    for seq in 0..total as u64 {
        if seq == cfg.ping_warmup as u64 {
            cpu_start = Some((Instant::now(), process_cpu_s(pid)));
        }
        sys::check_interrupted()?;
        if stop.load(Ordering::Relaxed) {
            bail!("the echo side stopped");
        }
        if Instant::now() > deadline {
            eprintln!("warning: latency run cut short after 30 s ({seq} round trips)");
            break;
        }
        frame[14..22].copy_from_slice(&seq.to_ne_bytes());
        let t0 = Instant::now();
        proto::send_one(&a.data, &frame, Duration::from_secs(1)).context("ping send")?;
        let answered = loop {
            let waited = t0.elapsed();
            if waited >= PING_TIMEOUT {
                break false;
            }
            match a.data.recv(&mut buf) {
                Ok(n) => {
                    let f = &buf[..n];
                    if n >= 22 && f[6..12] == b_mac && f[14..22] == seq.to_ne_bytes() {
                        let rtt = t0.elapsed();
                        if seq >= cfg.ping_warmup as u64 {
                            rtts.push(rtt.as_nanos() as u64);
                        }
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sys::wait_fd(&a.data, libc::POLLIN, PING_TIMEOUT - waited)
                        .context("poll for POLLIN")?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("ping recv"),
            }
        };
        if answered {
            lost_in_a_row = 0;
        } else {
            lost += 1;
            lost_in_a_row += 1;
            if lost_in_a_row >= 10 {
                bail!("10 pings in a row got no echo: the switch is not forwarding");
            }
        }
    }
    if rtts.is_empty() {
        bail!("no round trip completed");
    }
    let switch_cpu_pct = cpu_start.and_then(|(t0, cpu0)| {
        let wall = t0.elapsed().as_secs_f64();
        let used = process_cpu_s(pid)? - cpu0?;
        (wall > 0.0).then(|| 100.0 * used / wall)
    });
    rtts.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let pct = |q: f64| {
        let rank = ((q * rtts.len() as f64).ceil() as usize).clamp(1, rtts.len());
        us(rtts[rank - 1])
    };
    Ok(LatencySample {
        count: rtts.len(),
        lost,
        min_us: us(rtts[0]),
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: us(rtts[rtts.len() - 1]),
        mean_us: us(rtts.iter().sum::<u64>()) / rtts.len() as f64,
        switch_cpu_pct,
    })
}
