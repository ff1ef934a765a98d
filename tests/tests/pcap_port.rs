//! The `pcap` port on a veth pair standing in for a host NIC: frames both
//! ways, MAC-NAT hiding guest MACs behind the NIC's own (IPv4 and IPv6),
//! a NIC that vanishes and comes back, and monitor-only mode.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use switchyard_tests::switch::{start_vde_switch, Switch};
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::util::wait_until;
use switchyard_tests::{preflight, unique_name, Netns, Proc, TempDir};

/// A switch in `s` whose pcap port sits on one end of a veth pair; the
/// other end, in `peer`, is "the LAN" (192.0.2.9, 2001:db8:9::9); a
/// vde_plug guest in `guest` is 192.0.2.1, 2001:db8:9::1.
struct Lan {
    control: std::path::PathBuf,
    _tmp: TempDir,
    s: Netns,
    peer: Netns,
    guest: Netns,
    nic: String,
    lan_dev: String,
    sw: Switch,
    _plug: Proc,
    guest_tap: String,
}

fn lan(options: &str) -> Result<Lan> {
    let tmp = TempDir::new("pcap")?;
    let (s, peer, guest) = (Netns::new()?, Netns::new()?, Netns::new()?);
    let nic = unique_name("pn");
    let lan_dev = unique_name("pl");
    s.ip([
        "link",
        "add",
        &nic,
        "type",
        "veth",
        "peer",
        "name",
        &lan_dev,
        "netns",
        peer.name(),
    ])
    .context("create the veth pair")?;
    s.ip(["link", "set", &nic, "up"])?;
    peer.addr_up(&lan_dev, "192.0.2.9/24")?;
    peer.ip(["addr", "add", "2001:db8:9::9/64", "dev", &lan_dev, "nodad"])?;
    let spec = format!("pcap,device={nic}{options}");
    let control = tmp.join("control.sock");
    let control_arg = control.display().to_string();
    let (sw, dir) = start_vde_switch(
        &s,
        &tmp,
        "sw",
        &["--port", &spec, "--control", &control_arg],
    )?;
    let guest_tap = unique_name("pg");
    let plug = vde_plug_tap(&guest, &dir, &guest_tap, "192.0.2.1/24")?;
    guest.ip([
        "addr",
        "add",
        "2001:db8:9::1/64",
        "dev",
        &guest_tap,
        "nodad",
    ])?;
    Ok(Lan {
        control,
        _tmp: tmp,
        s,
        peer,
        guest,
        nic,
        lan_dev,
        sw,
        _plug: plug,
        guest_tap,
    })
}

fn mac_of(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns.ip(["-o", "link", "show", dev])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .context("no link/ether in ip link output")
}

fn neighbour(ns: &Netns, dev: &str, addr: &str) -> Result<String> {
    ns.ip(["neigh", "show", "dev", dev, "to", addr])
}

#[test]
fn pcap_port_bridges_a_nic() -> Result<()> {
    preflight()?;
    let mut l = lan("")?;
    l.guest.ping_eventually("192.0.2.9", 10)?;
    l.peer.ping("192.0.2.1", 2)?;
    // Plain bridging: the LAN sees the guest's own MAC.
    let guest_mac = mac_of(&l.guest, &l.guest_tap)?;
    let n = neighbour(&l.peer, &l.lan_dev, "192.0.2.1")?;
    ensure!(
        n.contains(&guest_mac),
        "LAN neighbour entry {n:?}, guest MAC {guest_mac}"
    );
    l.sw.assert_running()?;
    Ok(())
}

#[test]
fn mac_nat_shows_only_the_nic_mac_to_the_lan() -> Result<()> {
    preflight()?;
    let mut l = lan(",mac_nat=on")?;
    l.guest.ping_eventually("192.0.2.9", 10)?;
    l.peer.ping("192.0.2.1", 2)?;
    l.guest.ping("2001:db8:9::9", 2)?;
    l.peer.ping("2001:db8:9::1", 2)?;
    let nic_mac = mac_of(&l.s, &l.nic)?;
    let guest_mac = mac_of(&l.guest, &l.guest_tap)?;
    for addr in ["192.0.2.1", "2001:db8:9::1"] {
        let n = neighbour(&l.peer, &l.lan_dev, addr)?;
        ensure!(
            n.contains(&nic_mac) && !n.contains(&guest_mac),
            "the LAN should know {addr} at the NIC's MAC {nic_mac}, not the guest's {guest_mac}: {n:?}"
        );
    }
    // Each new mapping is logged once.
    l.sw.proc
        .wait_for_output("MAC-NAT mapping", Duration::from_secs(5))?;
    // `switchyard ctl macnat` lists the guest's bindings.
    let out = std::process::Command::new(switchyard_tests::switch::switchyard_bin()?)
        .arg("ctl")
        .arg("-s")
        .arg(&l.control)
        .args(["-j", "macnat"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("192.0.2.1") && text.contains(&guest_mac),
        "ctl macnat: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    l.sw.assert_running()?;
    Ok(())
}

#[test]
fn a_vanished_nic_is_reopened() -> Result<()> {
    preflight()?;
    let mut l = lan("")?;
    l.guest.ping_eventually("192.0.2.9", 10)?;
    // The LAN end comes back with the same MAC, as a re-plugged NIC's
    // neighbours would still know it.
    let lan_mac = mac_of(&l.peer, &l.lan_dev)?;
    l.s.ip(["link", "del", &l.nic])?;
    l.sw.proc
        .wait_for_output("NIC lost", Duration::from_secs(10))?;
    l.sw.assert_running()?;
    l.s.ip([
        "link",
        "add",
        &l.nic,
        "type",
        "veth",
        "peer",
        "name",
        &l.lan_dev,
        "address",
        &lan_mac,
        "netns",
        l.peer.name(),
    ])?;
    l.s.ip(["link", "set", &l.nic, "up"])?;
    l.peer.addr_up(&l.lan_dev, "192.0.2.9/24")?;
    l.sw.proc
        .wait_for_output("NIC is back", Duration::from_secs(10))?;
    l.guest.ping_eventually("192.0.2.9", 10)?;
    Ok(())
}

#[test]
fn monitor_only_never_injects() -> Result<()> {
    preflight()?;
    let mut l = lan(",monitor=on")?;
    // The guest's ARP requests never reach the LAN...
    let out = l
        .guest
        .command("ping")
        .args(["-c", "2", "-W", "1", "192.0.2.9"])
        .output()?;
    ensure!(
        !out.status.success(),
        "a monitor-only port passed traffic to the LAN"
    );
    // ...but the LAN's frames are seen and forwarded to the guest.
    let _ = l
        .peer
        .command("ping")
        .args(["-c", "2", "-W", "1", "192.0.2.1"])
        .output()?;
    wait_until(Duration::from_secs(5), "captured frames", || {
        l.sw.proc.output().contains("port attached")
    })?;
    l.sw.assert_running()?;
    Ok(())
}
