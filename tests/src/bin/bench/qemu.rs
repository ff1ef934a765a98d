//! TCP between two QEMU guests (TCG, 1 vCPU, 256 MB, the busybox guests
//! of `switchyard_tests::qemu`) on four transports, in the same run:
//! switchyard's vhost-user ports (qemu_vhost_user), `-netdev vde` on
//! switchyard's VDE directory or on vde_switch (qemu_vde), and taps on a
//! Linux bridge with QEMU's own virtio backend (qemu_bridge, no switch).
//!
//! Each sample boots a server guest on one side and a client guest on the
//! other, which runs iperf3 with 1 and 4 streams, then the same with
//! `-R` (the server's side sends), so every figure is the median (with
//! two: the mean) of the two directions. Everything runs in the benchmark's private namespace
//! with 192.0.2.1/24 and 192.0.2.2/24; every QEMU is SIGKILLed and reaped
//! when its guard drops.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard_tests::qemu::{vhost_net_available, GuestImage, Nic, QemuGuest, RunningQemu};

use super::measure::{process_cpu_s, Config, Target};
use super::world;

/// The two sides: address, MAC.
const SIDES: [(&str, &str); 2] = [
    ("192.0.2.1", "02:00:00:00:0c:01"),
    ("192.0.2.2", "02:00:00:00:0c:02"),
];

/// iperf3 -P of the two runs per direction.
pub const STREAMS: [u32; 2] = [1, 4];

/// From a client's start to its iperf3 result, on top of `-t`: a TCG
/// boot (4 s alone, much more while the other guest and the switch share
/// the two cores), the wait for the server, the connect.
const BOOT_AND_SETUP: Duration = Duration::from_secs(120);

static NEXT: AtomicU32 = AtomicU32::new(1);

/// How the two guests are joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// `-netdev vhost-user` on one switchyard `--port vhost-user` each.
    VhostUser,
    /// `-netdev vde` on the switch's VDE directory.
    Vde,
    /// `-netdev tap` on two taps of a Linux bridge; no switch process.
    Bridge,
}

/// One iperf3 run between the guests.
#[derive(Clone, Debug)]
pub struct QemuRun {
    /// iperf3 -P.
    pub streams: u32,
    /// Which side sent: 0 (192.0.2.1 → .2) or 1.
    pub sender: usize,
    /// Receiver-side goodput.
    pub bits_per_s: f64,
    pub retransmits: f64,
    /// Switch CPU over the run, % of one core (None without a switch).
    pub switch_cpu_pct: Option<f64>,
}

/// Both directions, 1 and 4 streams.
#[derive(Clone, Debug)]
pub struct QemuTcpSample {
    pub runs: Vec<QemuRun>,
    /// The virtio-net offloads the client guest's driver negotiated
    /// (what makes the transports differ: TSO or not).
    pub offloads: Vec<&'static str>,
}

impl QemuTcpSample {
    /// Named numbers: per stream count the mean of the two directions
    /// (the median of two), each direction, and the switch's CPU.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        let mut v = Vec::new();
        for (i, streams) in STREAMS.iter().enumerate() {
            let runs: Vec<&QemuRun> = self.runs.iter().filter(|r| r.streams == *streams).collect();
            let mean = |f: &dyn Fn(&QemuRun) -> f64| {
                if runs.is_empty() {
                    f64::NAN
                } else {
                    runs.iter().map(|r| f(r)).sum::<f64>() / runs.len() as f64
                }
            };
            let by = |sender: usize| {
                runs.iter()
                    .find(|r| r.sender == sender)
                    .map_or(f64::NAN, |r| r.bits_per_s / 1e9)
            };
            let gbps = mean(&|r| r.bits_per_s / 1e9);
            let cpu = mean(&|r| r.switch_cpu_pct.unwrap_or(f64::NAN));
            let keys = KEYS[i];
            v.extend([
                (keys[0], gbps),
                (keys[1], by(0)),
                (keys[2], by(1)),
                (keys[3], mean(&|r| r.retransmits)),
                (keys[4], cpu),
                (keys[5], cpu / gbps),
            ]);
        }
        v
    }
}

/// JSON keys per stream count: Gbit/s (mean of the directions), Gbit/s
/// from side 0 and from side 1, retransmits, switch CPU %, switch CPU %
/// per Gbit/s.
const KEYS: [[&str; 6]; 2] = [
    [
        "gbps_1",
        "gbps_1_fwd",
        "gbps_1_rev",
        "retransmits_1",
        "switch_cpu_pct_1",
        "switch_cpu_pct_per_gbps_1",
    ],
    [
        "gbps_4",
        "gbps_4_fwd",
        "gbps_4_rev",
        "retransmits_4",
        "switch_cpu_pct_4",
        "switch_cpu_pct_per_gbps_4",
    ],
];

/// Why uml_switch sits out qemu_vde.
pub const NO_VDE_DIR: &str = "uml_switch serves no VDE directory for QEMU's -netdev vde.";

/// Why only the switchyard column runs qemu_bridge.
pub const BRIDGE_ONLY: &str = "the Linux bridge row starts no switch; it runs once, under \
     switchyard's column, and is shown in the QEMU guest table.";

/// What moves row d's frames between the tap and the guest.
pub fn bridge_backend() -> &'static str {
    if vhost_net_available() {
        "the kernel's vhost-net (`vhost=on`)"
    } else {
        "QEMU's own virtio backend: this kernel has no vhost-net (no /dev/vhost-net)"
    }
}

/// The guest image (kernel and initramfs), built once per benchmark run.
pub fn image(dir: &Path) -> Result<GuestImage> {
    world::find_in_path("qemu-system-x86_64").context(
        "QEMU is not installed (needed by the qemu_* rows): `apt-get install qemu-system-x86` \
         (tests/bench/run.sh does that), or leave them out with --only",
    )?;
    GuestImage::build(dir).context("building the QEMU guest image for the qemu_* rows")
}

/// The vhost-user sockets of the run `tag`, one per side.
pub fn vhost_sockets(workdir: &Path, tag: &str) -> [PathBuf; 2] {
    [0, 1].map(|i| workdir.join(format!("{tag}-q{i}.vu")))
}

/// switchyard's extra arguments for `setup`: the vhost-user ports, or a
/// VDE directory beside its control socket.
pub fn switchyard_args(setup: Setup, workdir: &Path, tag: &str) -> Vec<String> {
    match setup {
        Setup::VhostUser => vhost_sockets(workdir, tag)
            .iter()
            .zip(SIDES)
            .flat_map(|(sock, (_, mac))| {
                [
                    "--port".to_owned(),
                    format!("vhost-user,path={},mac={mac}", sock.display()),
                ]
            })
            .collect(),
        Setup::Vde => vec![
            "--vde".to_owned(),
            vde_dir(workdir, tag).display().to_string(),
        ],
        Setup::Bridge => Vec::new(),
    }
}

/// The VDE directory QEMU plugs into: vde_switch's `-s DIR` (as
/// `world::SwitchProc` names it) or switchyard's `--vde DIR`, the same
/// name for both.
fn vde_dir(workdir: &Path, tag: &str) -> PathBuf {
    workdir.join(format!("{tag}.vde"))
}

/// The taps and bridge of qemu_bridge, deleted on drop.
struct Bridge {
    names: Vec<String>,
}

impl Bridge {
    fn create(n: u32) -> Result<(Bridge, [String; 2])> {
        let br = format!("sybqbr{n}");
        let taps = [0, 1].map(|i| format!("sybq{n}t{i}"));
        let mut guard = Bridge { names: Vec::new() };
        world::ip(&["link", "add", &br, "type", "bridge"])?;
        guard.names.push(br.clone());
        world::ip(&["link", "set", &br, "up"])?;
        for tap in &taps {
            world::ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
            guard.names.push(tap.clone());
            world::ip(&["link", "set", tap, "master", &br])?;
            world::ip(&["link", "set", tap, "up"])?;
        }
        Ok((guard, taps))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = world::ip(&["link", "del", name]);
        }
    }
}

/// The client's iperf3 runs, in order: (streams, reverse). Reverse
/// (`iperf3 -R`) sends from the server's side, the other direction.
const RUNS: [(u32, bool); 4] = [(1, false), (4, false), (1, true), (4, true)];

/// Run both directions with 1 and 4 streams between two guests joined by
/// `setup` (on the switch `t`; for the bridge no switch is measured).
pub fn iperf(t: &Target, cfg: &Config, setup: Setup) -> Result<QemuTcpSample> {
    let image = cfg
        .qemu_image
        .as_ref()
        .context("qemu: the guest image was not built at start-up (a bug)")?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (_bridge, nics) = match setup {
        Setup::VhostUser => (
            None,
            vhost_sockets(t.workdir, t.tag).map(|socket| Nic::VhostUser {
                socket,
                server: false,
            }),
        ),
        Setup::Vde => {
            let dir = vde_dir(t.workdir, t.tag);
            (None, [0, 1].map(|_| Nic::Vde { dir: dir.clone() }))
        }
        Setup::Bridge => {
            let (guard, taps) = Bridge::create(n)?;
            (Some(guard), taps.map(|ifname| Nic::Tap { ifname }))
        }
    };
    let pid = (setup != Setup::Bridge).then_some(t.pid);
    let secs = cfg.iperf_time.as_secs().max(1) as u32;
    let tmp = switchyard_tests::TempDir::new("qb")?;
    let guest = |side: usize, label: &str| {
        let (ip, mac) = SIDES[side];
        let g = QemuGuest::new(
            &format!("{}-{label}{n}", t.tag),
            image,
            nics[side].clone(),
            mac,
            &format!("{ip}/24"),
        );
        // Row d as a host would run it: the kernel's vhost-net where
        // there is one, else QEMU's own virtio backend.
        if setup == Setup::Bridge && vhost_net_available() {
            g.vhost_net()
        } else {
            g
        }
    };
    // Side 1 serves; side 0's client runs every (streams, direction) in
    // one boot, as a TCG boot costs seconds.
    let mut server = guest(1, "s")
        .iperf_server()
        .start(None, &tmp)
        .context("starting the server guest")?;
    let mut client = guest(0, "c")
        .iperf_runs(SIDES[1].0, secs, &RUNS)
        .start(None, &tmp)
        .context("starting the client guest")?;
    let console = |q: &RunningQemu| super::uml::tail(&q.output()).to_owned();
    client
        .wait_marker("SY_READY", BOOT_AND_SETUP)
        .with_context(|| {
            format!(
                "the client guest did not boot; its console:\n{}",
                console(&client)
            )
        })?;
    let offloads = client
        .offloads()
        .context("the client guest printed no SY_FEATURES line")?;
    // The switch's CPU time at the client's SY_READY and at the end of
    // each run: run k's share is the difference.
    let mut cpu = vec![pid.and_then(process_cpu_s)];
    for k in 1..=RUNS.len() {
        let limit = if k == 1 {
            BOOT_AND_SETUP + cfg.iperf_time
        } else {
            cfg.iperf_time + Duration::from_secs(60)
        };
        client
            .proc
            .wait_for_lines("SY_IPERF_END", k, limit)
            .with_context(|| {
                format!(
                    "no result of iperf3 run {k}; client console:\n{}\nserver console:\n{}",
                    console(&client),
                    console(&server)
                )
            })?;
        cpu.push(pid.and_then(process_cpu_s));
    }
    let jsons = client.iperf_jsons(RUNS.len(), Duration::from_secs(5))?;
    client.kill().context("stopping the client guest")?;
    server.kill().context("stopping the server guest")?;
    let mut runs = Vec::new();
    for (k, ((streams, reverse), json)) in RUNS.iter().zip(&jsons).enumerate() {
        let (bits_per_s, seconds, retransmits) =
            parse(json).with_context(|| format!("iperf3 run {}", k + 1))?;
        let cpu_s = cpu[k].zip(cpu[k + 1]).map(|(a, b)| b - a);
        runs.push(QemuRun {
            streams: *streams,
            sender: usize::from(*reverse),
            bits_per_s,
            retransmits,
            // Over iperf3's own seconds: between runs and while the
            // client boots the switch idles (an idle port costs
            // nothing), so its CPU time is the run's.
            switch_cpu_pct: cpu_s.map(|c| 100.0 * c / seconds),
        });
    }
    Ok(QemuTcpSample { runs, offloads })
}

/// Receiver goodput, its seconds and the sender's retransmissions from
/// `iperf3 -J`.
fn parse(json: &str) -> Result<(f64, f64, f64)> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).with_context(|| {
        format!(
            "the client printed no iperf3 JSON: {}",
            super::uml::tail(json)
        )
    })?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let num = |p: &str| v.pointer(p).and_then(serde_json::Value::as_f64);
    let bps = num("/end/sum_received/bits_per_second")
        .context("iperf3 JSON lacks end.sum_received.bits_per_second")?;
    let seconds = num("/end/sum_received/seconds").filter(|s| *s > 0.0);
    let seconds = seconds.context("iperf3 JSON lacks end.sum_received.seconds")?;
    let retransmits = num("/end/sum_sent/retransmits").unwrap_or(f64::NAN);
    Ok((bps, seconds, retransmits))
}

/// The last 3000 bytes of a console, for error messages.
#[cfg(test)]
mod tests {
    use super::*;

    fn run(streams: u32, sender: usize, gbps: f64, cpu: Option<f64>) -> QemuRun {
        QemuRun {
            streams,
            sender,
            bits_per_s: gbps * 1e9,
            retransmits: 2.0,
            switch_cpu_pct: cpu,
        }
    }

    #[test]
    fn metrics_take_the_median_of_the_directions() {
        let s = QemuTcpSample {
            runs: vec![
                run(1, 0, 1.0, Some(40.0)),
                run(4, 0, 2.0, Some(60.0)),
                run(1, 1, 3.0, Some(60.0)),
                run(4, 1, 2.0, Some(60.0)),
            ],
            offloads: Vec::new(),
        };
        let m = s.metrics();
        let get = |k: &str| m.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v);
        assert_eq!(get("gbps_1"), Some(2.0));
        assert_eq!(get("gbps_1_fwd"), Some(1.0));
        assert_eq!(get("gbps_1_rev"), Some(3.0));
        assert_eq!(get("switch_cpu_pct_1"), Some(50.0));
        assert_eq!(get("switch_cpu_pct_per_gbps_1"), Some(25.0));
        assert_eq!(get("gbps_4"), Some(2.0));
        let bridge = QemuTcpSample {
            runs: vec![run(1, 0, 2.0, None)],
            offloads: vec!["csum"],
        };
        let m = bridge.metrics();
        assert!(m
            .iter()
            .any(|(k, v)| *k == "switch_cpu_pct_1" && v.is_nan()));
    }

    #[test]
    fn iperf_json_gives_rate_seconds_and_retransmits() {
        let j = r#"{"end":{"sum_sent":{"retransmits":5},
            "sum_received":{"bits_per_second":2e9,"seconds":5.01}}}"#;
        assert_eq!(parse(j).ok(), Some((2e9, 5.01, 5.0)));
        assert!(parse(r#"{"error":"unable to connect"}"#).is_err());
        assert!(parse("Linux version").is_err());
    }

    #[test]
    fn switch_arguments() {
        let w = Path::new("/w");
        assert_eq!(
            switchyard_args(Setup::Vde, w, "t"),
            ["--vde".to_owned(), "/w/t.vde".to_owned()]
        );
        let args = switchyard_args(Setup::VhostUser, w, "t");
        assert_eq!(args.len(), 4);
        assert!(args[1].starts_with("vhost-user,path=/w/t-q0.vu,mac="));
    }
}
