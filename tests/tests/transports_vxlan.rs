//! switchyard's `vxlan` port against the Linux vxlan device (protocols.md
//! §5). The kernel bypasses encapsulation for a remote that is a local
//! address, so every kernel VTEP lives in a namespace of its own, joined to
//! the switch's namespace S by a veth pair (the underlay). A `vde_plug` tap
//! in namespace A (192.0.2.1, MTU 1450) is the guest behind the switch.

use anyhow::{ensure, Context, Result};
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::transports::{disable_ipv6, rx_packets, veth, Ctl};
use switchyard_tests::{preflight, util, Netns, Proc, SwitchCmd, TempDir};

const A_IP: &str = "192.0.2.1";

/// A kernel VTEP in a namespace of its own: underlay `va` (`local`)
/// linked to `vb` (`remote`) in the switch's namespace, both `/prefix`,
/// and `vx0` (VNI 42, `dstport`) addressed `inner`.
struct Vtep<'a> {
    vb: &'a str,
    local: &'a str,
    remote: &'a str,
    prefix: u8,
    dstport: u16,
    inner: &'a str,
}

impl Vtep<'_> {
    fn create(&self, ns: &Netns, s: &Netns) -> Result<()> {
        veth(
            ns,
            "va",
            &format!("{}/{}", self.local, self.prefix),
            s,
            self.vb,
            &format!("{}/{}", self.remote, self.prefix),
        )?;
        ns.ip([
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "42",
            "dstport",
            &self.dstport.to_string(),
            "local",
            self.local,
            "remote",
            self.remote,
            "dev",
            "va",
        ])
        .context("creating the kernel vxlan device")?;
        ns.addr_up("vx0", self.inner)?;
        Ok(())
    }
}

/// The guest namespace: a vde_plug tap on the switch with MTU 1450.
fn guest(ns: &Netns, dir: &std::path::Path) -> Result<Proc> {
    let plug = vde_plug_tap(ns, dir, "vtA", &format!("{A_IP}/24"))?;
    ns.ip(["link", "set", "vtA", "mtu", "1450"])?;
    Ok(plug)
}

/// One kernel VTEP on `dstport`; the switch's port uses `port=` when
/// `dstport` is not 4789, and its own `local=` address.
fn one_kernel_vtep(dstport: u16) -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tvx")?;
    let ns_s = Netns::new()?;
    let ns_k = Netns::new()?;
    let ns_a = Netns::new()?;
    Vtep {
        vb: "vb",
        local: "198.51.100.1",
        remote: "198.51.100.2",
        prefix: 24,
        dstport,
        inner: "192.0.2.2/24",
    }
    .create(&ns_k, &ns_s)?;
    let mut spec = String::from("vxlan,name=vx,vni=42,local=198.51.100.2,remote=198.51.100.1");
    if dstport != 4789 {
        spec.push_str(&format!(",port={dstport}"));
    }
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let dir = tmp.join("sw");
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .args(ctl.args())
        .arg("--port")
        .arg(&spec)
        .start(Some(&ns_s))?;
    let _plug = guest(&ns_a, &dir)?;

    ns_a.ping_eventually("192.0.2.2", 15)
        .context("guest → kernel VTEP")?;
    ns_k.ping(A_IP, 3).context("kernel VTEP → guest")?;
    // Bigger frames too (1450-byte MTU: 1422 bytes of ICMP payload).
    util::run(ns_a.command("ping").args([
        "-n",
        "-c",
        "2",
        "-s",
        "1422",
        "-M",
        "do",
        "-W",
        "2",
        "192.0.2.2",
    ]))
    .context("full-size pings across VXLAN")?;
    ctl.expect_traffic("vx")?;
    // The kernel learned the guest's MAC behind the switch's address.
    let fdb = ns_k.ip(["-o", "neigh", "show", "dev", "vx0"])?;
    ensure!(
        fdb.contains(A_IP),
        "the kernel VTEP has no neighbour entry for the guest: {fdb}"
    );
    sw.assert_running()?;
    Ok(())
}

/// Test 5a: the kernel device with `dstport 4789` (the IANA port,
/// switchyard's default).
#[test]
fn vxlan_kernel_vtep_on_port_4789() -> Result<()> {
    one_kernel_vtep(4789)
}

/// Test 5b: the kernel device with `dstport 8472` (Linux's historical
/// default) against the switch's `port=8472`.
#[test]
fn vxlan_kernel_vtep_on_port_8472() -> Result<()> {
    one_kernel_vtep(8472)
}

/// Test 5c: two kernel VTEPs as static remotes of one vxlan port
/// (`remote=` twice). Both answer the guest's pings (each ARP request had
/// to reach both), both reach the guest, and broadcasts from the guest
/// raise the receive counters of both vxlan devices (head-end replication).
/// IPv6 is off everywhere, so nothing else is flooded.
#[test]
fn vxlan_broadcast_reaches_every_remote() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tvb")?;
    let ns_s = Netns::new()?;
    let ns_k1 = Netns::new()?;
    let ns_k2 = Netns::new()?;
    let ns_a = Netns::new()?;
    for ns in [&ns_s, &ns_k1, &ns_k2, &ns_a] {
        disable_ipv6(ns)?;
    }
    // Two point-to-point underlays: S .2 ↔ K1 .1 and S .6 ↔ K2 .5.
    Vtep {
        vb: "vb1",
        local: "198.51.100.1",
        remote: "198.51.100.2",
        prefix: 30,
        dstport: 4789,
        inner: "192.0.2.2/24",
    }
    .create(&ns_k1, &ns_s)?;
    Vtep {
        vb: "vb2",
        local: "198.51.100.5",
        remote: "198.51.100.6",
        prefix: 30,
        dstport: 4789,
        inner: "192.0.2.3/24",
    }
    .create(&ns_k2, &ns_s)?;
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let dir = tmp.join("sw");
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .args(ctl.args())
        .args([
            "--port",
            "vxlan,name=vx,vni=42,remote=198.51.100.1,remote=198.51.100.5",
        ])
        .start(Some(&ns_s))?;
    let _plug = guest(&ns_a, &dir)?;

    ns_a.ping_eventually("192.0.2.2", 15)
        .context("guest → VTEP 1")?;
    ns_a.ping("192.0.2.3", 3).context("guest → VTEP 2")?;
    ns_k1.ping(A_IP, 3).context("VTEP 1 → guest")?;
    ns_k2.ping(A_IP, 3).context("VTEP 2 → guest")?;

    // Broadcast pings from the guest (nobody answers them; only the
    // copies that arrive count).
    let before = (rx_packets(&ns_k1, "vx0")?, rx_packets(&ns_k2, "vx0")?);
    let _ = util::output(ns_a.command("ping").args([
        "-n",
        "-b",
        "-c",
        "5",
        "-i",
        "0.2",
        "-W",
        "1",
        "192.0.2.255",
    ]))?;
    let after = (rx_packets(&ns_k1, "vx0")?, rx_packets(&ns_k2, "vx0")?);
    ensure!(
        after.0 >= before.0 + 5 && after.1 >= before.1 + 5,
        "5 broadcasts from the guest: VTEP 1 received {} and VTEP 2 {} packets (expected at least 5 each)",
        after.0 - before.0,
        after.1 - before.1
    );
    ctl.expect_traffic("vx")?;
    sw.assert_running()?;
    Ok(())
}
