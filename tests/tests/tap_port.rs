//! `--tap` ports driven by the Rust protocol client: the kernel on the tap
//! side answers ARP, which proves frames cross the tap in both directions.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_tests::scenarios::{arp_via, link_mac, mac_string};
use switchyard_tests::{preflight, unique_name, wait_until, Netns, SwitchCmd, TempDir};

/// An existing persistent tap given to `--tap` is attached (ARP through
/// it works) and is still there after the switch exits.
#[test]
fn existing_persistent_tap_is_attached_and_kept() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("pt")?;
    let ns = Netns::new()?;
    let tap = unique_name("syp");
    ns.ip(["tuntap", "add", "dev", &tap, "mode", "tap"])?;
    ns.addr_up(&tap, "192.0.2.254/24")?;
    let dir = tmp.join("sw");
    let mut sw = SwitchCmd::native()?
        .vde(&dir)
        .arg("--tap")
        .arg(&tap)
        .start(Some(&ns))?;
    let scratch = tmp.path().to_path_buf();
    let answered = arp_via(&ns, &dir, &scratch, 1)?;
    ensure!(
        mac_string(answered) == link_mac(&ns, &tap)?,
        "ARP answered by an unexpected MAC"
    );
    sw.terminate()?;
    ensure!(
        ns.has_link(&tap),
        "the switch deleted the pre-existing persistent tap {tap}"
    );
    Ok(())
}

/// A tap that switchyard creates works the same way, in switch and hub mode.
#[test]
fn created_tap_answers_arp_in_switch_and_hub_mode() -> Result<()> {
    preflight()?;
    let tmp = TempDir::new("ct")?;
    for (i, hub) in [false, true].into_iter().enumerate() {
        let ns = Netns::new()?;
        let tap = unique_name("syc");
        let dir = tmp.join(format!("sw{i}"));
        let mut cmd = SwitchCmd::native()?.vde(&dir).arg("--tap").arg(&tap);
        if hub {
            cmd = cmd.arg("--hub");
        }
        let mut sw = cmd.start(Some(&ns))?;
        wait_until(Duration::from_secs(5), "the tap", || ns.has_link(&tap))?;
        ns.addr_up(&tap, "192.0.2.254/24")?;
        let scratch = tmp.path().to_path_buf();
        arp_via(&ns, &dir, &scratch, i as u8).with_context(|| format!("hub={hub}"))?;
        sw.assert_running()?;
    }
    Ok(())
}
