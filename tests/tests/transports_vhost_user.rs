//! UML guests on switchyard's `vhost-user` port (`virtio_uml.device=SOCK:1`):
//! virtio-net rings in memory the guest shares with the switch.

use anyhow::Result;
use std::time::Duration;
use switchyard_tests::transports::Ctl;
use switchyard_tests::vhost_user::VirtioUml;
use switchyard_tests::{preflight, Netns, SwitchCmd, TempDir, Uml};

/// Two virtio-net guests on two vhost-user ports and a guest on the
/// uml_switch control socket ping around the ring a → b → c → a through
/// switchyard; both vhost-user ports count frames both ways, so the guests
/// met through them.
#[test]
fn virtio_guests_ping_each_other_and_a_daemon_guest() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tvu")?;
    let ns = Netns::new()?;
    let ctl_sock = tmp.join("uml.ctl");
    let (va, vb) = (tmp.join("va.sock"), tmp.join("vb.sock"));
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = SwitchCmd::native()?
        .unix(&ctl_sock)
        .args(ctl.args())
        .arg("--port")
        .arg(format!(
            "vhost-user,name=va,path={},mac=02:00:00:00:0d:01",
            va.display()
        ))
        .arg("--port")
        .arg(format!(
            "vhost-user,name=vb,path={},mtu=1500,queues=2",
            vb.display()
        ))
        .start(Some(&ns))?;

    let mut a = VirtioUml::new("virtio-a", &va, "192.0.2.1/24")
        .ping("192.0.2.2", 30)
        .start(&ns, &tmp)?;
    let mut b = VirtioUml::new("virtio-b", &vb, "192.0.2.2/24")
        .ping("192.0.2.3", 30)
        .start(&ns, &tmp)?;
    let mut c = Uml::new("daemon-c")
        .daemon("02:00:00:00:0d:03", &ctl_sock, "192.0.2.3/24")
        .ping("192.0.2.1")
        .param("LINGER", "30")
        .start(&ns, &tmp)?;
    a.wait_ping_ok()?;
    b.wait_ping_ok()?;
    c.wait_ping_ok()?;
    ctl.expect_traffic("va")?;
    ctl.expect_traffic("vb")?;
    sw.assert_running()?;
    Ok(())
}

/// One frontend at a time, and the next after it: a guest pings through
/// the port and powers off, and a second guest on the same socket pings
/// again.
#[test]
fn a_vhost_user_port_serves_the_next_guest_after_one_goes() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tvr")?;
    let ns = Netns::new()?;
    let ctl_sock = tmp.join("uml.ctl");
    let sock = tmp.join("v.sock");
    let mut sw = SwitchCmd::native()?
        .unix(&ctl_sock)
        .arg("--port")
        .arg(format!("vhost-user,name=v,path={}", sock.display()))
        .start(Some(&ns))?;
    let _peer = Uml::new("daemon-peer")
        .daemon("02:00:00:00:0e:02", &ctl_sock, "192.0.2.2/24")
        .wait(120)
        .start(&ns, &tmp)?;
    for round in 1..=2 {
        let mut g = VirtioUml::new(&format!("virtio-{round}"), &sock, "192.0.2.1/24")
            .ping("192.0.2.2", 0)
            .start(&ns, &tmp)?;
        g.wait_ping_ok()?;
        g.wait_halt(Duration::from_secs(30))?;
    }
    sw.assert_running()?;
    Ok(())
}
