//! tap ↔ tap TCP: the switch opens two taps itself (switchyard `--tap`,
//! with its offloads; vde_switch `-t`), the run moves each into a network
//! namespace of its own, iperf3 server in one, client in the other.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::measure::{process_cpu_s, Config, Target};
use super::world::{self, Helper, Netns};

/// Why uml_switch has no tap ↔ tap number (checked by hand with vdeplug4
/// 4.0.1 and uml_switch 20070815).
pub const UML_SWITCH_NA: &str =
    "uml_switch's -tap takes one tap, and vde_plug (vdeplug4) cannot attach to it: \
     vde_plug wants DIR/ctl and sends a 150-byte request (a description follows the \
     UML fields), on which uml_switch closes the connection.";

/// The taps the switch opens for this measurement: server side, client side.
pub const TAPS: [&str; 2] = ["sybtap0", "sybtap1"];
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
}

pub fn iperf(t: &Target, cfg: &Config) -> Result<TcpSample> {
    let iperf3 = cfg
        .iperf3
        .as_deref()
        .context("iperf3 is not installed (apt-get install iperf3)")?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Declared before the processes, so dropped after them: a namespace
    // name is only deleted once nothing runs in it any more.
    let ns_srv = Netns::create(&format!("{}-s{n}", t.netns))?;
    let ns_cli = Netns::create(&format!("{}-c{n}", t.netns))?;
    let log = |what: &str| t.workdir.join(format!("{}-{what}.log", t.tag));

    for ((ns, ip), tap) in [(&ns_srv, SERVER_IP), (&ns_cli, CLIENT_IP)]
        .into_iter()
        .zip(TAPS)
    {
        wait_for_tap(tap)?;
        world::ip(&["link", "set", tap, "netns", ns.name()])?;
        let addr = format!("{ip}/24");
        world::ip(&["-n", ns.name(), "addr", "add", &addr, "dev", tap])?;
        world::ip(&["-n", ns.name(), "link", "set", tap, "up"])?;
        world::ip(&["-n", ns.name(), "link", "set", "lo", "up"])?;
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
    let Some(status) = status else {
        bail!("`{}` did not finish in time", client.what());
    };
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
        ..sample
    })
}

/// Wait until the switch has created `tap` (in the benchmark's namespace).
fn wait_for_tap(tap: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if world::ip(&["link", "show", "dev", tap]).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the switch created no tap {tap} within 5 s");
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
pub(super) fn parse_iperf_json(out: &str) -> Result<TcpSample> {
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
