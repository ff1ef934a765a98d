//! User-mode Linux guests that boot the host's `/` over hostfs and run
//! `tests/guest/init.sh` as PID 1.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::process::{Proc, Stdin};
use crate::util::{require_tool, unique_name, TempDir};

/// How long a guest may take from start to its `SY_RESULT=` line: boot
/// (~1.5 s, more when several guests boot at once on 2 cores) plus waiting
/// for a peer to boot plus the pings.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The guest init script, copied into `dir` with mode 0755 (so the tests do
/// not depend on the checkout keeping the executable bit).
pub fn install_init(dir: &Path) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/init.sh");
    let dst = dir.join("init.sh");
    if !dst.exists() {
        fs::copy(&src, &dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", dst.display()))?;
    }
    Ok(dst)
}

/// Sets what every guest's kernel command line has: its `umid`, its state
/// directory `dir` (which also holds the RAM file unless /dev/shm can),
/// `mem`, the host's `/` as a read-only hostfs root, the `init` script and
/// the console on stdin/stdout.
pub fn boot_args(cmd: &mut Command, umid: &str, dir: &Path, mem: &str, init: &Path) {
    cmd.arg(format!("umid={umid}"))
        .arg(format!("uml_dir={}", dir.display()))
        .arg(format!("mem={mem}"))
        .args([
            "quiet",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "ro",
        ])
        .arg(format!("init={}", init.display()))
        .args(["con=null", "con0=fd:0,fd:1"])
        // The guest's RAM is a file in $TMPDIR (unlinked at once); tmpfs is
        // much faster than a disk.
        .env("TMPDIR", ram_dir(dir));
}

/// Where UML should map a guest's RAM from (its `TMPDIR`): `/dev/shm` when
/// it is a tmpfs that allows exec (UML warns when it is not tmpfs), else
/// `fallback`.
pub fn ram_dir(fallback: &Path) -> PathBuf {
    let shm_ok = fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 4
                && f[1] == "/dev/shm"
                && f[2] == "tmpfs"
                && !f[3].split(',').any(|o| o == "noexec")
        })
    });
    if shm_ok {
        PathBuf::from("/dev/shm")
    } else {
        fallback.to_path_buf()
    }
}

/// Builder for one UML guest.
#[derive(Debug, Clone)]
pub struct Uml {
    label: String,
    ifaces: Vec<String>,
    params: Vec<(String, String)>,
    mem: String,
}

impl Uml {
    /// A guest called `label` in messages, with no interfaces yet.
    pub fn new(label: &str) -> Uml {
        Uml {
            label: label.to_string(),
            ifaces: Vec::new(),
            params: Vec::new(),
            mem: "64M".to_string(),
        }
    }

    /// Adds the next `ethN=SPEC` (e.g. `daemon,02:00:00:00:00:01,unix,/path/ctl`)
    /// with an address for it (`192.0.2.1/24`).
    pub fn eth(mut self, spec: &str, cidr: &str) -> Uml {
        let n = self.ifaces.len();
        self.ifaces.push(spec.to_string());
        self.params.push((format!("IP{n}"), cidr.to_string()));
        self
    }

    /// `ethN=daemon,MAC,unix,CTL`: the uml_switch protocol.
    pub fn daemon(self, mac: &str, ctl: &Path, cidr: &str) -> Uml {
        let spec = format!("daemon,{mac},unix,{}", ctl.display());
        self.eth(&spec, cidr)
    }

    /// `ethN=vde,DIR,MAC`: the VDE protocol through UML's `vde_plug` helper.
    pub fn vde(self, dir: &Path, mac: &str, cidr: &str) -> Uml {
        let spec = format!("vde,{},{mac}", dir.display());
        self.eth(&spec, cidr)
    }

    /// The guest pings `peer` (after waiting for it to answer once), prints
    /// `SY_RESULT=OK|FAIL` and powers off.
    pub fn ping(self, peer: &str) -> Uml {
        self.param("ROLE", "ping").param("PEER", peer)
    }

    /// The guest stays up for `secs` seconds (then powers off).
    pub fn wait(self, secs: u32) -> Uml {
        self.param("ROLE", "wait").param("WAITS", &secs.to_string())
    }

    /// Any `KEY=value` for the init script.
    pub fn param(mut self, key: &str, value: &str) -> Uml {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.to_string(), value.to_string()));
        self
    }

    /// Boots the guest inside `ns`. `tmp` holds the init script copy, the
    /// UML state directory (`uml_dir=`) and the guest's RAM file.
    pub fn start(self, ns: &Netns, tmp: &TempDir) -> Result<Guest> {
        let linux = require_tool("linux.uml")?;
        let init = install_init(tmp.path())?;
        let umid = unique_name("sy");
        let mut cmd = ns.command(linux);
        boot_args(&mut cmd, &umid, tmp.path(), &self.mem, &init);
        for (i, spec) in self.ifaces.iter().enumerate() {
            cmd.arg(format!("eth{i}={spec}"));
        }
        for (k, v) in &self.params {
            cmd.arg(format!("{k}={v}"));
        }
        let proc = Proc::spawn(&format!("uml {}", self.label), cmd, Stdin::Null)?;
        Ok(Guest { proc })
    }
}

/// A running UML guest; its process group is killed on drop.
#[derive(Debug)]
pub struct Guest {
    pub proc: Proc,
}

impl Guest {
    /// Waits until the guest has configured its interfaces.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.proc.wait_for_output("SY_READY", timeout)?;
        if self.proc.output().contains("SY_ERROR=") {
            bail!(
                "{}: interface missing (did the transport connect?); output:\n{}",
                self.proc.name(),
                self.proc.output()
            );
        }
        Ok(())
    }

    /// Waits for the `SY_RESULT=` line of a pinging guest; Ok only for `OK`.
    pub fn wait_ping_ok(&mut self) -> Result<()> {
        self.proc.wait_for_output("SY_RESULT=", RESULT_TIMEOUT)?;
        let out = self.proc.output();
        if !out.contains("SY_RESULT=OK") {
            bail!("{}: ping failed; guest output:\n{out}", self.proc.name());
        }
        Ok(())
    }

    /// Waits for the `SY_TCP=` line of a guest given `TCPTO`; Ok only
    /// for `OK`.
    pub fn wait_tcp_ok(&mut self) -> Result<()> {
        self.proc.wait_for_output("SY_TCP=", RESULT_TIMEOUT)?;
        let out = self.proc.output();
        if !out.contains("SY_TCP=OK") {
            bail!(
                "{}: TCP transfer failed; guest output:\n{out}",
                self.proc.name()
            );
        }
        Ok(())
    }

    /// Waits for a clean power-off (exit code 0).
    pub fn wait_halt(&mut self, timeout: Duration) -> Result<()> {
        let status = self.proc.wait_exit(timeout)?;
        if !status.success() {
            bail!(
                "{} exited with {status}; output:\n{}",
                self.proc.name(),
                self.proc.output()
            );
        }
        Ok(())
    }
}
