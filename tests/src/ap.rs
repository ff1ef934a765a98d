//! The simulated Wi-Fi access point of `shared/reference/mac-nat.md` §5.2,
//! built inside namespaces the test owns, plus the pieces the MAC-NAT
//! end-to-end tests (`tests/tests/macnat_ap.rs`) put around it:
//!
//! * [`Ap`]: namespace `ap` with a kernel bridge `br0` (198.51.100.1,
//!   2001:db8:77::1) whose port `ap-sta` is the radio link to the station
//!   and whose port `ap-lan` leads to namespace `lan` (a wired LAN host,
//!   198.51.100.2, 2001:db8:77::2). nftables bridge rules on `ap-sta` drop
//!   frames from any source MAC but the station's and unicast to any MAC but
//!   the station's; their counters are the oracle of what the AP rejected.
//!   dnsmasq serves DHCPv4, router advertisements (SLAAC) and DHCPv6, with
//!   all its files in the test's temp dir. The station is `wlan0` in
//!   namespace `host`, where the switch runs.
//! * [`LanServer`]: a TCP listener in the LAN namespace that tells every
//!   client the address it saw the connection come from.
//! * The guest agent ([`agent_main`]): what one guest does (DHCPv4 with
//!   busybox udhcpc and a script of our own, SLAAC, a small DHCPv6 client,
//!   pings and TCP connections from each address). The test binary runs
//!   itself as the agent inside each guest's namespace, and inside a UML
//!   guest (which sees the host's filesystem), so every guest runs the same
//!   code. It prints `SY_…` lines that [`AgentReport`] parses.
//!
//! Only documentation addresses are used; nothing touches the host's own
//! configuration (dnsmasq runs with `--conf-file=/dev/null --no-resolv
//! --no-hosts`, DNS off, pid and lease files in the temp dir; udhcpc runs
//! with a script that only calls ip(8)).

use std::io::{BufRead, BufReader, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::netns::Netns;
use crate::process::{Proc, Stdin};
use crate::transports::need;
use crate::util::{run, wait_until, TempDir};

/// The associated station's MAC (the switch's NIC, `wlan0`).
pub const STA_MAC: &str = "02:00:00:00:00:01";
/// The AP's bridge (router, DHCP and RA server).
pub const AP_MAC: &str = "02:00:00:00:aa:01";
/// The LAN host behind the AP.
pub const LAN_MAC: &str = "02:00:00:00:bb:01";
pub const AP_V4: &str = "198.51.100.1";
pub const LAN_V4: &str = "198.51.100.2";
pub const AP_V6: &str = "2001:db8:77::1";
pub const LAN_V6: &str = "2001:db8:77::2";
/// The station's interface in the host namespace.
pub const STA_DEV: &str = "wlan0";
/// The port of the LAN host's TCP listener.
pub const TCP_PORT: u16 = 7777;

/// MAC of guest `n` (1-based): `02:00:00:00:NN:01`.
pub fn guest_mac(n: u8) -> String {
    format!("02:00:00:00:{n:02x}:01")
}

/// The SLAAC address a guest with MAC `02:00:00:00:NN:01` forms in
/// 2001:db8:77::/64 (EUI-64, universal/local bit flipped).
pub fn slaac_of(n: u8) -> Ipv6Addr {
    // 02:00:00 | ff:fe | 00:NN:01 → 0000:00ff:fe00:NN01
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x77,
        0,
        0,
        0xff,
        0xfe00,
        (u16::from(n) << 8) | 1,
    )
}

/// The simulated access point, the LAN host and the station's namespace.
/// Fields drop in order: dnsmasq first, then the namespaces.
#[derive(Debug)]
pub struct Ap {
    pub dnsmasq: Proc,
    /// Where the switch runs; `wlan0` is the station.
    pub host: Netns,
    pub ap: Netns,
    pub lan: Netns,
    pub leases: PathBuf,
}

impl Ap {
    /// Builds the AP in fresh namespaces; dnsmasq's files go to `tmp`.
    pub fn new(tmp: &TempDir) -> Result<Ap> {
        need("nft", "nftables")?;
        let dnsmasq_bin = need("dnsmasq", "dnsmasq-base")?;
        need("bridge", "iproute2")?;
        let ethtool = need("ethtool", "ethtool")?;
        let (host, ap, lan) = (Netns::new()?, Netns::new()?, Netns::new()?);
        ap.ip(["link", "add", "br0", "address", AP_MAC, "type", "bridge"])?;
        ap.ip([
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        host.ip([
            "link",
            "add",
            STA_DEV,
            "address",
            STA_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "ap-sta",
            "netns",
            ap.name(),
        ])
        .context("creating the station's veth")?;
        lan.ip([
            "link",
            "add",
            "lan0",
            "address",
            LAN_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "ap-lan",
            "netns",
            ap.name(),
        ])
        .context("creating the LAN host's veth")?;
        for port in ["ap-sta", "ap-lan"] {
            ap.ip(["link", "set", port, "master", "br0"])?;
        }
        // The AP is an IPv6 router (RAs with a router lifetime); nobody
        // forwards IPv4 (§3.6: the host must not route guests' frames back).
        sysctl(&ap, "net/ipv6/conf/all/forwarding", "1")?;
        let rules = tmp.join("ap.nft");
        std::fs::write(&rules, nft_rules()).context("writing the AP's nftables rules")?;
        run(ap.command("nft").arg("-f").arg(&rules)).context("loading the AP's nftables rules")?;
        for dev in ["br0", "ap-sta", "ap-lan"] {
            ap.ip(["link", "set", dev, "up"])?;
        }
        // The AP's radio port keeps TX checksum offload on: the station
        // then captures CHECKSUM_PARTIAL frames (only the pseudo-header sum
        // in the UDP/TCP checksum field), and switchyard's pcap port must
        // complete them, or guests drop every DHCP offer and TCP reply.
        run(ap.command(&ethtool).args(["-k", "ap-sta"]))
            .context("reading the AP's radio port offloads")?;
        ap.ip(["addr", "add", &format!("{AP_V4}/24"), "dev", "br0"])?;
        ap.ip(["addr", "add", &format!("{AP_V6}/64"), "dev", "br0", "nodad"])?;
        lan.ip(["addr", "add", &format!("{LAN_V4}/24"), "dev", "lan0"])?;
        lan.ip([
            "addr",
            "add",
            &format!("{LAN_V6}/64"),
            "dev",
            "lan0",
            "nodad",
        ])?;
        lan.ip(["link", "set", "lan0", "up"])?;
        host.ip(["link", "set", STA_DEV, "up"])?;
        // dnsmasq's RA needs br0's link-local address to be usable.
        wait_until(Duration::from_secs(10), "br0's link-local address", || {
            ap.ip(["-6", "addr", "show", "dev", "br0", "scope", "link"])
                .is_ok_and(|o| o.contains("fe80") && !o.contains("tentative"))
        })?;
        let leases = tmp.join("dnsmasq.leases");
        let mut cmd = ap.command(dnsmasq_bin);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            "--dhcp-range=198.51.100.100,198.51.100.199,255.255.255.0,1h",
            "--dhcp-range=2001:db8:77::100,2001:db8:77::1ff,slaac,64,1h",
            // No ping check before an offer: it delays every OFFER by 3 s.
            "--no-ping",
            "--enable-ra",
            "--ra-param=br0,4",
            "--log-dhcp",
            "--log-facility=-",
            "--user=root",
        ])
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg(format!("--pid-file={}", tmp.join("dnsmasq.pid").display()));
        let mut dnsmasq = Proc::spawn("dnsmasq", cmd, Stdin::Null)?;
        dnsmasq.wait_for_output("router advertisement on", Duration::from_secs(10))?;
        Ok(Ap {
            dnsmasq,
            host,
            ap,
            lan,
            leases,
        })
    }

    /// Packets counted so far by the AP's drop rule in chain `chain`
    /// (`from_sta`: wrong source MAC from the station; `to_sta`: unicast to
    /// a MAC that is not the station's).
    pub fn dropped(&self, chain: &str) -> Result<u64> {
        let out = run(self
            .ap
            .command("nft")
            .args(["list", "chain", "bridge", "wifi", chain]))?;
        let n = out
            .split("packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no packet counter in chain {chain}: {out}"))?;
        Ok(n)
    }

    /// Both oracle counters: (from_sta, to_sta).
    pub fn oracle(&self) -> Result<(u64, u64)> {
        Ok((self.dropped("from_sta")?, self.dropped("to_sta")?))
    }
}

/// The association filter of §5.2, on the AP's radio port `ap-sta`.
fn nft_rules() -> String {
    format!(
        r#"table bridge wifi {{
  chain from_sta {{
    type filter hook prerouting priority -300; policy accept;
    iifname "ap-sta" ether saddr != {STA_MAC} counter drop comment "source MAC is not the associated station"
  }}
  chain to_sta {{
    type filter hook postrouting priority 300; policy accept;
    oifname "ap-sta" ether daddr != {STA_MAC} ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 counter drop comment "unicast to a MAC that is not associated"
  }}
}}
"#
    )
}

/// Writes `value` to /proc/sys/`key` inside `ns`.
pub fn sysctl(ns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    ns.run(|| std::fs::write(&path, value))?
        .with_context(|| format!("writing {path} in {}", ns.name()))
}

/// A guest: a namespace with `vde_plug tap://eth0 DIR`, the tap given
/// [`guest_mac`]`(n)` and brought up without an address. Fields drop in
/// order: the plug first, then the namespace.
#[derive(Debug)]
pub struct TapGuest {
    pub plug: Proc,
    pub ns: Netns,
    pub n: u8,
    pub mac: String,
}

/// The guest's interface name inside its namespace.
pub const GUEST_DEV: &str = "eth0";

/// `vde_plug tap://eth0 DIR` in `ns`; waits for the tap to exist.
fn plug_tap(ns: &Netns, dir: &Path, n: u8) -> Result<Proc> {
    let vde_plug = need("vde_plug", "vdeplug")?;
    let mut cmd = ns.command(vde_plug);
    cmd.arg(format!("tap://{GUEST_DEV}")).arg(dir);
    let mut plug = Proc::spawn(&format!("vde_plug g{n}"), cmd, Stdin::Pipe)?;
    // A tap that is up shows NO-CARRIER until a program holds it open
    // (matters for a persistent tap, which exists before its plug).
    let attached = || {
        ns.ip(["-o", "link", "show", "dev", GUEST_DEV])
            .is_ok_and(|o| !o.contains("NO-CARRIER"))
    };
    wait_until(Duration::from_secs(10), &format!("guest {n}'s tap"), || {
        attached() || !plug.is_running().unwrap_or(false)
    })?;
    if !plug.is_running()? {
        bail!(
            "vde_plug of guest {n} exited early; output:\n{}",
            plug.output()
        );
    }
    Ok(plug)
}

/// How a [`TapGuest`] is set up before its interface comes up.
#[derive(Debug, Clone, Default)]
pub struct GuestSetup {
    /// Create `eth0` as a persistent tap first, so that it (and its
    /// addresses) outlive the plug: the guest can be re-plugged
    /// ([`TapGuest::replug`]), like a VM whose NIC reconnects.
    pub persistent_tap: bool,
    /// `(key, value)` written under /proc/sys in the guest's namespace
    /// once `eth0` exists, before it comes up (e.g.
    /// `net/ipv6/conf/eth0/enhanced_dad`).
    pub sysctls: Vec<(String, String)>,
}

impl TapGuest {
    pub fn start(dir: &Path, n: u8) -> Result<TapGuest> {
        Self::start_with(dir, n, &GuestSetup::default())
    }

    /// Like [`TapGuest::start`], set up as `setup` says.
    pub fn start_with(dir: &Path, n: u8, setup: &GuestSetup) -> Result<TapGuest> {
        let ns = Netns::new()?;
        if setup.persistent_tap {
            ns.ip(["tuntap", "add", "dev", GUEST_DEV, "mode", "tap"])
                .with_context(|| format!("creating guest {n}'s persistent tap"))?;
        }
        let plug = plug_tap(&ns, dir, n)?;
        for (k, v) in &setup.sysctls {
            sysctl(&ns, k, v)?;
        }
        let mac = guest_mac(n);
        ns.ip(["link", "set", GUEST_DEV, "address", &mac])?;
        ns.ip(["link", "set", GUEST_DEV, "up"])?;
        Ok(TapGuest { plug, ns, n, mac })
    }

    /// Kills the plug and plugs the same (persistent) tap into the switch
    /// at `dir` again: a new switch port, same MAC and addresses.
    pub fn replug(&mut self, dir: &Path) -> Result<()> {
        self.plug.kill()?;
        ensure!(
            self.ns.has_link(GUEST_DEV),
            "guest {}'s tap went away with its plug; start it with GuestSetup::persistent_tap",
            self.n
        );
        self.plug = plug_tap(&self.ns, dir, self.n)?;
        Ok(())
    }

    /// Starts the agent ([`agent_main`]) in this guest's namespace.
    pub fn spawn_agent(&self, env: &AgentEnv) -> Result<Proc> {
        let mut cmd = self.ns.command(agent_exe()?);
        env.apply(&mut cmd, GUEST_DEV);
        Proc::spawn(&format!("agent g{}", self.n), cmd, Stdin::Null)
    }
}

/// The `sy-guest-agent` binary built beside the test binaries
/// (target/<profile>/, two levels above target/<profile>/deps/<test>).
pub fn agent_exe() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).ok_or_else(|| {
        anyhow::anyhow!("cannot locate the target directory from {}", exe.display())
    })?;
    let agent = dir.join("sy-guest-agent");
    anyhow::ensure!(
        agent.exists(),
        "{} is missing: build the test crate's binaries (cargo build -p switchyard-tests)",
        agent.display()
    );
    Ok(agent)
}

/// The agent's parameters, passed as `SY_…` environment variables (a UML
/// guest gets them from its kernel command line).
#[derive(Debug, Clone)]
pub struct AgentEnv {
    /// The udhcpc script ([`write_udhcpc_script`]).
    pub script: PathBuf,
    /// Also run DHCPv6 and use its address.
    pub dhcpv6: bool,
}

impl AgentEnv {
    pub fn apply(&self, cmd: &mut Command, dev: &str) {
        for (k, v) in self.vars(dev) {
            cmd.env(k, v);
        }
    }

    /// `(KEY, value)` pairs.
    pub fn vars(&self, dev: &str) -> Vec<(String, String)> {
        vec![
            ("SY_AGENT".into(), "1".into()),
            ("SY_DEV".into(), dev.into()),
            ("SY_SCRIPT".into(), self.script.display().to_string()),
            ("SY_DHCP6".into(), u8::from(self.dhcpv6).to_string()),
        ]
    }
}

/// Our udhcpc script: applies the lease with ip(8) and prints it; touches
/// no file (Debian's default script would rewrite /etc/resolv.conf).
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# switchyard MAC-NAT tests: configure the lease with ip(8), touch no files.
case "$1" in
deconfig)
    ip link set "$interface" up
    ip -4 addr flush dev "$interface"
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "SY_LEASE ip=$ip mask=$mask router=$router"
    ;;
leasefail|nak)
    echo "SY_LEASEFAIL $1"
    ;;
esac
exit 0
"#;

/// Writes the udhcpc script to `dir/udhcpc.sh` (mode 0755) and returns its path.
pub fn write_udhcpc_script(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("udhcpc.sh");
    std::fs::write(&path, UDHCPC_SCRIPT).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// What one agent run reported.
#[derive(Debug, Clone, Default)]
pub struct AgentReport {
    pub dhcp4: Option<Ipv4Addr>,
    pub slaac: Option<Ipv6Addr>,
    pub dhcp6: Option<Ipv6Addr>,
    /// `src -> dst` of successful pings.
    pub pings: Vec<String>,
    /// `src -> dst` of TCP connections whose peer address, as the LAN
    /// host saw it, was `src`.
    pub tcp: Vec<String>,
    pub ok: bool,
    pub output: String,
}

impl AgentReport {
    pub fn parse(output: &str) -> AgentReport {
        let mut r = AgentReport {
            output: output.to_string(),
            ..Default::default()
        };
        for line in output.lines() {
            // Only the SY_ lines matter; anything else is noise.
            let Some(at) = line.find("SY_") else {
                continue;
            };
            let line = line[at..].trim();
            if let Some(v) = line.strip_prefix("SY_DHCP4=") {
                r.dhcp4 = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("SY_SLAAC=") {
                r.slaac = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("SY_DHCP6ADDR=") {
                r.dhcp6 = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("SY_PING_OK ") {
                r.pings.push(v.to_string());
            } else if let Some(v) = line.strip_prefix("SY_TCP_OK ") {
                r.tcp.push(v.to_string());
            } else if line == "SY_AGENT_RESULT=OK" {
                r.ok = true;
            }
        }
        r
    }

    /// Every address the guest ended up with.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = Vec::new();
        v.extend(self.dhcp4.map(IpAddr::V4));
        v.extend(self.slaac.map(IpAddr::V6));
        v.extend(self.dhcp6.map(IpAddr::V6));
        v
    }
}

/// The guest's side, run by the `guest_agent` test inside a guest (its
/// namespace, or a UML guest): DHCPv4, SLAAC, optionally DHCPv6, then from
/// each address a ping and a TCP connection to the LAN host. Prints
/// `SY_…` lines and `SY_AGENT_RESULT=OK` or `SY_AGENT_RESULT=FAIL …`.
pub fn agent_main() -> Result<()> {
    let dev = std::env::var("SY_DEV").context("SY_DEV")?;
    let script = std::env::var("SY_SCRIPT").context("SY_SCRIPT")?;
    let dhcpv6 = std::env::var("SY_DHCP6").is_ok_and(|v| v == "1");
    match agent_steps(&dev, &script, dhcpv6) {
        Ok(()) => println!("SY_AGENT_RESULT=OK"),
        Err(e) => println!("SY_AGENT_RESULT=FAIL {e:#}"),
    }
    std::io::stdout().flush()?;
    Ok(())
}

fn agent_steps(dev: &str, script: &str, dhcpv6: bool) -> Result<()> {
    let t0 = Instant::now();
    let out = Command::new("udhcpc")
        .args([
            "-f", "-q", "-n", "-t", "6", "-T", "1", "-i", dev, "-s", script,
        ])
        .output()
        .context("running udhcpc (Debian package udhcpc/busybox)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v4: Ipv4Addr = text
        .lines()
        .find_map(|l| l.strip_prefix("SY_LEASE ip="))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| {
            format!(
                "udhcpc got no lease ({}): {text} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    println!("SY_DHCP4={v4}");
    println!("SY_TIMING dhcp4 {:?}", t0.elapsed());
    let slaac = wait_global_v6(dev, 64, Duration::from_secs(20)).context("SLAAC")?;
    println!("SY_SLAAC={slaac}");
    let mut sources: Vec<IpAddr> = vec![IpAddr::V4(v4), IpAddr::V6(slaac)];
    if dhcpv6 {
        let mac = read_mac(dev)?;
        let a = dhcpv6_lease(dev, mac, Duration::from_secs(20)).context("DHCPv6")?;
        let out = Command::new("ip")
            .args(["-6", "addr", "add", &format!("{a}/128"), "dev", dev])
            .output()?;
        ensure!(
            out.status.success(),
            "ip addr add {a}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_global_v6(dev, 128, Duration::from_secs(10)).context("DAD of the DHCPv6 address")?;
        println!("SY_DHCP6ADDR={a}");
        sources.push(IpAddr::V6(a));
    }
    println!("SY_TIMING addresses {:?}", t0.elapsed());
    let lan4: IpAddr = LAN_V4.parse()?;
    let lan6: IpAddr = LAN_V6.parse()?;
    for src in sources {
        let dst = if src.is_ipv4() { lan4 } else { lan6 };
        ping_from(src, dst)?;
        println!("SY_PING_OK {src} -> {dst}");
        let seen = tcp_probe(src, SocketAddr::new(dst, TCP_PORT))?;
        ensure!(
            seen == src,
            "the LAN host saw the TCP connection from {src} come from {seen}"
        );
        println!("SY_TCP_OK {src} -> {dst}");
    }
    println!("SY_TIMING checks {:?}", t0.elapsed());
    Ok(())
}

/// Pings `dst` from `src` (a few tries for the first echo: neighbour
/// resolution through the MAC-NAT, then `-c 3`).
fn ping_from(src: IpAddr, dst: IpAddr) -> Result<()> {
    let (s, d) = (src.to_string(), dst.to_string());
    for _ in 0..5 {
        let ok = Command::new("ping")
            .args(["-n", "-c", "1", "-W", "1", "-I", &s, &d])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            break;
        }
    }
    let out = Command::new("ping")
        .args(["-n", "-c", "3", "-i", "0.2", "-W", "2", "-I", &s, &d])
        .output()
        .context("running ping")?;
    ensure!(
        out.status.success(),
        "ping -I {s} {d} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The MAC of `dev` in the caller's namespace (from ip(8): /sys may be
/// the sysfs of another namespace).
fn read_mac(dev: &str) -> Result<[u8; 6]> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", dev])
        .output()
        .context("ip link show")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no link/ether for {dev}: {text}"))?;
    parse_mac(mac)
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(mac: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing MAC {mac:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("MAC {mac:?} is not 6 bytes"))
}

/// Waits for a global, non-tentative IPv6 address with prefix length
/// `plen` on `dev` (in the caller's namespace) and returns it.
pub fn wait_global_v6(dev: &str, plen: u64, timeout: Duration) -> Result<Ipv6Addr> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new("ip")
            .args(["-j", "-6", "addr", "show", "dev", dev, "scope", "global"])
            .output()
            .context("ip -6 addr")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(a) = global_v6(&text, plen)? {
            return Ok(a);
        }
        if Instant::now() >= deadline {
            let all = Command::new("ip").args(["addr"]).output()?;
            bail!(
                "no global /{plen} IPv6 address on {dev} after {timeout:?}: {}",
                String::from_utf8_lossy(&all.stdout)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The first usable global address of prefix length `plen` in `ip -j -6
/// addr` output.
pub fn global_v6(json_text: &str, plen: u64) -> Result<Option<Ipv6Addr>> {
    if json_text.trim().is_empty() {
        return Ok(None);
    }
    let j: serde_json::Value = serde_json::from_str(json_text)
        .with_context(|| format!("parsing ip -j output {json_text:?}"))?;
    let infos = j
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("addr_info").and_then(|a| a.as_array()))
        .flatten();
    for a in infos {
        let usable = a.get("prefixlen").and_then(|p| p.as_u64()) == Some(plen)
            && a.get("tentative").is_none()
            && a.get("dadfailed").is_none();
        if usable {
            if let Some(addr) = a.get("local").and_then(|l| l.as_str()) {
                return Ok(Some(addr.parse()?));
            }
        }
    }
    Ok(None)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, large enough for both forms.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Opens a TCP connection from `src` to `dst` (the [`LanServer`]) and
/// returns the peer address the server reports.
pub fn tcp_probe(src: IpAddr, dst: SocketAddr) -> Result<IpAddr> {
    use std::os::fd::FromRawFd;
    let family = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    // SO_SNDTIMEO also bounds connect(2) on Linux.
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let (ss, len) = sockaddr(SocketAddr::new(src, 0));
    // SAFETY: ss/len describe a valid sockaddr of the socket's family.
    if unsafe { libc::bind(fd, std::ptr::addr_of!(ss).cast(), len) } != 0 {
        bail!("bind to {src}: {}", std::io::Error::last_os_error());
    }
    let (ss, len) = sockaddr(dst);
    // SAFETY: as above.
    if unsafe { libc::connect(fd, std::ptr::addr_of!(ss).cast(), len) } != 0 {
        bail!(
            "TCP connect {src} -> {dst}: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .with_context(|| format!("reading the LAN server's greeting ({src} -> {dst})"))?;
    let peer = line
        .trim()
        .strip_prefix("peer=")
        .with_context(|| format!("unexpected greeting {line:?}"))?;
    peer.parse()
        .with_context(|| format!("bad peer address {peer:?}"))
}

/// A TCP listener on `[::]:PORT` (IPv4 and IPv6) inside a namespace that
/// greets every client with `peer=ADDR\n`; stopped and joined on drop.
#[derive(Debug)]
pub struct LanServer {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<IpAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl LanServer {
    pub fn start(ns: &Netns, port: u16) -> Result<LanServer> {
        let listener = ns
            .run(|| TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))))?
            .with_context(|| format!("binding the LAN TCP server to port {port}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (stop.clone(), peers.clone());
        let thread = crate::transports::serve_accepts(listener, s, move |mut conn, peer| {
            let ip = match peer.ip() {
                IpAddr::V6(v6) => v6.to_canonical(),
                v4 => v4,
            };
            p.lock().unwrap_or_else(|e| e.into_inner()).push(ip);
            let _ = conn.set_nonblocking(false);
            let _ = conn.write_all(format!("peer={ip}\n").as_bytes());
        });
        Ok(LanServer {
            stop,
            peers,
            thread: Some(thread),
        })
    }

    /// Addresses of all clients so far.
    pub fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for LanServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// A minimal DHCPv6 client (RFC 8415: Solicit → Advertise → Request → Reply,
// one IA_NA). Debian's busybox has no udhcpc6, and dhclient is off limits.

const DHCP6_SOLICIT: u8 = 1;
const DHCP6_ADVERTISE: u8 = 2;
const DHCP6_REQUEST: u8 = 3;
const DHCP6_REPLY: u8 = 7;
const OPT_CLIENTID: u16 = 1;
const OPT_SERVERID: u16 = 2;
const OPT_IA_NA: u16 = 3;
const OPT_IAADDR: u16 = 5;
const OPT_ELAPSED: u16 = 8;
const OPT_STATUS: u16 = 13;

fn push_opt(buf: &mut Vec<u8>, code: u16, data: &[u8]) {
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(&(data.len() as u16).to_be_bytes());
    buf.extend_from_slice(data);
}

/// `(code, data)` of each option in `buf`; stops at a truncated option.
pub fn dhcp6_options(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut v = Vec::new();
    while buf.len() >= 4 {
        let code = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < 4 + len {
            break;
        }
        v.push((code, &buf[4..4 + len]));
        buf = &buf[4 + len..];
    }
    v
}

/// The address in an IA_NA option body, if it has one with status success.
fn ia_na_addr(ia: &[u8]) -> Result<Option<Ipv6Addr>> {
    if ia.len() < 12 {
        return Ok(None);
    }
    for (code, data) in dhcp6_options(&ia[12..]) {
        match code {
            OPT_STATUS if data.len() >= 2 && data[..2] != [0, 0] => {
                bail!(
                    "IA_NA status {}: {}",
                    u16::from_be_bytes([data[0], data[1]]),
                    String::from_utf8_lossy(&data[2..])
                );
            }
            OPT_IAADDR if data.len() >= 24 => {
                for (c, d) in dhcp6_options(&data[24..]) {
                    if c == OPT_STATUS && d.len() >= 2 && d[..2] != [0, 0] {
                        bail!("IAADDR status {}", String::from_utf8_lossy(&d[2..]));
                    }
                }
                let octets: [u8; 16] = data[..16].try_into()?;
                return Ok(Some(Ipv6Addr::from(octets)));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Gets one address by DHCPv6 on `dev` (in the caller's namespace), with a
/// DUID-LL made of `mac`. Does not configure the address.
pub fn dhcpv6_lease(dev: &str, mac: [u8; 6], timeout: Duration) -> Result<Ipv6Addr> {
    let cname = std::ffi::CString::new(dev)?;
    // SAFETY: valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    ensure!(ifindex != 0, "no interface {dev}");
    let sock = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 546, 0, 0))
        .context("binding UDP port 546")?;
    sock.set_read_timeout(Some(Duration::from_millis(700)))?;
    let server = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2), 547, 0, ifindex);
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&mac);
    let iaid = [mac[2], mac[3], mac[4], mac[5]];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id()
        ^ u32::from(mac[4]);
    let start = Instant::now();
    let deadline = start + timeout;
    let mut xid_n = seed;
    let mut next_xid = || {
        xid_n = xid_n.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let b = xid_n.to_be_bytes();
        [b[1], b[2], b[3]]
    };
    let elapsed = |start: Instant| -> [u8; 2] {
        let cs = (start.elapsed().as_millis() / 10).min(0xffff) as u16;
        cs.to_be_bytes()
    };
    // Solicit until an Advertise with an address arrives.
    let (server_id, ia) = 'solicit: loop {
        ensure!(Instant::now() < deadline, "no DHCPv6 Advertise on {dev}");
        let xid = next_xid();
        let mut msg = vec![DHCP6_SOLICIT, xid[0], xid[1], xid[2]];
        push_opt(&mut msg, OPT_CLIENTID, &duid);
        let mut ia = iaid.to_vec();
        ia.extend_from_slice(&[0; 8]);
        push_opt(&mut msg, OPT_IA_NA, &ia);
        push_opt(&mut msg, OPT_ELAPSED, &elapsed(start));
        if let Err(e) = sock.send_to(&msg, server) {
            // The link-local source may still be tentative.
            eprintln!("DHCPv6 Solicit: {e}");
            thread::sleep(Duration::from_millis(300));
            continue;
        }
        let offer = await_dhcp6(&sock, DHCP6_ADVERTISE, xid, |body| {
            let opts = dhcp6_options(body);
            let sid = opts.iter().find(|(c, _)| *c == OPT_SERVERID);
            let ia = opts.iter().find(|(c, _)| *c == OPT_IA_NA);
            if let (Some((_, sid)), Some((_, ia))) = (sid, ia) {
                if ia_na_addr(ia)?.is_some() {
                    return Ok(Some((sid.to_vec(), ia.to_vec())));
                }
            }
            Ok(None)
        })?;
        if let Some(offer) = offer {
            break 'solicit offer;
        }
    };
    // Request that address until the Reply confirms it.
    loop {
        ensure!(Instant::now() < deadline, "no DHCPv6 Reply on {dev}");
        let xid = next_xid();
        let mut msg = vec![DHCP6_REQUEST, xid[0], xid[1], xid[2]];
        push_opt(&mut msg, OPT_CLIENTID, &duid);
        push_opt(&mut msg, OPT_SERVERID, &server_id);
        push_opt(&mut msg, OPT_IA_NA, &ia);
        push_opt(&mut msg, OPT_ELAPSED, &elapsed(start));
        sock.send_to(&msg, server).context("DHCPv6 Request")?;
        let bound = await_dhcp6(&sock, DHCP6_REPLY, xid, |body| {
            for (code, data) in dhcp6_options(body) {
                if code == OPT_STATUS && data.len() >= 2 && data[..2] != [0, 0] {
                    bail!(
                        "DHCPv6 Reply status: {}",
                        String::from_utf8_lossy(&data[2..])
                    );
                }
                if code == OPT_IA_NA {
                    if let Some(a) = ia_na_addr(data)? {
                        return Ok(Some(a));
                    }
                }
            }
            Ok(None)
        })?;
        if let Some(a) = bound {
            return Ok(a);
        }
    }
}

/// Reads messages of type `kind` for transaction `xid` for up to 1.5 s (or
/// until the socket's read timeout) and hands each one's options to
/// `accept` until it takes one.
fn await_dhcp6<T>(
    sock: &UdpSocket,
    kind: u8,
    xid: [u8; 3],
    mut accept: impl FnMut(&[u8]) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        let mut buf = [0u8; 1500];
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            break;
        };
        let reply = &buf[..n];
        if n < 4 || reply[0] != kind || reply[1..4] != xid {
            continue;
        }
        if let Some(v) = accept(&reply[4..])? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The init script of a UML guest that runs the agent: PID 1, boots the
/// host's `/` read-only over hostfs, so the agent (the test binary) and the
/// udhcpc script are visible at their host paths. `/tmp` is left alone for
/// that reason.
pub const UML_INIT: &str = r#"#!/bin/sh
# PID 1 of the MAC-NAT test's UML guest (tests/src/ap.rs). Parameters come
# as KEY=value words on the kernel command line: SY_EXE (the test binary),
# SY_DEV, SY_SCRIPT, SY_DHCP6 (the agent's environment).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH SY_AGENT SY_DEV SY_SCRIPT SY_DHCP6
halt() {
    echo "SY_HALT"
    poweroff -f >/dev/null 2>&1
    echo o >/proc/sysrq-trigger 2>/dev/null
    while :; do sleep 10; done
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
echo "SY_BOOTED"
ip link set lo up
# Debian's UML kernel has IPv6 as a module; modprobe would look in the
# host's /lib/modules, so load it from the UML package by path.
M=/usr/lib/uml/modules/$(uname -r)/kernel
insmod "$M/lib/crc-ccitt.ko" 2>/dev/null
insmod "$M/net/ipv6/ipv6.ko" || echo "SY_WARN=no-ipv6-module"
if ! ip link set "$SY_DEV" up; then
    echo "SY_ERROR=no-$SY_DEV"
    echo "SY_AGENT_RESULT=FAIL no interface"
    halt
fi
echo "SY_READY"
"$SY_EXE" 2>&1
echo "SY_AGENT_EXIT=$?"
# Stay up so that the LAN can reach the guest; the test kills it.
sleep 600
halt
"#;

// ---------------------------------------------------------------------------
// Helpers for the §5.5 scenario tests (tests/tests/macnat_scenarios.rs).

impl Ap {
    /// Counts, in a named nftables counter `name`, the frames that match
    /// `matcher` (a bridge-family match, e.g. `iifname "ap-sta" ether type
    /// 0x88b5`) as they enter the AP's bridge, before the association
    /// filter. Read it with [`Ap::watched`].
    pub fn watch(&self, name: &str, matcher: &str) -> Result<()> {
        run(self.ap.command("nft").args([
            "add",
            "chain",
            "bridge",
            "wifi",
            "watch",
            "{ type filter hook prerouting priority -400; policy accept; }",
        ]))
        .context("adding the AP's watch chain")?;
        run(self
            .ap
            .command("nft")
            .args(["add", "counter", "bridge", "wifi", name]))
        .with_context(|| format!("adding the AP's counter {name}"))?;
        run(self.ap.command("nft").arg(format!(
            "add rule bridge wifi watch {matcher} counter name {name}"
        )))
        .with_context(|| format!("adding the AP's watch rule {name}: {matcher}"))?;
        Ok(())
    }

    /// Frames counted so far by the watch counter `name`.
    pub fn watched(&self, name: &str) -> Result<u64> {
        let out = run(self
            .ap
            .command("nft")
            .args(["list", "counter", "bridge", "wifi", name]))?;
        out.split("packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no packet count in counter {name}: {out}"))
    }

    /// Makes the AP send a station's group-addressed frames back to it, as
    /// real APs do (§5.2 "hairpin").
    pub fn echo_to_station(&self) -> Result<()> {
        let bridge = need("bridge", "iproute2")?;
        run(Command::new(bridge).args([
            "-n",
            self.ap.name(),
            "link",
            "set",
            "dev",
            "ap-sta",
            "hairpin",
            "on",
        ]))
        .context("turning hairpin mode on for the AP's radio port")?;
        Ok(())
    }

    /// Makes the AP convert every group-addressed frame for the station to
    /// unicast to the station's MAC (multicast_to_unicast, §5.2).
    pub fn multicast_to_unicast(&self) -> Result<()> {
        run(self.ap.command("nft").args([
            "add",
            "chain",
            "bridge",
            "wifi",
            "mc2uc",
            "{ type filter hook postrouting priority 0; policy accept; }",
        ]))?;
        run(self.ap.command("nft").arg(format!(
            "add rule bridge wifi mc2uc oifname \"ap-sta\" ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 counter ether daddr set {STA_MAC}"
        )))
        .context("adding the AP's multicast-to-unicast rule")?;
        Ok(())
    }

    /// Shortens the LAN host's neighbour timers (entries stay reachable
    /// 2–6 s, the first probe of a stale entry after 1 s), so that a LAN
    /// host re-resolves a guest address within seconds, not a minute.
    pub fn quick_lan_neighbour_timers(&self) -> Result<()> {
        for family in ["ipv4", "ipv6"] {
            sysctl(
                &self.lan,
                &format!("net/{family}/neigh/lan0/base_reachable_time_ms"),
                "4000",
            )?;
            sysctl(
                &self.lan,
                &format!("net/{family}/neigh/lan0/delay_first_probe_time"),
                "1",
            )?;
        }
        Ok(())
    }
}

/// A switchyard daemon in the station's namespace: a VDE directory for the
/// guests, `--port pcap,device=wlan0[,mac_nat=on][,OPTIONS]`, a control
/// socket and extra environment. Killed on drop.
#[derive(Debug)]
pub struct ApSwitch {
    pub proc: Proc,
    /// The VDE directory the guests plug into.
    pub dir: PathBuf,
    /// `switchyard ctl` against the control socket.
    pub ctl: crate::transports::Ctl,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Starts so far (the first is 1).
    starts: u32,
}

impl ApSwitch {
    /// Starts the daemon in `host` (the station's namespace).
    pub fn start(
        host: &Netns,
        tmp: &TempDir,
        mac_nat: bool,
        pcap_options: &str,
        env: &[(&str, &str)],
    ) -> Result<ApSwitch> {
        let dir = tmp.join("sw");
        let control = tmp.join("control.sock");
        let mut spec = format!(
            "pcap,device={STA_DEV}{}",
            if mac_nat { ",mac_nat=on" } else { "" }
        );
        if !pcap_options.is_empty() {
            spec = format!("{spec},{pcap_options}");
        }
        let args = vec![
            "--vde".to_string(),
            dir.display().to_string(),
            "--port".into(),
            spec,
            "--control".into(),
            control.display().to_string(),
        ];
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let proc = Self::spawn(host, &args, &env, 1)?;
        Ok(ApSwitch {
            proc,
            dir,
            ctl: crate::transports::Ctl::new(&control),
            args,
            env,
            starts: 1,
        })
    }

    fn spawn(host: &Netns, args: &[String], env: &[(String, String)], n: u32) -> Result<Proc> {
        let mut cmd = host.command(crate::switch::switchyard_bin()?);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn(&format!("switchyard (start {n})"), cmd, Stdin::Null)?;
        proc.wait_for_output("listening", crate::switch::START_TIMEOUT)?;
        Ok(proc)
    }

    /// Stops the daemon with SIGTERM and starts it again with the same
    /// arguments (the MAC-NAT table and the FDB start empty).
    pub fn restart(&mut self, host: &Netns) -> Result<()> {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.proc.wait_exit(Duration::from_secs(10))?;
        self.starts += 1;
        self.proc = Self::spawn(host, &self.args, &self.env, self.starts)?;
        Ok(())
    }

    /// Fails if the daemon has exited.
    pub fn assert_running(&mut self) -> Result<()> {
        if let Some(st) = self.proc.try_status()? {
            bail!(
                "switchyard died ({}); output:\n{}",
                crate::process::describe(st),
                self.proc.output()
            );
        }
        Ok(())
    }

    /// The daemon's resident anonymous memory in KiB (`RssAnon`: its heap
    /// and stacks, without the packet capture ring, whose pages fill as
    /// traffic passes).
    pub fn heap_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.proc.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no RssAnon in {path}"))
    }

    /// `ctl -j macnat` bindings as (address, MAC lower-case).
    pub fn bindings(&self) -> Result<Vec<(String, String)>> {
        macnat_bindings(&self.ctl)
    }

    /// The MAC-NAT counters (`ctl -j macnat`, summed over ports).
    pub fn counters(&self) -> Result<MacNatCounters> {
        let j = self.ctl.json(&["macnat"])?;
        let ports = j
            .get("counters")
            .and_then(|c| c.as_object())
            .with_context(|| format!("ctl macnat has no counters: {j}"))?;
        let mut m = std::collections::BTreeMap::new();
        for values in ports.values() {
            for (k, v) in values.as_object().into_iter().flatten() {
                *m.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
            }
        }
        ensure!(!m.is_empty(), "ctl macnat lists no counters: {j}");
        Ok(MacNatCounters(m))
    }
}

/// A reading of the MAC-NAT counters.
#[derive(Debug, Clone, Default)]
pub struct MacNatCounters(pub std::collections::BTreeMap<String, u64>);

impl MacNatCounters {
    /// One counter; fails on a name the daemon does not export.
    pub fn get(&self, name: &str) -> Result<u64> {
        self.0.get(name).copied().with_context(|| {
            format!(
                "no MAC-NAT counter {name}; the daemon has {:?}",
                self.0.keys()
            )
        })
    }

    /// How much `name` grew since `before`.
    pub fn delta(&self, before: &MacNatCounters, name: &str) -> Result<u64> {
        Ok(self.get(name)?.saturating_sub(before.get(name)?))
    }
}

/// Reads a `/proc/net/snmp`-style table (`Icmp:` names line then values
/// line) or a `/proc/net/snmp6` line (`Icmp6InEchos 3`) in `ns`.
fn snmp_value(ns: &Netns, file: &str, prefix: &str, name: &str) -> Result<u64> {
    let text = run(ns.command("cat").arg(file))?;
    if file.ends_with("snmp6") {
        return text
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
            })
            .with_context(|| format!("no {name} in {file}"));
    }
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no {prefix} lines in {file}: {text}");
    };
    let i = names
        .split_whitespace()
        .position(|n| n == name)
        .with_context(|| format!("no {name} in {file}"))?;
    values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("bad {name} value in {file}"))
}

/// ICMP echo requests received in `ns`: (IPv4, IPv6).
pub fn echo_requests(ns: &Netns) -> Result<(u64, u64)> {
    Ok((
        snmp_value(ns, "/proc/net/snmp", "Icmp:", "InEchos")?,
        snmp_value(ns, "/proc/net/snmp6", "", "Icmp6InEchos")?,
    ))
}

/// IP packets received in `ns` whose IP length exceeded the frame
/// (`IpExt: InTruncatedPkts`): what a guest counts when a link cut a
/// frame short.
pub fn truncated_packets(ns: &Netns) -> Result<u64> {
    snmp_value(ns, "/proc/net/netstat", "IpExt:", "InTruncatedPkts")
}

/// Received bytes of `dev` in `ns`.
pub fn rx_bytes(ns: &Netns, dev: &str) -> Result<u64> {
    let out = ns.ip(["-s", "-j", "link", "show", "dev", dev])?;
    let j: serde_json::Value = serde_json::from_str(&out)?;
    j.get(0)
        .and_then(|l| l.get("stats64"))
        .and_then(|s| s.get("rx"))
        .and_then(|r| r.get("bytes"))
        .and_then(|b| b.as_u64())
        .with_context(|| format!("no rx byte count for {dev} in {out}"))
}

/// The IPv6 addresses on `dev` in `ns` with their flags, one
/// `ADDR/PLEN flag flag…` string each (`tentative`, `dadfailed`, …).
pub fn ipv6_addrs(ns: &Netns, dev: &str) -> Result<Vec<String>> {
    let out = ns.ip(["-j", "-6", "addr", "show", "dev", dev])?;
    let j: serde_json::Value = serde_json::from_str(&out)?;
    let mut v = Vec::new();
    for a in j
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("addr_info").and_then(|a| a.as_array()))
        .flatten()
    {
        let (Some(addr), Some(plen)) = (
            a.get("local").and_then(|l| l.as_str()),
            a.get("prefixlen").and_then(|p| p.as_u64()),
        ) else {
            continue;
        };
        let mut s = format!("{addr}/{plen}");
        for flag in ["tentative", "dadfailed", "deprecated"] {
            if a.get(flag).is_some() {
                s.push(' ');
                s.push_str(flag);
            }
        }
        v.push(s);
    }
    Ok(v)
}

/// `ip neigh show ADDR` in `ns` (one line, or empty).
pub fn neighbour(ns: &Netns, addr: &str) -> Result<String> {
    Ok(ns.ip(["neigh", "show", addr])?.trim().to_string())
}

/// An `iperf3 -s -p PORT` server in `ns`, killed on drop.
pub fn iperf3_server(ns: &Netns, port: u16, label: &str) -> Result<Proc> {
    let iperf3 = need("iperf3", "iperf3")?;
    let mut cmd = ns.command(iperf3);
    // --forceflush: the banner must reach the pipe at once.
    cmd.args(["-s", "--forceflush", "-p", &port.to_string()]);
    let mut p = Proc::spawn(label, cmd, Stdin::Null)?;
    p.wait_for_output("Server listening", Duration::from_secs(10))?;
    Ok(p)
}

/// Runs `iperf3 -c ADDR -p PORT -t SECS -J [-R]` in `ns` and returns the
/// receiver's throughput in bit/s. A server still finishing the previous
/// test ("busy") is asked again, for up to 10 s.
pub fn iperf3_client(ns: &Netns, addr: &str, port: u16, secs: u32, reverse: bool) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match iperf3_once(ns, addr, port, secs, reverse) {
            Err(e) if format!("{e:#}").contains("busy") && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(300));
            }
            other => return other,
        }
    }
}

fn iperf3_once(ns: &Netns, addr: &str, port: u16, secs: u32, reverse: bool) -> Result<f64> {
    let iperf3 = need("iperf3", "iperf3")?;
    let mut cmd = ns.command(iperf3);
    cmd.args([
        "-c",
        addr,
        "-p",
        &port.to_string(),
        "-t",
        &secs.to_string(),
        "-J",
        "--connect-timeout",
        "5000",
    ]);
    if reverse {
        cmd.arg("-R");
    }
    let label = format!(
        "iperf3 -c {addr} -p {port}{}",
        if reverse { " -R" } else { "" }
    );
    let out =
        crate::transports::run_bounded(&label, cmd, Duration::from_secs(u64::from(secs) + 30))?;
    let start = out
        .find('{')
        .with_context(|| format!("{label}: no JSON in {out}"))?;
    let j: serde_json::Value = serde_json::Deserializer::from_str(&out[start..])
        .into_iter()
        .next()
        .with_context(|| format!("{label}: no JSON in {out}"))?
        .with_context(|| format!("{label}: bad JSON"))?;
    if let Some(e) = j.get("error").and_then(|e| e.as_str()) {
        bail!("{label}: {e}");
    }
    j.pointer("/end/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .with_context(|| format!("{label}: no end.sum_received in {out}"))
}

/// Raw Ethernet frames for the scenarios, sent with an `AF_PACKET` socket
/// inside a namespace (no python, no scapy).
pub mod raw {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use switchyard_switch::checksum::{fold, sum as sum16};

    /// Ethertypes used here.
    pub const ARP: u16 = 0x0806;
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    /// Broadcast MAC.
    pub const BROADCAST: [u8; 6] = [0xff; 6];

    /// `dst | src | ethertype | payload`, padded to the 60-byte minimum.
    pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + payload.len().max(46));
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    /// An Ethernet/IPv4 ARP body (op 1 request, 2 reply).
    pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&sha);
        a.extend_from_slice(&spa.octets());
        a.extend_from_slice(&tha);
        a.extend_from_slice(&tpa.octets());
        a
    }

    /// An IPv6 packet carrying `icmp` (its checksum field is filled in).
    pub fn ipv6_icmp(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, mut icmp: Vec<u8>) -> Vec<u8> {
        let len = icmp.len() as u32;
        let mut pseudo = Vec::with_capacity(40);
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&len.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        icmp[2] = 0;
        icmp[3] = 0;
        let c = fold(sum16(&icmp, sum16(&pseudo, 0)));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        p.push(58);
        p.push(hop_limit);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&icmp);
        p
    }

    /// A neighbour solicitation for `target` with a source link-layer
    /// address option.
    pub fn neighbour_solicitation(target: Ipv6Addr, slla: [u8; 6]) -> Vec<u8> {
        let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&slla);
        m
    }

    /// An unsolicited, overriding neighbour advertisement for `target`
    /// with a target link-layer address option.
    pub fn neighbour_advertisement(target: Ipv6Addr, tlla: [u8; 6]) -> Vec<u8> {
        // Flags: override (0x20) only: not a router, not solicited.
        let mut m = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[2, 1]);
        m.extend_from_slice(&tlla);
        m
    }

    /// The solicited-node group of `a` (ff02::1:ffXX:XXXX).
    pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
        let o = a.octets();
        Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(o[13]),
            u16::from_be_bytes([o[14], o[15]]),
        )
    }

    /// The Ethernet group of an IPv6 multicast address (33:33 + low 32 bits).
    pub fn ipv6_group_mac(a: Ipv6Addr) -> [u8; 6] {
        let o = a.octets();
        [0x33, 0x33, o[12], o[13], o[14], o[15]]
    }

    /// An IPv4/UDP packet (UDP checksum 0: none).
    pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let total = (20 + 8 + data.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        let c = fold(sum16(&p, 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(data);
        p
    }

    /// Sends `frames` on `dev` inside `ns`, `burst` at a time with `pause`
    /// between bursts (so that the switch's queues keep up); a full
    /// socket buffer is waited out. Returns how many were sent.
    pub fn send(
        ns: &Netns,
        dev: &str,
        frames: &[Vec<u8>],
        burst: usize,
        pause: Duration,
    ) -> Result<usize> {
        let dev = dev.to_string();
        ns.run(move || -> Result<usize> {
            let cname = std::ffi::CString::new(dev.as_str())?;
            // SAFETY: valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            ensure!(ifindex != 0, "no interface {dev}");
            // Protocol 0: this socket only sends.
            // SAFETY: plain socket(2).
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            ensure!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fd is a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            let mut sent = 0;
            for chunk in frames.chunks(burst.max(1)) {
                for f in chunk {
                    let mut tries = 0;
                    loop {
                        // SAFETY: f and sll are valid for the given lengths.
                        let n = unsafe {
                            libc::sendto(
                                fd.as_raw_fd(),
                                f.as_ptr().cast(),
                                f.len(),
                                0,
                                std::ptr::addr_of!(sll).cast(),
                                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                            )
                        };
                        if n >= 0 {
                            sent += 1;
                            break;
                        }
                        let e = std::io::Error::last_os_error();
                        let busy = matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN));
                        ensure!(busy && tries < 100, "sending a raw frame on {dev}: {e}");
                        tries += 1;
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                thread::sleep(pause);
            }
            Ok(sent)
        })?
    }
}

/// `switchyard ctl -j macnat` bindings as (address, MAC lower-case).
pub fn macnat_bindings(ctl: &crate::transports::Ctl) -> Result<Vec<(String, String)>> {
    let j = ctl.json(&["macnat"])?;
    let list = j
        .get("macnat")
        .and_then(|m| m.as_array())
        .with_context(|| format!("ctl macnat: {j}"))?;
    Ok(list
        .iter()
        .filter_map(|e| {
            Some((
                e.get("address")?.as_str()?.to_string(),
                e.get("mac")?.as_str()?.to_lowercase(),
            ))
        })
        .collect())
}

/// Runs the guest agent in each of `guests` at once and collects their
/// reports, named `gN`.
pub fn run_agents(guests: &[TapGuest], env: &AgentEnv) -> Result<Vec<(String, AgentReport)>> {
    let mut agents = Vec::new();
    for g in guests {
        agents.push(g.spawn_agent(env)?);
    }
    let mut reports = Vec::new();
    for (g, a) in guests.iter().zip(agents.iter_mut()) {
        a.wait_exit(Duration::from_secs(90))?;
        reports.push((format!("g{}", g.n), AgentReport::parse(&a.output())));
    }
    Ok(reports)
}
