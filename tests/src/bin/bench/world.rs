//! The environment of a run, each piece behind an RAII guard: the private
//! network namespace, the temporary directory, and the switch processes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::sys;

/// The three switches under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SwitchKind {
    Switchyard,
    UmlSwitch,
    VdeSwitch,
}

impl SwitchKind {
    pub const ALL: [SwitchKind; 3] = [
        SwitchKind::Switchyard,
        SwitchKind::UmlSwitch,
        SwitchKind::VdeSwitch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SwitchKind::Switchyard => "switchyard",
            SwitchKind::UmlSwitch => "uml_switch",
            SwitchKind::VdeSwitch => "vde_switch",
        }
    }

    pub fn parse(s: &str) -> Option<SwitchKind> {
        SwitchKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Look a program up in `$PATH` (plus the sbin directories, which a
/// non-login root shell may lack).
pub fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// A named network namespace (`ip netns add`) that this process has
/// entered with setns(2). Dropping it deletes the name; the namespace
/// itself disappears once its last process (us) exits.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create the namespace and move this process into it. Must be called
    /// before any thread is spawned: setns(2) applies to the calling thread
    /// and is inherited by threads and children created afterwards.
    pub fn create_and_enter(name: &str) -> Result<Netns> {
        let guard = Netns::create(name)?;
        let path = format!("/run/netns/{name}");
        let f = File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: `f` is an open namespace file for the duration of the call;
        // setns only changes this thread's network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setns into {path}"));
        }
        Ok(guard)
    }

    /// Create a named namespace without entering it (for `ip netns exec`).
    pub fn create(name: &str) -> Result<Netns> {
        let ip = find_in_path("ip").context("the `ip` program (iproute2) is not installed")?;
        let status = Command::new(&ip)
            .args(["netns", "add", name])
            .stdin(Stdio::null())
            .status()
            .context("running `ip netns add`")?;
        if !status.success() {
            bail!("`ip netns add {name}` failed ({status}); does it already exist? (`ip netns del {name}`)");
        }
        Ok(Netns {
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let ok = find_in_path("ip")
            .and_then(|ip| {
                Command::new(ip)
                    .args(["netns", "del", &self.name])
                    .stdin(Stdio::null())
                    .status()
                    .ok()
            })
            .is_some_and(|s| s.success());
        if !ok {
            eprintln!(
                "warning: could not delete network namespace {} (run `ip netns del {}`)",
                self.name, self.name
            );
        }
    }
}

/// A directory removed recursively on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{prefix}.{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// A running switch. Dropping it sends SIGTERM, waits up to 2 s, then
/// SIGKILLs, and always reaps the child.
pub struct SwitchProc {
    kind: SwitchKind,
    child: Child,
    // Held open: a foreground vde_switch exits on stdin EOF.
    stdin: Option<ChildStdin>,
    ctl: PathBuf,
    log: Option<PathBuf>,
}

/// Make the kernel SIGKILL a child started by this benchmark when the
/// benchmark dies without running its destructors.
pub(super) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2), which is async-signal-safe and touches no memory
    // shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// SIGTERM `child`, give it `grace` to exit, then SIGKILL; always reap it.
/// Returns false if it had to be killed.
fn stop_child(child: &mut Child, grace: Duration) -> bool {
    let mut polite = true;
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own unreaped child's pid; the pid
            // cannot have been recycled because we have not waited yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                _ => break,
            }
        }
    }
    if let Ok(None) = child.try_wait() {
        polite = false;
        let _ = child.kill();
    }
    let _ = child.wait();
    polite
}

impl SwitchProc {
    /// Start `kind` from `exe` with its control socket under `workdir`.
    /// `tag` makes the socket names unique; stdout and stderr go to
    /// `log` (or /dev/null). vde_switch serves a VDE directory, the others
    /// a bare control socket.
    pub fn start(
        kind: SwitchKind,
        exe: &Path,
        extra_args: &[String],
        workdir: &Path,
        tag: &str,
        log: Option<PathBuf>,
    ) -> Result<SwitchProc> {
        let mut cmd = Command::new(exe);
        let ctl = match kind {
            SwitchKind::UmlSwitch => {
                let ctl = workdir.join(format!("{tag}.ctl"));
                cmd.arg("-unix").arg(&ctl);
                ctl
            }
            SwitchKind::VdeSwitch => {
                let dir = workdir.join(format!("{tag}.vde"));
                cmd.arg("-s").arg(&dir);
                dir.join("ctl")
            }
            SwitchKind::Switchyard => {
                let ctl = workdir.join(format!("{tag}.ctl"));
                cmd.arg("--unix").arg(&ctl);
                ctl
            }
        };
        cmd.args(extra_args);
        let (out, err) = match &log {
            Some(p) => {
                let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
                let g = f.try_clone().context("duplicating the log file")?;
                (Stdio::from(f), Stdio::from(g))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        cmd.stdin(Stdio::piped()).stdout(out).stderr(err);
        // Own process group: a Ctrl-C on the terminal reaches only us, and
        // we shut the switch down through the guard.
        cmd.process_group(0);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", kind.name(), exe.display()))?;
        let stdin = child.stdin.take();
        Ok(SwitchProc {
            kind,
            child,
            stdin,
            ctl,
            log,
        })
    }

    /// The control socket path to hand to [`super::proto::Port::connect`].
    pub fn ctl(&self) -> &Path {
        &self.ctl
    }

    fn describe_exit(&self, status: ExitStatus) -> String {
        let mut s = format!("{} exited early ({status})", self.kind.name());
        if let Some(log) = &self.log {
            s.push_str(&format!("; see {}", log.display()));
        } else {
            s.push_str("; rerun with --logs DIR to keep its output");
        }
        s
    }

    /// Wait until the control socket exists (the switch may still be about
    /// to listen; connecting retries on ECONNREFUSED).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            sys::check_interrupted()?;
            if let Some(status) = self.child.try_wait().context("waiting for the switch")? {
                bail!("{}", self.describe_exit(status));
            }
            if std::fs::symlink_metadata(&self.ctl).is_ok_and(|m| m.file_type().is_socket()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not create {} within {timeout:?}",
                    self.kind.name(),
                    self.ctl.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fail if the switch has exited (e.g. crashed under load).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("waiting for the switch")? {
            bail!("{}", self.describe_exit(status));
        }
        Ok(())
    }
}

impl Drop for SwitchProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !stop_child(&mut self.child, Duration::from_secs(2)) {
            eprintln!(
                "warning: {} ignored SIGTERM; it was killed",
                self.kind.name()
            );
        }
    }
}

/// A helper program (vde_plug, iperf3) run for one measurement: its own
/// process group, SIGKILLed if the benchmark dies, SIGTERMed and reaped
/// when dropped. Output goes to a file so that errors can be quoted.
pub struct Helper {
    what: String,
    child: Child,
    out: PathBuf,
}

impl Helper {
    /// Start `prog args`, optionally inside network namespace `netns`
    /// (through `ip netns exec`, which execs the program in place, so the
    /// pid is the program's). stdout and stderr go to `out`.
    pub fn start(netns: Option<&str>, prog: &Path, args: &[&str], out: PathBuf) -> Result<Helper> {
        let what = format!(
            "{}{}",
            netns.map_or(String::new(), |n| format!("[{n}] ")),
            std::iter::once(prog.display().to_string())
                .chain(args.iter().map(|a| a.to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut cmd = match netns {
            Some(ns) => {
                let ip = find_in_path("ip").context("the `ip` program is not installed")?;
                let mut c = Command::new(ip);
                c.args(["netns", "exec", ns]).arg(prog);
                c
            }
            None => Command::new(prog),
        };
        cmd.args(args);
        let f = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let g = f.try_clone().context("duplicating the output file")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(g))
            .process_group(0);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Helper { what, child, out })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed so far (trimmed, at most the last 2000 bytes).
    pub fn output(&self) -> String {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let text = text.trim();
        let mut start = text.len().saturating_sub(2000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    /// Fail if it has exited, quoting its output.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("waiting for a helper")? {
            bail!("`{}` exited ({status}): {}", self.what, self.output());
        }
        Ok(())
    }

    /// Wait up to `timeout` for it to exit by itself; None on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            sys::check_interrupted()?;
            if let Some(status) = self.child.try_wait().context("waiting for a helper")? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Everything it printed so far.
    pub fn full_output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(1));
    }
}

/// Run `ip ARGS` to completion; fail with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let ip = find_in_path("ip").context("the `ip` program (iproute2) is not installed")?;
    let out = Command::new(ip)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Run `exe args` with a time limit and return its trimmed stdout+stderr,
/// or None if it failed or timed out (a switch that does not know
/// `--version` might start serving instead of exiting).
pub fn probe_output(exe: &Path, args: &[&str]) -> Option<String> {
    let dir = std::env::temp_dir();
    let out_path = dir.join(format!("switchyard-bench-probe.{}", std::process::id()));
    let out = File::create(&out_path).ok()?;
    let err = out.try_clone().ok()?;
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    status?;
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// The installed Debian package version of `pkg`, if any.
pub fn dpkg_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !v.is_empty()).then_some(v)
}
