//! TCP between two real User-mode Linux guests: `iperf3 -s` in one guest,
//! `iperf3 -c` in the other, through the switch under test, on the daemon
//! transport (`eth0=daemon,MAC,unix,CTL`, the uml_switch protocol) or, for
//! switchyard, on virtio_uml (`virtio_uml.device=SOCK:1`, one
//! `--port vhost-user,path=SOCK` per guest; the init loads `virtio_net.ko`
//! from Debian's UML module tree, as `tests/src/vhost_user.rs` does).
//!
//! The guests boot the host's `/` over hostfs (read-only) with their own
//! init script ([`INIT`]), run in the benchmark's private namespace (UML's
//! data sockets are abstract unix sockets, which belong to a namespace, so
//! guests and switch must share it), use 192.0.2.1/24 and 192.0.2.2/24
//! and talk only to each other. They power themselves off; every guest
//! process group is SIGKILLed and reaped if one is still running when its
//! guard drops (errors, Ctrl-C, timeouts).

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::measure::{process_cpu_s, Config, Target};
use super::sys;
use super::tcp;
use super::world;

/// PID 1 of both guests. Parameters come as environment variables from
/// `KEY=value` words on the kernel command line: IP (address/prefix of
/// eth0), ROLE (server or client), PEER (client: the server's address),
/// SECS (client: iperf3 -t), LIMIT (seconds after which iperf3 gives up).
/// Markers on the console: SYB_READY, SYB_ERROR=..., SYB_IPERF_BEGIN /
/// SYB_IPERF_END (the client's iperf3 -J output between them),
/// SYB_TX_DROPPED=N (the client's eth0 tx_dropped), SYB_HALT; SYB_IPERF_GO
/// when the client starts iperf3 (the host counts the switch's CPU from
/// there to SYB_IPERF_BEGIN). VIRTIO=1: eth0 is a virtio_uml device, whose
/// driver is loaded first. The script must never return: if PID 1 exits,
/// the guest kernel panics.
const INIT: &str = r#"#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

halt() {
    echo "SYB_HALT"
    poweroff -f >/dev/null 2>&1
    # sysrq power-off is asynchronous: keep init alive until it happens.
    echo o >/proc/sysrq-trigger 2>/dev/null
    while :; do sleep 10; done
}

# /proc first: before this mount /proc is the host's procfs through hostfs.
mount -t proc proc /proc
mount -t sysfs sysfs /sys 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
# iperf3 keeps a scratch file in /tmp; hostfs / is read-only.
mount -t tmpfs tmpfs /tmp 2>/dev/null
if [ "${VIRTIO:-}" = 1 ]; then
    # hostfs has no /lib/modules for the UML kernel: load virtio-net by
    # path, in dependency order (the list of tests/src/vhost_user.rs).
    m=/usr/lib/uml/modules/$(uname -r)/kernel
    for k in net/core/failover drivers/net/net_failover drivers/net/virtio_net; do
        insmod "$m/$k.ko" || echo "SYB_ERROR=insmod $k.ko"
    done
fi
ip link set lo up
if ! ip link set eth0 up || ! ip addr add "$IP" dev eth0; then
    echo "SYB_ERROR=eth0 (did the guest's transport connect to the switch?)"
    halt
fi
echo "SYB_READY"

case "${ROLE:-}" in
server)
    # One test, then exit; give up if no client comes.
    timeout "$LIMIT" iperf3 -s -1 >/tmp/iperf3.out 2>&1
    echo "SYB_SERVER_EXIT=$?"
    ;;
client)
    # The peer may still be booting: wait until it answers once.
    i=0
    while [ "$i" -lt 60 ] && ! ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; do
        i=$((i + 1))
    done
    # ... and its iperf3 may not listen yet (iperf3 -J can exit 0 even
    # then, so look at what it said).
    echo "SYB_IPERF_GO"
    i=0
    while :; do
        timeout "$LIMIT" iperf3 -c "$PEER" -t "$SECS" -J >/tmp/iperf3.json 2>&1
        rc=$?
        if [ "$i" -ge 20 ] || ! grep -q "unable to connect" /tmp/iperf3.json; then
            break
        fi
        i=$((i + 1))
        sleep 0.5
    done
    echo "SYB_IPERF_BEGIN"
    cat /tmp/iperf3.json
    echo "SYB_IPERF_END rc=$rc"
    echo "SYB_TX_DROPPED=$(cat /sys/class/net/eth0/statistics/tx_dropped)"
    ;;
*)
    echo "SYB_ERROR=unknown ROLE '${ROLE:-}'"
    ;;
esac
halt
"#;

const SERVER_IP: &str = "192.0.2.2";
const CLIENT_IP: &str = "192.0.2.1";
/// Guest RAM: iperf3's buffers and the guest's socket buffers need more
/// than the e2e tests' 64 MiB guests.
const GUEST_MEM: &str = "128M";
/// From start to the client's result: two guests booting at once on two
/// cores, the ping warm-up, then the run itself (added on top).
const BOOT_AND_SETUP: Duration = Duration::from_secs(60);

static NEXT: AtomicU32 = AtomicU32::new(1);

/// How the guests reach the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UmlNic {
    /// `eth0=daemon,MAC,unix,CTL`: one datagram per frame (uml_tcp).
    Daemon,
    /// `virtio_uml.device=SOCK:1` on switchyard's `--port vhost-user`
    /// (uml_virtio_tcp).
    Virtio,
}

/// The guests' MACs (server, client), the same on either transport.
const MACS: [&str; 2] = ["02:00:00:00:0b:02", "02:00:00:00:0b:01"];

/// The vhost-user sockets of the run `tag` (server, client).
pub fn virtio_sockets(workdir: &Path, tag: &str) -> [PathBuf; 2] {
    ["s", "c"].map(|g| workdir.join(format!("{tag}-{g}.vu")))
}

/// switchyard's arguments for uml_virtio_tcp: one vhost-user port per
/// guest, offering the guest its MAC.
pub fn virtio_ports(workdir: &Path, tag: &str) -> Vec<String> {
    virtio_sockets(workdir, tag)
        .iter()
        .zip(MACS)
        .flat_map(|(sock, mac)| {
            [
                "--port".to_owned(),
                format!("vhost-user,path={},mac={mac}", sock.display()),
            ]
        })
        .collect()
}

/// One iperf3 run between the guests.
#[derive(Clone, Debug)]
pub struct UmlTcpSample {
    /// Receiver-side goodput (iperf3 `end.sum_received.bits_per_second`).
    pub bits_per_s: f64,
    /// Sender-side TCP retransmissions.
    pub retransmits: f64,
    /// tx_dropped of the sending guest's eth0: frames its UML driver
    /// could not hand to the switch (a full socket: EAGAIN).
    pub tx_dropped: f64,
    /// Switch CPU while the client's iperf3 ran, in % of one core.
    pub switch_cpu_pct: Option<f64>,
}

impl UmlTcpSample {
    /// Switch CPU (% of one core) per Gbit/s moved: lower is better.
    pub fn cpu_per_gbps(&self) -> f64 {
        self.switch_cpu_pct
            .map_or(f64::NAN, |c| c / (self.bits_per_s / 1e9))
    }
}

/// The User-mode Linux kernel (Debian package user-mode-linux).
pub fn find_linux() -> Result<PathBuf> {
    world::find_in_path("linux.uml")
        .or_else(|| world::find_in_path("linux"))
        .context(
            "User-mode Linux is not installed (needed by uml_tcp): `apt-get install \
             user-mode-linux` (tests/bench/run.sh does that), or leave uml_tcp out with --only",
        )
}

/// Boot the two guests on the switch `t`, run iperf3 between them, and
/// read the client's result from its console.
pub fn iperf(t: &Target, cfg: &Config, nic: UmlNic) -> Result<UmlTcpSample> {
    let linux = cfg
        .linux
        .as_deref()
        .context("uml_tcp: the UML kernel was not looked up at start-up (a bug)")?;
    let init = install_init(t.workdir)?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let secs = cfg.iperf_time.as_secs_f64();
    // iperf3 inside the guests gives up after this (both the server that
    // never sees a client and a client whose run stalls).
    let limit = (BOOT_AND_SETUP.as_secs_f64() + secs).ceil().to_string();
    let secs = format!("{secs}");
    let [srv_sock, cli_sock] = virtio_sockets(t.workdir, t.tag);
    let spec = |mac: &str, sock: &Path| match nic {
        UmlNic::Daemon => format!("eth0=daemon,{mac},unix,{}", t.ctl.display()),
        UmlNic::Virtio => format!("virtio_uml.device={}:1", sock.display()),
    };
    let guest = |label: &str, mac: &str, sock: &Path, ip: &str, role: &[(&str, &str)]| {
        let mut params = vec![
            spec(mac, sock),
            format!("IP={ip}/24"),
            format!("LIMIT={limit}"),
        ];
        if nic == UmlNic::Virtio {
            params.push("VIRTIO=1".into());
        }
        params.extend(role.iter().map(|(k, v)| format!("{k}={v}")));
        Guest::start(
            linux,
            &init,
            t.workdir,
            &format!("syb{}-{n}{label}", std::process::id()),
            &params,
            t.workdir.join(format!("{}-{label}.console", t.tag)),
        )
    };
    let mut server = guest("s", MACS[0], &srv_sock, SERVER_IP, &[("ROLE", "server")])?;
    let mut client = guest(
        "c",
        MACS[1],
        &cli_sock,
        CLIENT_IP,
        &[("ROLE", "client"), ("PEER", SERVER_IP), ("SECS", &secs)],
    )?;

    let mut cpu = CpuWindow::new(t.pid);
    let status = client.wait_exit(
        BOOT_AND_SETUP + cfg.iperf_time + Duration::from_secs(10),
        |console| cpu.watch(console),
    )?;
    let console = client.console();
    let Some(status) = status else {
        bail!(
            "the client guest did not power off in time; its console:\n{}",
            tail(&console)
        );
    };
    if let Some(e) = console.lines().find(|l| l.starts_with("SYB_ERROR=")) {
        bail!("client guest: {e}; its console:\n{}", tail(&console));
    }
    let sample = parse_console(&console).with_context(|| {
        format!(
            "client guest ({status}); its console:\n{}\nserver guest's console:\n{}",
            tail(&console),
            tail(&server.console())
        )
    })?;
    // The server guest powers off once its one test is over.
    if server.wait_exit(Duration::from_secs(15), |_| {})?.is_none() {
        bail!(
            "the server guest did not power off after the test; its console:\n{}",
            tail(&server.console())
        );
    }
    Ok(UmlTcpSample {
        switch_cpu_pct: cpu.pct(),
        ..sample
    })
}

/// The switch's CPU time from the client's SYB_IPERF_GO to its
/// SYB_IPERF_BEGIN (iperf3's run plus a connect), seen on its console.
struct CpuWindow {
    pid: u32,
    start: Option<(Instant, Option<f64>)>,
    end: Option<(Instant, Option<f64>)>,
}

impl CpuWindow {
    fn new(pid: u32) -> CpuWindow {
        CpuWindow {
            pid,
            start: None,
            end: None,
        }
    }

    fn watch(&mut self, console: &str) {
        let snap = || Some((Instant::now(), process_cpu_s(self.pid)));
        if self.start.is_none() && console.contains("SYB_IPERF_GO") {
            self.start = snap();
        } else if self.start.is_some() && self.end.is_none() && console.contains("SYB_IPERF_BEGIN")
        {
            self.end = snap();
        }
    }

    /// % of one core over the window, if both ends were seen.
    fn pct(&self) -> Option<f64> {
        let ((t0, c0), (t1, c1)) = (self.start?, self.end?);
        let (wall, used) = ((t1 - t0).as_secs_f64(), c1? - c0?);
        (wall > 0.0).then(|| 100.0 * used / wall)
    }
}

/// The client's numbers from its console: the iperf3 JSON between the
/// markers and the tx_dropped line.
fn parse_console(console: &str) -> Result<UmlTcpSample> {
    let begin = console
        .find("SYB_IPERF_BEGIN")
        .context("the client guest printed no iperf3 result (no SYB_IPERF_BEGIN)")?;
    let end = console[begin..]
        .find("SYB_IPERF_END")
        .map(|e| begin + e)
        .context("the client guest's iperf3 output is cut short (no SYB_IPERF_END)")?;
    let tcp = tcp::parse_iperf_json(&console[begin..end])?;
    let tx_dropped = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("SYB_TX_DROPPED="))
        .context("the client guest printed no SYB_TX_DROPPED line")?;
    let tx_dropped: f64 = tx_dropped
        .trim()
        .parse()
        .with_context(|| format!("bad tx_dropped {tx_dropped:?} from the client guest"))?;
    Ok(UmlTcpSample {
        bits_per_s: tcp.bits_per_s,
        retransmits: tcp.retransmits,
        tx_dropped,
        switch_cpu_pct: None,
    })
}

/// The last 3000 bytes of a console, for error messages.
pub(super) fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(3000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Write [`INIT`] into `dir` (once), executable.
fn install_init(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("uml-init.sh");
    if !path.exists() {
        fs::write(&path, INIT).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(path)
}

/// A running guest: the UML kernel process in a process group of its own
/// (its helper processes join it). Dropping it SIGKILLs the group if the
/// guest has not exited, and always reaps the kernel process.
struct Guest {
    child: Child,
    console: PathBuf,
    exited: Option<ExitStatus>,
}

impl Guest {
    fn start(
        linux: &Path,
        init: &Path,
        workdir: &Path,
        umid: &str,
        params: &[String],
        console: PathBuf,
    ) -> Result<Guest> {
        let mut cmd = Command::new(linux);
        switchyard_tests::uml::boot_args(&mut cmd, umid, workdir, GUEST_MEM, init);
        cmd.args(params);
        let f =
            File::create(&console).with_context(|| format!("creating {}", console.display()))?;
        let g = f.try_clone().context("duplicating the console file")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(g))
            .process_group(0);
        world::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the UML guest {umid} ({})", linux.display()))?;
        Ok(Guest {
            child,
            console,
            exited: None,
        })
    }

    /// Wait up to `timeout` for the guest to power off; None on timeout.
    /// `watch` sees the console at every poll while the guest runs.
    fn wait_exit(
        &mut self,
        timeout: Duration,
        mut watch: impl FnMut(&str),
    ) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            sys::check_interrupted()?;
            watch(&self.console());
            if let Some(s) = self.child.try_wait().context("waiting for a UML guest")? {
                self.exited = Some(s);
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn console(&self) -> String {
        fs::read_to_string(&self.console).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group our unreaped child leads;
            // its id cannot have been recycled while the child is unreaped.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_parses() {
        let console = "boot noise\nSYB_READY\nSYB_IPERF_BEGIN\n{\"start\":{},\"end\":{\
            \"sum_sent\":{\"retransmits\":332},\"sum_received\":{\"bits_per_second\":7.66e8}}}\n\
            SYB_IPERF_END rc=0\nSYB_TX_DROPPED=332\nSYB_HALT\n";
        let s = parse_console(console).expect("parses");
        assert_eq!(s.bits_per_s, 7.66e8);
        assert_eq!(s.retransmits, 332.0);
        assert_eq!(s.tx_dropped, 332.0);
        assert!(parse_console("SYB_READY\nSYB_HALT\n").is_err());
    }

    #[test]
    fn cpu_window_runs_from_go_to_the_result() {
        let mut w = CpuWindow::new(std::process::id());
        w.watch("SYB_READY\n");
        assert!(w.pct().is_none());
        w.watch("SYB_READY\nSYB_IPERF_GO\n");
        assert!(w.pct().is_none());
        std::thread::sleep(Duration::from_millis(20));
        w.watch("SYB_READY\nSYB_IPERF_GO\nSYB_IPERF_BEGIN\n");
        assert!(w.pct().is_some_and(|p| p >= 0.0));
    }
}
