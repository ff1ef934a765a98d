//! Helpers for the `--port` transport tests (`tests/tests/transports_*.rs`):
//! namespace plumbing (veth pairs, multicast on `lo`, IPv6 off), guestless
//! QEMU with any `-netdev` backend, `switchyard ctl -j` queries with a tiny
//! JSON reader, log checks, an HTTP server for the passt test and a DHCP
//! client run that never touches the host's files.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::netns::Netns;
use crate::process::{describe, Proc, Stdin};
use crate::switch::{switchyard_bin, Switch};
use crate::util::{require_tool, run, wait_until};

/// How long a client (QEMU, a reconnecting stream port) may take to show up.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(15);

/// Like [`require_tool`], naming the Debian package in the error (the
/// shared table does not know every program these tests use).
pub fn need(name: &str, package: &str) -> Result<PathBuf> {
    require_tool(name).map_err(|_| {
        anyhow!("required program `{name}` not found on PATH (Debian package: {package}; tests/run.sh installs it)")
    })
}

/// Lets multicast work inside a bare namespace: `lo` multicast-capable and
/// the 224.0.0.0/4 route on it (protocols.md §3.3).
pub fn multicast_on_lo(ns: &Netns) -> Result<()> {
    ns.ip(["link", "set", "lo", "multicast", "on"])?;
    ns.ip(["route", "add", "224.0.0.0/4", "dev", "lo"])?;
    Ok(())
}

/// Turns IPv6 off in `ns` for interfaces that exist and those created
/// later, so that router solicitations and DAD do not add frames to counts.
pub fn disable_ipv6(ns: &Netns) -> Result<()> {
    ns.run(|| -> Result<()> {
        // /proc/sys/net belongs to the network namespace of the opener.
        for which in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{which}/disable_ipv6");
            std::fs::write(&path, "1").with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    })?
}

/// A veth pair: `a_dev` in `a`, `b_dev` in `b`, each addressed and up.
pub fn veth(
    a: &Netns,
    a_dev: &str,
    a_cidr: &str,
    b: &Netns,
    b_dev: &str,
    b_cidr: &str,
) -> Result<()> {
    a.ip([
        "link",
        "add",
        a_dev,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ])
    .with_context(|| format!("creating veth {a_dev}/{b_dev}"))?;
    a.addr_up(a_dev, a_cidr)?;
    b.addr_up(b_dev, b_cidr)?;
    Ok(())
}

/// Waits until `dev` has gone from `ns` (e.g. a tap whose owner died).
pub fn wait_link_gone(ns: &Netns, dev: &str) -> Result<()> {
    wait_until(
        Duration::from_secs(10),
        &format!("{dev} to disappear"),
        || !ns.has_link(dev),
    )
}

/// Guestless QEMU (protocols.md §3.4) joining the backend `backend`
/// (`TYPE,options`, e.g. `dgram,local.type=inet,…`; `id=s` is added) and a
/// tap `tap` created in `ns` through an internal hub. Waits for the tap,
/// gives it `mac` (stable across restarts, so peers' ARP caches stay
/// right) and `cidr`, and brings it up.
pub fn qemu_bridge(ns: &Netns, backend: &str, tap: &str, mac: &str, cidr: &str) -> Result<Proc> {
    let qemu = need("qemu-system-x86_64", "qemu-system-x86")?;
    let mut cmd = ns.command(qemu);
    cmd.args(["-machine", "none", "-nodefaults", "-display", "none"])
        .arg("-netdev")
        .arg(format!("{backend},id=s"))
        .args(["-netdev", "hubport,id=h1,hubid=0,netdev=s"])
        .arg("-netdev")
        .arg(format!("tap,id=t,ifname={tap},script=no,downscript=no"))
        .args(["-netdev", "hubport,id=h2,hubid=0,netdev=t"]);
    let label = format!("qemu {}", backend.split(',').next().unwrap_or(backend));
    let mut p = Proc::spawn(&label, cmd, Stdin::Null)?;
    wait_until(ATTACH_TIMEOUT, &format!("QEMU's tap {tap}"), || {
        ns.has_link(tap) || !p.is_running().unwrap_or(false)
    })
    .with_context(|| format!("QEMU with -netdev {backend}; output:\n{}", p.output()))?;
    if !p.is_running()? {
        bail!(
            "QEMU with -netdev {backend} exited early; output:\n{}",
            p.output()
        );
    }
    ns.ip(["link", "set", tap, "address", mac])?;
    ns.addr_up(tap, cidr).context("configuring QEMU's tap")?;
    Ok(p)
}

/// `vde_plug tap://TAP DIR` in `ns`, the tap up but without an address
/// (for DHCP). Compare [`crate::tools::vde_plug_tap`].
pub fn vde_plug_tap_unaddressed(ns: &Netns, dir: &Path, tap: &str) -> Result<Proc> {
    let vde_plug = need("vde_plug", "vdeplug")?;
    let mut cmd = ns.command(vde_plug);
    cmd.arg(format!("tap://{tap}")).arg(dir);
    let mut p = Proc::spawn(&format!("vde_plug {tap}"), cmd, Stdin::Pipe)?;
    wait_until(Duration::from_secs(10), &format!("tap {tap}"), || {
        ns.has_link(tap) || !p.is_running().unwrap_or(false)
    })?;
    if !p.is_running()? {
        bail!("vde_plug exited early; output:\n{}", p.output());
    }
    ns.ip(["link", "set", tap, "up"])?;
    Ok(p)
}

/// Runs `cmd` to completion within `timeout` (killed otherwise, process
/// group included) and returns its output; fails unless it exits 0.
pub fn run_bounded(label: &str, cmd: Command, timeout: Duration) -> Result<String> {
    let mut p = Proc::spawn(label, cmd, Stdin::Null)?;
    let status = p.wait_exit(timeout)?;
    let out = p.output();
    if !status.success() {
        bail!("{label} failed ({}); output:\n{out}", describe(status));
    }
    Ok(out)
}

/// The udhcpc script used instead of Debian's default, which would rewrite
/// the host's /etc/resolv.conf (the namespace shares the filesystem).
const DHCP_SCRIPT: &str = r#"#!/bin/sh
# switchyard tests: configure the lease with ip(8), touch no files.
case "$1" in
deconfig)
    ip link set "$interface" up
    ip -4 addr flush dev "$interface"
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
        ip route replace default via "${router%% *}" dev "$interface"
    fi
    echo "SY_LEASE ip=$ip mask=$mask router=$router dns=$dns"
    ;;
esac
exit 0
"#;

/// Runs `udhcpc -i DEV -q -n -t 5 -T 1` in `ns` with a script of our own
/// (written to `scratch`). Returns the leased address.
pub fn dhcp_lease(ns: &Netns, dev: &str, scratch: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let udhcpc = need("udhcpc", "udhcpc")?;
    need("busybox", "busybox")?;
    let script = scratch.join("udhcpc.sh");
    std::fs::write(&script, DHCP_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", script.display()))?;
    let mut cmd = ns.command(udhcpc);
    cmd.args(["-f", "-i", dev, "-q", "-n", "-t", "5", "-T", "1", "-s"])
        .arg(&script);
    let out = run_bounded("udhcpc", cmd, Duration::from_secs(30))?;
    let lease = out
        .lines()
        .find_map(|l| l.strip_prefix("SY_LEASE "))
        .with_context(|| format!("udhcpc reported no lease; output:\n{out}"))?;
    let ip = lease
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ip="))
        .unwrap_or_default()
        .to_string();
    ensure!(!ip.is_empty(), "udhcpc lease without an address: {lease}");
    Ok(ip)
}

/// Received packets of `dev` in `ns` (`ip -s -j link`).
pub fn rx_packets(ns: &Netns, dev: &str) -> Result<u64> {
    let out = ns.ip(["-s", "-j", "link", "show", "dev", dev])?;
    let j = json::parse(&out)?;
    j.get(0)
        .and_then(|l| l.get("stats64"))
        .and_then(|s| s.get("rx"))
        .and_then(|r| r.get("packets"))
        .and_then(json::Json::as_u64)
        .with_context(|| format!("no rx packet count for {dev} in {out}"))
}

/// Waits until the switch logged `port attached` for port `name` at least
/// `n` times in all.
pub fn wait_attached(sw: &mut Switch, name: &str, n: usize) -> Result<()> {
    sw.proc
        .wait_for_lines(&format!("port attached port={name} "), n, ATTACH_TIMEOUT)
}

/// Waits until the switch logged `port detached` for port `name` at least
/// `n` times in all.
pub fn wait_detached(sw: &mut Switch, name: &str, n: usize) -> Result<()> {
    sw.proc
        .wait_for_lines(&format!("port detached port={name} "), n, ATTACH_TIMEOUT)
}

/// True if `log` has a WARN line for port `port` and drop reason `reason`
/// (`reason="too_short"` or `reason=too_short`).
pub fn has_drop_warning(log: &str, port: &str, reason: &str) -> bool {
    let port_field = format!("port={port} ");
    let quoted = format!("reason=\"{reason}\"");
    let bare = format!("reason={reason} ");
    log.lines().any(|l| {
        let l = format!("{l} ");
        l.contains("WARN") && l.contains(&port_field) && (l.contains(&quoted) || l.contains(&bare))
    })
}

/// Fails unless the switch's log has the drop warning (waits a little: the
/// log line may trail the counter).
pub fn expect_drop_warning(sw: &Switch, port: &str, reason: &str) -> Result<()> {
    let what = format!("a WARN line for port={port} reason={reason}");
    wait_until(Duration::from_secs(3), &what, || {
        has_drop_warning(&sw.proc.output(), port, reason)
    })
    .with_context(|| format!("switch log:\n{}", sw.proc.output()))
}

/// `switchyard ctl -s SOCK -j …` against a switch started with `--control SOCK`.
#[derive(Debug, Clone)]
pub struct Ctl {
    sock: PathBuf,
}

impl Ctl {
    pub fn new(sock: &Path) -> Ctl {
        Ctl {
            sock: sock.to_path_buf(),
        }
    }

    /// `--control SOCK`, for the switch's command line.
    pub fn args(&self) -> [std::ffi::OsString; 2] {
        ["--control".into(), self.sock.clone().into_os_string()]
    }

    /// `switchyard ctl -s SOCK -j ARGS…`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<json::Json> {
        let mut cmd = Command::new(switchyard_bin()?);
        cmd.arg("ctl")
            .arg("-s")
            .arg(&self.sock)
            .arg("-j")
            .args(args);
        let out = run(&mut cmd)?;
        json::parse(out.trim())
            .with_context(|| format!("`switchyard ctl -j {}` printed {out:?}", args.join(" ")))
    }

    /// The `ports` list.
    pub fn ports(&self) -> Result<Vec<json::Json>> {
        let j = self.json(&["ports"])?;
        j.get("ports")
            .and_then(json::Json::as_array)
            .cloned()
            .with_context(|| format!("`ctl -j ports` has no ports array: {j}"))
    }

    /// The entry of port `name`.
    pub fn port(&self, name: &str) -> Result<json::Json> {
        let ports = self.ports()?;
        let names: Vec<&str> = ports
            .iter()
            .filter_map(|p| p.get("name").and_then(json::Json::as_str))
            .collect();
        ports
            .iter()
            .find(|p| p.get("name").and_then(json::Json::as_str) == Some(name))
            .cloned()
            .with_context(|| format!("`ctl ports` lists no port {name:?}; it lists {names:?}"))
    }

    /// Fails unless port `name` is up and has passed frames both ways.
    pub fn expect_traffic(&self, name: &str) -> Result<()> {
        let p = self.port(name)?;
        let rx = counter(&p, "rx_frames");
        let tx = counter(&p, "tx_frames");
        ensure!(
            rx > 0 && tx > 0,
            "port {name} counted rx_frames={rx} tx_frames={tx}; expected both > 0: {p}"
        );
        ensure!(
            p.get("state").and_then(json::Json::as_str) == Some("up"),
            "port {name} is not up: {p}"
        );
        Ok(())
    }
}

/// A numeric field of a `ctl ports` entry (0 when absent).
pub fn counter(port: &json::Json, field: &str) -> u64 {
    port.get(field).and_then(json::Json::as_u64).unwrap_or(0)
}

/// Drops of `reason` in a `ctl ports` entry (0 when absent).
pub fn drops(port: &json::Json, reason: &str) -> u64 {
    port.get("drops")
        .and_then(|d| d.get(reason))
        .and_then(json::Json::as_u64)
        .unwrap_or(0)
}

/// Accepts on a non-blocking `listener` in a thread, handing each
/// connection to `handle`, until `stop` is set.
pub fn serve_accepts(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    mut handle: impl FnMut(std::net::TcpStream, std::net::SocketAddr) + Send + 'static,
) -> JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((conn, peer)) => handle(conn, peer),
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// A minimal HTTP/1.0 server answering every request with `body`, on a
/// socket bound inside a namespace; stopped and joined on drop.
#[derive(Debug)]
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` (e.g. `127.0.0.1:8080`) inside `ns` and serves.
    pub fn start(ns: &Netns, addr: &str, body: &str) -> Result<HttpServer> {
        let listener = ns
            .run(|| TcpListener::bind(addr))?
            .with_context(|| format!("binding the HTTP server to {addr}"))?;
        listener
            .set_nonblocking(true)
            .context("configuring the HTTP listener")?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (s, r, body) = (stop.clone(), requests.clone(), body.to_string());
        let thread = serve_accepts(listener, s, move |conn, _| {
            r.fetch_add(1, Ordering::SeqCst);
            let _ = answer_http(conn, &body);
        });
        Ok(HttpServer {
            stop,
            requests,
            thread: Some(thread),
        })
    }

    /// Connections accepted so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer_http(mut conn: TcpStream, body: &str) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
        match conn.read(&mut buf)? {
            0 => break,
            n => req.extend_from_slice(&buf[..n]),
        }
    }
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes())?;
    conn.flush()
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Just enough JSON for `switchyard ctl -j` and `ip -j`.
pub mod json {
    use anyhow::Result;

    /// A JSON value (`switchyard ctl -j` output).
    pub type Json = serde_json::Value;

    /// Parses one JSON document.
    pub fn parse(text: &str) -> Result<Json> {
        Ok(serde_json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::has_drop_warning;

    #[test]
    fn drop_warnings_are_recognised() {
        let log = "2026-11-23T10:14:11Z  WARN dropping bad frames from this port's peer port=u1 reason=\"too_short\" suppressed=0\n\
                   2026-11-23T10:14:11Z  INFO port attached port=st:1 peer=127.0.0.1:55182\n";
        assert!(has_drop_warning(log, "u1", "too_short"));
        assert!(!has_drop_warning(log, "u1", "too_long"));
        assert!(!has_drop_warning(log, "u", "too_short"));
        assert!(!has_drop_warning(log, "st:1", "too_short"));
    }
}
