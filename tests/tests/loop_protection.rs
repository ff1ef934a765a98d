//! Loop protection end to end: two of the switch's taps enslaved to one
//! kernel bridge with STP off (a guest that bridges its two NICs) close a
//! loop; two UML guests on the daemon transport keep pinging each other
//! without loss, `ctl` keeps answering, and the counters name the tap
//! that was blocked and why. Storm control is on at 500 frames/s per port,
//! as in the report that found the loop hurting everyone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_tests::transports::{counter, drops, json, Ctl};
use switchyard_tests::{preflight, unique_name, wait_until, Netns, SwitchCmd, TempDir, Uml};

/// Echo requests each guest sends, 0.2 s apart: six seconds of pings.
const PINGS: u32 = 30;

/// What the `ctl ports` poller saw while the guests pinged.
#[derive(Debug, Default)]
struct Seen {
    /// The slowest `ctl ports` answer.
    slowest: Duration,
    /// Answers polled.
    polls: u32,
    /// Ports listed as blocked, with their `blocked` object.
    blocked: Vec<(String, String)>,
}

/// Polls `ctl -j ports` every 200 ms until `stop`, timing each answer.
fn poll_ctl(ctl: Ctl, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ports = ctl.ports()?;
        let took = t.elapsed();
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        s.slowest = s.slowest.max(took);
        s.polls += 1;
        for p in &ports {
            if let Some(b) = p.get("blocked") {
                let name = p.get("name").and_then(json::Json::as_str).unwrap_or("?");
                s.blocked.push((name.to_string(), b.to_string()));
            }
        }
        drop(s);
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Fails unless the guest's ping summary says every request was answered.
fn expect_no_loss(out: &str, label: &str) -> Result<()> {
    let want = format!("{PINGS} packets transmitted, {PINGS} received");
    ensure!(
        out.contains(&want) && out.contains("SY_RESULT=OK"),
        "{label}: expected {want:?}; guest output:\n{out}"
    );
    Ok(())
}

#[test]
fn a_loop_through_a_kernel_bridge_is_cut_and_guests_keep_pinging() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("loop")?;
    let ns = Netns::new()?;
    let (tap_a, tap_b) = (unique_name("lpa"), unique_name("lpb"));
    // The loop: both taps in one bridge, STP off, everything up.
    ns.ip(["link", "add", "br0", "type", "bridge", "stp_state", "0"])?;
    for tap in [&tap_a, &tap_b] {
        ns.ip(["tuntap", "add", "dev", tap, "mode", "tap"])?;
        ns.ip(["link", "set", tap, "master", "br0"])?;
        ns.ip(["link", "set", tap, "up"])?;
    }
    ns.ip(["link", "set", "br0", "up"])?;

    let ctl_sock = tmp.join("uml.ctl");
    let ctl = Ctl::new(&tmp.join("control.sock"));
    let mut sw = SwitchCmd::native()?
        .unix(&ctl_sock)
        .args(ctl.args())
        .args(["--tap", &tap_a, "--tap", &tap_b])
        .args(["--storm-broadcast", "500", "--storm-multicast", "500"])
        .args(["--storm-unknown-unicast", "500", "--loop-hold-down", "3"])
        .start(Some(&ns))?;
    wait_until(Duration::from_secs(5), "both taps attached", || {
        ctl.ports().is_ok_and(|p| p.len() >= 2)
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let poller = {
        let (ctl, stop, seen) = (ctl.clone(), stop.clone(), seen.clone());
        thread::spawn(move || poll_ctl(ctl, stop, seen))
    };
    let pings = PINGS.to_string();
    let guest = |label: &str, mac: &str, me: &str, peer: &str| {
        Uml::new(label)
            .daemon(mac, &ctl_sock, me)
            .ping(peer)
            .param("PINGS", &pings)
            .param("LINGER", "10")
            .start(&ns, &tmp)
    };
    let mut g1 = guest("guest 1", "02:00:00:00:1c:01", "192.0.2.1/24", "192.0.2.2")?;
    let mut g2 = guest("guest 2", "02:00:00:00:1c:02", "192.0.2.2/24", "192.0.2.1")?;
    let outcome = g1.wait_ping_ok().and(g2.wait_ping_ok());
    stop.store(true, Ordering::Relaxed);
    let polled = poller
        .join()
        .map_err(|_| anyhow::anyhow!("the ctl poller panicked"))?;
    outcome.with_context(|| format!("switch log:\n{}", sw.proc.output()))?;
    polled.context("`ctl ports` failed while the loop ran")?;
    expect_no_loss(&g1.proc.output(), "guest 1")?;
    expect_no_loss(&g2.proc.output(), "guest 2")?;

    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    ensure!(
        seen.slowest < Duration::from_secs(1),
        "`ctl ports` took {:?} at worst ({} polls)",
        seen.slowest,
        seen.polls
    );
    let taps = [format!("tap:{tap_a}"), format!("tap:{tap_b}")];
    ensure!(
        !seen.blocked.is_empty() && seen.blocked.iter().all(|(n, _)| taps.contains(n)),
        "`ctl ports` should have shown a tap blocked, and only taps: {:?}",
        seen.blocked
    );
    ensure!(
        seen.blocked
            .iter()
            .all(|(_, b)| b.contains("\"reason\":\"loop\"")),
        "blocked for another reason: {:?}",
        seen.blocked
    );
    let ports = ctl.ports()?;
    let blocked: Vec<String> = ports
        .iter()
        .filter(|p| counter(p, "loop_blocks") > 0 && drops(p, "loop_blocked") > 0)
        .filter_map(|p| p.get("name").and_then(json::Json::as_str).map(String::from))
        .collect();
    ensure!(
        !blocked.is_empty() && blocked.iter().all(|n| taps.contains(n)),
        "the counters should name a blocked tap with loop_blocked drops, and only taps: {ports:?}"
    );
    ensure!(
        sw.proc.output().contains("loop detected"),
        "no loop warning in the log:\n{}",
        sw.proc.output()
    );
    sw.assert_running()?;
    Ok(())
}
