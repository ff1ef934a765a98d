//! QEMU's network backends against switchyard's `--port` transports
//! (protocols.md §3): every datagram and stream flavour QEMU 7.2 has, and
//! the stream client's reconnecting.
//!
//! Layout of every test: namespace S runs switchyard (a VDE directory, the
//! port under test, a control socket) and a guestless QEMU whose backend
//! `s` is joined by an internal hub to a tap `qtB` (192.0.2.2) in S
//! (protocols.md §3.4). Namespace A holds `vde_plug tap://vtA DIR`
//! (192.0.2.1). The only path between the two taps is QEMU's backend and
//! the switch port, so pings in both directions plus the port's rx/tx
//! counters prove that the transport carries frames both ways.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::transports::{
    disable_ipv6, multicast_on_lo, qemu_bridge, wait_attached, wait_detached, wait_link_gone, Ctl,
};
use switchyard_tests::{preflight, Netns, Proc, Switch, SwitchCmd, TempDir};

const A_IP: &str = "192.0.2.1";
const B_IP: &str = "192.0.2.2";
const B_MAC: &str = "02:00:00:00:0b:02";

/// Who must be up first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// QEMU binds or listens; the switch sends or connects.
    QemuFirst,
    /// The switch listens; QEMU 7.2 connects once and never retries.
    SwitchFirst,
}

/// One transport: the switch's `--port` spec and QEMU's backend, both with
/// `@` standing for the test's temp directory; `port` is the name the
/// switch gives the port (`q`, or `q:1` for an accepted connection).
struct Case {
    spec: &'static str,
    backend: &'static str,
    port: &'static str,
    order: Order,
    mcast: bool,
}

struct Rig {
    // Drop order: clients, then the switch, then namespaces, then files.
    qemu: Proc,
    _plug: Proc,
    sw: Switch,
    ctl: Ctl,
    ns_a: Netns,
    ns_s: Netns,
    _tmp: TempDir,
}

fn fill(template: &str, dir: &Path) -> String {
    template.replace('@', &dir.display().to_string())
}

fn start_switch(ns: &Netns, tmp: &TempDir, ctl: &Ctl, spec: &str) -> Result<Switch> {
    SwitchCmd::native()?
        .vde(&tmp.join("sw"))
        .args(ctl.args())
        .arg("--port")
        .arg(spec)
        .start(Some(ns))
}

fn rig(case: &Case) -> Result<Rig> {
    preflight()?;
    let tmp = TempDir::new("tq")?;
    let ns_s = Netns::new()?;
    let ns_a = Netns::new()?;
    disable_ipv6(&ns_s)?;
    disable_ipv6(&ns_a)?;
    if case.mcast {
        multicast_on_lo(&ns_s)?;
    }
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let spec = fill(case.spec, tmp.path());
    let backend = fill(case.backend, tmp.path());
    let (qemu, sw) = match case.order {
        Order::QemuFirst => {
            let q = qemu_bridge(&ns_s, &backend, "qtB", B_MAC, &format!("{B_IP}/24"))?;
            (q, start_switch(&ns_s, &tmp, &ctl, &spec)?)
        }
        Order::SwitchFirst => {
            let sw = start_switch(&ns_s, &tmp, &ctl, &spec)?;
            let q = qemu_bridge(&ns_s, &backend, "qtB", B_MAC, &format!("{B_IP}/24"))?;
            (q, sw)
        }
    };
    let plug = vde_plug_tap(&ns_a, &tmp.join("sw"), "vtA", &format!("{A_IP}/24"))?;
    Ok(Rig {
        qemu,
        _plug: plug,
        sw,
        ctl,
        ns_a,
        ns_s,
        _tmp: tmp,
    })
}

/// A pings B and B pings A; the port counted frames both ways.
fn ping_both_ways(r: &mut Rig, port: &str) -> Result<()> {
    r.ns_a
        .ping_eventually(B_IP, 15)
        .context("A (vde_plug) → B (QEMU's tap)")?;
    r.ns_s
        .ping(A_IP, 3)
        .context("B (QEMU's tap) → A (vde_plug)")?;
    r.ctl.expect_traffic(port)?;
    r.sw.assert_running()?;
    ensure!(
        r.qemu.is_running()?,
        "QEMU died; output:\n{}",
        r.qemu.output()
    );
    Ok(())
}

fn check(case: Case) -> Result<()> {
    let mut r = rig(&case)?;
    wait_attached(&mut r.sw, case.port, 1)?;
    let result = ping_both_ways(&mut r, case.port);
    if case.mcast {
        // Where the port sends from matters (see the mcast port's `own=`).
        let log = r.sw.proc.output();
        let attached = log
            .lines()
            .find(|l| l.contains("port attached port=q "))
            .unwrap_or("(no `port attached` line)")
            .to_string();
        let addrs = r.ns_s.ip(["-4", "addr", "show"]).unwrap_or_default();
        return result.with_context(|| {
            format!("the mcast port: {attached}\naddresses in the switch's namespace:\n{addrs}")
        });
    }
    result
}

/// `-netdev dgram` inet unicast ↔ `udp,local=HOST:PORT,remote=HOST:PORT`.
#[test]
fn qemu_dgram_inet() -> Result<()> {
    check(Case {
        spec: "udp,name=q,local=127.0.0.1:6002,remote=127.0.0.1:6001",
        backend: "dgram,local.type=inet,local.host=127.0.0.1,local.port=6001,\
                  remote.type=inet,remote.host=127.0.0.1,remote.port=6002",
        port: "q",
        order: Order::QemuFirst,
        mcast: false,
    })
}

/// `-netdev dgram` with unix paths ↔ `udp,local=PATH,remote=PATH`.
#[test]
fn qemu_dgram_unix() -> Result<()> {
    check(Case {
        spec: "udp,name=q,local=@/sw.dgram,remote=@/q.dgram",
        backend:
            "dgram,local.type=unix,local.path=@/q.dgram,remote.type=unix,remote.path=@/sw.dgram",
        port: "q",
        order: Order::QemuFirst,
        mcast: false,
    })
}

/// `-netdev socket,udp=R,localaddr=L` ↔ `udp`.
#[test]
fn qemu_socket_udp() -> Result<()> {
    check(Case {
        spec: "udp,name=q,local=127.0.0.1:6004,remote=127.0.0.1:6003",
        backend: "socket,udp=127.0.0.1:6004,localaddr=127.0.0.1:6003",
        port: "q",
        order: Order::QemuFirst,
        mcast: false,
    })
}

/// `-netdev socket,mcast=GROUP:PORT` ↔ `mcast` with its default group
/// (239.192.168.1:1102). As in every case here, QEMU and its addressed tap
/// are up before the switch starts, like a host whose interfaces are
/// configured before the daemon: the switch must still send where the
/// multicast route (`224.0.0.0/4 dev lo`) says.
#[test]
fn qemu_socket_mcast() -> Result<()> {
    check(Case {
        spec: "mcast,name=q",
        backend: "socket,mcast=239.192.168.1:1102",
        port: "q",
        order: Order::QemuFirst,
        mcast: true,
    })
}

/// `-netdev dgram` with a multicast remote ↔ `mcast,group=` (a group other
/// than the default, so the option is exercised too).
#[test]
fn qemu_dgram_mcast() -> Result<()> {
    check(Case {
        spec: "mcast,name=q,group=239.192.168.7:1200,ttl=1",
        backend: "dgram,remote.type=inet,remote.host=239.192.168.7,remote.port=1200",
        port: "q",
        order: Order::QemuFirst,
        mcast: true,
    })
}

/// QEMU `-netdev stream,server=on` (TCP) ↔ `stream,connect=HOST:PORT`.
#[test]
fn qemu_stream_server_inet() -> Result<()> {
    check(Case {
        spec: "stream,name=q,connect=127.0.0.1:5555",
        backend: "stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5555",
        port: "q",
        order: Order::QemuFirst,
        mcast: false,
    })
}

/// QEMU `-netdev stream,server=on` (unix) ↔ `stream,connect=PATH`.
#[test]
fn qemu_stream_server_unix() -> Result<()> {
    check(Case {
        spec: "stream,name=q,connect=@/qemu.stream",
        backend: "stream,server=on,addr.type=unix,addr.path=@/qemu.stream",
        port: "q",
        order: Order::QemuFirst,
        mcast: false,
    })
}

/// QEMU `-netdev socket,listen=` (the old syntax) ↔ `stream,connect=`.
#[test]
fn qemu_socket_listen() -> Result<()> {
    check(Case {
        spec: "stream,name=q,connect=127.0.0.1:5560",
        backend: "socket,listen=127.0.0.1:5560",
        port: "q",
        order: Order::QemuFirst,
        mcast: false,
    })
}

/// QEMU `-netdev stream,server=off` (unix) ↔ `stream,listen=PATH`; the
/// accepted connection is port `q:1`.
#[test]
fn qemu_stream_client_unix() -> Result<()> {
    check(Case {
        spec: "stream,name=q,listen=@/sw.stream",
        backend: "stream,server=off,addr.type=unix,addr.path=@/sw.stream",
        port: "q:1",
        order: Order::SwitchFirst,
        mcast: false,
    })
}

/// QEMU `-netdev stream,server=off` (TCP) ↔ `stream,listen=HOST:PORT`.
#[test]
fn qemu_stream_client_inet() -> Result<()> {
    check(Case {
        spec: "stream,name=q,listen=127.0.0.1:5557",
        backend: "stream,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=5557",
        port: "q:1",
        order: Order::SwitchFirst,
        mcast: false,
    })
}

/// QEMU `-netdev socket,connect=` ↔ `stream,listen=HOST:PORT`.
#[test]
fn qemu_socket_connect() -> Result<()> {
    check(Case {
        spec: "stream,name=q,listen=127.0.0.1:5556",
        backend: "socket,connect=127.0.0.1:5556",
        port: "q:1",
        order: Order::SwitchFirst,
        mcast: false,
    })
}

/// Test 3: `stream,connect=` reconnects. The switch starts first and fails
/// to connect (logged); QEMU's stream server starts later and traffic
/// flows; QEMU is killed (the port detaches) and restarted on the same
/// address, and traffic flows again without touching the switch.
#[test]
fn stream_client_reconnects_to_a_restarted_qemu() -> Result<()> {
    const BACKEND: &str = "stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5558";
    preflight()?;
    let tmp = TempDir::new("tr")?;
    let ns_s = Netns::new()?;
    let ns_a = Netns::new()?;
    disable_ipv6(&ns_s)?;
    disable_ipv6(&ns_a)?;
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = start_switch(&ns_s, &tmp, &ctl, "stream,name=q,connect=127.0.0.1:5558")?;
    let _plug = vde_plug_tap(&ns_a, &tmp.join("sw"), "vtA", &format!("{A_IP}/24"))?;
    // Nobody listens yet: the first attempt fails and is logged.
    sw.proc
        .wait_for_output("cannot connect", Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(700));
    ensure!(
        sw.proc.count_lines("port attached port=q ") == 0,
        "the port attached with nobody listening; log:\n{}",
        sw.proc.output()
    );

    let mut qemu = qemu_bridge(&ns_s, BACKEND, "qtB", B_MAC, &format!("{B_IP}/24"))?;
    wait_attached(&mut sw, "q", 1)?;
    ns_a.ping_eventually(B_IP, 15)
        .context("first QEMU: A → B")?;
    ns_s.ping(A_IP, 3).context("first QEMU: B → A")?;
    ctl.expect_traffic("q")?;
    ensure!(
        sw.proc.output().contains("connected after retrying"),
        "no `connected after retrying` line; log:\n{}",
        sw.proc.output()
    );

    // The server goes away: the connection ends and the port detaches.
    qemu.kill()?;
    drop(qemu);
    wait_detached(&mut sw, "q", 1)?;
    wait_link_gone(&ns_s, "qtB")?;
    sw.assert_running()?;

    // A new server on the same address: the switch finds it by itself.
    let mut qemu = qemu_bridge(&ns_s, BACKEND, "qtB", B_MAC, &format!("{B_IP}/24"))?;
    wait_attached(&mut sw, "q", 2)?;
    ns_a.ping_eventually(B_IP, 15)
        .context("restarted QEMU: A → B")?;
    ns_s.ping(A_IP, 3).context("restarted QEMU: B → A")?;
    ctl.expect_traffic("q")?;
    ensure!(qemu.is_running()?, "QEMU died; output:\n{}", qemu.output());
    sw.assert_running()?;
    Ok(())
}
