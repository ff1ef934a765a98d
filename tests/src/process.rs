//! Child processes owned by a test: each runs in its own process group,
//! its stdout and stderr are collected, and on drop the whole group is
//! killed (SIGKILL) and the child reaped.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// Set this to `1` to copy every child's output to the test's stderr as it arrives.
pub const VERBOSE_ENV: &str = "SWITCHYARD_TESTS_VERBOSE";

/// What the child gets as standard input.
#[derive(Debug)]
pub enum Stdin {
    /// `/dev/null`.
    Null,
    /// A pipe kept open by the [`Proc`] until [`Proc::close_stdin`] or drop.
    Pipe,
    /// A file descriptor, e.g. a pty slave.
    Fd(OwnedFd),
}

#[derive(Debug, Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    merged: Vec<u8>,
}

/// A spawned child process, killed (with its process group) on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    captured: Arc<Mutex<Captured>>,
    /// Reader threads still running (stdout, stderr).
    readers: Arc<AtomicUsize>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` in a new process group, with stdout and stderr captured.
    /// `name` labels the process in messages.
    pub fn spawn(name: &str, mut cmd: Command, stdin: Stdin) -> Result<Proc> {
        cmd.process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdin {
            Stdin::Null => cmd.stdin(Stdio::null()),
            Stdin::Pipe => cmd.stdin(Stdio::piped()),
            Stdin::Fd(fd) => cmd.stdin(Stdio::from(fd)),
        };
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        // Close our copies of the child's descriptors (e.g. a pty slave).
        drop(cmd);
        let captured = Arc::new(Mutex::new(Captured::default()));
        let readers = Arc::new(AtomicUsize::new(0));
        let verbose = std::env::var_os(VERBOSE_ENV).is_some_and(|v| v == "1");
        if let Some(out) = child.stdout.take() {
            spawn_reader(
                name,
                File::from(OwnedFd::from(out)),
                &captured,
                &readers,
                false,
                verbose,
            );
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(
                name,
                File::from(OwnedFd::from(err)),
                &captured,
                &readers,
                true,
                verbose,
            );
        }
        let stdin = child.stdin.take();
        Ok(Proc {
            name: name.to_string(),
            child,
            stdin,
            captured,
            readers,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Everything printed so far on stdout and stderr, interleaved.
    pub fn output(&self) -> String {
        self.with_captured(|c| String::from_utf8_lossy(&c.merged).into_owned())
    }

    pub fn stdout(&self) -> String {
        self.with_captured(|c| String::from_utf8_lossy(&c.stdout).into_owned())
    }

    pub fn stderr(&self) -> String {
        self.with_captured(|c| String::from_utf8_lossy(&c.stderr).into_owned())
    }

    fn with_captured<R>(&self, f: impl FnOnce(&Captured) -> R) -> R {
        match self.captured.lock() {
            Ok(c) => f(&c),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// Number of output lines containing `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.output().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until at least `n` output lines contain `needle`. Fails early if
    /// the process exits first.
    pub fn wait_for_lines(&mut self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count_lines(needle) >= n {
                return Ok(());
            }
            if let Some(status) = self.try_status()? {
                self.drain_output(Duration::from_secs(1));
                if self.count_lines(needle) >= n {
                    return Ok(());
                }
                bail!(
                    "{} exited ({status}) before printing {n} line(s) containing {needle:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not print {n} line(s) containing {needle:?} within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until some output line contains `needle`.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.wait_for_lines(needle, 1, timeout)
    }

    /// After an exit: waits (at most `timeout`) until the output pipes are
    /// closed and fully read. A daemonized child that kept them open makes
    /// this wait the whole timeout.
    fn drain_output(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.readers.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        if self.exited_unreaped() {
            // Do not kill the rest of the group here: a daemonizing child may
            // not have left it yet (fork, parent exits, child calls setsid).
            let status = self
                .child
                .wait()
                .with_context(|| format!("waiting for {}", self.name))?;
            self.status = Some(status);
        }
        Ok(self.status)
    }

    /// waitid(WEXITED | WNOHANG | WNOWAIT): has the child exited? Does not reap.
    fn exited_unreaped(&self) -> bool {
        // SAFETY: siginfo_t is plain data; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes one siginfo_t into `info`, which lives across
        // the call; WNOWAIT leaves the child to be reaped by its owner.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid for SIGCHLD-style siginfo filled by waitid.
        rc == 0 && unsafe { info.si_pid() } != 0
    }

    pub fn is_running(&mut self) -> Result<bool> {
        Ok(self.try_status()?.is_none())
    }

    /// Waits for the process to exit, failing after `timeout` (the process is
    /// then left running; drop kills it).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                self.drain_output(Duration::from_secs(1));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} still running after {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the process (not its group).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.status.is_some() {
            bail!("{} has already exited", self.name);
        }
        signal::kill(self.pid(), sig).with_context(|| format!("kill -{sig} {}", self.name))
    }

    /// SIGKILLs the whole process group and reaps the process.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let _ = signal::killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .with_context(|| format!("reaping {}", self.name))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Writes to the child's stdin pipe.
    pub fn write_stdin(&mut self, data: &[u8]) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("{} has no stdin pipe", self.name);
        };
        stdin.write_all(data)?;
        Ok(())
    }

    /// Closes our end of the child's stdin pipe (the child sees EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }
}

/// Describes an exit status for messages: "exit code N" or "signal N".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{status}"),
    }
}

fn spawn_reader(
    name: &str,
    mut src: File,
    captured: &Arc<Mutex<Captured>>,
    readers: &Arc<AtomicUsize>,
    is_stderr: bool,
    verbose: bool,
) {
    let captured = Arc::clone(captured);
    let readers = Arc::clone(readers);
    readers.fetch_add(1, Ordering::SeqCst);
    let label = format!("{name}{}", if is_stderr { "!" } else { "" });
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if verbose {
                        eprint!("[{label}] {}", String::from_utf8_lossy(&buf[..n]));
                    }
                    let mut c = match captured.lock() {
                        Ok(c) => c,
                        Err(p) => p.into_inner(),
                    };
                    if is_stderr {
                        c.stderr.extend_from_slice(&buf[..n]);
                    } else {
                        c.stdout.extend_from_slice(&buf[..n]);
                    }
                    c.merged.extend_from_slice(&buf[..n]);
                }
            }
        }
        readers.fetch_sub(1, Ordering::SeqCst);
    });
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill();
        self.drain_output(Duration::from_millis(200));
        // libtest shows a test's captured stderr only when the test fails, so
        // this costs nothing on success and explains failures.
        eprintln!(
            "----- output of {} ({}) -----\n{}\n----- end of {} -----",
            self.name,
            self.status.map(describe).unwrap_or_default(),
            self.output(),
            self.name
        );
    }
}

/// A pseudo-terminal pair for a child's stdin: keep `master` (closing it
/// hangs the terminal up, i.e. EOF for the child), hand `slave` to
/// [`Stdin::Fd`]. Both descriptors are close-on-exec from the start, so
/// children spawned concurrently by other tests cannot keep the pty open.
#[derive(Debug)]
pub struct Pty {
    pub master: nix::pty::PtyMaster,
    pub slave: OwnedFd,
}

impl Pty {
    pub fn open() -> Result<Pty> {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::OpenOptionsExt;
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .context("posix_openpt")?;
        nix::pty::grantpt(&master).context("grantpt")?;
        nix::pty::unlockpt(&master).context("unlockpt")?;
        let name = nix::pty::ptsname_r(&master).context("ptsname_r")?;
        // std opens with O_CLOEXEC.
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .with_context(|| format!("opening {name}"))?;
        Ok(Pty {
            master,
            slave: OwnedFd::from(slave),
        })
    }
}

/// A process we did not spawn directly (e.g. a daemon that forked away),
/// known by pid; SIGKILLed on drop if still alive.
#[derive(Debug)]
pub struct PidGuard {
    pub pid: Pid,
}

impl PidGuard {
    pub fn alive(&self) -> bool {
        // A zombie still answers kill(0); check /proc state too.
        if signal::kill(self.pid, None).is_err() {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    /// Waits until the process is gone.
    pub fn wait_gone(&self, timeout: Duration) -> Result<()> {
        crate::util::wait_until(timeout, &format!("pid {} to exit", self.pid), || {
            !self.alive()
        })
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        if self.alive() {
            let _ = signal::kill(self.pid, Signal::SIGKILL);
        }
    }
}
