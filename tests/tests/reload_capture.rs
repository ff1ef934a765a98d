//! Live reload (SIGHUP and `switchyard ctl reload`) and `switchyard ctl
//! capture`, with real vde_plug clients in network namespaces.

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use switchyard_tests::switch::{switchyard_bin, Switch, SwitchCmd};
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::util::{require_tool, wait_until};
use switchyard_tests::{preflight, unique_name, Netns, TempDir};

fn ctl(sock: &std::path::Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new(switchyard_bin()?)
        .arg("ctl")
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .context("run switchyard ctl")
}

fn port_names(sock: &std::path::Path) -> Result<Vec<String>> {
    let out = ctl(sock, &["-j", "ports"])?;
    if !out.status.success() {
        bail!("ctl ports failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ctl -j output")?;
    Ok(v["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// A native switch in `ns` started from the file `cfg` with the control
/// socket `sock`, ready once its VDE directory `dir` serves.
fn start_from_file(ns: &Netns, cfg: &Path, sock: &Path, dir: &Path) -> Result<Switch> {
    SwitchCmd::native()?
        .arg("--config")
        .arg(cfg)
        .arg("--control")
        .arg(sock)
        .expect_socket(&dir.join("ctl"))
        .start(Some(ns))
}

const CONFIG_A: &str = r#"
ports:
  - { name: vde, type: unix, directory: DIR }
  - { name: q1, type: udp, local: "127.0.0.1:7301", remote: "127.0.0.1:7302" }
"#;

const CONFIG_B: &str = r#"
switch: { fdb: { aging: 120s } }
ports:
  - { name: vde, type: unix, directory: DIR }
  - { name: q2, type: udp, local: "127.0.0.1:7303", remote: "127.0.0.1:7304" }
"#;

/// SIGHUP applies a changed file: the unchanged VDE directory keeps its
/// clients (no detach, no lost ping during the reload), the removed udp
/// port goes, the new one comes. A bad file is refused by `ctl reload` and
/// the running set stays.
#[test]
fn reload_keeps_unchanged_ports_and_refuses_bad_files() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("reload")?;
    let (ns_s, ns_a, ns_b) = (Netns::new()?, Netns::new()?, Netns::new()?);
    let dir = tmp.join("sw");
    let cfg = tmp.join("switchyard.yaml");
    let sock = tmp.join("control.sock");
    let write = |text: &str| std::fs::write(&cfg, text.replace("DIR", &dir.display().to_string()));
    write(CONFIG_A)?;
    let mut sw = start_from_file(&ns_s, &cfg, &sock, &dir)?;
    let (tap_a, tap_b) = (unique_name("rla"), unique_name("rlb"));
    let _a = vde_plug_tap(&ns_a, &dir, &tap_a, "192.0.2.1/24")?;
    let _b = vde_plug_tap(&ns_b, &dir, &tap_b, "192.0.2.2/24")?;
    ns_a.ping_eventually("192.0.2.2", 10)?;
    let before = port_names(&sock)?;
    assert!(before.contains(&"q1".to_string()), "{before:?}");

    // Ping through the reload: every echo must come back.
    let pinger = ns_a
        .command("ping")
        .args(["-c", "30", "-i", "0.05", "-W", "1", "192.0.2.2"])
        .stdout(Stdio::piped())
        .spawn()
        .context("start ping")?;
    std::thread::sleep(Duration::from_millis(300));
    write(CONFIG_B)?;
    sw.proc.signal(Signal::SIGHUP)?;
    sw.proc
        .wait_for_output("configuration reloaded", Duration::from_secs(10))?;
    let out = pinger.wait_with_output().context("wait for ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "frames lost during reload:\n{text}"
    );

    let after = port_names(&sock)?;
    assert!(
        after.contains(&"q2".to_string()) && !after.contains(&"q1".to_string()),
        "{after:?}"
    );
    assert_eq!(
        sw.proc.count_lines("port detached port=unix"),
        0,
        "a VDE client was dropped"
    );
    let stats: serde_json::Value = serde_json::from_slice(&ctl(&sock, &["-j", "stats"])?.stdout)?;
    assert_eq!(stats["fdb_aging_seconds"], 120);

    // A broken file: refused with the place of the error; nothing changes.
    std::fs::write(&cfg, "ports:\n  - { type: udp, lcoal: x }\n")?;
    let refused = ctl(&sock, &["reload"])?;
    assert_eq!(refused.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("line 2") && msg.contains("lcoal"), "{msg}");
    assert_eq!(port_names(&sock)?, after);
    ns_a.ping("192.0.2.2", 2)?;
    sw.assert_running()?;
    Ok(())
}

/// `ctl capture PORT` streams pcap that tcpdump reads live from a pipe,
/// and `-w FILE` writes a file tcpdump reads afterwards.
#[test]
fn capture_streams_pcap_that_tcpdump_reads() -> Result<()> {
    preflight()?;
    let tcpdump = require_tool("tcpdump")?;
    let tmp = TempDir::new("capture")?;
    let (ns_s, ns_a, ns_b) = (Netns::new()?, Netns::new()?, Netns::new()?);
    let dir = tmp.join("sw");
    let sock = tmp.join("control.sock");
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .arg("--control")
        .arg(&sock)
        .start(Some(&ns_s))?;
    let (tap_a, tap_b) = (unique_name("cpa"), unique_name("cpb"));
    let _a = vde_plug_tap(&ns_a, &dir, &tap_a, "192.0.2.1/24")?;
    let _b = vde_plug_tap(&ns_b, &dir, &tap_b, "192.0.2.2/24")?;
    ns_a.ping_eventually("192.0.2.2", 10)?;

    // Live: ctl | tcpdump -c 4; tcpdump exits after 4 packets.
    let mut cap = Command::new(switchyard_bin()?)
        .args(["ctl", "-s"])
        .arg(&sock)
        .args(["capture", "unix:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start ctl capture")?;
    let pipe = cap.stdout.take().context("capture stdout")?;
    let dump = Command::new(&tcpdump)
        .args(["-n", "-c", "4", "-r", "-"])
        .stdin(pipe)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start tcpdump")?;
    let file = tmp.join("cap.pcap");
    let mut to_file = Command::new(switchyard_bin()?)
        .args(["ctl", "-s"])
        .arg(&sock)
        .args(["capture", "unix:2", "-w"])
        .arg(&file)
        .spawn()
        .context("start ctl capture -w")?;
    std::thread::sleep(Duration::from_millis(300));
    ns_a.ping("192.0.2.2", 4)?;
    let dumped = dump.wait_with_output().context("tcpdump")?;
    let live = String::from_utf8_lossy(&dumped.stdout);
    assert!(
        live.contains("ICMP echo"),
        "tcpdump saw no ping live:\n{live}"
    );
    let _ = cap.kill();
    let _ = cap.wait();
    wait_until(Duration::from_secs(5), "capture file", || {
        std::fs::metadata(&file)
            .map(|m| m.len() > 100)
            .unwrap_or(false)
    })?;
    let _ = to_file.kill();
    let _ = to_file.wait();
    let read = Command::new(&tcpdump)
        .args(["-n", "-r"])
        .arg(&file)
        .output()
        .context("tcpdump -r file")?;
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(text.contains("ICMP echo"), "{text}");
    // A port that does not exist is a clear error.
    let bad = ctl(&sock, &["capture", "nope"])?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no port named"));
    sw.assert_running()?;
    Ok(())
}

/// A port added with `ctl port add` survives a reload, and the reload's
/// reply names it as kept; once the file configures a port of that name,
/// the file's port takes its place, and the next file that drops the name
/// drops the port.
#[test]
fn runtime_ports_survive_a_reload() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("rtport")?;
    let ns = Netns::new()?;
    let dir = tmp.join("sw");
    let cfg = tmp.join("switchyard.yaml");
    let sock = tmp.join("control.sock");
    let write = |text: &str| std::fs::write(&cfg, text.replace("DIR", &dir.display().to_string()));
    write(CONFIG_A)?;
    let mut sw = start_from_file(&ns, &cfg, &sock, &dir)?;
    let spec = "udp,name=extra,local=127.0.0.1:7311,remote=127.0.0.1:7312";
    let added = ctl(&sock, &["port", "add", spec])?;
    assert!(added.status.success(), "{added:?}");

    write(CONFIG_B)?;
    let reloaded = ctl(&sock, &["reload"])?;
    let said = String::from_utf8_lossy(&reloaded.stdout);
    assert!(reloaded.status.success(), "{reloaded:?}");
    assert!(
        said.contains("removed [q1]") && said.contains("kept ports added at run time [extra]"),
        "{said}"
    );
    let names = port_names(&sock)?;
    assert!(
        names.contains(&"extra".to_string()) && names.contains(&"q2".to_string()),
        "{names:?}"
    );
    sw.proc.wait_for_output(
        "kept ports added at run time [extra]",
        Duration::from_secs(5),
    )?;

    // The file takes the name: its port replaces the run-time one.
    let with_extra = format!(
        "{CONFIG_B}  - {{ name: extra, type: udp, local: \"127.0.0.1:7313\", remote: \"127.0.0.1:7314\" }}\n"
    );
    write(&with_extra)?;
    let reloaded = ctl(&sock, &["reload"])?;
    let said = String::from_utf8_lossy(&reloaded.stdout);
    assert!(
        said.contains("added [extra]") && said.contains("removed [extra]"),
        "{said}"
    );
    assert!(!said.contains("run time"), "{said}");
    // Configured now: the next file without it drops it.
    write(CONFIG_B)?;
    let reloaded = ctl(&sock, &["reload"])?;
    let said = String::from_utf8_lossy(&reloaded.stdout);
    assert!(said.contains("removed [extra]"), "{said}");
    assert!(!port_names(&sock)?.contains(&"extra".to_string()));
    sw.assert_running()?;
    Ok(())
}
