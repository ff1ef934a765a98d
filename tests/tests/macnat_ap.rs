//! MAC-NAT behind a simulated Wi-Fi access point (mac-nat.md §5.2, §5.4,
//! §5.5): the AP drops every frame from the station whose source MAC is not
//! the station's, and every unicast to it that is not addressed to the
//! station's MAC. Guests behind `--port pcap,device=wlan0,mac_nat=on` must
//! still get DHCPv4 leases, SLAAC and DHCPv6 addresses and reach a LAN host
//! by ping and TCP over IPv4 and IPv6; without MAC-NAT they must not.
//!
//! Guests run the `guest_agent` helper (this test binary re-run inside the
//! guest, see `switchyard_tests::ap`), so vde_plug guests and the UML guest
//! do exactly the same steps.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::ap::{
    self, guest_mac, slaac_of, write_udhcpc_script, AgentEnv, AgentReport, Ap, LanServer, TapGuest,
    GUEST_DEV, LAN_V4, LAN_V6, STA_DEV, STA_MAC, TCP_PORT,
};
use switchyard_tests::switch::{start_vde_switch, Switch};
use switchyard_tests::transports::{dhcp_lease, need, Ctl};
use switchyard_tests::util::{output, run, wait_until};
use switchyard_tests::{preflight, TempDir, Uml};

/// The AP, the LAN host's TCP server and a switch whose pcap port sits on
/// the station's interface. Fields drop in order: switch, server, AP, temp dir.
struct Rig {
    sw: Switch,
    ctl: Ctl,
    dir: std::path::PathBuf,
    server: LanServer,
    ap: Ap,
    tmp: TempDir,
}

fn rig(mac_nat: bool) -> Result<Rig> {
    preflight()?;
    need("udhcpc", "udhcpc")?;
    need("busybox", "busybox")?;
    need("ping", "iputils-ping")?;
    let tmp = TempDir::new("mnap")?;
    let ap = Ap::new(&tmp)?;
    let server = LanServer::start(&ap.lan, TCP_PORT)?;
    let control = tmp.join("control.sock");
    let spec = format!(
        "pcap,device={STA_DEV}{}",
        if mac_nat { ",mac_nat=on" } else { "" }
    );
    let control_arg = control.display().to_string();
    let (sw, dir) = start_vde_switch(
        &ap.host,
        &tmp,
        "sw",
        &["--port", &spec, "--control", &control_arg],
    )?;
    Ok(Rig {
        sw,
        ctl: Ctl::new(&control),
        dir,
        server,
        ap,
        tmp,
    })
}

/// Fails unless every guest reported success and distinct addresses.
fn check_reports(reports: &[(String, AgentReport)], dhcpv6: bool) -> Result<()> {
    let mut seen = HashSet::new();
    for (name, r) in reports {
        ensure!(r.ok, "guest {name} failed; agent output:\n{}", r.output);
        ensure!(
            r.dhcp4.is_some() && r.slaac.is_some() && (r.dhcp6.is_some() || !dhcpv6),
            "guest {name} is missing an address: {r:?}"
        );
        let expected = if dhcpv6 { 3 } else { 2 };
        ensure!(
            r.pings.len() == expected && r.tcp.len() == expected,
            "guest {name}: pings {:?}, TCP {:?}",
            r.pings,
            r.tcp
        );
        for a in r.addrs() {
            ensure!(seen.insert(a), "address {a} was handed out twice ({name})");
        }
    }
    Ok(())
}

/// ICMP echo requests received so far in `ns` (`/proc/net/snmp` InEchos).
fn in_echos(ns: &switchyard_tests::Netns) -> Result<u64> {
    let text = run(ns.command("cat").arg("/proc/net/snmp"))?;
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next(), icmp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Icmp lines in /proc/net/snmp: {text}");
    };
    let i = names
        .split_whitespace()
        .position(|n| n == "InEchos")
        .context("no InEchos")?;
    Ok(values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Eight vde_plug guests and one UML guest behind the MAC-NAT each get a
/// DHCPv4 lease, a SLAAC address and a DHCPv6 address, and from each
/// address ping the LAN host and open a TCP connection to it (which sees
/// the guest's own address). The LAN host reaches every guest address
/// back, knows them all at the station's MAC, the AP rejects nothing, the
/// DHCP server keyed each lease on the guest's own MAC, `ctl macnat` lists
/// every binding, and the station's own DHCP still works (§5.5 S2, S5, S8,
/// S9, S10, S18).
#[test]
fn guests_get_addresses_and_reach_the_lan_through_mac_nat() -> Result<()> {
    const TAP_GUESTS: u8 = 8;
    let started = Instant::now();
    let mut r = rig(true)?;
    let oracle0 = r.ap.oracle()?;
    let script = write_udhcpc_script(r.tmp.path())?;
    let env = AgentEnv {
        script: script.clone(),
        dhcpv6: true,
    };

    // The UML guest boots while the tap guests work.
    let uml_tmp = TempDir::new("mnuml")?;
    // Uml::start installs tests/guest/init.sh only when `init.sh` is not
    // already in its temp dir: put the agent-running init there first.
    let init = uml_tmp.join("init.sh");
    std::fs::write(&init, ap::UML_INIT)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let uml_n = TAP_GUESTS + 1;
    let exe = ap::agent_exe()?;
    let mut uml = Uml::new("uml guest")
        .eth(
            &format!("vde,{},{}", r.dir.display(), guest_mac(uml_n)),
            "dhcp",
        )
        .param("SY_EXE", &exe.display().to_string());
    for (k, v) in env.vars("eth0") {
        uml = uml.param(&k, &v);
    }
    let mut uml = uml.start(&r.ap.host, &uml_tmp)?;

    let mut guests = Vec::new();
    for n in 1..=TAP_GUESTS {
        guests.push(TapGuest::start(&r.dir, n)?);
    }
    let mut reports = ap::run_agents(&guests, &env)?;
    uml.proc
        .wait_for_output("SY_AGENT_EXIT", Duration::from_secs(120))?;
    reports.push(("uml".into(), AgentReport::parse(&uml.proc.output())));
    check_reports(&reports, true)?;
    for ((name, rep), n) in reports.iter().zip(1..) {
        ensure!(
            rep.slaac == Some(slaac_of(n)),
            "guest {name}: SLAAC address {:?}, expected {}",
            rep.slaac,
            slaac_of(n)
        );
    }
    eprintln!(
        "all guests configured and checked after {:?}",
        started.elapsed()
    );

    // Inbound: the LAN host reaches every guest address, and knows each one
    // at the station's MAC only.
    for (name, rep) in &reports {
        for a in rep.addrs() {
            r.ap.lan
                .ping(&a.to_string(), 2)
                .with_context(|| format!("LAN -> guest {name} at {a}"))?;
            let neigh = r.ap.lan.ip(["neigh", "show", "to", &a.to_string()])?;
            ensure!(
                neigh.contains(STA_MAC),
                "the LAN host's neighbour entry for {name}'s {a} is {neigh:?}, expected {STA_MAC}"
            );
        }
    }

    // The LAN host's TCP server saw every guest address as a peer.
    let peers = r.server.peers();
    for (name, rep) in &reports {
        for a in rep.addrs() {
            ensure!(
                peers.contains(&a),
                "the LAN server never saw {name}'s {a}: {peers:?}"
            );
        }
    }

    // dnsmasq keyed the leases on the guests' own MACs (chaddr untouched).
    let leases = std::fs::read_to_string(&r.ap.leases)?;
    for ((name, rep), n) in reports.iter().zip(1..) {
        let v4 = rep.dhcp4.map(|a| a.to_string()).unwrap_or_default();
        ensure!(
            leases
                .lines()
                .any(|l| l.contains(&guest_mac(n)) && l.contains(&v4)),
            "dnsmasq's lease file has no {v4} for {name} ({}):\n{leases}",
            guest_mac(n)
        );
    }

    // `ctl macnat` binds every guest address to that guest's MAC.
    let entries = ap::macnat_bindings(&r.ctl)?;
    for ((name, rep), n) in reports.iter().zip(1..) {
        for a in rep.addrs() {
            ensure!(
                entries
                    .iter()
                    .any(|(addr, mac)| *addr == a.to_string() && *mac == guest_mac(n)),
                "ctl macnat has no binding {a} -> {} for {name}: {entries:?}",
                guest_mac(n)
            );
        }
    }

    // The AP rejected nothing.
    let oracle = r.ap.oracle()?;
    ensure!(
        oracle == oracle0,
        "the AP dropped frames (from_sta, to_sta) {oracle0:?} -> {oracle:?}"
    );

    // The station's own DHCP keeps working next to the guests (S18).
    let host_lease = dhcp_lease(&r.ap.host, STA_DEV, r.tmp.path())
        .context("the station's own DHCP with MAC-NAT on")?;
    r.ap.host.ping(ap::AP_V4, 2)?;
    ensure!(
        !reports
            .iter()
            .any(|(_, rep)| rep.dhcp4.is_some_and(|a| a.to_string() == host_lease)),
        "the station got a guest's address {host_lease}"
    );
    ensure!(r.ap.oracle()? == oracle0, "the AP dropped frames");
    r.sw.assert_running()?;
    eprintln!("done after {:?}", started.elapsed());
    drop(guests);
    Ok(())
}

/// The honesty check (§5.5 S1, §5.3 B1): the same AP and switch, the pcap
/// port without MAC-NAT. The station itself gets a lease (the AP works),
/// but guests get none, cannot reach the LAN over IPv4 or IPv6, and the
/// LAN cannot reach them; the AP's drop counters grow both ways.
#[test]
fn without_mac_nat_the_ap_rejects_the_guests() -> Result<()> {
    let mut r = rig(false)?;
    let (from0, to0) = r.ap.oracle()?;
    let g1 = TapGuest::start(&r.dir, 1)?;
    let g2 = TapGuest::start(&r.dir, 2)?;
    let s1 = r.tmp.join("g1");
    let s2 = r.tmp.join("g2");
    std::fs::create_dir_all(&s1)?;
    std::fs::create_dir_all(&s2)?;
    // Both guests try DHCP at once.
    let (l1, l2) = std::thread::scope(|s| {
        let a = s.spawn(|| dhcp_lease(&g1.ns, GUEST_DEV, &s1));
        let b = s.spawn(|| dhcp_lease(&g2.ns, GUEST_DEV, &s2));
        (a.join(), b.join())
    });
    for (name, l) in [("g1", l1), ("g2", l2)] {
        match l {
            Ok(Ok(ip)) => bail!("guest {name} got a lease {ip} without MAC-NAT"),
            Ok(Err(e)) => {
                let msg = format!("{e:#}");
                ensure!(
                    msg.contains("udhcpc failed") || msg.contains("no lease"),
                    "guest {name}'s DHCP failed for another reason: {msg}"
                );
            }
            Err(_) => bail!("DHCP thread of {name} panicked"),
        }
    }
    // dnsmasq never saw the guests' DISCOVERs.
    let log = r.ap.dnsmasq.output();
    for n in [1, 2] {
        ensure!(
            !log.contains(&guest_mac(n)),
            "dnsmasq saw guest {n} ({}) without MAC-NAT:\n{log}",
            guest_mac(n)
        );
    }
    // Static addresses: no ping either way, IPv4 or IPv6.
    g1.ns
        .ip(["addr", "add", "198.51.100.51/24", "dev", GUEST_DEV])?;
    let pinged = |ns: &switchyard_tests::Netns, dst: &str| -> Result<bool> {
        Ok(
            output(ns.command("ping").args(["-n", "-c", "2", "-W", "1", dst]))?
                .status
                .success(),
        )
    };
    ensure!(
        !pinged(&g1.ns, LAN_V4)?,
        "g1 reached the LAN over IPv4 without MAC-NAT"
    );
    // The RA is multicast and reaches the guest, so it has a SLAAC address.
    let slaac = slaac_of(1).to_string();
    wait_until(Duration::from_secs(15), "g1's SLAAC address", || {
        g1.ns
            .ip(["-6", "addr", "show", "dev", GUEST_DEV])
            .is_ok_and(|o| o.contains(&slaac) && !o.contains("tentative"))
    })?;
    ensure!(
        !pinged(&g1.ns, LAN_V6)?,
        "g1 reached the LAN over IPv6 without MAC-NAT"
    );
    let (from1, _) = r.ap.oracle()?;
    ensure!(
        from1 > from0,
        "the AP's source-MAC filter counted nothing ({from0} -> {from1}): the oracle is broken"
    );
    // The LAN host, told the guest's real MAC, cannot reach it: the AP drops
    // unicast to an unassociated MAC.
    r.ap.lan.ip([
        "neigh",
        "replace",
        "198.51.100.51",
        "lladdr",
        &guest_mac(1),
        "dev",
        "lan0",
        "nud",
        "permanent",
    ])?;
    let before = in_echos(&g1.ns)?;
    ensure!(
        !pinged(&r.ap.lan, "198.51.100.51")?,
        "the LAN reached g1 without MAC-NAT"
    );
    ensure!(in_echos(&g1.ns)? == before, "g1 received the LAN's pings");
    let (_, to1) = r.ap.oracle()?;
    ensure!(
        to1 > to0,
        "the AP's destination filter counted nothing ({to0} -> {to1})"
    );
    // The AP itself is fine: the associated station gets a lease.
    let host_lease = dhcp_lease(&r.ap.host, STA_DEV, r.tmp.path())
        .context("the station's own DHCP (the AP must work for it)")?;
    ensure!(host_lease.starts_with("198.51.100."), "{host_lease}");
    r.ap.host.ping(ap::AP_V4, 2)?;
    r.sw.assert_running()?;
    Ok(())
}

/// Starts `count` tap guests and runs the agent (DHCPv4, SLAAC, no
/// DHCPv6) in each; fails unless all succeed.
fn configured_guests(r: &Rig, count: u8) -> Result<(Vec<TapGuest>, Vec<AgentReport>)> {
    let env = AgentEnv {
        script: write_udhcpc_script(r.tmp.path())?,
        dhcpv6: false,
    };
    let mut guests = Vec::new();
    for n in 1..=count {
        guests.push(TapGuest::start(&r.dir, n)?);
    }
    let reports = ap::run_agents(&guests, &env)?;
    check_reports(&reports, false)?;
    Ok((guests, reports.into_iter().map(|(_, r)| r).collect()))
}

/// §5.5 S13 (`keep_first`): a guest claiming another guest's IPv4 address
/// with gratuitous ARP does not take it over: the LAN's pings still reach
/// the first owner only, `ctl macnat` still binds the address to it, and
/// the AP rejects nothing.
#[test]
fn a_duplicate_address_stays_with_its_first_owner() -> Result<()> {
    let mut r = rig(true)?;
    let oracle0 = r.ap.oracle()?;
    let (guests, reports) = configured_guests(&r, 2)?;
    let a1 = reports[0].dhcp4.context("g1's lease")?.to_string();
    guests[1]
        .ns
        .ip(["addr", "add", &format!("{a1}/32"), "dev", GUEST_DEV])?;
    // busybox arping exits 1 when nobody answers, which is normal for -U.
    output(
        guests[1]
            .ns
            .command("busybox")
            .args(["arping", "-U", "-c", "2", "-w", "2", "-I", GUEST_DEV, &a1]),
    )?;
    let (e1, e2) = (in_echos(&guests[0].ns)?, in_echos(&guests[1].ns)?);
    r.ap.lan
        .ping(&a1, 5)
        .context("LAN -> g1 after g2's claim")?;
    let (d1, d2) = (in_echos(&guests[0].ns)? - e1, in_echos(&guests[1].ns)? - e2);
    ensure!(
        d1 >= 5 && d2 == 0,
        "after g2 claimed {a1}, g1 got {d1} and g2 got {d2} of the LAN's 5 pings"
    );
    let entries = ap::macnat_bindings(&r.ctl)?;
    ensure!(
        entries.iter().any(|(a, m)| *a == a1 && *m == guest_mac(1)),
        "{a1} is no longer bound to g1: {entries:?}"
    );
    ensure!(r.ap.oracle()? == oracle0, "the AP dropped frames");
    r.sw.assert_running()?;
    Ok(())
}

/// Guest departure (mac-nat.md §3.4: when a guest's port goes away, all its
/// entries are removed): g2's vde_plug exits, its bindings must leave `ctl
/// macnat` and g1 must keep working. The uplink learns each guest with the
/// port its frames came in on, and the switch tells it when that port goes.
#[test]
fn a_leaving_guest_loses_its_bindings() -> Result<()> {
    let mut r = rig(true)?;
    let (mut guests, reports) = configured_guests(&r, 2)?;
    let entries = ap::macnat_bindings(&r.ctl)?;
    ensure!(
        entries.iter().any(|(_, m)| *m == guest_mac(2)),
        "g2 has no bindings to begin with: {entries:?}"
    );
    drop(guests.pop());
    let mut last = Vec::new();
    let gone = wait_until(Duration::from_secs(10), "g2's bindings to go", || {
        last = ap::macnat_bindings(&r.ctl).unwrap_or_default();
        !last.iter().any(|(_, m)| *m == guest_mac(2))
    });
    let a1 = reports[0].dhcp4.context("g1's lease")?.to_string();
    r.ap.lan.ping(&a1, 2).context("LAN -> g1 after g2 left")?;
    r.sw.assert_running()?;
    gone.with_context(|| format!("ctl macnat still lists g2 ({}): {last:?}", guest_mac(2)))?;
    Ok(())
}
