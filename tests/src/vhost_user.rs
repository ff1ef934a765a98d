//! UML guests on vhost-user: `virtio_uml.device=SOCK:1` on the kernel
//! command line gives the guest a virtio-net device whose backend is the
//! switch's `vhost-user` port; the guest's init loads `virtio_net.ko` (and
//! what it needs) from Debian's UML module tree, then runs the usual
//! `tests/guest/init.sh`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::process::{Proc, Stdin};
use crate::uml::{boot_args, install_init, Guest};
use crate::util::{require_tool, unique_name, TempDir};

/// Where Debian's user-mode-linux package keeps the UML kernel's modules.
const MODULES: &str = "/usr/lib/uml/modules";

/// The modules a virtio-net guest loads, in dependency order, below
/// `MODULES/$(uname -r)/kernel/`.
const VIRTIO_NET: [&str; 3] = [
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

/// The UML module tree that has `virtio_net.ko`; an error (so the test
/// fails, never skips) when the package does not ship one.
pub fn virtio_modules() -> Result<PathBuf> {
    let entries = fs::read_dir(MODULES)
        .with_context(|| format!("{MODULES}: is user-mode-linux installed?"))?;
    for e in entries.flatten() {
        let tree = e.path().join("kernel");
        if VIRTIO_NET.iter().all(|m| tree.join(m).is_file()) {
            return Ok(e.path());
        }
    }
    bail!(
        "no UML module tree under {MODULES} has {}",
        VIRTIO_NET.join(", ")
    )
}

/// The init a virtio guest boots with: load the virtio-net modules, then
/// become `init.sh` (same parameters, same markers).
fn install_virtio_init(dir: &Path) -> Result<PathBuf> {
    let init = install_init(dir)?;
    let dst = dir.join("virtio-init.sh");
    if !dst.exists() {
        let mut script = String::from(
            "#!/bin/sh\n# Loads virtio-net from the UML module tree (hostfs has no\n\
             # /lib/modules for the UML kernel), then runs the test init.\n\
             m=/usr/lib/uml/modules/$(uname -r)/kernel\n",
        );
        for m in VIRTIO_NET {
            script.push_str(&format!("insmod \"$m/{m}\" || echo SY_ERROR=insmod-{m}\n"));
        }
        script.push_str(&format!("exec {}\n", init.display()));
        fs::write(&dst, script).with_context(|| format!("writing {}", dst.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", dst.display()))?;
    }
    Ok(dst)
}

/// Builder for a UML guest whose eth0 is a virtio-net device on a
/// vhost-user socket.
#[derive(Debug, Clone)]
pub struct VirtioUml {
    label: String,
    socket: PathBuf,
    params: Vec<(String, String)>,
}

impl VirtioUml {
    /// A guest called `label` whose eth0 is the vhost-user device behind
    /// `socket`, addressed `cidr`.
    pub fn new(label: &str, socket: &Path, cidr: &str) -> VirtioUml {
        VirtioUml {
            label: label.to_string(),
            socket: socket.to_path_buf(),
            params: vec![("IP0".into(), cidr.into())],
        }
    }

    /// The guest pings `peer` (see `Uml::ping`), then stays `linger`
    /// seconds to answer the others.
    pub fn ping(self, peer: &str, linger: u32) -> VirtioUml {
        self.param("ROLE", "ping")
            .param("PEER", peer)
            .param("LINGER", &linger.to_string())
    }

    /// Any `KEY=value` for the init script.
    pub fn param(mut self, key: &str, value: &str) -> VirtioUml {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.to_string(), value.to_string()));
        self
    }

    /// Boots the guest inside `ns`, its state and RAM in `tmp`.
    pub fn start(self, ns: &Netns, tmp: &TempDir) -> Result<Guest> {
        let linux = require_tool("linux.uml")?;
        virtio_modules()?;
        let init = install_virtio_init(tmp.path())?;
        let umid = unique_name("syv");
        let mut cmd = ns.command(linux);
        boot_args(&mut cmd, &umid, tmp.path(), "64M", &init);
        cmd.arg(format!("virtio_uml.device={}:1", self.socket.display()));
        for (k, v) in &self.params {
            cmd.arg(format!("{k}={v}"));
        }
        let proc = Proc::spawn(&format!("uml {}", self.label), cmd, Stdin::Null)?;
        Ok(Guest { proc })
    }
}
