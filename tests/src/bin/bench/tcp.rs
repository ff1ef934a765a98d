//! tap ↔ tap TCP: two network namespaces, each with a tap that
//! `vde_plug tap://TAP vde://DIR` (run inside that namespace) joins to the
//! switch's VDE directory; iperf3 server in one, client in the other.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::measure::{process_cpu_s, Config, Target};
use super::world::{self, Helper, Netns};

/// Why uml_switch has no tap ↔ tap number (checked by hand with vdeplug4
/// 4.0.1 and uml_switch 20070815).
pub const UML_SWITCH_NA: &str =
    "uml_switch has no VDE directory, and vde_plug (vdeplug4) cannot attach to it: \
     vde_plug wants DIR/ctl and sends a 150-byte request (a description follows the \
     UML fields), on which uml_switch closes the connection; uml_switch's own -tap \
     takes one tap, in the switch's namespace. No UML-protocol tap plug is at hand.";

const TAP: &str = "sybench0";
const SERVER_IP: &str = "10.199.0.1";
const CLIENT_IP: &str = "10.199.0.2";
const IPERF_PORT_HEX: &str = "1451"; // 5201

static NEXT: AtomicU32 = AtomicU32::new(1);

/// One iperf3 run.
#[derive(Clone, Debug)]
pub struct TcpSample {
    /// Receiver-side goodput (iperf3 `end.sum_received.bits_per_second`).
    pub bits_per_s: f64,
    /// Sender-side TCP retransmissions.
    pub retransmits: f64,
    /// Switch CPU while the client ran, in % of one core.
    pub switch_cpu_pct: Option<f64>,
    /// Both vde_plug processes together, in % of one core.
    pub plugs_cpu_pct: Option<f64>,
}

pub fn iperf(t: &Target, cfg: &Config) -> Result<TcpSample> {
    let dir = t
        .vde_dir
        .context("the switch serves no VDE directory for vde_plug")?;
    let iperf3 = cfg
        .iperf3
        .as_deref()
        .context("iperf3 is not installed (apt-get install iperf3)")?;
    let vde_plug = cfg
        .vde_plug
        .as_deref()
        .context("vde_plug is not installed (apt-get install vdeplug)")?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Declared before the processes, so dropped after them: a namespace
    // name is only deleted once nothing runs in it any more.
    let ns_srv = Netns::create(&format!("{}-s{n}", t.netns))?;
    let ns_cli = Netns::create(&format!("{}-c{n}", t.netns))?;
    let url = format!("vde://{}", dir.display());
    let tap_url = format!("tap://{TAP}");
    let log = |what: &str| t.workdir.join(format!("{}-{what}.log", t.tag));

    let mut plugs = Vec::new();
    for (ns, ip) in [(&ns_srv, SERVER_IP), (&ns_cli, CLIENT_IP)] {
        let mut plug = Helper::start(
            Some(ns.name()),
            vde_plug,
            &[&tap_url, &url],
            log(&format!("vde_plug-{}", ns.name())),
        )?;
        wait_for_tap(ns.name(), &mut plug)?;
        let addr = format!("{ip}/24");
        world::ip(&["-n", ns.name(), "addr", "add", &addr, "dev", TAP])?;
        world::ip(&["-n", ns.name(), "link", "set", TAP, "up"])?;
        world::ip(&["-n", ns.name(), "link", "set", "lo", "up"])?;
        plugs.push(plug);
    }

    let mut server = Helper::start(
        Some(ns_srv.name()),
        iperf3,
        &["-s", "-1", "-B", SERVER_IP],
        log("iperf3-server"),
    )?;
    wait_listening(&mut server)?;

    let secs = format!("{}", cfg.iperf_time.as_secs_f64());
    let cpu0 = process_cpu_s(t.pid);
    let plugs0: Option<f64> = plugs.iter().map(|p| process_cpu_s(p.pid())).sum();
    let t0 = Instant::now();
    let mut client = Helper::start(
        Some(ns_cli.name()),
        iperf3,
        &["-c", SERVER_IP, "-t", &secs, "-J"],
        log("iperf3-client"),
    )?;
    let status = client.wait_timeout(cfg.iperf_time + Duration::from_secs(15))?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu0.zip(process_cpu_s(t.pid)).map(|(a, b)| b - a);
    let plugs1: Option<f64> = plugs.iter().map(|p| process_cpu_s(p.pid())).sum();
    let Some(status) = status else {
        bail!("`{}` did not finish in time", client.what());
    };
    for p in &mut plugs {
        p.check_alive()?;
    }
    let out = client.full_output();
    let sample = parse_iperf_json(&out).with_context(|| {
        format!(
            "iperf3 client ({status}); server said: {}",
            server.output().lines().last().unwrap_or("")
        )
    })?;
    let pct = |s: Option<f64>| s.map(|s| 100.0 * s / wall);
    Ok(TcpSample {
        switch_cpu_pct: pct(cpu),
        plugs_cpu_pct: pct(plugs0.zip(plugs1).map(|(a, b)| b - a)),
        ..sample
    })
}

/// Wait until vde_plug has created the tap in its namespace.
fn wait_for_tap(ns: &str, plug: &mut Helper) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        plug.check_alive()?;
        if world::ip(&["-n", ns, "link", "show", "dev", TAP]).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("`{}` created no {TAP} within 5 s", plug.what());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the iperf3 server listens on port 5201, looking at the TCP
/// table of its own namespace (/proc/PID/net/tcp{,6}).
fn wait_listening(server: &mut Helper) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = server.pid();
    loop {
        server.check_alive()?;
        let listening = ["tcp", "tcp6"].iter().any(|f| {
            std::fs::read_to_string(Path::new(&format!("/proc/{pid}/net/{f}")))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() > 3
                        && cols[1].ends_with(&format!(":{IPERF_PORT_HEX}"))
                        && cols[3] == "0A"
                })
        });
        if listening {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("`{}` did not listen within 5 s", server.what());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Goodput and retransmissions from `iperf3 -J` output.
fn parse_iperf_json(out: &str) -> Result<TcpSample> {
    let start = out.find('{').context("no JSON in the iperf3 output")?;
    let end = out.rfind('}').context("no JSON in the iperf3 output")?;
    let v: serde_json::Value =
        serde_json::from_str(&out[start..=end]).context("parsing the iperf3 JSON")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let bits_per_s = v
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|x| x.as_f64())
        .context("iperf3 JSON lacks end.sum_received.bits_per_second")?;
    let retransmits = v
        .pointer("/end/sum_sent/retransmits")
        .and_then(|x| x.as_f64())
        .unwrap_or(f64::NAN);
    Ok(TcpSample {
        bits_per_s,
        retransmits,
        switch_cpu_pct: None,
        plugs_cpu_pct: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_json() {
        let s = parse_iperf_json(
            r#"{"start":{},"end":{"sum_sent":{"retransmits":7},
                "sum_received":{"bits_per_second":1.5e9}}}"#,
        )
        .expect("parses");
        assert_eq!(s.bits_per_s, 1.5e9);
        assert_eq!(s.retransmits, 7.0);
        assert!(parse_iperf_json(r#"{"error":"unable to connect"}"#).is_err());
    }
}
