//! Other real clients: `vde_plug` and guestless QEMU.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::process::{Proc, Stdin};
use crate::util::{require_tool, wait_until};

/// `vde_plug tap://TAP DIR` inside `ns`: vdeplug4's tap plugin creates the
/// tap in that namespace and plugs it into the switch. Waits until the tap
/// exists, then gives it `cidr` and brings it up.
pub fn vde_plug_tap(ns: &Netns, dir: &Path, tap: &str, cidr: &str) -> Result<Proc> {
    let vde_plug = require_tool("vde_plug")?;
    let mut cmd = ns.command(vde_plug);
    cmd.arg(format!("tap://{tap}")).arg(dir);
    let mut p = Proc::spawn(&format!("vde_plug {tap}"), cmd, Stdin::Pipe)?;
    wait_until(
        Duration::from_secs(10),
        &format!("tap {tap} in {}", ns.name()),
        || ns.has_link(tap) || !p.is_running().unwrap_or(false),
    )?;
    if !p.is_running()? {
        anyhow::bail!("vde_plug exited early; output:\n{}", p.output());
    }
    ns.addr_up(tap, cidr)?;
    Ok(p)
}

/// A plain `vde_plug URL` with its stdin/stdout stream unused: stdin is a
/// pipe kept open (EOF would end it). Runs in `ns` when given.
pub fn vde_plug(ns: Option<&Netns>, url: &str, label: &str) -> Result<Proc> {
    let vde_plug = require_tool("vde_plug")?;
    let mut cmd = match ns {
        Some(ns) => ns.command(vde_plug),
        None => std::process::Command::new(vde_plug),
    };
    cmd.arg(url);
    Proc::spawn(label, cmd, Stdin::Pipe)
}

/// Guestless QEMU joining `-netdev vde,sock=DIR` and a tap `tap` (created by
/// QEMU in `ns`) through an internal hub (protocols.md §3.4). Waits for the
/// tap, then gives it `cidr` and brings it up.
pub fn qemu_vde_tap(ns: &Netns, dir: &Path, tap: &str, cidr: &str) -> Result<Proc> {
    let qemu = require_tool("qemu-system-x86_64")?;
    let mut cmd = ns.command(qemu);
    cmd.args(["-machine", "none", "-nodefaults", "-display", "none"])
        .arg("-netdev")
        .arg(format!("vde,id=v,sock={}", dir.display()))
        .args(["-netdev", "hubport,id=h1,hubid=0,netdev=v"])
        .arg("-netdev")
        .arg(format!("tap,id=t,ifname={tap},script=no,downscript=no"))
        .args(["-netdev", "hubport,id=h2,hubid=0,netdev=t"]);
    let mut p = Proc::spawn("qemu", cmd, Stdin::Null)?;
    wait_until(Duration::from_secs(15), &format!("QEMU tap {tap}"), || {
        ns.has_link(tap) || !p.is_running().unwrap_or(false)
    })?;
    if !p.is_running()? {
        anyhow::bail!("QEMU exited early; output:\n{}", p.output());
    }
    ns.addr_up(tap, cidr).context("configuring QEMU's tap")?;
    Ok(p)
}
