//! The YAML configuration file: `switchyard check-config` on the shipped
//! files and on broken ones, a daemon started from a file passing real
//! traffic, and command-line flags overriding the file.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::ops::{
    check_config, ctl_json, ctl_ports, deploy_dir, error_location, port_names, Json,
};
use switchyard_tests::proto::{self, Client, BROADCAST};
use switchyard_tests::scenarios::{link_mac, pass_frame, unicast_reaches_third_port};
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::{preflight, unique_name, wait_until, Netns, SwitchCmd, TempDir};

const T: Duration = Duration::from_secs(5);

/// Every example in deploy/examples/ and deploy/switchyard.yaml passes
/// `check-config` (exit 0, "ok"); a missing file exits 2 naming it.
#[test]
fn check_config_accepts_the_shipped_files() -> Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir().join("examples"))
        .context("reading deploy/examples")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    ensure!(
        files.len() >= 5,
        "expected the deploy/examples/*.yaml files, found {files:?}"
    );
    files.push(deploy_dir().join("switchyard.yaml"));
    let mut failures = Vec::new();
    for f in &files {
        let out = check_config(f)?;
        if out.code != Some(0) || !out.stdout.contains("ok") {
            failures.push(format!(
                "{}: exit {:?}\n{}{}",
                f.display(),
                out.code,
                out.stdout,
                out.stderr
            ));
        }
    }
    ensure!(
        failures.is_empty(),
        "shipped configs refused:\n{}",
        failures.join("\n")
    );

    let tmp = TempDir::new("ccm")?;
    let missing = tmp.join("no-such.yaml");
    let out = check_config(&missing)?;
    out.expect_code(2, "check-config on a missing file")?;
    ensure!(
        out.stderr.contains(&missing.display().to_string()),
        "the error should name the missing file: {:?}",
        out.stderr
    );
    Ok(())
}

/// A broken config: its text, the location of the mistake (line, column;
/// column 0 = any) and a word the message must contain (the field).
struct Bad {
    what: &'static str,
    yaml: &'static str,
    line: u32,
    column: u32,
    field: &'static str,
}

/// Runs check-config on each case; returns one line per case that did not
/// exit 2 with the file, the location and the field in its message.
fn check_bad_files(tag: &str, cases: &[Bad]) -> Result<Vec<String>> {
    let tmp = TempDir::new(tag)?;
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let file = tmp.join(format!("bad{i}.yaml"));
        std::fs::write(&file, case.yaml)?;
        let out = check_config(&file)?;
        let msg = format!("{}{}", out.stdout, out.stderr);
        let mut wrong = Vec::new();
        if out.code != Some(2) {
            wrong.push(format!("exit code {:?}, expected 2", out.code));
        }
        if !msg.contains(&file.display().to_string()) {
            wrong.push("the file is not named".to_string());
        }
        match error_location(&msg) {
            None => wrong.push(format!("no line and column (expected line {})", case.line)),
            Some((l, c)) => {
                if l != case.line || (case.column != 0 && c != case.column) {
                    wrong.push(format!(
                        "location is line {l} column {c}, expected line {} column {}",
                        case.line,
                        if case.column == 0 {
                            "any".to_string()
                        } else {
                            case.column.to_string()
                        }
                    ));
                }
            }
        }
        if !msg.contains(case.field) {
            wrong.push(format!("the field {:?} is not named", case.field));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n    file:\n{}    message: {}",
                case.what,
                wrong.join("; "),
                case.yaml
                    .lines()
                    .enumerate()
                    .map(|(n, l)| format!("      {:>2} | {l}\n", n + 1))
                    .collect::<String>(),
                msg.trim_end().replace('\n', "\n      ")
            ));
        }
    }
    Ok(failures)
}

/// Syntax and type mistakes outside the port list (unknown keys at every
/// level, a wrong type, an unknown mode, a bad duration, broken YAML) exit 2
/// with the file, the exact line and column, and the field.
#[test]
fn check_config_rejects_unknown_keys_and_wrong_types_with_location() -> Result<()> {
    let cases = [
        Bad {
            what: "unknown key in switch.fdb",
            yaml: "switch:\n  mode: switch\n  fdb:\n    aging: 300s\n    max_entires: 10\n",
            line: 5,
            column: 5,
            field: "max_entires",
        },
        Bad {
            what: "unknown top-level key",
            yaml: "log:\n  level: info\nmetrcs:\n  listen: \"127.0.0.1:9590\"\n",
            line: 3,
            column: 1,
            field: "metrcs",
        },
        Bad {
            what: "wrong type (numports: a word)",
            yaml: "switch:\n  mode: hub\n  numports: lots\n",
            line: 3,
            column: 13,
            field: "numports",
        },
        Bad {
            what: "unknown mode",
            yaml: "switch:\n  mode: bridge\n",
            line: 2,
            column: 9,
            field: "mode",
        },
        Bad {
            what: "bad duration",
            yaml: "switch:\n  fdb:\n    max_entries: 10\n    aging: 3 parsecs\n",
            line: 4,
            column: 12,
            field: "aging",
        },
        Bad {
            what: "unknown port type",
            yaml: "ports:\n  - { name: a, type: udp, local: \"127.0.0.1:1\", remote: \"127.0.0.1:2\" }\n  - type: floppy\n",
            line: 3,
            column: 0,
            field: "floppy",
        },
        Bad {
            what: "broken YAML",
            yaml: "switch:\n  mode: hub\nports: [\n",
            line: 3,
            column: 0,
            field: "[",
        },
    ];
    let failures = check_bad_files("ccs", &cases)?;
    ensure!(
        failures.is_empty(),
        "{} of {} bad files were not reported as required:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Mistakes inside a port entry (an unknown key, a wrong type) are
/// reported at the offending key or value, not elsewhere in the entry.
#[test]
fn check_config_locates_mistakes_inside_port_entries() -> Result<()> {
    let cases = [
        Bad {
            what: "unknown key in a udp port",
            yaml: "ports:\n  - name: a\n    type: udp\n    local: \"127.0.0.1:1\"\n    remote: \"127.0.0.1:2\"\n    colour: red\n",
            line: 6,
            column: 5,
            field: "colour",
        },
        Bad {
            what: "wrong type (mcast ttl: a word)",
            yaml: "ports:\n  - name: m\n    type: mcast\n    group: \"239.192.168.1:1102\"\n    ttl: many\n",
            line: 5,
            column: 10,
            field: "ttl",
        },
    ];
    let failures = check_bad_files("ccp", &cases)?;
    ensure!(
        failures.is_empty(),
        "{} of {} bad port entries were reported at the wrong place:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Values that parse but make no sense (a bad address, a duplicate port
/// name, a bad metrics address, a zero aging time, a group without port)
/// exit 2 naming the file, the line and column, and the field.
#[test]
fn check_config_rejects_bad_values_with_location() -> Result<()> {
    let cases = [
        Bad {
            what: "bad address",
            yaml: "ports:\n  - name: up\n    type: udp\n    local: nowhere\n    remote: \"127.0.0.1:1\"\n",
            line: 4,
            column: 0,
            field: "local",
        },
        Bad {
            what: "duplicate port name",
            yaml: "ports:\n  - { name: a, type: udp, local: \"127.0.0.1:1\", remote: \"127.0.0.1:2\" }\n  - { name: a, type: udp, local: \"127.0.0.1:3\", remote: \"127.0.0.1:4\" }\n",
            line: 3,
            column: 0,
            field: "name",
        },
        Bad {
            what: "bad metrics address",
            yaml: "log:\n  level: info\nmetrics:\n  listen: localhost\n",
            line: 4,
            column: 0,
            field: "listen",
        },
        Bad {
            what: "zero aging time",
            yaml: "switch:\n  fdb:\n    aging: 0s\n",
            line: 3,
            column: 0,
            field: "aging",
        },
        Bad {
            what: "multicast group without a port",
            yaml: "ports:\n  - name: lan\n    type: mcast\n    group: \"239.192.168.1\"\n",
            line: 4,
            column: 0,
            field: "group",
        },
    ];
    let failures = check_bad_files("ccv", &cases)?;
    ensure!(
        failures.is_empty(),
        "{} of {} bad values were not reported with file:line:column:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

fn port_with_type<'a>(ports: &'a [Json], kind: &str) -> Vec<&'a Json> {
    ports
        .iter()
        .filter(|p| p["type"].as_str() == Some(kind))
        .collect()
}

/// A config with a VDE directory, a tap and a multicast port starts; two
/// vde_plug namespaces ping each other through it and ping the host side
/// of the tap; the broadcasts are flooded to the multicast group; its own
/// looped-back multicast teaches the switch nothing.
#[test]
fn config_file_ports_pass_traffic() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cft")?;
    let ns_sw = Netns::new()?;
    let ns_a = Netns::new()?;
    let ns_b = Netns::new()?;
    // Multicast needs a multicast-capable route in the switch's namespace.
    ns_sw.ip(["link", "set", "lo", "multicast", "on"])?;
    ns_sw.ip(["route", "add", "224.0.0.0/4", "dev", "lo"])?;
    let dir = tmp.join("vde");
    let ctl = tmp.join("control.sock");
    let tap = unique_name("syt");
    let cfg = tmp.join("switchyard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "switch:\n  mode: switch\n  fdb:\n    aging: 300s\n\
             ports:\n\
             \x20 - {{ name: guests, type: unix, directory: {} }}\n\
             \x20 - {{ name: host, type: tap, device: {tap} }}\n\
             \x20 - {{ name: lan, type: mcast, group: \"239.192.168.7:1102\", ttl: 0 }}\n",
            dir.display()
        ),
    )?;
    check_config(&cfg)?.expect_code(0, "check-config on the test's own file")?;
    let mut sw = SwitchCmd::native()?
        .arg("--config")
        .arg(&cfg)
        .arg("--control")
        .arg(&ctl)
        .expect_socket(&dir.join("ctl"))
        .start(Some(&ns_sw))?;
    ensure!(
        ns_sw.has_link(&tap),
        "the config's tap {tap} was not created"
    );
    ns_sw.addr_up(&tap, "10.71.0.254/24")?;

    let tap_a = unique_name("sya");
    let tap_b = unique_name("syb");
    let plug_a = vde_plug_tap(&ns_a, &dir, &tap_a, "10.71.0.1/24")?;
    let plug_b = vde_plug_tap(&ns_b, &dir, &tap_b, "10.71.0.2/24")?;
    ns_a.ping_eventually("10.71.0.2", 10)?;
    ns_b.ping("10.71.0.1", 2)?;
    ns_b.ping_eventually("10.71.0.254", 5)
        .context("the config's tap port does not pass traffic")?;

    let ports = ctl_ports(&ctl)?;
    let unix = port_with_type(&ports, "unix");
    ensure!(unix.len() == 2, "expected 2 unix ports: {ports:?}");
    for p in &unix {
        ensure!(
            p["rx_frames"].as_u64() > Some(0) && p["tx_frames"].as_u64() > Some(0),
            "a vde_plug port passed no frames: {p:?}"
        );
    }
    let taps = port_with_type(&ports, "tap");
    ensure!(
        taps.len() == 1 && taps[0]["rx_frames"].as_u64() > Some(0),
        "expected one tap port that received the host's replies: {ports:?}"
    );
    let mcast = port_with_type(&ports, "mcast");
    ensure!(
        mcast.len() == 1 && mcast[0]["tx_frames"].as_u64() > Some(0),
        "expected one mcast port that the ARP broadcasts were flooded to: {ports:?}"
    );
    let mcast_name = mcast[0]["name"].as_str().unwrap_or_default().to_string();
    ensure!(
        mcast_name == "lan",
        "the mcast port should be named lan: {ports:?}"
    );

    // Where the switch learned the two vde_plug taps: on unix ports, never
    // on the multicast port (its own frames come back over the loop).
    let fdb = ctl_json(&ctl, &["fdb"])?;
    let entries = fdb["fdb"].as_array().context("fdb array")?.to_vec();
    for (ns, dev) in [(&ns_a, &tap_a), (&ns_b, &tap_b)] {
        let mac = link_mac(ns, dev)?;
        let e = entries
            .iter()
            .find(|e| e["mac"].as_str() == Some(mac.as_str()))
            .with_context(|| format!("{mac} ({dev}) not in the fdb: {entries:?}"))?;
        let port = e["port"].as_str().unwrap_or_default();
        ensure!(
            unix.iter().any(|p| p["name"].as_str() == Some(port)),
            "{mac} learned on {port:?}, not on a vde_plug port: {entries:?}"
        );
    }
    drop((plug_a, plug_b));
    sw.assert_running()?;
    Ok(())
}

/// The `name:` of a port in the config file is the port's name in `ctl
/// ports` (and so in `ctl fdb` and the metrics labels).
#[test]
fn config_port_names_are_used() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cfn")?;
    let ns = Netns::new()?;
    let ctl = tmp.join("control.sock");
    let tap = unique_name("syt");
    let cfg = tmp.join("switchyard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "ports:\n\
             \x20 - {{ name: guests, type: unix, path: {} }}\n\
             \x20 - {{ name: host, type: tap, device: {tap} }}\n\
             \x20 - {{ name: uplink, type: udp, local: \"127.0.0.1:6102\", remote: \"127.0.0.1:6101\" }}\n",
            tmp.join("uml.ctl").display()
        ),
    )?;
    let mut sw = SwitchCmd::native()?
        .arg("--config")
        .arg(&cfg)
        .arg("--control")
        .arg(&ctl)
        .expect_socket(&tmp.join("uml.ctl"))
        .start(Some(&ns))?;
    let names = port_names(&ctl)?;
    let mut missing = Vec::new();
    for want in ["host", "uplink"] {
        if !names.iter().any(|n| n == want) {
            missing.push(want);
        }
    }
    ensure!(
        missing.is_empty(),
        "ports named {missing:?} in {} are missing from `ctl ports`, which lists {names:?}",
        cfg.display()
    );
    sw.assert_running()?;
    Ok(())
}

/// Writes a config with switch mode, aging 5s, max 100 entries and a VDE
/// directory `dir`.
fn switch_mode_config(path: &Path, dir: &Path) -> Result<()> {
    std::fs::write(
        path,
        format!(
            "switch:\n  mode: switch\n  busy_poll: 50us\n  fdb:\n    aging: 5s\n    max_entries: 100\n\
             ports:\n  - {{ type: unix, directory: {} }}\n",
            dir.display()
        ),
    )?;
    Ok(())
}

/// The file's settings apply (switch mode: a known unicast reaches only its
/// port; aging 5 s; 100 entries; backpressure on by default; busy poll
/// 50 µs), and `--hub`, `--fdb-aging`, `--backpressure off` and
/// `--busy-poll 0` override it (known unicast
/// reaches a third port; aging 300 s although 300 is the flag's default),
/// while what the flags do not mention stays as in the file.
#[test]
fn flags_override_the_config_file() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("cfo")?;
    let ns = Netns::new()?;
    let scratch = tmp.path().to_path_buf();
    for (label, flags, mode, aging, third_hears, backpressure, busy_poll_us) in [
        ("file only", &[][..], "switch", 5, false, true, 50),
        (
            "--hub --fdb-aging 300 --backpressure off --busy-poll 0",
            &[
                "--hub",
                "--fdb-aging",
                "300",
                "--backpressure",
                "off",
                "--busy-poll",
                "0",
            ][..],
            "hub",
            300,
            true,
            false,
            0,
        ),
    ] {
        let sub = tmp.join(format!("run-{mode}"));
        std::fs::create_dir_all(&sub)?;
        let dir = sub.join("vde");
        let ctl = sub.join("control.sock");
        let cfg = sub.join("switchyard.yaml");
        switch_mode_config(&cfg, &dir)?;
        let mut sw = SwitchCmd::native()?
            .arg("--config")
            .arg(&cfg)
            .arg("--control")
            .arg(&ctl)
            .args(flags)
            .expect_socket(&dir.join("ctl"))
            .start(Some(&ns))?;
        let stats = ctl_json(&ctl, &["stats"])?;
        let got = (
            stats["mode"].as_str().unwrap_or_default().to_string(),
            stats["fdb_aging_seconds"].as_u64(),
            stats["fdb_max_entries"].as_u64(),
        );
        ensure!(
            got == (mode.to_string(), Some(aging), Some(100)),
            "{label}: ctl stats says mode {:?}, aging {:?}, max entries {:?}; \
             expected {mode}, {aging}, 100: {stats:?}",
            got.0,
            got.1,
            got.2
        );
        ensure!(
            stats["backpressure"].as_bool() == Some(backpressure),
            "{label}: ctl stats says backpressure {:?}, expected {backpressure}",
            stats["backpressure"]
        );
        ensure!(
            stats["busy_poll_us"].as_u64() == Some(busy_poll_us),
            "{label}: ctl stats says busy_poll_us {:?}, expected {busy_poll_us}",
            stats["busy_poll_us"]
        );
        let heard = ns.run(|| unicast_reaches_third_port(&dir, &scratch))??;
        if heard != third_hears {
            bail!(
                "{label}: a known unicast {} a third port; expected {} ({mode} mode)",
                if heard { "reached" } else { "did not reach" },
                if third_hears {
                    "flooding"
                } else {
                    "no flooding"
                }
            );
        }
        sw.terminate()?;
    }
    Ok(())
}

/// Writes a config: aging `aging`, the VDE directory `dir`, one udp port
/// per `(name, local port)`.
fn reload_config(path: &Path, aging: &str, dir: &Path, udp: &[(&str, u16)]) -> Result<()> {
    let mut text = format!(
        "switch:\n  fdb:\n    aging: {aging}\nports:\n  - {{ name: guests, type: unix, directory: {} }}\n",
        dir.display()
    );
    for (name, port) in udp {
        text.push_str(&format!(
            "  - {{ name: {name}, type: udp, local: \"127.0.0.1:{port}\", remote: \"127.0.0.1:{}\" }}\n",
            port + 1
        ));
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// `ctl reload` and SIGHUP re-read the file: ports it adds start, ports
/// it drops stop, the FDB settings change, flags given at start still win,
/// and the clients on the unchanged VDE directory keep their ports and go
/// on talking. A broken file is refused (exit 1, the file named) and
/// nothing changes.
#[test]
fn reload_applies_the_file_and_keeps_clients() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("crl")?;
    let ns = Netns::new()?;
    let dir = tmp.join("vde");
    let ctl = tmp.join("control.sock");
    let cfg = tmp.join("switchyard.yaml");
    reload_config(&cfg, "300s", &dir, &[("old", 7801)])?;
    let mut sw = SwitchCmd::native()?
        .arg("--config")
        .arg(&cfg)
        .arg("--control")
        .arg(&ctl)
        .args(["--fdb-max-entries", "500"])
        .expect_socket(&dir.join("ctl"))
        .start(Some(&ns))?;
    let scratch = tmp.path().to_path_buf();
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0xa5))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0xb5))?,
        ))
    })??;
    pass_frame(&a, &b, BROADCAST, 60, 1)?;
    let before = port_names(&ctl)?;
    ensure!(
        before.iter().any(|n| n == "old"),
        "the file's udp port is missing: {before:?}"
    );
    let clients: Vec<String> = before.iter().filter(|n| *n != "old").cloned().collect();

    reload_config(&cfg, "60s", &dir, &[("new", 7803)])?;
    let out = check_ok(switchyard_tests::ops::ctl(&ctl, &["reload"])?, "ctl reload")?;
    ensure!(
        out.contains("new") && out.contains("old"),
        "ctl reload should say what it added and removed: {out:?}"
    );
    wait_until(T, "old to go and new to come", || {
        port_names(&ctl)
            .is_ok_and(|n| n.iter().any(|x| x == "new") && !n.iter().any(|x| x == "old"))
    })
    .with_context(|| format!("ports: {:?}", port_names(&ctl)))?;
    let after = port_names(&ctl)?;
    for c in &clients {
        ensure!(
            after.contains(c),
            "the client port {c} did not survive the reload: {after:?}"
        );
    }
    pass_frame(&a, &b, b.mac(), 80, 2).context("client A to B after the reload")?;
    pass_frame(&b, &a, a.mac(), 80, 3).context("client B to A after the reload")?;
    let stats = ctl_json(&ctl, &["stats"])?;
    ensure!(
        stats["fdb_aging_seconds"].as_u64() == Some(60)
            && stats["fdb_max_entries"].as_u64() == Some(500),
        "after the reload: aging should be the file's new 60 s and max entries the \
         flag's 500: {stats:?}"
    );

    // A broken file: refused, nothing changes.
    std::fs::write(&cfg, "switch:\n  mdoe: hub\n")?;
    let out = switchyard_tests::ops::ctl(&ctl, &["reload"])?;
    out.expect_code(1, "ctl reload of a broken file")?;
    ensure!(
        out.stderr.contains(&cfg.display().to_string()) && out.stderr.contains("mdoe"),
        "the refusal should name the file and the mistake: {:?}",
        out.stderr
    );
    ensure!(
        port_names(&ctl)? == after,
        "a refused reload changed the ports"
    );

    // SIGHUP does the same as ctl reload.
    reload_config(&cfg, "60s", &dir, &[])?;
    sw.proc.signal(nix::sys::signal::Signal::SIGHUP)?;
    wait_until(T, "SIGHUP to drop the port new", || {
        port_names(&ctl).is_ok_and(|n| !n.iter().any(|x| x == "new"))
    })
    .with_context(|| format!("ports: {:?}; log:\n{}", port_names(&ctl), sw.proc.output()))?;
    pass_frame(&a, &b, b.mac(), 80, 4)?;
    sw.assert_running()?;
    Ok(())
}

fn check_ok(out: switchyard_tests::ops::Outcome, what: &str) -> Result<String> {
    out.expect_code(0, what)?;
    Ok(out.stdout)
}
