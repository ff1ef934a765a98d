//! QEMU guests (Debian's kernel, a busybox initramfs, TCG) on switchyard's
//! `vhost-user` port: `-netdev vhost-user` with the guest's RAM in a shared
//! memfd, so the switch reads and fills the virtio-net rings directly. The
//! guests keep virtio-net's default offloads (checksum, TSO, merged
//! receive buffers); whether the switch takes them is its business, so
//! nothing here assumes they were negotiated.
//!
//! Every test runs in a namespace of its own, on 192.0.2.0/24; the switch
//! has a tap port there addressed 192.0.2.10 (the "host").

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::qemu::{iperf_gbps, Accel, GuestImage, Nic, QemuGuest, RunningQemu};
use switchyard_tests::transports::{counter, drops, need, wait_attached, wait_detached, Ctl};
use switchyard_tests::{
    preflight, unique_name, wait_until, Netns, Proc, Stdin, Switch, SwitchCmd, TempDir,
};

/// The tap port's address in the test namespace.
const HOST: &str = "192.0.2.10";

/// How long an iperf3 client guest may take from boot to its JSON.
const IPERF_TIMEOUT: Duration = Duration::from_secs(150);

/// A switch in `ns` with a control socket, a tap port addressed
/// [`HOST`]/24, and `ports` (`--port` specs).
fn switch_with_host(ns: &Netns, tmp: &TempDir, ctl: &Ctl, ports: &[String]) -> Result<Switch> {
    let tap = unique_name("syq");
    let mut cmd = SwitchCmd::native()?
        .unix(&tmp.join("uml.ctl"))
        .args(ctl.args())
        .arg("--tap")
        .arg(&tap);
    for p in ports {
        cmd = cmd.arg("--port").arg(p);
    }
    let sw = cmd.start(Some(ns))?;
    wait_until(Duration::from_secs(10), "the tap port's device", || {
        ns.has_link(&tap)
    })?;
    ns.addr_up(&tap, &format!("{HOST}/24"))?;
    Ok(sw)
}

/// `vhost-user,name=NAME,path=SOCK[EXTRA]`.
fn vhost_user_port(name: &str, sock: &Path, extra: &str) -> String {
    format!("vhost-user,name={name},path={}{extra}", sock.display())
}

/// QEMU connects to the switch's socket (and reconnects).
fn connects_to(socket: &Path) -> Nic {
    Nic::VhostUser {
        socket: socket.to_path_buf(),
        server: false,
    }
}

/// Prints how long a guest took to boot (the report quotes it).
fn note_boot(label: &str, g: &mut RunningQemu) -> Result<()> {
    let took = g.wait_ready()?;
    eprintln!(
        "{label}: SY_READY {:.1} s after QEMU started",
        took.as_secs_f64()
    );
    Ok(())
}

/// Two guests on two vhost-user ports ping each other and the namespace
/// behind the tap port, then move TCP with iperf3 both ways (b to a with
/// 2 streams, then a to b). The namespace pings both guests; the ports
/// count the bulk (at least the bytes iperf3 delivered, both ways) and no
/// bad descriptor.
#[test]
fn qemu_guests_ping_and_move_tcp_through_vhost_user() -> Result<()> {
    preflight()?;
    let image = GuestImage::shared()?;
    let accel = Accel::probe(&image);
    let tmp = TempDir::new("tqv")?;
    let ns = Netns::new()?;
    let (va, vb) = (tmp.join("va.sock"), tmp.join("vb.sock"));
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let ports = [
        vhost_user_port("va", &va, ""),
        vhost_user_port("vb", &vb, ""),
    ];
    let mut sw = switch_with_host(&ns, &tmp, &ctl, &ports)?;

    let mut a = QemuGuest::new(
        "a",
        &image,
        connects_to(&va),
        "52:54:00:00:0a:01",
        "192.0.2.1/24",
    )
    .accel(accel)
    .ping_first(&format!("192.0.2.2,{HOST}"))
    .iperf_server()
    .start(Some(&ns), &tmp)?;
    let mut b = QemuGuest::new(
        "b",
        &image,
        connects_to(&vb),
        "52:54:00:00:0a:02",
        "192.0.2.2/24",
    )
    .accel(accel)
    .ping_first(&format!("192.0.2.1,{HOST}"))
    .iperf_runs("192.0.2.1", 3, &[(2, false), (1, true)])
    .param("LINGER", "10")
    .start(Some(&ns), &tmp)?;
    note_boot("guest a", &mut a)?;
    note_boot("guest b", &mut b)?;
    eprintln!("offloads negotiated by guest b: {:?}", b.offloads()?);
    a.wait_ping_ok()?;
    b.wait_ping_ok()?;
    ns.ping("192.0.2.1", 3)?;
    ns.ping("192.0.2.2", 3)?;

    let runs = b.iperf_jsons(2, IPERF_TIMEOUT)?;
    let (forward, reverse) = (&runs[0], &runs[1]);
    eprintln!(
        "iperf3 through vhost-user: b -> a 2 streams {:.3} Gbit/s, a -> b 1 stream {:.3} Gbit/s",
        iperf_gbps(forward)?,
        iperf_gbps(reverse)?
    );
    let (to_a, to_b) = (received_bytes(forward)?, received_bytes(reverse)?);
    ensure!(
        to_a > 0 && to_b > 0,
        "iperf3 moved nothing: {forward} {reverse}"
    );
    let (pa, pb) = (ctl.port("va")?, ctl.port("vb")?);
    // Every byte iperf3 delivered was received from one port and sent to
    // the other (plus headers, ACKs and the pings).
    for (what, count, least) in [
        ("rx_bytes on vb", counter(&pb, "rx_bytes"), to_a),
        ("tx_bytes on va", counter(&pa, "tx_bytes"), to_a),
        ("rx_bytes on va", counter(&pa, "rx_bytes"), to_b),
        ("tx_bytes on vb", counter(&pb, "tx_bytes"), to_b),
    ] {
        ensure!(
            count >= least,
            "iperf3 delivered {least} bytes but the switch counted {what}={count}: {pa} {pb}"
        );
    }
    for (name, p) in [("va", &pa), ("vb", &pb)] {
        ensure!(
            drops(p, "bad_descriptor") == 0,
            "port {name} counted bad descriptors from a well-behaved guest: {p}"
        );
        ctl.expect_traffic(name)?;
    }
    ctl.expect_traffic(&format!("tap:{}", tap_of(&ctl)?))?;
    sw.assert_running()?;
    Ok(())
}

/// `end.sum_received.bytes` of `iperf3 -J` output.
fn received_bytes(json: &str) -> Result<u64> {
    let j: serde_json::Value = serde_json::from_str(json)?;
    j.pointer("/end/sum_received/bytes")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("no end.sum_received.bytes in {json}"))
}

/// The device of the switch's one tap port (its name is `tap:DEVICE`).
fn tap_of(ctl: &Ctl) -> Result<String> {
    ctl.ports()?
        .iter()
        .filter_map(|p| p.get("name").and_then(serde_json::Value::as_str))
        .find_map(|n| n.strip_prefix("tap:").map(str::to_string))
        .context("the switch lists no tap port")
}

/// A guest SIGKILLed in the middle of its life (no clean shutdown of the
/// rings) and a new one started on the same socket: the new one pings the
/// host again and moves TCP to an iperf3 server there, and the switch runs
/// on.
#[test]
fn a_killed_qemu_guest_restarted_on_the_same_socket_comes_back() -> Result<()> {
    preflight()?;
    let image = GuestImage::shared()?;
    let accel = Accel::probe(&image);
    let iperf3 = need("iperf3", "iperf3")?;
    let tmp = TempDir::new("tqk")?;
    let ns = Netns::new()?;
    let sock = tmp.join("v.sock");
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = switch_with_host(&ns, &tmp, &ctl, &[vhost_user_port("v", &sock, "")])?;

    let guest = || {
        QemuGuest::new(
            "g",
            &image,
            connects_to(&sock),
            "52:54:00:00:0b:01",
            "192.0.2.1/24",
        )
        .accel(accel)
        .ping_first(HOST)
    };
    let mut first = guest().wait(300).start(Some(&ns), &tmp)?;
    note_boot("first guest", &mut first)?;
    first.wait_ping_ok()?;
    ns.ping("192.0.2.1", 3)?;
    first.kill()?;
    wait_detached(&mut sw, "v", 1)?;
    sw.assert_running()?;

    let mut server = ns.command(&iperf3);
    server.args(["-s", "-1", "-B", HOST]);
    let _server = Proc::spawn("iperf3 -s", server, Stdin::Null)?;
    let started = Instant::now();
    let mut second = guest()
        .iperf_client(HOST, 3, 1)
        .param("LINGER", "5")
        .start(Some(&ns), &tmp)?;
    note_boot("second guest", &mut second)?;
    second.wait_ping_ok()?;
    let gbps = iperf_gbps(&second.iperf_json(IPERF_TIMEOUT)?)?;
    eprintln!(
        "after the restart: iperf3 guest -> tap namespace {gbps:.3} Gbit/s ({:.1} s from start)",
        started.elapsed().as_secs_f64()
    );
    wait_attached(&mut sw, "v", 2)?;
    ctl.expect_traffic("v")?;
    second.wait_halt(Duration::from_secs(60))?;
    sw.assert_running()?;
    Ok(())
}

/// `mode=client`: QEMU listens (`server=on,wait=off`) and the switch
/// connects to it. QEMU is SIGKILLed and started again on the same path;
/// the port connects again (with its backoff) and the new guest pings the
/// host.
#[test]
fn a_client_port_reconnects_to_a_restarted_qemu() -> Result<()> {
    preflight()?;
    let image = GuestImage::shared()?;
    let accel = Accel::probe(&image);
    let tmp = TempDir::new("tqc")?;
    let ns = Netns::new()?;
    let sock = tmp.join("c.sock");
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = switch_with_host(
        &ns,
        &tmp,
        &ctl,
        &[vhost_user_port("c", &sock, ",mode=client")],
    )?;
    for round in 1..=2 {
        // QEMU removes a stale socket file itself when it binds.
        let mut g = QemuGuest::new(
            &format!("listening-{round}"),
            &image,
            Nic::VhostUser {
                socket: sock.clone(),
                server: true,
            },
            "52:54:00:00:0c:01",
            "192.0.2.1/24",
        )
        .accel(accel)
        .ping_first(HOST)
        .wait(300)
        .start(Some(&ns), &tmp)?;
        wait_attached(&mut sw, "c", round)?;
        note_boot(&format!("listening guest {round}"), &mut g)?;
        g.wait_ping_ok()?;
        ns.ping("192.0.2.1", 3)?;
        ctl.expect_traffic("c")?;
        g.kill()?;
        wait_detached(&mut sw, "c", round)?;
        sw.assert_running()?;
    }
    Ok(())
}
