//! VDE clients on a `--vde DIR` port: `vde_plug` (vdeplug4), UML's
//! `ethN=vde,DIR` transport, UML's `daemon` transport aimed at `DIR/ctl`,
//! and QEMU's `-netdev vde`.

use anyhow::Result;
use switchyard_tests::switch::start_vde_switch;
use switchyard_tests::tools::{qemu_vde_tap, vde_plug_tap};
use switchyard_tests::{preflight, unique_name, Netns, TempDir, Uml};

/// Test 3a: two network namespaces, each with a tap plugged into the switch
/// by `vde_plug tap://TAP DIR`, ping each other (IPv4 and IPv6). The switch
/// runs in a third namespace: VDE clients reach it through path-named
/// sockets, as they do with vde_switch.
#[test]
fn vde_plug_taps_in_two_namespaces_ping() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("vde")?;
    let ns_sw = Netns::new()?;
    let ns_a = Netns::new()?;
    let ns_b = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns_sw, &tmp, "sw", &[])?;

    let tap_a = unique_name("sya");
    let tap_b = unique_name("syb");
    let _plug_a = vde_plug_tap(&ns_a, &dir, &tap_a, "198.51.100.1/24")?;
    let _plug_b = vde_plug_tap(&ns_b, &dir, &tap_b, "198.51.100.2/24")?;
    ns_a.ip(["addr", "add", "2001:db8:5::1/64", "dev", &tap_a, "nodad"])?;
    ns_b.ip(["addr", "add", "2001:db8:5::2/64", "dev", &tap_b, "nodad"])?;

    ns_a.ping_eventually("198.51.100.2", 10)?;
    ns_b.ping("198.51.100.1", 3)?;
    ns_a.ping("2001:db8:5::2", 3)?;
    sw.assert_running()?;
    Ok(())
}

/// Test 3b: a UML guest on `eth0=vde,DIR` and a UML guest on
/// `eth0=daemon,,unix,DIR/ctl` share one VDE directory and ping each other;
/// a `vde_plug` tap in the same namespace is pinged by the vde guest too.
#[test]
fn uml_vde_and_daemon_guests_share_a_vde_dir() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("umlvde")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &[])?;
    let tap = unique_name("syv");
    let _plug = vde_plug_tap(&ns, &dir, &tap, "192.0.2.254/24")?;

    let mut g_daemon = Uml::new("daemon-guest")
        .daemon("02:00:00:00:03:02", &dir.join("ctl"), "192.0.2.2/24")
        .ping("192.0.2.254")
        .param("LINGER", "60")
        .start(&ns, &tmp)?;
    let mut g_vde = Uml::new("vde-guest")
        .vde(&dir, "02:00:00:00:03:01", "192.0.2.1/24")
        .ping("192.0.2.2")
        .param("LINGER", "60")
        .start(&ns, &tmp)?;
    g_vde.wait_ping_ok()?;
    g_daemon.wait_ping_ok()?;
    // The vde guest from the namespace, through the tap.
    ns.ping("192.0.2.1", 3)?;
    sw.assert_running()?;
    Ok(())
}

/// Test 4: QEMU `-netdev vde,sock=DIR` passes frames both ways. A guestless
/// QEMU joins its vde netdev and a tap (in the namespace) through an
/// internal hub; a UML guest on the switch and the namespace ping each
/// other across it.
#[test]
fn qemu_vde_netdev_passes_frames() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("qemu")?;
    let ns = Netns::new()?;
    let (mut sw, dir) = start_vde_switch(&ns, &tmp, "sw", &[])?;
    let tap = unique_name("syq");
    let _qemu = qemu_vde_tap(&ns, &dir, &tap, "192.0.2.254/24")?;

    let mut g = Uml::new("guest")
        .daemon("02:00:00:00:04:01", &dir.join("ctl"), "192.0.2.1/24")
        .ping("192.0.2.254")
        .param("LINGER", "60")
        .start(&ns, &tmp)?;
    g.wait_ping_ok()?;
    ns.ping("192.0.2.1", 3)?;
    sw.assert_running()?;
    Ok(())
}
