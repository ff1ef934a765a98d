//! Tap offloads: switchyard's taps carry a virtio-net header with TSO and
//! checksum offload on, so TCP super-frames cross from tap to tap whole;
//! a port that cannot take them (a plain tap, a vde_plug) gets them cut
//! into ordinary segments. Each tap is moved into a namespace of its own
//! after the switch created it, and iperf3 runs between the namespaces.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::tools::vde_plug_tap;
use switchyard_tests::util::require_tool;
use switchyard_tests::{
    preflight, unique_name, wait_until, Netns, Proc, Stdin, SwitchCmd, TempDir,
};

/// iperf3's run time per transfer, in seconds.
const SECONDS: &str = "2";
/// The least a transfer must move to count as working (debug builds are
/// slow, but not that slow).
const MIN_BYTES: f64 = 20e6;

/// Moves tap `tap`, created by the switch in `from`, into `to` and gives
/// it `cidr`.
fn hand_over(from: &Netns, tap: &str, to: &Netns, cidr: &str) -> Result<()> {
    wait_until(Duration::from_secs(5), &format!("tap {tap}"), || {
        from.has_link(tap)
    })?;
    from.ip(["link", "set", tap, "netns", to.name()])?;
    to.addr_up(tap, cidr)?;
    to.ip(["link", "set", "lo", "up"])?;
    Ok(())
}

/// Gives `dev` the IPv6 address `cidr` at once (no duplicate detection
/// wait).
fn add_v6(ns: &Netns, dev: &str, cidr: &str) -> Result<()> {
    ns.ip(["addr", "add", cidr, "dev", dev, "nodad"])?;
    Ok(())
}

/// `ethtool -k` of `dev`: whether TCP segmentation offload is on.
fn tso_on(ns: &Netns, dev: &str) -> Result<bool> {
    let ethtool = require_tool("ethtool")?;
    let out = ns.command(ethtool).args(["-k", dev]).output()?;
    ensure!(out.status.success(), "ethtool -k {dev} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("tcp-segmentation-offload:"))
        .with_context(|| format!("ethtool -k {dev} shows no tcp-segmentation-offload:\n{text}"))?;
    Ok(line.contains(": on"))
}

/// Bytes and packets `dev` received (what the switch wrote into it).
fn rx_stats(ns: &Netns, dev: &str) -> Result<(f64, f64)> {
    let text = ns.ip(["-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&text).context("parsing ip -j output")?;
    let rx = &v[0]["stats64"]["rx"];
    let bytes = rx["bytes"].as_f64().context("no rx bytes")?;
    let packets = rx["packets"].as_f64().context("no rx packets")?;
    Ok((bytes, packets))
}

/// Runs iperf3 from `client` to `server_ip` in `server`; returns the bytes
/// the receiver got.
fn iperf(client: &Netns, server: &Netns, server_ip: &str) -> Result<f64> {
    let iperf3 = require_tool("iperf3")?;
    let mut cmd = server.command(&iperf3);
    cmd.args(["-s", "-1", "-B", server_ip]);
    let _server = Proc::spawn("iperf3 server", cmd, Stdin::Null)?;
    // The server needs a moment to listen; the client retries until then.
    for _ in 0..50 {
        let out = client
            .command(&iperf3)
            .args([
                "-c",
                server_ip,
                "-t",
                SECONDS,
                "-J",
                "--connect-timeout",
                "2000",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => bail!("iperf3 -J printed no JSON ({e}): {text}"),
        };
        if let Some(err) = v["error"].as_str() {
            if err.contains("unable to connect") || err.contains("refused") {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            bail!("iperf3 to {server_ip}: {err}");
        }
        return v["end"]["sum_received"]["bytes"]
            .as_f64()
            .context("iperf3 JSON has no end.sum_received.bytes");
    }
    bail!("the iperf3 server on {server_ip} never accepted a connection")
}

/// Two offload taps: TSO is on, TCP works, and the receiving tap gets
/// frames far larger than an MTU, which only whole super-frames can be.
#[test]
fn tcp_super_frames_pass_whole_between_offload_taps() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("tso")?;
    let (ns_sw, ns_a, ns_b) = (Netns::new()?, Netns::new()?, Netns::new()?);
    let (ta, tb) = (unique_name("sta"), unique_name("stb"));
    let mut sw = SwitchCmd::native()?
        .vde(&tmp.join("sw"))
        .args(["--tap", &ta, "--tap", &tb])
        .start(Some(&ns_sw))?;
    hand_over(&ns_sw, &ta, &ns_a, "192.0.2.1/24")?;
    hand_over(&ns_sw, &tb, &ns_b, "192.0.2.2/24")?;
    add_v6(&ns_a, &ta, "2001:db8::1/64")?;
    add_v6(&ns_b, &tb, "2001:db8::2/64")?;
    ensure!(tso_on(&ns_a, &ta)?, "TSO is off on the switch's tap {ta}");

    for ip in ["192.0.2.2", "2001:db8::2"] {
        let before = rx_stats(&ns_b, &tb)?;
        let moved = iperf(&ns_a, &ns_b, ip)?;
        ensure!(
            moved >= MIN_BYTES,
            "iperf3 to {ip} moved only {moved} bytes"
        );
        let after = rx_stats(&ns_b, &tb)?;
        let (bytes, packets) = (after.0 - before.0, after.1 - before.1);
        let average = bytes / packets.max(1.0);
        ensure!(
            average > 4000.0,
            "frames to {ip} into {tb} average {average:.0} bytes ({packets} frames): \
             super-frames were segmented on the way, not passed whole"
        );
    }
    sw.assert_running()?;
    Ok(())
}

/// An offload tap's TCP reaches a plain tap (`offload: false` in the
/// config) and a vde_plug tap: the switch segments in software, the
/// frames arriving are MTU-sized, and the transfers complete.
#[test]
fn tcp_from_an_offload_tap_is_segmented_for_plain_ports() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("gso")?;
    let (ns_sw, ns_a, ns_b, ns_c) = (Netns::new()?, Netns::new()?, Netns::new()?, Netns::new()?);
    let (ta, tb, tc) = (unique_name("sga"), unique_name("sgb"), unique_name("sgc"));
    let config = tmp.join("switchyard.yaml");
    std::fs::write(
        &config,
        format!(
            "ports:\n  - {{ type: tap, device: {ta} }}\n  - {{ type: tap, device: {tb}, offload: false }}\n"
        ),
    )?;
    let dir = tmp.join("sw");
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .arg("--config")
        .arg(&config)
        .start(Some(&ns_sw))?;
    hand_over(&ns_sw, &ta, &ns_a, "192.0.2.1/24")?;
    hand_over(&ns_sw, &tb, &ns_b, "192.0.2.2/24")?;
    add_v6(&ns_a, &ta, "2001:db8::1/64")?;
    add_v6(&ns_b, &tb, "2001:db8::2/64")?;
    let _plug = vde_plug_tap(&ns_c, &dir, &tc, "192.0.2.3/24")?;
    ensure!(tso_on(&ns_a, &ta)?, "TSO is off on the offload tap {ta}");
    ensure!(
        !tso_on(&ns_b, &tb)?,
        "TSO is on on {tb}, configured with offload: false"
    );

    let cases = [
        (&ns_b, &tb, "192.0.2.2", "192.0.2.1"),
        (&ns_b, &tb, "2001:db8::2", "2001:db8::1"),
        (&ns_c, &tc, "192.0.2.3", "192.0.2.1"),
    ];
    for (ns, dev, ip, back_ip) in cases {
        let before = rx_stats(ns, dev)?;
        let moved = iperf(&ns_a, ns, ip).with_context(|| format!("to {ip} on {dev}"))?;
        ensure!(
            moved >= MIN_BYTES,
            "iperf3 to {ip} moved only {moved} bytes"
        );
        let after = rx_stats(ns, dev)?;
        let average = (after.0 - before.0) / (after.1 - before.1).max(1.0);
        ensure!(
            average <= 1514.0,
            "frames to {ip} into {dev} average {average:.0} bytes: more than an MTU reached \
             a plain port"
        );
        // And back: the plain side's TCP into the offload tap.
        let back = iperf(ns, &ns_a, back_ip).with_context(|| format!("from {dev} to {back_ip}"))?;
        ensure!(
            back >= MIN_BYTES,
            "iperf3 to {back_ip} moved only {back} bytes"
        );
    }
    sw.assert_running()?;
    Ok(())
}
