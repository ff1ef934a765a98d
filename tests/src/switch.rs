//! Starting the daemon under test: natively, or under the `uml_switch` and
//! `vde_switch` names (symlinks).

use std::ffi::{OsStr, OsString};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::netns::Netns;
use crate::process::{describe, Proc, Stdin};
use crate::util::{require_tool, wait_until, TempDir};

/// Environment variable naming the daemon binary explicitly (optional).
pub const BIN_ENV: &str = "SWITCHYARD_BIN";

/// Set to `1` to point the `uml_switch`/`vde_switch` symlinks at the real
/// programs from uml-utilities and vde2 instead of switchyard: a way to
/// check the compatibility tests themselves against the originals.
pub const REFERENCE_ENV: &str = "SWITCHYARD_TESTS_REFERENCE";

/// How long a switch may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The `switchyard` binary: `$SWITCHYARD_BIN`, else next to the test
/// executable's profile directory (`target/<profile>/switchyard`, the test
/// being `target/<profile>/deps/<name>-<hash>`).
pub fn switchyard_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{BIN_ENV}={} does not exist", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target/<profile>/deps parent")?;
    let bin = profile_dir.join("switchyard");
    if !bin.is_file() {
        bail!(
            "the switchyard daemon binary is missing at {} (build it first: \
             `cargo build -p switchyard-cli`, add --release for release tests; \
             `cargo test` alone does not build other packages' binaries)",
            bin.display()
        );
    }
    Ok(bin)
}

/// True when [`REFERENCE_ENV`] asks for the original programs.
pub fn reference_mode() -> bool {
    std::env::var_os(REFERENCE_ENV).is_some_and(|v| v == "1")
}

/// Creates `dir/<name>` as a symlink to the daemon (or, in reference mode,
/// to the original program) and returns it.
pub fn compat_symlink(dir: &Path, name: &str) -> Result<PathBuf> {
    let target = if reference_mode() {
        require_tool(name)?
    } else {
        switchyard_bin()?
    };
    let link = dir.join(name);
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("symlink {} -> {}", link.display(), target.display()))?;
    Ok(link)
}

/// A command line for the daemon, started with [`SwitchCmd::start`].
#[derive(Debug)]
pub struct SwitchCmd {
    program: PathBuf,
    args: Vec<OsString>,
    /// Control sockets whose `listening` log line (native) or presence
    /// (compat) means the switch is ready.
    sockets: Vec<PathBuf>,
    native: bool,
    stdin: Option<Stdin>,
    label: String,
    cwd: Option<PathBuf>,
}

impl SwitchCmd {
    /// Native `switchyard`; add ports with [`SwitchCmd::unix`] etc.
    pub fn native() -> Result<SwitchCmd> {
        Ok(SwitchCmd {
            program: switchyard_bin()?,
            args: Vec::new(),
            sockets: Vec::new(),
            native: true,
            stdin: None,
            label: "switchyard".into(),
            cwd: None,
        })
    }

    /// Any program with uml_switch/vde_switch-style arguments (e.g. a
    /// compatibility symlink). `label` names it in messages.
    pub fn program(program: &Path, label: &str) -> SwitchCmd {
        SwitchCmd {
            program: program.to_path_buf(),
            args: Vec::new(),
            sockets: Vec::new(),
            native: false,
            stdin: None,
            label: label.into(),
            cwd: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> SwitchCmd {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> SwitchCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.args.push(a.as_ref().to_os_string());
        }
        self
    }

    /// `--unix CTL`: a uml_switch-style control socket.
    pub fn unix(mut self, ctl: &Path) -> SwitchCmd {
        self.sockets.push(ctl.to_path_buf());
        self.arg("--unix").arg(ctl)
    }

    /// `--vde DIR`: a VDE control directory (DIR/ctl).
    pub fn vde(mut self, dir: &Path) -> SwitchCmd {
        self.sockets.push(dir.join("ctl"));
        self.arg("--vde").arg(dir)
    }

    /// Declares a control socket that must exist before the switch counts as started.
    pub fn expect_socket(mut self, ctl: &Path) -> SwitchCmd {
        self.sockets.push(ctl.to_path_buf());
        self
    }

    /// Working directory of the process (for relative paths).
    pub fn current_dir(mut self, dir: &Path) -> SwitchCmd {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    pub fn stdin(mut self, stdin: Stdin) -> SwitchCmd {
        self.stdin = Some(stdin);
        self
    }

    /// Spawns the process (in `ns` if given) without waiting for readiness.
    pub fn spawn(self, ns: Option<&Netns>) -> Result<Switch> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        if let Some(ns) = ns {
            ns.enter_on_spawn(&mut cmd);
        }
        let stdin = self.stdin.unwrap_or(Stdin::Null);
        let proc = Proc::spawn(&self.label, cmd, stdin)?;
        Ok(Switch {
            proc,
            sockets: self.sockets,
            native: self.native,
        })
    }

    /// Spawns the switch and waits until it serves every control socket.
    pub fn start(self, ns: Option<&Netns>) -> Result<Switch> {
        let mut sw = self.spawn(ns)?;
        sw.wait_ready()?;
        Ok(sw)
    }
}

/// A running switch process; its process group is killed on drop.
#[derive(Debug)]
pub struct Switch {
    pub proc: Proc,
    sockets: Vec<PathBuf>,
    native: bool,
}

impl Switch {
    /// Waits for one `listening` log line per control socket (native mode)
    /// and for every control socket to accept connections.
    pub fn wait_ready(&mut self) -> Result<()> {
        if self.native {
            let n = self.sockets.len().max(1);
            self.proc.wait_for_lines("listening", n, START_TIMEOUT)?;
        }
        for s in self.sockets.clone() {
            if self.native {
                // `listening` means ready; a probing connection would only
                // add a "refused a client" warning to the log.
                if !crate::util::exists(&s) {
                    bail!(
                        "{} logged `listening` but {} does not exist; output:\n{}",
                        self.proc.name(),
                        s.display(),
                        self.proc.output()
                    );
                }
                continue;
            }
            let what = format!("{} accepting connections", s.display());
            let mut exited = None;
            wait_until(START_TIMEOUT, &what, || {
                if let Ok(Some(st)) = self.proc.try_status() {
                    exited = Some(st);
                    return true;
                }
                UnixStream::connect(&s).is_ok()
            })
            .with_context(|| format!("{}; output:\n{}", self.proc.name(), self.proc.output()))?;
            if let Some(st) = exited {
                bail!(
                    "{} exited with {} before serving {}; output:\n{}",
                    self.proc.name(),
                    describe(st),
                    s.display(),
                    self.proc.output()
                );
            }
        }
        Ok(())
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.proc.signal(Signal::SIGTERM)?;
        self.proc.wait_exit(Duration::from_secs(5))
    }

    /// Fails if the switch has exited, or if one of its threads panicked
    /// (a port's thread can die while the process lives on).
    pub fn assert_running(&mut self) -> Result<()> {
        if let Some(st) = self.proc.try_status()? {
            bail!(
                "{} died ({}); output:\n{}",
                self.proc.name(),
                describe(st),
                self.proc.output()
            );
        }
        let out = self.proc.output();
        if let Some(line) = out.lines().find(|l| l.contains("' panicked at ")) {
            bail!(
                "a thread of {} panicked: {line}; output:\n{out}",
                self.proc.name()
            );
        }
        Ok(())
    }

    /// Port numbers from `port attached` log lines (`port=unix:N`), in order.
    pub fn attached_ports(&self) -> Vec<u32> {
        ports_in_lines(&self.proc.output(), "port attached")
    }

    /// Port numbers from `port detached` log lines, in order.
    pub fn detached_ports(&self) -> Vec<u32> {
        ports_in_lines(&self.proc.output(), "port detached")
    }
}

/// Extracts N from `port=unix:N` (quotes tolerated) on lines containing `marker`.
pub fn ports_in_lines(log: &str, marker: &str) -> Vec<u32> {
    log.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = &l[l.find("port=")? + 5..];
            let rest = rest.trim_start_matches('"');
            let rest = rest.strip_prefix("unix:")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Starts native switchyard in `ns` with one VDE directory `tmp/<name>`
/// plus `extra` arguments; returns the switch and the directory.
pub fn start_vde_switch(
    ns: &Netns,
    tmp: &TempDir,
    name: &str,
    extra: &[&str],
) -> Result<(Switch, PathBuf)> {
    let dir = tmp.join(name);
    let sw = SwitchCmd::native()?.vde(&dir).args(extra).start(Some(ns))?;
    Ok((sw, dir))
}

#[cfg(test)]
mod tests {
    use super::ports_in_lines;

    #[test]
    fn port_numbers_are_parsed_from_log_lines() {
        let log = "x INFO port attached port=unix:1 pid=3 uid=0 client=a\n\
                   x INFO port attached port=\"unix:12\" pid=4\n\
                   x INFO port detached port=unix:1 pid=3\n\
                   x INFO listening: ...\n";
        assert_eq!(ports_in_lines(log, "port attached"), vec![1, 12]);
        assert_eq!(ports_in_lines(log, "port detached"), vec![1]);
    }
}
