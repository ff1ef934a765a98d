//! UML guests on switchyard's `vhost-user` port (`virtio_uml.device=SOCK:1`):
//! virtio-net rings in memory the guest shares with the switch.

use anyhow::{ensure, Result};
use std::time::Duration;
use switchyard_tests::process::{Proc, Stdin};
use switchyard_tests::transports::{counter, wait_attached, wait_detached, Ctl};
use switchyard_tests::vhost_user::VirtioUml;
use switchyard_tests::{preflight, Netns, SwitchCmd, TempDir, Uml};

/// Two virtio-net guests on two vhost-user ports (one with two queue
/// pairs, so the control queue is in use) and a guest on the uml_switch
/// control socket ping around the ring a → b → c → a through switchyard,
/// and the namespace's own stack behind a tap port pings both virtio
/// guests, small and large (a 6000-byte echo crosses as IP fragments);
/// both vhost-user ports count frames both ways, so the guests met
/// through them. Then 8 MB of TCP each: from a to the daemon guest (a's
/// super-frames cut by the switch, each segment sent from a's buffers to
/// the daemon socket) and from b to the namespace behind the tap (taken
/// whole, written to the tap from b's buffers); the receivers' own TCP
/// stacks check every byte.
#[test]
fn virtio_guests_ping_each_other_a_daemon_guest_and_a_tap() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tvu")?;
    let ns = Netns::new()?;
    let tap = switchyard_tests::unique_name("syvt");
    ns.ip(["tuntap", "add", "dev", &tap, "mode", "tap"])?;
    ns.addr_up(&tap, "192.0.2.4/24")?;
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
        .arg("--tap")
        .arg(&tap)
        .start(Some(&ns))?;

    let mut iperf = ns.command("iperf3");
    iperf.args(["-s", "-1", "-B", "192.0.2.4"]);
    let _server = Proc::spawn("iperf3 behind the tap", iperf, Stdin::Null)?;
    let mut a = VirtioUml::new("virtio-a", &va, "192.0.2.1/24")
        .ping("192.0.2.2", 30)
        .param("TCPTO", "192.0.2.3")
        .start(&ns, &tmp)?;
    let mut b = VirtioUml::new("virtio-b", &vb, "192.0.2.2/24")
        .ping("192.0.2.3", 30)
        .param("TCPTO", "192.0.2.4")
        .start(&ns, &tmp)?;
    let mut c = Uml::new("daemon-c")
        .daemon("02:00:00:00:0d:03", &ctl_sock, "192.0.2.3/24")
        .ping("192.0.2.1")
        .param("LINGER", "40")
        .param("IPERFD", "1")
        .start(&ns, &tmp)?;
    a.wait_ping_ok()?;
    b.wait_ping_ok()?;
    c.wait_ping_ok()?;
    a.wait_tcp_ok()?;
    b.wait_tcp_ok()?;
    // The guests linger 30 s after their own pings.
    for guest in ["192.0.2.1", "192.0.2.2"] {
        for size in ["56", "6000"] {
            let mut ping = ns.command("ping");
            ping.args([
                "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-s", size, guest,
            ]);
            let out = ping.output()?;
            ensure!(
                out.status.success(),
                "ping -s {size} {guest} from behind the tap: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    ctl.expect_traffic("va")?;
    ctl.expect_traffic("vb")?;
    // The TCP went as super-frames: more bytes per frame than an MTU.
    for name in ["va", "vb"] {
        expect_super_frames(&ctl, name)?;
    }
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

/// `sy-vhost-frontend SOCK good ARGS…` (a test frontend on rust-vmm's
/// `vhost` crate) as a process.
fn test_frontend(label: &str, sock: &std::path::Path, args: &[&str]) -> Result<Proc> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sy-vhost-frontend"));
    cmd.arg(sock).arg("good").args(args);
    Proc::spawn(label, cmd, Stdin::Null)
}

/// `received=N` of a frontend's report.
fn received(out: &str) -> Option<u64> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("received="))
        .and_then(|v| v.parse().ok())
}

/// `mode=client`: the switch connects to a frontend that listens (as QEMU
/// with `server=on`), retries while there is none, and connects again
/// after it goes; each time the frontend and a guest on a listening port
/// exchange 200 frames each way, and each outage is logged once, not per
/// attempt.
#[test]
fn a_client_port_reaches_a_listening_frontend_again_after_it_goes() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tvc")?;
    let ns = Netns::new()?;
    let (c, s) = (tmp.join("c.sock"), tmp.join("s.sock"));
    let mut sw = SwitchCmd::native()?
        .unix(&tmp.join("uml.ctl"))
        .arg("--port")
        .arg(format!(
            "vhost-user,name=c,path={},mode=client",
            c.display()
        ))
        .arg("--port")
        .arg(format!("vhost-user,name=s,path={}", s.display()))
        .start(Some(&ns))?;
    // Nobody listens yet: a few attempts fail.
    std::thread::sleep(Duration::from_millis(800));
    for round in 1..=2 {
        // Both wait for the other before sending.
        let args = [
            "--frames",
            "200",
            "--delay-ms",
            "500",
            "--linger-ms",
            "1500",
        ];
        let mut listening = test_frontend(
            "listening",
            &c,
            &[&args[..], &["--listen", "--mac", "02:00:00:00:0c:01"]].concat(),
        )?;
        wait_attached(&mut sw, "c", round)?;
        let mut peer = test_frontend(
            "peer",
            &s,
            &[&args[..], &["--mac", "02:00:00:00:0c:02"]].concat(),
        )?;
        listening.wait_exit(Duration::from_secs(30))?;
        peer.wait_exit(Duration::from_secs(30))?;
        for p in [&listening, &peer] {
            ensure!(
                received(&p.stdout()) == Some(200),
                "round {round}: {} received not all 200 frames: {}",
                p.name(),
                p.output()
            );
        }
        wait_detached(&mut sw, "c", round)?;
    }
    sw.assert_running()?;
    let warnings = sw.proc.count_lines("cannot connect to the frontend");
    ensure!(
        (1..=3).contains(&warnings),
        "expected one warning per outage (at most 3), found {warnings}:\n{}",
        sw.proc.output()
    );
    Ok(())
}

/// On a VLAN-aware switch a guest's frames are tagged in the switch's
/// copy of their heads alone: a virtio guest on an access port of VLAN 10
/// pings a daemon guest that has VLAN 10 tagged on a sub-interface and
/// sends it 8 MB of TCP (super-frames cut, each segment tagged and sent
/// from the guest's buffers; the trunk guest's 8021q and TCP check every
/// byte); a virtio guest on VLAN 20 reaches nobody.
#[test]
fn virtio_guests_on_vlan_access_ports_reach_a_trunk_guest_only_in_their_vlan() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tvv")?;
    let ns = Netns::new()?;
    let ctl_sock = tmp.join("uml.ctl");
    let (va, vb) = (tmp.join("va.sock"), tmp.join("vb.sock"));
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = SwitchCmd::native()?
        .unix(&ctl_sock)
        .args(ctl.args())
        .arg("--port")
        .arg(format!("vhost-user,name=va,path={}", va.display()))
        .arg("--port")
        .arg(format!("vhost-user,name=vb,path={}", vb.display()))
        .args(["--vlan", "va=10", "--vlan", "vb=20", "--vlan", "unix:1=/10"])
        .start(Some(&ns))?;
    let mut c = Uml::new("trunk-c")
        .daemon("02:00:00:00:0e:03", &ctl_sock, "198.51.100.3/24")
        .param("VLANS", "10:192.0.2.3/24")
        .param("IPERFD", "1")
        .wait(60)
        .start(&ns, &tmp)?;
    c.wait_ready(Duration::from_secs(60))?;
    // It stays up after its transfer, for its port's counters to be read.
    let mut a = VirtioUml::new("virtio-a", &va, "192.0.2.1/24")
        .ping("192.0.2.3", 30)
        .param("TCPTO", "192.0.2.3")
        .start(&ns, &tmp)?;
    let mut b = VirtioUml::new("virtio-b", &vb, "192.0.2.2/24")
        .ping("192.0.2.3", 30)
        .param("TRIES", "3")
        .start(&ns, &tmp)?;
    a.wait_ping_ok()?;
    a.wait_tcp_ok()?;
    b.proc
        .wait_for_output("SY_RESULT=", Duration::from_secs(60))?;
    ensure!(
        b.proc.output().contains("SY_RESULT=FAIL"),
        "a guest of VLAN 20 reached the trunk guest's VLAN 10 address:\n{}",
        b.proc.output()
    );
    // Its frames did reach the switch: VLAN 20 has no one else.
    ensure!(
        counter(&ctl.port("vb")?, "rx_frames") > 0,
        "the VLAN 20 guest sent nothing: its failure proves nothing"
    );
    expect_super_frames(&ctl, "va")?;
    sw.assert_running()?;
    Ok(())
}

/// Fails unless port `name`'s guest sent TSO super-frames: more bytes per
/// frame than an MTU.
fn expect_super_frames(ctl: &Ctl, name: &str) -> Result<()> {
    let p = ctl.port(name)?;
    let (bytes, frames) = (counter(&p, "rx_bytes"), counter(&p, "rx_frames"));
    ensure!(
        frames > 0 && bytes / frames > 1514,
        "port {name}: {bytes} bytes in {frames} frames from the guest: no TSO super-frames"
    );
    Ok(())
}
