//! UML's `mcast` transport (protocols.md §4.3) on switchyard's `mcast` port.

use anyhow::Result;
use switchyard_tests::transports::{multicast_on_lo, Ctl};
use switchyard_tests::{preflight, Netns, SwitchCmd, TempDir, Uml};

/// Test 1: a UML guest on `eth0=mcast` (the default group
/// 239.192.168.1:1102) and a UML guest on `eth0=daemon,,unix,CTL` ping each
/// other through switchyard, which joins the group with `--port mcast`.
/// Switch and guests share one namespace with multicast routed over `lo`.
/// The mcast port's counters show frames both ways, so the guests did not
/// reach each other some other way.
#[test]
fn uml_mcast_guest_and_daemon_guest_ping_each_other() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tum")?;
    let ns = Netns::new()?;
    multicast_on_lo(&ns)?;
    let ctl_sock = tmp.join("uml.ctl");
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = SwitchCmd::native()?
        .unix(&ctl_sock)
        .args(ctl.args())
        .args(["--port", "mcast,name=m"])
        .start(Some(&ns))?;

    // Each pings the other, then stays up long enough to answer the
    // other's pings (the slower one may still be booting).
    let mut g_mcast = Uml::new("mcast-guest")
        .eth("mcast,02:00:00:00:0c:02", "192.0.2.2/24")
        .ping("192.0.2.1")
        .param("LINGER", "30")
        .start(&ns, &tmp)?;
    let mut g_daemon = Uml::new("daemon-guest")
        .daemon("02:00:00:00:0c:01", &ctl_sock, "192.0.2.1/24")
        .ping("192.0.2.2")
        .param("LINGER", "30")
        .start(&ns, &tmp)?;
    g_daemon.wait_ping_ok()?;
    g_mcast.wait_ping_ok()?;
    ctl.expect_traffic("m")?;
    sw.assert_running()?;
    Ok(())
}
