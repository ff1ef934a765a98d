//! Small QEMU guests for the end-to-end tests and the benchmark: Debian's
//! `linux-image-amd64` kernel with a busybox initramfs built here
//! ([`GuestImage`]), one virtio-net NIC on a vhost-user socket, a VDE
//! switch or a tap, 1 vCPU and 256 MB of RAM in a shared memfd (vhost-user
//! backends map the guest's memory).
//!
//! The guest's init (`tests/guest/qemu-init.sh`) takes `KEY=value` words
//! from the kernel command line and prints markers on the serial console,
//! which is QEMU's stdout: `SY_BOOTED`, `SY_READY`, `SY_RESULT=OK|FAIL`,
//! `SY_IPERF_BEGIN` … `SY_IPERF_END`, `SY_HALT`; it powers off at the end.
//!
//! QEMU runs under TCG unless told otherwise ([`QemuGuest::accel`]): this
//! machine's `/dev/kvm` boots only specially built kernels (a Debian
//! kernel hangs, through its bzImage after "Probing EDD" and through PVH
//! silently), so callers use KVM only when [`Accel::probe`] has seen this
//! image boot with it.
//! QEMU 7.2 with TCG and vhost-user crashes in its MSI-X code unless the
//! NIC has `vectors=0`, so every NIC is built that way.

mod image;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use image::GuestImage;

use crate::netns::Netns;
use crate::process::{Proc, Stdin};
use crate::transports::need;
use crate::util::TempDir;

/// How long a TCG guest may take from start to its `SY_RESULT=` line: the
/// boot (about 4 s alone, more when several guests boot at once on two
/// cores), waiting for the peer, the pings.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a guest may take to print `SY_READY`.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Guest RAM; also the size of the shared memfd backing it.
const MEMORY: &str = "256M";

/// Where the guest's NIC connects.
#[derive(Debug, Clone)]
pub enum Nic {
    /// `-netdev vhost-user` on `socket`: QEMU connects to a listening
    /// backend (and reconnects every second), or with `server` listens
    /// itself (`server=on,wait=off`) for a backend that connects
    /// (switchyard's `mode=client`). Either way QEMU 7.2 starts the guest
    /// only once a backend is connected.
    VhostUser {
        /// The unix socket.
        socket: PathBuf,
        /// QEMU listens instead of connecting.
        server: bool,
    },
    /// `-netdev vde` on the switch whose control directory is `dir`.
    Vde {
        /// The VDE control directory (or socket).
        dir: PathBuf,
    },
    /// `-netdev tap` on a tap QEMU creates as `ifname` in its namespace,
    /// with QEMU's own virtio backend (no vhost-net).
    Tap {
        /// The tap's name.
        ifname: String,
    },
}

impl Nic {
    /// The `-chardev`/`-netdev` arguments, with netdev id `n0`;
    /// `vhost_net` asks for the kernel's vhost-net on a tap.
    fn args(&self, vhost_net: bool) -> Vec<String> {
        match self {
            Nic::VhostUser { socket, server } => {
                let mode = if *server {
                    "server=on,wait=off"
                } else {
                    "reconnect=1"
                };
                vec![
                    "-chardev".into(),
                    format!("socket,id=c0,path={},{mode}", socket.display()),
                    "-netdev".into(),
                    "vhost-user,id=n0,chardev=c0".into(),
                ]
            }
            Nic::Vde { dir } => vec![
                "-netdev".into(),
                format!("vde,id=n0,sock={}", dir.display()),
            ],
            Nic::Tap { ifname } => vec![
                "-netdev".into(),
                format!(
                    "tap,id=n0,ifname={ifname},script=no,downscript=no,vhost={}",
                    if vhost_net { "on" } else { "off" }
                ),
            ],
        }
    }
}

/// How QEMU executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's binary translator: slow, works everywhere.
    Tcg,
    /// The host's KVM.
    Kvm,
}

impl Accel {
    /// The value of QEMU's `-accel`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    /// KVM when `/dev/kvm` is there and a NIC-less guest of `image` boots
    /// with it to `SY_READY` within [`KVM_PROBE_TIMEOUT`] (a real KVM
    /// takes about a second), else TCG. The answer is kept next to the
    /// image, so the probe runs once per machine and kernel; tests in one
    /// process wait for each other's probe. `SWITCHYARD_QEMU_ACCEL=tcg`
    /// or `=kvm` skips it.
    pub fn probe(image: &GuestImage) -> Accel {
        match std::env::var(ACCEL_ENV).as_deref() {
            Ok("tcg") => return Accel::Tcg,
            Ok("kvm") => return Accel::Kvm,
            _ => {}
        }
        static PROBING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = PROBING.lock().unwrap_or_else(PoisonError::into_inner);
        // The answer depends on the kernel, not on the init.
        let kernel = image
            .kernel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let cache = image
            .initrd
            .with_file_name(format!("initrd-accel-{kernel}"));
        if let Ok(known) = fs::read_to_string(&cache) {
            return if known.trim() == "kvm" {
                Accel::Kvm
            } else {
                Accel::Tcg
            };
        }
        let accel = if Path::new("/dev/kvm").exists() && kvm_boots(image) {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        eprintln!(
            "QEMU guests run under {} (KVM {} the test guest)",
            accel.name(),
            if accel == Accel::Kvm {
                "boots"
            } else {
                "is missing or does not boot"
            }
        );
        let _ = fs::write(&cache, accel.name());
        accel
    }
}

/// True if the host kernel offers vhost-net (`/dev/vhost-net`) for
/// [`QemuGuest::vhost_net`].
pub fn vhost_net_available() -> bool {
    Path::new("/dev/vhost-net").exists()
}

/// Set to `tcg` or `kvm` to choose the accelerator without the probe.
pub const ACCEL_ENV: &str = "SWITCHYARD_QEMU_ACCEL";

/// How long [`Accel::probe`] gives a KVM guest to boot.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn kvm_boots(image: &GuestImage) -> bool {
    let Ok(qemu) = need("qemu-system-x86_64", "qemu-system-x86") else {
        return false;
    };
    let mut cmd = Command::new(qemu);
    base_args(&mut cmd, image, Accel::Kvm, "ROLE=wait WAITS=0");
    let Ok(mut p) = Proc::spawn("qemu kvm probe", cmd, Stdin::Null) else {
        return false;
    };
    // A paravirtual /dev/kvm that cannot run this kernel hangs silently.
    p.wait_for_output("SY_READY", KVM_PROBE_TIMEOUT).is_ok()
}

/// The arguments every guest has: machine, accelerator, memory shared
/// through a memfd, console on stdio, the kernel and initramfs.
fn base_args(cmd: &mut Command, image: &GuestImage, accel: Accel, params: &str) {
    cmd.args(["-machine", "pc", "-accel", accel.name()])
        .args(["-smp", "1", "-m", MEMORY])
        .arg("-object")
        .arg(format!(
            "memory-backend-memfd,id=mem,size={MEMORY},share=on"
        ))
        .args(["-numa", "node,memdev=mem"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 quiet panic=-1 {params}"));
}

/// Builder for one QEMU guest.
#[derive(Debug, Clone)]
pub struct QemuGuest {
    label: String,
    image: GuestImage,
    nic: Nic,
    mac: String,
    accel: Accel,
    vhost_net: bool,
    params: Vec<(String, String)>,
}

impl QemuGuest {
    /// A guest called `label` in messages, booting `image`, its eth0 on
    /// `nic` with address `mac` and `cidr` (e.g. `192.0.2.1/24`). It does
    /// nothing else (`ROLE=wait`) until given a role.
    pub fn new(label: &str, image: &GuestImage, nic: Nic, mac: &str, cidr: &str) -> QemuGuest {
        QemuGuest {
            label: label.to_string(),
            image: image.clone(),
            nic,
            mac: mac.to_string(),
            accel: Accel::Tcg,
            vhost_net: false,
            params: vec![("IP0".into(), cidr.into())],
        }
    }

    /// Any `KEY=value` for the init (see `tests/guest/qemu-init.sh`).
    pub fn param(mut self, key: &str, value: &str) -> QemuGuest {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.to_string(), value.to_string()));
        self
    }

    /// `ROLE=ping PEER=..`: ping `peer` (several addresses joined by
    /// commas: each in turn) after it answered once, print `SY_RESULT=`,
    /// power off (stay `LINGER` seconds first, if set).
    pub fn ping(self, peer: &str) -> QemuGuest {
        self.param("ROLE", "ping").param("PEER", peer)
    }

    /// `PEER=..` without a role of its own: ping `peer` (addresses joined
    /// by commas) and print `SY_RESULT=` first, then go on with the role
    /// (e.g. [`QemuGuest::iperf_server`]).
    pub fn ping_first(self, peer: &str) -> QemuGuest {
        self.param("PEER", peer)
    }

    /// `ROLE=server`: run `iperf3 -s` and stay up (`WAITS`, default 600 s).
    pub fn iperf_server(self) -> QemuGuest {
        self.param("ROLE", "server")
    }

    /// `ROLE=client`: `iperf3 -c server -t secs -P streams -J` once the
    /// server answers; the output comes back through
    /// [`RunningQemu::iperf_json`].
    pub fn iperf_client(self, server: &str, secs: u32, streams: u32) -> QemuGuest {
        self.param("ROLE", "client")
            .param("SERVER", server)
            .param("SECS", &secs.to_string())
            .param("STREAMS", &streams.to_string())
    }

    /// `ROLE=client` with several runs in one boot (a TCG boot costs
    /// seconds): each `(streams, reverse)` in turn, `secs` long each; the
    /// outputs come back through [`RunningQemu::iperf_jsons`].
    pub fn iperf_runs(self, server: &str, secs: u32, runs: &[(u32, bool)]) -> QemuGuest {
        let runs: Vec<String> = runs
            .iter()
            .map(|(streams, reverse)| format!("{streams}{}", if *reverse { "r" } else { "" }))
            .collect();
        self.iperf_client(server, secs, 1)
            .param("RUNS", &runs.join(","))
    }

    /// `REVERSE=1`: the iperf3 client receives (`iperf3 -R`).
    pub fn reverse(self) -> QemuGuest {
        self.param("REVERSE", "1")
    }

    /// `ROLE=wait`: stay up `secs` seconds, then power off.
    pub fn wait(self, secs: u32) -> QemuGuest {
        self.param("ROLE", "wait").param("WAITS", &secs.to_string())
    }

    /// Runs the guest under `accel` instead of TCG (see [`Accel::probe`]).
    pub fn accel(mut self, accel: Accel) -> QemuGuest {
        self.accel = accel;
        self
    }

    /// On a [`Nic::Tap`], moves the frames with the kernel's vhost-net
    /// (`vhost=on`) instead of QEMU's own virtio backend; see
    /// [`vhost_net_available`].
    pub fn vhost_net(mut self) -> QemuGuest {
        self.vhost_net = true;
        self
    }

    /// The kernel command line words for the init.
    fn cmdline_params(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts QEMU, inside `ns` if given. The command line is kept in
    /// `tmp` as `qemu-LABEL.cmd` (for a kept temp dir's post-mortem).
    pub fn start(self, ns: Option<&Netns>, tmp: &TempDir) -> Result<RunningQemu> {
        let qemu = need("qemu-system-x86_64", "qemu-system-x86")?;
        let mut cmd = match ns {
            Some(ns) => ns.command(&qemu),
            None => Command::new(&qemu),
        };
        base_args(&mut cmd, &self.image, self.accel, &self.cmdline_params());
        cmd.args(self.nic.args(self.vhost_net))
            .arg("-device")
            // vectors=0: QEMU 7.2's MSI-X code crashes with TCG and
            // vhost-user otherwise; the default offloads stay on.
            .arg(format!(
                "virtio-net-pci,netdev=n0,mac={},vectors=0",
                self.mac
            ));
        let record = tmp.join(format!("qemu-{}.cmd", self.label));
        fs::write(&record, format!("{cmd:?}\n"))
            .with_context(|| format!("writing {}", record.display()))?;
        let name = format!("qemu {}", self.label);
        let proc = Proc::spawn(&name, cmd, Stdin::Null)?;
        Ok(RunningQemu {
            proc,
            started: Instant::now(),
        })
    }
}

/// A running QEMU guest; QEMU is SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct RunningQemu {
    /// The QEMU process; its output is the guest's console.
    pub proc: Proc,
    started: Instant,
}

impl RunningQemu {
    /// Waits until a console line contains `marker`, and returns the
    /// first such line (without the trailing CR). Fails early when QEMU
    /// exits first.
    pub fn wait_marker(&mut self, marker: &str, timeout: Duration) -> Result<String> {
        self.proc.wait_for_output(marker, timeout)?;
        let out = self.proc.output();
        let line = out
            .lines()
            .find(|l| l.contains(marker))
            .map(|l| l.trim_end_matches('\r').to_string())
            .unwrap_or_default();
        Ok(line)
    }

    /// Waits until eth0 is configured; fails when the init reported an
    /// error (no NIC, a module that did not load). Returns the time since
    /// start.
    pub fn wait_ready(&mut self) -> Result<Duration> {
        self.wait_marker("SY_READY", BOOT_TIMEOUT)?;
        let out = self.proc.output();
        if out.contains("SY_ERROR=") {
            bail!(
                "{}: the guest's init reported an error:\n{out}",
                self.proc.name()
            );
        }
        Ok(self.started.elapsed())
    }

    /// Waits for the `SY_RESULT=` line of a pinging guest; Ok only for `OK`.
    pub fn wait_ping_ok(&mut self) -> Result<()> {
        let line = self.wait_marker("SY_RESULT=", RESULT_TIMEOUT)?;
        if !line.contains("SY_RESULT=OK") {
            bail!(
                "{}: ping failed; guest console:\n{}",
                self.proc.name(),
                self.proc.output()
            );
        }
        Ok(())
    }

    /// The client's `iperf3 -J` output (between `SY_IPERF_BEGIN` and
    /// `SY_IPERF_END`), once it is complete.
    pub fn iperf_json(&mut self, timeout: Duration) -> Result<String> {
        self.wait_marker("SY_IPERF_END", timeout)?;
        let out = self.proc.output();
        between_markers(&out, "SY_IPERF_BEGIN", "SY_IPERF_END").with_context(|| {
            format!(
                "{}: no iperf3 output between the markers; console:\n{out}",
                self.proc.name()
            )
        })
    }

    /// The offloads of virtio-net's that the guest's driver negotiated
    /// (`SY_FEATURES=`), by name: `csum`, `guest_csum`, `guest_tso4`,
    /// `guest_tso6`, `host_tso4`, `host_tso6`, `mrg_rxbuf`.
    pub fn offloads(&mut self) -> Result<Vec<&'static str>> {
        let line = self.wait_marker("SY_FEATURES=", BOOT_TIMEOUT)?;
        let bits = line
            .split_once("SY_FEATURES=")
            .map(|(_, b)| b.trim())
            .unwrap_or_default();
        Ok(offload_names(bits))
    }

    /// The `iperf3 -J` outputs of the first `n` runs of an
    /// [`QemuGuest::iperf_runs`] client, in order, once all are complete.
    pub fn iperf_jsons(&mut self, n: usize, timeout: Duration) -> Result<Vec<String>> {
        self.proc.wait_for_lines("SY_IPERF_END", n, timeout)?;
        let out = self.proc.output();
        let all = all_between_markers(&out, "SY_IPERF_BEGIN", "SY_IPERF_END");
        if all.len() < n {
            bail!(
                "{}: {} iperf3 outputs between the markers, expected {n}; console:\n{out}",
                self.proc.name(),
                all.len()
            );
        }
        Ok(all.into_iter().take(n).collect())
    }

    /// SIGKILLs QEMU and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill()?;
        Ok(())
    }

    /// Waits for the guest to power off cleanly: `SY_HALT` printed and
    /// QEMU exited 0.
    pub fn wait_halt(&mut self, timeout: Duration) -> Result<()> {
        let status = self.proc.wait_exit(timeout)?;
        let out = self.proc.output();
        if !status.success() || !out.contains("SY_HALT") {
            bail!(
                "{} did not power off cleanly ({status}); console:\n{out}",
                self.proc.name()
            );
        }
        Ok(())
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid().as_raw().unsigned_abs()
    }

    /// Everything on the console so far.
    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// The lines strictly between the first `begin` line and the next `end`
/// line, joined by newlines, CRs removed.
fn between_markers(out: &str, begin: &str, end: &str) -> Option<String> {
    let mut lines = out.lines().map(|l| l.trim_end_matches('\r'));
    lines.find(|l| l.contains(begin))?;
    let mut body = Vec::new();
    for l in lines {
        if l.contains(end) {
            return Some(body.join("\n"));
        }
        body.push(l);
    }
    None
}

/// Every block of lines between a `begin` line and the next `end` line.
fn all_between_markers(out: &str, begin: &str, end: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for l in out.lines().map(|l| l.trim_end_matches('\r')) {
        if l.contains(begin) {
            current = Some(Vec::new());
        } else if l.contains(end) {
            if let Some(body) = current.take() {
                blocks.push(body.join("\n"));
            }
        } else if let Some(body) = current.as_mut() {
            body.push(l);
        }
    }
    blocks
}

/// virtio-net feature bits worth naming in a report.
const OFFLOADS: [(usize, &str); 7] = [
    (0, "csum"),
    (1, "guest_csum"),
    (7, "guest_tso4"),
    (8, "guest_tso6"),
    (11, "host_tso4"),
    (12, "host_tso6"),
    (15, "mrg_rxbuf"),
];

/// The names of [`OFFLOADS`] set in a sysfs `features` bit string.
fn offload_names(bits: &str) -> Vec<&'static str> {
    OFFLOADS
        .iter()
        .filter(|(bit, _)| bits.as_bytes().get(*bit) == Some(&b'1'))
        .map(|(_, name)| *name)
        .collect()
}

/// The receiver's rate in Gbit/s from `iperf3 -J` output
/// (`end.sum_received.bits_per_second`); an error when iperf3 reported one.
pub fn iperf_gbps(json: &str) -> Result<f64> {
    let j: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("iperf3 printed no JSON: {json}"))?;
    if let Some(e) = j.get("error").and_then(serde_json::Value::as_str) {
        bail!("iperf3 failed: {e}");
    }
    let bps = j
        .get("end")
        .and_then(|e| e.get("sum_received"))
        .and_then(|s| s.get("bits_per_second"))
        .and_then(serde_json::Value::as_f64)
        .with_context(|| format!("no end.sum_received.bits_per_second in {json}"))?;
    Ok(bps / 1e9)
}

#[cfg(test)]
mod tests {
    use super::{all_between_markers, between_markers, iperf_gbps, offload_names};

    #[test]
    fn the_iperf_output_is_cut_between_the_markers() {
        let console =
            "SY_READY\r\nSY_IPERF_BEGIN\r\n{\r\n \"a\": 1\r\n}\r\nSY_IPERF_END\r\nSY_HALT\r\n";
        assert_eq!(
            between_markers(console, "SY_IPERF_BEGIN", "SY_IPERF_END").as_deref(),
            Some("{\n \"a\": 1\n}")
        );
        assert_eq!(
            between_markers("SY_IPERF_BEGIN\n{", "SY_IPERF_BEGIN", "SY_IPERF_END"),
            None
        );
    }

    #[test]
    fn every_iperf_output_is_cut_between_its_markers() {
        let console = "SY_IPERF_BEGIN\r\n{1}\r\nSY_IPERF_END\r\nnoise\r\nSY_IPERF_BEGIN\r\n{2}\r\nSY_IPERF_END\r\nSY_IPERF_BEGIN\r\n{3";
        assert_eq!(
            all_between_markers(console, "SY_IPERF_BEGIN", "SY_IPERF_END"),
            ["{1}", "{2}"]
        );
    }

    #[test]
    fn offloads_are_named_from_the_feature_bits() {
        let bits = "1100000110011001000000000000000000000000000000000000000000000000";
        assert_eq!(
            offload_names(bits),
            [
                "csum",
                "guest_csum",
                "guest_tso4",
                "guest_tso6",
                "host_tso4",
                "host_tso6",
                "mrg_rxbuf"
            ]
        );
        assert!(offload_names("0000000000000000").is_empty());
        assert!(offload_names("").is_empty());
    }

    #[test]
    fn the_rate_is_read_from_the_receiver_sum() {
        let json = r#"{"end":{"sum_received":{"bits_per_second":2.5e9}}}"#;
        assert!((iperf_gbps(json).unwrap_or(0.0) - 2.5).abs() < 1e-9);
        assert!(iperf_gbps(r#"{"error":"unable to connect"}"#).is_err());
    }
}
