//! `switchyard ctl` against a running daemon: ports, fdb, stats, flushing,
//! adding and removing ports, errors, and the control socket's permissions.

use std::net::UdpSocket;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_tests::ops::{
    as_unprivileged, bin_for_unprivileged, ctl, ctl_json, ctl_ok, ctl_ports, parse_key_values,
    parse_table, port_names, Outcome, PlugLan,
};
use switchyard_tests::util::output;
use switchyard_tests::{preflight, unique_name, wait_until, Netns, SwitchCmd, TempDir};

const T: Duration = Duration::from_secs(5);

fn fdb_macs(ctl_path: &Path) -> Result<Vec<(String, String)>> {
    let j = ctl_json(ctl_path, &["fdb"])?;
    Ok(j["fdb"]
        .as_array()
        .context("ctl -j fdb: no fdb array")?
        .iter()
        .map(|e| {
            (
                e["mac"].as_str().unwrap_or_default().to_string(),
                e["port"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// Two vde_plug clients ping each other. `ctl ports` (table) and `ctl -j
/// ports` list both with nonzero counters and their client's pid; `ctl
/// fdb` maps each tap's MAC to that client's port; `ctl stats` adds up;
/// `ctl fdb flush PORT` forgets one port's address, `ctl fdb flush` all of
/// them, and traffic teaches them again.
#[test]
fn ctl_reports_ports_fdb_stats_and_flushes() -> Result<()> {
    preflight()?;
    let lan = PlugLan::start("ctl", 72, &[])?;
    lan.ping_both_ways()?;
    let (mac_a, mac_b) = lan.macs()?;
    let port_a = lan.port_of(&lan.plug_a)?;
    let port_b = lan.port_of(&lan.plug_b)?;
    let name_a = port_a["name"].as_str().unwrap_or_default().to_string();
    let name_b = port_b["name"].as_str().unwrap_or_default().to_string();
    ensure!(
        !name_a.is_empty() && name_a != name_b,
        "the two clients' ports need distinct names: {port_a:?} {port_b:?}"
    );

    // JSON: both ports with traffic both ways.
    for p in [&port_a, &port_b] {
        for k in ["rx_frames", "tx_frames", "rx_bytes", "tx_bytes"] {
            ensure!(
                p[k].as_u64() > Some(0),
                "ctl -j ports: {k} of {} is not positive: {p:?}",
                p["name"].as_str().unwrap_or_default()
            );
        }
        ensure!(
            p["type"].as_str() == Some("unix") && p["state"].as_str() == Some("up"),
            "ctl -j ports: expected an up unix port: {p:?}"
        );
    }

    // The table for people shows the same ports and counters.
    let text = ctl_ok(&lan.ctl, &["ports"])?;
    let (header, rows) = parse_table(&text)?;
    for col in ["NAME", "TYPE", "RX", "TX"] {
        ensure!(
            header.iter().any(|h| h == col),
            "ctl ports: no {col} column in {text:?}"
        );
    }
    for (name, plug) in [(&name_a, &lan.plug_a), (&name_b, &lan.plug_b)] {
        let row = rows
            .iter()
            .find(|r| r.get("NAME") == Some(name))
            .with_context(|| format!("ctl ports has no row {name}:\n{text}"))?;
        let rx: u64 = row["RX"].parse().unwrap_or(0);
        let tx: u64 = row["TX"].parse().unwrap_or(0);
        ensure!(
            rx > 0 && tx > 0,
            "ctl ports: {name} shows RX {rx} TX {tx}:\n{text}"
        );
        ensure!(
            text.lines()
                .any(|l| l.starts_with(name.as_str()) && l.contains(&plug.pid().to_string())),
            "ctl ports: the row of {name} should name its client's pid {}:\n{text}",
            plug.pid()
        );
    }

    // fdb: each tap's MAC on its client's port, in the table and in JSON.
    let fdb = fdb_macs(&lan.ctl)?;
    for (mac, name) in [(&mac_a, &name_a), (&mac_b, &name_b)] {
        ensure!(
            fdb.iter().any(|(m, p)| m == mac && p == name),
            "ctl -j fdb should map {mac} to {name}: {fdb:?}"
        );
    }
    let text = ctl_ok(&lan.ctl, &["fdb"])?;
    let (header, rows) = parse_table(&text)?;
    ensure!(
        header.iter().any(|h| h == "MAC") && header.iter().any(|h| h == "PORT"),
        "ctl fdb: no MAC/PORT columns: {text:?}"
    );
    for (mac, name) in [(&mac_a, &name_a), (&mac_b, &name_b)] {
        ensure!(
            rows.iter()
                .any(|r| r.get("MAC") == Some(mac) && r.get("PORT") == Some(name)),
            "ctl fdb: no row {mac} on {name}:\n{text}"
        );
    }

    // stats: human and JSON agree, and add up.
    let stats = ctl_json(&lan.ctl, &["stats"])?;
    let human = parse_key_values(&ctl_ok(&lan.ctl, &["stats"])?);
    ensure!(
        stats["mode"].as_str() == Some("switch")
            && human.get("mode").map(String::as_str) == Some("switch"),
        "ctl stats: mode should be switch: {stats:?} / {human:?}"
    );
    ensure!(
        stats["ports"].as_u64() == Some(2),
        "ctl stats: expected 2 ports: {stats:?}"
    );
    ensure!(
        stats["fdb_entries"].as_u64() >= Some(2) && stats["fdb_learned"].as_u64() >= Some(2),
        "ctl stats: expected at least the 2 taps learned: {stats:?}"
    );
    ensure!(
        stats["rx_frames"].as_u64() > Some(0) && stats["tx_frames"].as_u64() > Some(0),
        "ctl stats: no traffic counted: {stats:?}"
    );
    for k in [
        "fdb_entries",
        "fdb_max_entries",
        "fdb_aging_seconds",
        "rx_frames",
        "ports",
    ] {
        ensure!(
            human.contains_key(k),
            "ctl stats (human) lacks {k}: {human:?}"
        );
    }
    ensure!(
        stats["fdb_aging_seconds"].as_u64() == Some(300)
            && stats["fdb_max_entries"].as_u64() == Some(65536),
        "ctl stats: expected the default aging 300 s and 65536 entries: {stats:?}"
    );

    // Flush one port: only its address goes.
    let out = ctl_ok(&lan.ctl, &["fdb", "flush", &name_a])?;
    ensure!(
        parse_key_values(&out).get("flushed").map(String::as_str) == Some("1"),
        "ctl fdb flush {name_a}: expected `flushed: 1`, got {out:?}"
    );
    let fdb = fdb_macs(&lan.ctl)?;
    ensure!(
        !fdb.iter().any(|(m, _)| m == &mac_a) && fdb.iter().any(|(m, _)| m == &mac_b),
        "after flushing {name_a}, {mac_a} should be gone and {mac_b} kept: {fdb:?}"
    );

    // Flush all: the table is empty; traffic refills it.
    let out = ctl_ok(&lan.ctl, &["fdb", "flush"])?;
    let flushed: u64 = parse_key_values(&out)
        .get("flushed")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("ctl fdb flush printed {out:?}"))?;
    ensure!(flushed >= 1, "ctl fdb flush flushed {flushed}: {out:?}");
    let fdb = fdb_macs(&lan.ctl)?;
    ensure!(
        fdb.is_empty(),
        "the fdb is not empty after a flush: {fdb:?}"
    );
    let (_, rows) = parse_table(&ctl_ok(&lan.ctl, &["fdb"])?)?;
    ensure!(
        rows.is_empty(),
        "ctl fdb shows rows after a flush: {rows:?}"
    );
    ensure!(
        ctl_json(&lan.ctl, &["stats"])?["fdb_entries"].as_u64() == Some(0),
        "ctl stats: fdb_entries should be 0 after a flush"
    );
    lan.ns_a.ping(&lan.ip_b, 2)?;
    let fdb = fdb_macs(&lan.ctl)?;
    ensure!(
        fdb.iter().any(|(m, p)| m == &mac_a && p == &name_a)
            && fdb.iter().any(|(m, p)| m == &mac_b && p == &name_b),
        "traffic after the flush should teach both addresses again: {fdb:?}"
    );

    // Commands the daemon refuses exit 1 with its message.
    for (args, needle) in [
        (&["fdb", "flush", "no-such-port"][..], "no-such-port"),
        (&["port", "del", "no-such-port"][..], "no-such-port"),
        (&["port", "add", "floppy,speed=fast"][..], "floppy"),
        (&["port", "add", "udp,local=127.0.0.1:1"][..], "remote"),
    ] {
        let out = ctl(&lan.ctl, args)?;
        out.expect_code(1, &format!("ctl {}", args.join(" ")))?;
        ensure!(
            out.stderr.contains(needle),
            "ctl {}: the error should mention {needle:?}: {:?}",
            args.join(" "),
            out.stderr
        );
    }
    Ok(())
}

/// `ctl port add udp,...` adds a port that `ctl ports` lists and that the
/// switch floods to (an ARP broadcast arrives at the UDP peer); `ctl port
/// del` removes it, frees its socket (the same spec can be added again),
/// and the clients keep talking.
#[test]
fn ctl_adds_and_removes_a_udp_port() -> Result<()> {
    preflight()?;
    let lan = PlugLan::start("cpa", 73, &[])?;
    lan.ping_both_ways()?;
    let (mac_a, _) = lan.macs()?;
    let peer = lan.ns_sw.run(|| UdpSocket::bind("127.0.0.1:0"))??;
    let peer_addr = peer.local_addr()?;
    let local = "127.0.0.1:7731";
    let spec = format!("udp,name=uplink,local={local},remote={peer_addr}");

    let out = ctl_ok(&lan.ctl, &["port", "add", &spec])?;
    ensure!(
        out.contains("added") && out.contains("uplink"),
        "ctl port add: expected a reply saying uplink was added, got {out:?}"
    );
    let ports = ctl_ports(&lan.ctl)?;
    let up = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("uplink"))
        .with_context(|| format!("the added port is not listed: {ports:?}"))?;
    ensure!(
        up["type"].as_str() == Some("udp"),
        "the added port should be of type udp: {up:?}"
    );
    let text = ctl_ok(&lan.ctl, &["ports"])?;
    ensure!(
        text.lines()
            .any(|l| l.starts_with("uplink") && l.contains("udp")),
        "ctl ports (table) does not show uplink:\n{text}"
    );

    // A broadcast from A (ARP for an address nobody has) reaches the peer.
    let _ = output(lan.ns_a.command("ping").args([
        "-n",
        "-c",
        "2",
        "-i",
        "0.3",
        "-W",
        "1",
        "10.73.0.99",
    ]));
    peer.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut buf = [0u8; 2048];
    let mut got_arp = false;
    while let Ok((n, _)) = peer.recv_from(&mut buf) {
        let f = &buf[..n];
        let src = f
            .get(6..12)
            .map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default();
        if n >= 14 && f[..6] == [0xff; 6] && f[12..14] == [0x08, 0x06] && src == mac_a {
            got_arp = true;
            break;
        }
    }
    ensure!(
        got_arp,
        "A's ARP broadcast did not reach the UDP peer of the added port; ports: {:?}",
        ctl_ports(&lan.ctl)?
    );

    let out = ctl_ok(&lan.ctl, &["port", "del", "uplink"])?;
    ensure!(
        out.contains("removed") && out.contains("uplink"),
        "ctl port del: expected a reply saying uplink was removed, got {out:?}"
    );
    wait_until(T, "uplink to leave `ctl ports`", || {
        port_names(&lan.ctl).is_ok_and(|n| !n.iter().any(|x| x == "uplink"))
    })
    .with_context(|| format!("ports: {:?}", port_names(&lan.ctl)))?;
    // Its socket is closed: the address can be bound again.
    wait_until(T, "the removed port's socket to be released", || {
        lan.ns_sw
            .run(|| UdpSocket::bind(local).is_ok())
            .unwrap_or(false)
    })?;
    ctl_ok(&lan.ctl, &["port", "add", &spec]).context("adding the removed port again")?;
    ensure!(
        port_names(&lan.ctl)?
            .iter()
            .filter(|n| *n == "uplink")
            .count()
            == 1,
        "uplink should be listed once after being added again"
    );
    lan.ns_b.ping(&lan.ip_a, 2)?;
    Ok(())
}

/// A port name is unique: `ctl port add` refuses a name already in use
/// (by a transport or by a tap), and a port added without a name gets a
/// free automatic name (even after other ports were removed).
#[test]
fn ctl_port_names_stay_unique() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cpu")?;
    let ns = Netns::new()?;
    let ctl_path = tmp.join("control.sock");
    let tap = unique_name("syu");
    let mut sw = SwitchCmd::native()?
        .vde(&tmp.join("vde"))
        .arg("--control")
        .arg(&ctl_path)
        .args(["--tap", &tap])
        .arg("--port")
        .arg("udp,name=lan,local=127.0.0.1:7741,remote=127.0.0.1:7742")
        .start(Some(&ns))?;
    let initial = port_names(&ctl_path)?;
    ensure!(initial.len() == 2, "expected a tap and lan: {initial:?}");
    let tap_name = initial
        .iter()
        .find(|n| *n != "lan")
        .cloned()
        .context("no tap port")?;
    let mut problems = Vec::new();
    for (taken, port) in [("lan", 7743), (tap_name.as_str(), 7745)] {
        let spec = format!(
            "udp,name={taken},local=127.0.0.1:{port},remote=127.0.0.1:{}",
            port + 1
        );
        let dup = ctl(&ctl_path, &["port", "add", &spec])?;
        if dup.code != Some(1) {
            problems.push(format!(
                "`port add {spec}` while {taken:?} exists: exit {:?} ({}{}), expected exit 1",
                dup.code,
                dup.stdout.trim(),
                dup.stderr.trim()
            ));
        }
    }
    // Back to the two ports we started with.
    for n in port_names(&ctl_path)?.iter().skip(initial.len()) {
        ctl_ok(&ctl_path, &["port", "del", n])?;
    }
    wait_until(T, "the duplicates to go", || {
        port_names(&ctl_path).is_ok_and(|n| n.len() == initial.len())
    })?;
    // Unnamed ports: add two, remove the first, add another.
    let mut added = Vec::new();
    for p in [7751, 7753] {
        let spec = format!("udp,local=127.0.0.1:{p},remote=127.0.0.1:{}", p + 1);
        ctl_ok(&ctl_path, &["port", "add", &spec])?;
        let names = port_names(&ctl_path)?;
        added.push(names.last().cloned().context("no ports")?);
    }
    let first_unnamed = added[0].clone();
    ctl_ok(&ctl_path, &["port", "del", &first_unnamed])?;
    wait_until(T, "the deleted port to go", || {
        port_names(&ctl_path).is_ok_and(|n| !n.contains(&first_unnamed))
    })?;
    let third = ctl(
        &ctl_path,
        &[
            "port",
            "add",
            "udp,local=127.0.0.1:7755,remote=127.0.0.1:7756",
        ],
    )?;
    if third.code != Some(0) {
        problems.push(format!(
            "an unnamed `port add udp,...` after `port del {first_unnamed}` was refused \
             (exit {:?}): {} -- an automatic name must be a free one",
            third.code,
            third.stderr.trim()
        ));
    }
    let names = port_names(&ctl_path)?;
    let mut seen = std::collections::BTreeSet::new();
    let dups: Vec<&String> = names.iter().filter(|n| !seen.insert(*n)).collect();
    if !dups.is_empty() || names.len() != 4 {
        problems.push(format!(
            "expected 4 distinct port names, `ctl ports` lists {names:?} (started with \
             {initial:?}; unnamed adds gave {added:?}; then `port del {first_unnamed}` \
             and one more unnamed add)"
        ));
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    sw.assert_running()?;
    Ok(())
}

/// Usage errors exit 2 with the usage text, without needing a daemon; no
/// daemon on the socket exits 1 with a message naming the socket.
#[test]
fn ctl_usage_errors_and_missing_daemon() -> Result<()> {
    let tmp = TempDir::new("cue")?;
    let sock = tmp.join("nobody-here.sock");
    for args in [
        &["frobnicate"][..],
        &[][..],
        &["port"][..],
        &["port", "rename", "a"][..],
        &["-j"][..],
    ] {
        let out = ctl(&sock, args)?;
        out.expect_code(2, &format!("ctl {}", args.join(" ")))?;
        ensure!(
            out.stderr.contains("usage"),
            "ctl {}: the usage text should be on stderr: {:?}",
            args.join(" "),
            out.stderr
        );
    }
    for args in [&["ports"][..], &["fdb", "flush"][..]] {
        let out = ctl(&sock, args)?;
        out.expect_code(1, &format!("ctl {} without a daemon", args.join(" ")))?;
        ensure!(
            out.stderr.contains(&sock.display().to_string())
                && out.stderr.contains("no switchyard is listening"),
            "ctl {} without a daemon: the message should say nothing listens on {}: {:?}",
            args.join(" "),
            sock.display(),
            out.stderr
        );
    }
    // A stale socket file (nobody listening) says the same.
    let stale = tmp.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    let out = ctl(&stale, &["stats"])?;
    out.expect_code(1, "ctl stats on a stale socket")?;
    ensure!(
        out.stderr.contains(&stale.display().to_string()),
        "the message should name {}: {:?}",
        stale.display(),
        out.stderr
    );
    Ok(())
}

/// `switchyard ctl -s SOCK ports` as uid 65534 with primary group `gid`.
/// Words after a command that takes none are a usage error (exit 2), not
/// silently dropped: `ctl fdb flsuh` must not just print the table.
#[test]
fn ctl_rejects_trailing_words() -> Result<()> {
    let tmp = TempDir::new("ctw")?;
    let sock = tmp.join("nobody-here.sock");
    let mut wrong = Vec::new();
    for args in [
        &["fdb", "flsuh"][..],
        &["ports", "all"][..],
        &["stats", "now"][..],
    ] {
        let out = ctl(&sock, args)?;
        if out.code != Some(2) || !out.stderr.contains("usage") {
            wrong.push(format!(
                "ctl {}: exit {:?}, stderr {:?}",
                args.join(" "),
                out.code,
                out.stderr.trim()
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "expected exit 2 with the usage text (the daemon was never asked, as no \
         daemon listens on {}):\n{}",
        sock.display(),
        wrong.join("\n")
    );
    Ok(())
}

fn unprivileged_ctl(bin: &Path, gid: u32, sock: &Path) -> Result<Outcome> {
    let mut cmd: Command = as_unprivileged(gid, bin)?;
    cmd.arg("ctl").arg("-s").arg(sock).arg("ports");
    Ok(Outcome::from_output(output(&mut cmd)?))
}

/// The control socket is mode 0660. An unprivileged user outside its group
/// gets "permission denied" naming the socket and exit 1; with `--group`
/// the group's members may use it.
#[test]
fn ctl_permissions() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cpe")?;
    let ns = Netns::new()?;
    let bin = bin_for_unprivileged(tmp.path())?;
    let closed = tmp.join("root-only.sock");
    let grouped = tmp.join("grouped.sock");
    let _sw1 = SwitchCmd::native()?
        .vde(&tmp.join("vde1"))
        .arg("--control")
        .arg(&closed)
        .start(Some(&ns))?;
    let _sw2 = SwitchCmd::native()?
        .vde(&tmp.join("vde2"))
        .arg("--control")
        .arg(&grouped)
        .args(["--group", "65534"])
        .start(Some(&ns))?;
    for (sock, gid) in [(&closed, 0u32), (&grouped, 65534)] {
        let meta = std::fs::metadata(sock)?;
        ensure!(
            meta.permissions().mode() & 0o777 == 0o660 && meta.gid() == gid,
            "{}: mode {:o} group {}, expected 660 and group {gid}",
            sock.display(),
            meta.permissions().mode() & 0o777,
            meta.gid()
        );
    }
    let denied = unprivileged_ctl(&bin, 65534, &closed)?;
    ensure!(
        denied.code == Some(1)
            && denied.stderr.contains("permission denied")
            && denied.stderr.contains(&closed.display().to_string()),
        "uid 65534 on a root-only control socket: expected exit 1 and \"permission denied\" \
         naming {}; got {denied:?}",
        closed.display()
    );
    let allowed = unprivileged_ctl(&bin, 65534, &grouped)?;
    ensure!(
        allowed.code == Some(0) && allowed.stdout.contains("NAME"),
        "a member of the socket's group (--group 65534) should be served: {allowed:?}"
    );
    // Root still is, of course.
    ctl_ok(&closed, &["ports"])?;
    Ok(())
}

/// The shipped units start the daemon as `--config FILE --control PATH`:
/// the group (and mode) given in the file's `control:` section must still
/// apply to the socket at PATH, or `control.group` can never work there.
#[test]
fn ctl_socket_group_from_config_applies_with_control_flag() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cpg")?;
    let ns = Netns::new()?;
    let bin = bin_for_unprivileged(tmp.path())?;
    let cfg = tmp.join("switchyard.yaml");
    let from_file = tmp.join("from-file.sock");
    let from_flag = tmp.join("from-flag.sock");
    let dir = tmp.join("vde");
    std::fs::write(
        &cfg,
        format!(
            "ports:\n  - {{ type: unix, directory: {} }}\ncontrol:\n  path: {}\n  group: \"65534\"\n",
            dir.display(),
            from_file.display()
        ),
    )?;
    let _sw = SwitchCmd::native()?
        .arg("--config")
        .arg(&cfg)
        .arg("--control")
        .arg(&from_flag)
        .expect_socket(&dir.join("ctl"))
        .start(Some(&ns))?;
    let meta = std::fs::metadata(&from_flag)
        .with_context(|| format!("--control {} was not bound", from_flag.display()))?;
    let allowed = unprivileged_ctl(&bin, 65534, &from_flag)?;
    ensure!(
        meta.gid() == 65534 && allowed.code == Some(0),
        "config control.group 65534 with --control {}: the socket's group is {} \
         (mode {:o}) and a member of group 65534 gets {allowed:?}",
        from_flag.display(),
        meta.gid(),
        meta.permissions().mode() & 0o777
    );
    Ok(())
}
