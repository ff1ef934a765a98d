//! The Prometheus endpoint: scraped by a real Prometheus under traffic,
//! checked by `promtool`, and compared with what `switchyard ctl` says.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_tests::ops::{
    ctl_json, ctl_ports, http_get, http_request, parse_exposition, require_program, sample_value,
    Json, PlugLan, Prometheus,
};
use switchyard_tests::process::{Proc, Stdin};
use switchyard_tests::proto::{self, Client, BROADCAST};
use switchyard_tests::scenarios::pass_frame;
use switchyard_tests::{preflight, Netns, SwitchCmd, TempDir};

/// The metrics address inside the switch's own namespace.
const METRICS: &str = "127.0.0.1:9590";

/// A real Prometheus, in the switch's namespace (nothing leaves it),
/// scrapes switchyard every second while two vde_plug clients ping each
/// other. Its HTTP API reports the target up, a nonzero
/// switchyard_port_rx_frames_total for each client's port (labelled with
/// the port names `ctl ports` uses), rx still increasing under the ongoing
/// traffic, and the learned addresses.
#[test]
fn prometheus_scrapes_switchyard_under_traffic() -> Result<()> {
    preflight()?;
    require_program("prometheus", "prometheus")?;
    let lan = PlugLan::start("prom", 74, &["--metrics", METRICS])?;
    lan.ping_both_ways()?;
    // Traffic for as long as the test runs.
    let _pinger = Proc::spawn(
        "ping (background)",
        {
            let mut c = lan.ns_a.command("ping");
            c.args(["-n", "-i", "0.2", "-W", "1", &lan.ip_b]);
            c
        },
        Stdin::Null,
    )?;
    let name_a = lan.port_of(&lan.plug_a)?["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name_b = lan.port_of(&lan.plug_b)?["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let target: SocketAddr = METRICS.parse()?;
    let prom = Prometheus::start(&lan.ns_sw, &lan.tmp.join("prometheus"), &[target])?;
    let wait = Duration::from_secs(30);
    prom.wait_query(&lan.ns_sw, "up{job=\"switchyard\"}", wait, |r| {
        r.iter().any(|e| sample_value(e) == Some(1.0))
    })
    .context("Prometheus never saw the switchyard target up")?;

    let result = prom.wait_query(&lan.ns_sw, "switchyard_port_rx_frames_total", wait, |r| {
        [&name_a, &name_b].iter().all(|name| {
            r.iter().any(|e| {
                e["metric"]["port"].as_str() == Some(name.as_str())
                    && sample_value(e).is_some_and(|v| v > 0.0)
            })
        })
    })?;
    for e in &result {
        ensure!(
            e["metric"]["job"].as_str() == Some("switchyard")
                && e["metric"]["type"].as_str().is_some(),
            "every rx sample should carry job and type labels: {e:?}"
        );
    }
    let unix: Vec<&Json> = result
        .iter()
        .filter(|e| e["metric"]["type"].as_str() == Some("unix"))
        .collect();
    ensure!(
        unix.len() == 2,
        "expected the two vde_plug ports (type unix) in {result:?}"
    );

    // Under traffic: the counters grow between scrapes.
    prom.wait_query(
        &lan.ns_sw,
        &format!("increase(switchyard_port_rx_frames_total{{port=\"{name_a}\"}}[5s])"),
        wait,
        |r| r.iter().any(|e| sample_value(e).is_some_and(|v| v > 0.0)),
    )
    .context("the rx counter of the pinging client did not increase in Prometheus")?;
    prom.wait_query(&lan.ns_sw, "switchyard_fdb_entries", wait, |r| {
        r.iter().any(|e| sample_value(e).is_some_and(|v| v >= 2.0))
    })?;

    let targets = prom.api(&lan.ns_sw, "targets")?;
    let active = targets["activeTargets"]
        .as_array()
        .context("no activeTargets")?;
    ensure!(
        active.len() == 1
            && active[0]["health"].as_str() == Some("up")
            && active[0]["lastError"].as_str() == Some(""),
        "the scrape target should be healthy with no error: {active:?}"
    );
    Ok(())
}

fn promtool_check(text: &str) -> Result<(Option<i32>, String)> {
    let promtool = require_program("promtool", "prometheus")?;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// With `metrics.listen` from the config file and two protocol clients
/// that exchanged frames: GET /metrics is HTTP 200 in text format 0.0.4,
/// `promtool check metrics` accepts it without a remark, every documented
/// family is there with its type, and the values equal what `ctl -j ports`
/// and `ctl -j stats` say (no traffic in flight). Other paths are 404 and
/// other methods 405.
#[test]
fn metrics_endpoint_is_valid_and_matches_ctl() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("met")?;
    let ns = Netns::new()?;
    let dir = tmp.join("vde");
    let ctl = tmp.join("control.sock");
    let cfg = tmp.join("switchyard.yaml");
    std::fs::write(
        &cfg,
        format!(
            "switch:\n  fdb:\n    max_entries: 1000\nports:\n  - {{ type: unix, directory: {} }}\n\
             metrics:\n  listen: \"{METRICS}\"\n",
            dir.display()
        ),
    )?;
    let mut sw = SwitchCmd::native()?
        .arg("--config")
        .arg(&cfg)
        .arg("--control")
        .arg(&ctl)
        .expect_socket(&dir.join("ctl"))
        .start(Some(&ns))?;
    let scratch = tmp.path().to_path_buf();
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0xa9))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0xb9))?,
        ))
    })??;
    pass_frame(&a, &b, BROADCAST, 60, 1)?;
    pass_frame(&b, &a, a.mac(), 300, 2)?;
    pass_frame(&a, &b, b.mac(), 1000, 3)?;
    // A frame with a multicast source address is dropped (and counted).
    let mut bad = proto::frame(b.mac(), a.mac(), 60, 4);
    bad[6] |= 1;
    a.send(&bad)?;
    std::thread::sleep(Duration::from_millis(300));

    let addr: SocketAddr = METRICS.parse()?;
    let r = ns.run(|| http_get(addr, "/metrics"))??;
    ensure!(r.status == 200, "GET /metrics: HTTP {}", r.status);
    let ctype = r.header("content-type").unwrap_or_default();
    ensure!(
        ctype.starts_with("text/plain") && ctype.contains("version=0.0.4"),
        "GET /metrics: content type {ctype:?}"
    );
    let (code, remarks) = promtool_check(&r.body)?;
    ensure!(
        code == Some(0) && remarks.trim().is_empty(),
        "promtool check metrics: exit {code:?}: {remarks}\n{}",
        r.body
    );

    let e = parse_exposition(&r.body)?;
    for (family, kind) in [
        ("switchyard_build_info", "gauge"),
        ("switchyard_uptime_seconds", "gauge"),
        ("switchyard_ports", "gauge"),
        ("switchyard_port_rx_frames_total", "counter"),
        ("switchyard_port_rx_bytes_total", "counter"),
        ("switchyard_port_tx_frames_total", "counter"),
        ("switchyard_port_tx_bytes_total", "counter"),
        ("switchyard_port_tx_held_frames_total", "counter"),
        ("switchyard_port_drops_total", "counter"),
        ("switchyard_tx_held_frames_total", "counter"),
        ("switchyard_fdb_entries", "gauge"),
        ("switchyard_fdb_max_entries", "gauge"),
        ("switchyard_fdb_learned_total", "counter"),
        ("switchyard_fdb_moved_total", "counter"),
        ("switchyard_fdb_aged_total", "counter"),
        ("switchyard_fdb_refused_total", "counter"),
    ] {
        ensure!(
            e.types.get(family).map(String::as_str) == Some(kind),
            "{family}: TYPE {:?}, expected {kind}",
            e.types.get(family)
        );
        ensure!(
            e.samples.iter().any(|s| s.name == family),
            "{family} has no sample"
        );
    }
    let build = e.find("switchyard_build_info", &[]);
    ensure!(
        build.len() == 1 && build[0].value == 1.0 && build[0].label("version").is_some(),
        "switchyard_build_info: {build:?}"
    );
    ensure!(
        e.value("switchyard_uptime_seconds", &[])? > 0.0,
        "uptime should be positive"
    );
    ensure!(
        e.value("switchyard_ports", &[("type", "unix")])? == 2.0,
        "switchyard_ports{{type=\"unix\"}} should be 2"
    );

    // Per port: the same numbers as ctl.
    let ports = ctl_ports(&ctl)?;
    ensure!(ports.len() == 2, "expected 2 ports: {ports:?}");
    let mut total_drops = 0.0;
    for p in &ports {
        let name = p["name"].as_str().unwrap_or_default();
        let kind = p["type"].as_str().unwrap_or_default();
        for (metric, key) in [
            ("switchyard_port_rx_frames_total", "rx_frames"),
            ("switchyard_port_rx_bytes_total", "rx_bytes"),
            ("switchyard_port_tx_frames_total", "tx_frames"),
            ("switchyard_port_tx_bytes_total", "tx_bytes"),
        ] {
            let m = e.value(metric, &[("port", name), ("type", kind)])?;
            ensure!(
                Some(m as u64) == p[key].as_u64() && m > 0.0,
                "{metric}{{port=\"{name}\"}} is {m}, ctl says {key} {:?}",
                p[key]
            );
        }
        let held = e.value(
            "switchyard_port_tx_held_frames_total",
            &[("port", name), ("type", kind)],
        )?;
        ensure!(
            Some(held as u64) == p["tx_held"].as_u64(),
            "switchyard_port_tx_held_frames_total{{port=\"{name}\"}} is {held}, ctl says tx_held {:?}",
            p["tx_held"]
        );
        let drops: f64 = e
            .find("switchyard_port_drops_total", &[("port", name)])
            .iter()
            .map(|s| s.value)
            .sum();
        let ctl_drops: u64 = p["drops"]
            .as_object()
            .map(|m| m.iter().filter_map(|(_, v)| v.as_u64()).sum())
            .unwrap_or(0);
        ensure!(
            drops as u64 == ctl_drops,
            "drops of {name}: metrics {drops}, ctl {ctl_drops} ({:?})",
            p["drops"]
        );
        let none = serde_json::Map::new();
        for reason in p["drops"].as_object().unwrap_or(&none) {
            let v = e.value(
                "switchyard_port_drops_total",
                &[("port", name), ("reason", reason.0.as_str())],
            )?;
            ensure!(
                Some(v as u64) == reason.1.as_u64(),
                "drops of {name} for {}: metrics {v}, ctl {:?}",
                reason.0,
                reason.1
            );
        }
        total_drops += drops;
    }
    ensure!(
        total_drops >= 1.0,
        "the frame with a multicast source should be counted as a drop"
    );

    let stats = ctl_json(&ctl, &["stats"])?;
    for (metric, key) in [
        ("switchyard_fdb_entries", "fdb_entries"),
        ("switchyard_fdb_max_entries", "fdb_max_entries"),
        ("switchyard_fdb_learned_total", "fdb_learned"),
        ("switchyard_fdb_moved_total", "fdb_moved"),
        ("switchyard_fdb_aged_total", "fdb_aged"),
        ("switchyard_fdb_refused_total", "fdb_refused"),
        ("switchyard_tx_held_frames_total", "tx_held"),
    ] {
        let m = e.value(metric, &[])?;
        ensure!(
            Some(m as u64) == stats[key].as_u64(),
            "{metric} is {m}, ctl stats says {key} {:?}",
            stats[key]
        );
    }
    ensure!(
        e.value("switchyard_fdb_max_entries", &[])? == 1000.0,
        "fdb max_entries from the config file should show as 1000"
    );
    ensure!(
        e.value("switchyard_fdb_entries", &[])? == 2.0,
        "the two clients' addresses should be learned"
    );

    for (method, path, status) in [("GET", "/nope", 404), ("POST", "/metrics", 405)] {
        let r = ns.run(|| http_request(addr, method, path))??;
        ensure!(
            r.status == status,
            "{method} {path}: HTTP {}, expected {status}",
            r.status
        );
    }
    drop((a, b));
    sw.assert_running()?;
    Ok(())
}
