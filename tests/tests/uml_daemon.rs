//! UML guests on the uml_switch-style control socket (`--unix CTL`,
//! UML `ethN=daemon,MAC,unix,CTL`) and on a `--tap` port.
//!
//! The switch and the guests share one fresh network namespace: UML binds
//! abstract datagram sockets, which belong to a namespace.

use anyhow::Result;
use switchyard_tests::{preflight, Netns, SwitchCmd, TempDir, Uml};

/// Two guests on `--unix CTL`; guest 1 pings guest 2.
fn two_guests_ping(extra: &[&str]) -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("uml")?;
    let ns = Netns::new()?;
    let ctl = tmp.join("uml.ctl");
    let mut sw = SwitchCmd::native()?
        .unix(&ctl)
        .args(extra)
        .start(Some(&ns))?;

    let _g2 = Uml::new("g2")
        .daemon("02:00:00:00:01:02", &ctl, "192.0.2.2/24")
        .wait(60)
        .start(&ns, &tmp)?;
    let mut g1 = Uml::new("g1")
        .daemon("02:00:00:00:01:01", &ctl, "192.0.2.1/24")
        .ping("192.0.2.2")
        .start(&ns, &tmp)?;
    g1.wait_ping_ok()?;
    sw.assert_running()?;
    Ok(())
}

/// Test 1a: two UML guests ping each other through switchyard in switch mode.
#[test]
fn uml_daemon_guests_ping_switch_mode() -> Result<()> {
    two_guests_ping(&[])
}

/// Test 1b: the same with `--hub`.
#[test]
fn uml_daemon_guests_ping_hub_mode() -> Result<()> {
    two_guests_ping(&["--hub"])
}

/// Test 2: a UML guest pings the namespace behind a `--tap` port. The
/// switch, running in that namespace, creates the tap there; the test
/// addresses it 192.0.2.254/24.
#[test]
fn uml_guest_pings_tap_port() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tap")?;
    let ns = Netns::new()?;
    let ctl = tmp.join("uml.ctl");
    let tap = switchyard_tests::unique_name("syt");
    let mut sw = SwitchCmd::native()?
        .unix(&ctl)
        .arg("--tap")
        .arg(&tap)
        .start(Some(&ns))?;
    switchyard_tests::wait_until(std::time::Duration::from_secs(5), "the tap device", || {
        ns.has_link(&tap)
    })?;
    ns.addr_up(&tap, "192.0.2.254/24")?;

    let mut g = Uml::new("g1")
        .daemon("02:00:00:00:02:01", &ctl, "192.0.2.1/24")
        .ping("192.0.2.254")
        .param("LINGER", "30")
        .start(&ns, &tmp)?;
    g.wait_ping_ok()?;
    // And from the namespace to the guest, which stays up a while.
    ns.ping("192.0.2.1", 3)?;
    sw.assert_running()?;
    Ok(())
}
