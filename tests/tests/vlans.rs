//! 802.1Q VLANs against the kernel's own VLAN sub-interfaces. This host's
//! kernel has no 802.1Q support, so the trunk's far end is a User-mode
//! Linux guest (its kernel has the 8021q module) with `eth0.10` and
//! `eth0.20` on a VDE port; the access ports are vde_plug taps in their own
//! namespaces and a tap in the switch's namespace. The UML kernel
//! answering on `eth0.10` proves a frame left the switch tagged 10; an
//! access guest answering proves the tag was removed on its way in.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use std::net::Ipv4Addr;
use switchyard_tests::raw;
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::transports::{disable_ipv6, wait_attached, Ctl};
use switchyard_tests::util::output;
use switchyard_tests::{preflight, unique_name, wait_until, Netns, Proc, SwitchCmd, TempDir, Uml};

const BOOT: Duration = Duration::from_secs(60);

/// The switch's VLAN rules: unix:1 (A) access 10, unix:2 (B) and unix:3
/// (C) access 20, unix:4 (D) no rule (VLAN 1), unix:5 (the UML guest) a
/// trunk with native VLAN 1 and 10, 20 tagged, and the tap an access port
/// of VLAN 20 through the port's own `vlan:` key. C moves to VLAN
/// `c_vlan` on reload.
fn config(tap: &str, c_vlan: u16) -> String {
    format!(
        r#"switch:
  vlans:
    - {{ port: "unix:1", untagged: 10 }}
    - {{ port: "unix:2", untagged: 20 }}
    - {{ port: "unix:3", untagged: {c_vlan} }}
    - {{ port: "unix:5", untagged: 1, tagged: "10,20" }}
ports:
  - {{ type: tap, device: {tap}, vlan: 20 }}
"#
    )
}

/// A guest namespace with a tap plugged into the switch.
struct Guest {
    plug: Proc,
    ns: Netns,
    tap: String,
}

fn guest(dir: &Path, cidr: &str) -> Result<Guest> {
    let ns = Netns::new()?;
    disable_ipv6(&ns)?;
    let tap = unique_name("syg");
    let plug = vde_plug_tap(&ns, dir, &tap, cidr)?;
    Ok(Guest { plug, ns, tap })
}

/// True when one ping of `addr` from `ns` is answered within a second.
fn answers(ns: &Netns, addr: &str) -> bool {
    output(ns.command("ping").args(["-n", "-c", "1", "-W", "1", addr]))
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The entry for `addr` in `ns`'s neighbour table, if any.
fn neighbour(ns: &Netns, dev: &str, addr: &str) -> Result<String> {
    Ok(ns
        .ip(["neigh", "show", "dev", dev, "to", addr])?
        .trim()
        .to_string())
}

fn drops(ctl: &Ctl, port: &str, reason: &str) -> Result<u64> {
    let p = ctl.port(port)?;
    Ok(p.get("drops")
        .and_then(|d| d.get(reason))
        .and_then(|v| v.as_u64())
        .unwrap_or(0))
}

/// Access ports reach the trunk's sub-interface of their VLAN and nothing
/// else; the native VLAN crosses the trunk untagged; a guest sending
/// another VLAN's tag is dropped and counted; the FDB keeps one entry per
/// (MAC, VLAN); a reload that moves a port to another VLAN takes effect.
#[test]
fn access_and_trunk_ports_against_kernel_vlan_interfaces() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("vlan")?;
    let swns = Netns::new()?;
    disable_ipv6(&swns)?;
    let tap = unique_name("syt");
    let conf = tmp.join("switchyard.yaml");
    std::fs::write(&conf, config(&tap, 20))?;
    let dir = tmp.join("vde");
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .arg("--config")
        .arg(&conf)
        .args(ctl.args())
        .start(Some(&swns))?;
    wait_until(Duration::from_secs(5), "the tap", || swns.has_link(&tap))?;
    swns.addr_up(&tap, "198.51.100.4/24")?;

    // Attach one at a time so the clients get unix:1 to 5 in order.
    let a = guest(&dir, "192.0.2.1/24")?;
    wait_attached(&mut sw, "unix:1", 1)?;
    let b = guest(&dir, "198.51.100.2/24")?;
    wait_attached(&mut sw, "unix:2", 1)?;
    // C has A's subnet but VLAN 20: it must never hear A.
    let c = guest(&dir, "192.0.2.5/24")?;
    wait_attached(&mut sw, "unix:3", 1)?;
    let d = guest(&dir, "203.0.113.4/24")?;
    wait_attached(&mut sw, "unix:4", 1)?;
    let umlns = Netns::new()?;
    let mut trunk_guest = Uml::new("trunk")
        .vde(&dir, "02:00:00:00:77:01", "203.0.113.3/24")
        .param("VLANS", "10:192.0.2.3/24,20:198.51.100.3/24")
        .wait(240)
        .start(&umlns, &tmp)?;
    wait_attached(&mut sw, "unix:5", 1)?;
    trunk_guest.wait_ready(BOOT)?;

    // The membership ctl shows.
    let vlans_of = |name: &str| -> Result<String> {
        Ok(ctl
            .port(name)?
            .get("vlans")
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string())
    };
    ensure!(
        vlans_of("unix:1")? == "10",
        "unix:1 vlans {}",
        vlans_of("unix:1")?
    );
    ensure!(
        vlans_of("unix:4")? == "1",
        "a port without a rule is in VLAN 1"
    );
    ensure!(
        vlans_of("unix:5")? == "1/10,20",
        "trunk vlans {}",
        vlans_of("unix:5")?
    );
    let access_tap = format!("tap:{tap}");
    ensure!(vlans_of(&access_tap)? == "20", "the tap's own vlan: key");

    a.ns.ping_eventually("192.0.2.3", 20)
        .context("VLAN 10 access port to the UML guest's eth0.10")?;
    b.ns.ping_eventually("198.51.100.3", 10)
        .context("VLAN 20 access port to the UML guest's eth0.20")?;
    swns.ping_eventually("198.51.100.3", 10)
        .context("the VLAN 20 tap to the UML guest's eth0.20")?;
    d.ns.ping_eventually("203.0.113.3", 10)
        .context("VLAN 1 (no rule) to the UML guest's untagged eth0")?;
    // Isolation: A and C share a subnet, not a VLAN.
    for _ in 0..3 {
        ensure!(!answers(&a.ns, "192.0.2.5"), "A reached C across VLANs");
    }
    let leaked = neighbour(&c.ns, &c.tap, "192.0.2.1")?;
    ensure!(
        leaked.is_empty(),
        "C saw A's ARP requests from another VLAN: {leaked}"
    );
    ensure!(
        !answers(&d.ns, "192.0.2.3") && !answers(&b.ns, "192.0.2.3"),
        "a port outside VLAN 10 reached eth0.10"
    );

    // A guest tagging frames for a VLAN its port does not carry: B (VLAN
    // 20) must not hear them, and unix:1 counts them.
    let a_mac = [2, 0, 0, 0, 0xaa, 1];
    let sneaky: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            raw::arp_request(
                a_mac,
                Ipv4Addr::new(198, 51, 100, 1),
                // Among them, requests for B's own address: B would answer
                // and remember the asker.
                Ipv4Addr::new(198, 51, 100, if i % 2 == 0 { 2 } else { 100 + i }),
                Some(20),
            )
        })
        .collect();
    raw::send_frames(&a.ns, &a.tap, &sneaky)?;
    wait_until(
        Duration::from_secs(5),
        "vlan_filtered drops on unix:1",
        || drops(&ctl, "unix:1", "vlan_filtered").unwrap_or(0) >= 20,
    )?;
    let leaked = neighbour(&b.ns, &b.tap, "198.51.100.1")?;
    ensure!(
        leaked.is_empty(),
        "B heard A's VLAN 20 tags from a VLAN 10 access port: {leaked}"
    );

    // One FDB entry per (MAC, VLAN): the trunk's MAC is known in all three.
    let fdb = ctl.json(&["fdb"])?;
    let tap_mac = "02:00:00:00:77:01".to_string();
    let mut vids: Vec<u64> = fdb
        .get("fdb")
        .and_then(|f| f.as_array())
        .context("ctl fdb has no list")?
        .iter()
        .filter(|e| e.get("mac").and_then(|m| m.as_str()) == Some(tap_mac.as_str()))
        .filter_map(|e| e.get("vlan").and_then(|v| v.as_u64()))
        .collect();
    vids.sort_unstable();
    ensure!(
        vids == [1, 10, 20],
        "trunk MAC learned in VLANs {vids:?}: {fdb}"
    );

    // Reload: C joins VLAN 10 and now reaches A; B (still 20) does not.
    std::fs::write(&conf, config(&tap, 10))?;
    sw.proc.signal(Signal::SIGHUP)?;
    wait_until(Duration::from_secs(10), "C in VLAN 10 after reload", || {
        vlans_of("unix:3").map(|v| v == "10").unwrap_or(false)
    })?;
    c.ns.ping_eventually("192.0.2.1", 10)
        .context("C to A after moving C to VLAN 10")?;
    ensure!(!answers(&c.ns, "198.51.100.2"), "C still reaches VLAN 20");
    sw.assert_running()?;
    drop((a.plug, b.plug, c.plug, d.plug));
    drop(trunk_guest);
    Ok(())
}

/// Without any rule the switch stays VLAN-transparent, as uml_switch and
/// vde_switch are: guests tagging their own frames talk through it.
#[test]
fn without_rules_tagged_frames_pass_untouched() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("vlan0")?;
    let swns = Netns::new()?;
    let dir = tmp.join("vde");
    let mut sw = SwitchCmd::native()?.vde(&dir).start(Some(&swns))?;
    let ns = Netns::new()?;
    let mut server = Uml::new("vlan42-a")
        .vde(&dir, "02:00:00:00:42:01", "203.0.113.1/24")
        .param("VLANS", "42:192.0.2.1/24")
        .wait(120)
        .start(&ns, &tmp)?;
    server.wait_ready(BOOT)?;
    let mut client = Uml::new("vlan42-b")
        .vde(&dir, "02:00:00:00:42:02", "203.0.113.2/24")
        .param("VLANS", "42:192.0.2.2/24")
        .ping("192.0.2.1")
        .start(&ns, &tmp)?;
    client
        .wait_ping_ok()
        .context("guest-made VLAN 42 through a transparent switch")?;
    client.wait_halt(BOOT)?;
    sw.assert_running()?;
    drop(server);
    Ok(())
}
