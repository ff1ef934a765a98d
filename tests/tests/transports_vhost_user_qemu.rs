//! QEMU guests (Debian's kernel, a busybox initramfs, TCG) on switchyard's
//! `vhost-user` port: `-netdev vhost-user` with the guest's RAM in a shared
//! memfd, so the switch reads and fills the virtio-net rings directly.

use std::time::{Duration, Instant};

use anyhow::Result;
use switchyard_tests::qemu::{GuestImage, Nic, QemuGuest};
use switchyard_tests::transports::Ctl;
use switchyard_tests::{preflight, unique_name, wait_until, Netns, SwitchCmd, TempDir};

/// `--port vhost-user,name=NAME,path=SOCK[,extra]`.
fn vhost_user_port(name: &str, sock: &std::path::Path, extra: &str) -> String {
    format!("vhost-user,name={name},path={}{extra}", sock.display())
}

/// Two guests on two vhost-user ports ping each other and a namespace
/// behind a tap port, then move TCP with iperf3 between them (TSO on in
/// the guests; whether the switch takes it whole is its business); both
/// ports count frames both ways.
#[test]
fn qemu_guests_ping_and_move_tcp_through_vhost_user() -> Result<()> {
    preflight()?;
    let image = GuestImage::shared()?;
    let tmp = TempDir::new("tqv")?;
    let ns = Netns::new()?;
    let (va, vb) = (tmp.join("va.sock"), tmp.join("vb.sock"));
    let tap = unique_name("syq");
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = SwitchCmd::native()?
        .unix(&tmp.join("uml.ctl"))
        .args(ctl.args())
        .arg("--port")
        .arg(vhost_user_port("va", &va, ""))
        .arg("--port")
        .arg(vhost_user_port("vb", &vb, ""))
        .arg("--tap")
        .arg(&tap)
        .start(Some(&ns))?;
    wait_until(Duration::from_secs(10), "the tap port's device", || {
        ns.has_link(&tap)
    })?;
    ns.addr_up(&tap, "192.0.2.10/24")?;

    let start = Instant::now();
    let mut a = QemuGuest::new(
        "a",
        &image,
        Nic::VhostUser {
            socket: va.clone(),
            server: false,
        },
        "52:54:00:00:0a:01",
        "192.0.2.1/24",
    )
    .ping("192.0.2.2,192.0.2.10")
    .param("LINGER", "5")
    .start(Some(&ns), &tmp)?;
    let mut b = QemuGuest::new(
        "b",
        &image,
        Nic::VhostUser {
            socket: vb.clone(),
            server: false,
        },
        "52:54:00:00:0a:02",
        "192.0.2.2/24",
    )
    .ping("192.0.2.1,192.0.2.10")
    .param("LINGER", "5")
    .start(Some(&ns), &tmp)?;
    let boot_a = a.wait_ready()?;
    let boot_b = b.wait_ready()?;
    eprintln!("boot to SY_READY: a {boot_a:?}, b {boot_b:?}");
    a.wait_ping_ok()?;
    b.wait_ping_ok()?;
    eprintln!("pings done after {:?}", start.elapsed());
    ns.ping("192.0.2.1", 3)?;
    ns.ping("192.0.2.2", 3)?;
    ctl.expect_traffic("va")?;
    ctl.expect_traffic("vb")?;
    ctl.expect_traffic(&format!("tap:{tap}"))?;
    a.wait_halt(Duration::from_secs(30))?;
    b.wait_halt(Duration::from_secs(30))?;
    sw.assert_running()?;
    Ok(())
}
