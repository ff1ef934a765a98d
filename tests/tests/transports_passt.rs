//! passt as the switch's uplink through `--port stream,connect=PATH`
//! (protocols.md §3.2: passt speaks QEMU's stream framing).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_tests::transports::{
    dhcp_lease, need, run_bounded, vde_plug_tap_unaddressed, veth, wait_attached, Ctl, HttpServer,
};
use switchyard_tests::{preflight, unique_name, util, Netns, Proc, Stdin, SwitchCmd, TempDir};

/// Test 4: namespace H has an uplink (veth up0 203.0.113.2/24, default
/// route via 203.0.113.1 in namespace G), runs passt on a unix socket, an
/// HTTP server on its own 127.0.0.1:8080, and switchyard connected to
/// passt. A `vde_plug` tap in namespace A gets its address from passt's
/// DHCP server (passt hands out the host's address, 203.0.113.2) and
/// fetches the page through the gateway address, which passt maps to H's
/// loopback. The page carries a token, so it came from this test's server.
#[test]
fn passt_uplink_gives_dhcp_and_http() -> Result<()> {
    preflight()?;
    let passt = need("passt", "passt")?;
    let curl = need("curl", "curl")?;
    let tmp = TempDir::new("tps")?;
    let ns_g = Netns::new()?;
    let ns_h = Netns::new()?;
    let ns_a = Netns::new()?;
    veth(
        &ns_h,
        "up0",
        "203.0.113.2/24",
        &ns_g,
        "up1",
        "203.0.113.1/24",
    )?;
    ns_h.ip(["route", "add", "default", "via", "203.0.113.1"])?;

    // passt drops privileges to nobody: its socket directory must be open.
    let pdir = tmp.join("passt");
    std::fs::create_dir(&pdir).with_context(|| format!("creating {}", pdir.display()))?;
    std::fs::set_permissions(&pdir, std::fs::Permissions::from_mode(0o777))
        .with_context(|| format!("chmod {}", pdir.display()))?;
    let sock = pdir.join("passt.sock");
    let mut cmd = ns_h.command(passt);
    cmd.args(["-f", "-e", "-s"]).arg(&sock);
    let mut passt_proc = Proc::spawn("passt", cmd, Stdin::Null)?;
    util::wait_until(Duration::from_secs(10), "passt's socket", || {
        util::exists(&sock) || !passt_proc.is_running().unwrap_or(false)
    })?;
    ensure!(
        passt_proc.is_running()?,
        "passt exited; output:\n{}",
        passt_proc.output()
    );

    let token = unique_name("switchyard-passt-page-");
    let http = HttpServer::start(&ns_h, "127.0.0.1:8080", &format!("{token}\n"))?;

    let ctl = Ctl::new(&tmp.join("control.sock"));
    let dir = tmp.join("sw");
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .args(ctl.args())
        .arg("--port")
        .arg(format!("stream,name=up,connect={}", sock.display()))
        .start(Some(&ns_h))?;
    wait_attached(&mut sw, "up", 1)?;
    let _plug = vde_plug_tap_unaddressed(&ns_a, &dir, "vtA")?;

    let ip = dhcp_lease(&ns_a, "vtA", tmp.path())?;
    ensure!(
        ip == "203.0.113.2",
        "passt leased {ip}, expected the host's address 203.0.113.2"
    );
    let addrs = ns_a.ip(["-o", "-4", "addr", "show", "dev", "vtA"])?;
    ensure!(
        addrs.contains("203.0.113.2/24"),
        "the lease was not configured on vtA: {addrs}"
    );

    let mut cmd = ns_a.command(curl);
    cmd.args(["-sS", "--max-time", "15", "http://203.0.113.1:8080/"]);
    let page = run_bounded("curl", cmd, Duration::from_secs(30))?;
    ensure!(
        page.contains(&token),
        "curl fetched something else: {page:?}"
    );
    ensure!(http.requests() >= 1, "the HTTP server saw no connection");
    ctl.expect_traffic("up")?;
    sw.assert_running()?;
    ensure!(
        passt_proc.is_running()?,
        "passt exited; output:\n{}",
        passt_proc.output()
    );
    Ok(())
}
