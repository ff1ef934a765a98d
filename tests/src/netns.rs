//! Network namespaces created by a test and deleted on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;

use anyhow::{anyhow, Context, Result};

use crate::util::{output, run, unique_name};

/// A fresh, named network namespace (`ip netns add`), deleted on drop.
///
/// Processes are started inside it with [`Netns::command`]; Rust code runs
/// inside it with [`Netns::run`]. Only `lo` exists at first (and is up).
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    pub fn new() -> Result<Netns> {
        let name = unique_name("syns");
        run(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let path = format!("/run/netns/{name}");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = output(Command::new("ip").args(["netns", "del", &name]));
                return Err(anyhow!(e).context(format!("opening {path}")));
            }
        };
        let ns = Netns { name, file };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that will run inside this namespace (setns before exec).
    /// The namespace must outlive the spawn.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.enter_on_spawn(&mut cmd);
        cmd
    }

    /// Makes an existing command enter this namespace when it is spawned.
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        let fd = self.file.as_raw_fd();
        // SAFETY: setns(2) is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// `ip -n NAME ARGS...`
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Adds `cidr` to `dev` and sets it up.
    pub fn addr_up(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(["addr", "add", cidr, "dev", dev])?;
        self.ip(["link", "set", dev, "up"])?;
        Ok(())
    }

    /// True if interface `dev` exists in this namespace.
    pub fn has_link(&self, dev: &str) -> bool {
        output(
            Command::new("ip")
                .arg("-n")
                .arg(&self.name)
                .args(["link", "show", "dev", dev]),
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
    }

    /// Pings `addr` from inside the namespace: `ping -c COUNT -i 0.2 -W 2`.
    /// Returns Ok only if every echo was answered.
    pub fn ping(&self, addr: &str, count: u32) -> Result<String> {
        run(self.command("ping").args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            addr,
        ]))
        .with_context(|| format!("ping {addr} from namespace {}", self.name))
    }

    /// Pings until one echo is answered (the other side may still be coming
    /// up), at most `tries` attempts of one second each, then `ping -c 3`.
    pub fn ping_eventually(&self, addr: &str, tries: u32) -> Result<String> {
        for _ in 0..tries {
            let ok = output(
                self.command("ping")
                    .args(["-n", "-c", "1", "-W", "1", addr]),
            )
            .map(|o| o.status.success())
            .unwrap_or(false);
            if ok {
                break;
            }
        }
        self.ping(addr, 3)
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns
    /// its result (a panic in `f` is propagated).
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.file.as_raw_fd();
        thread::scope(|s| {
            let handle = s.spawn(move || {
                // SAFETY: plain syscall on a valid fd; affects this thread only.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(anyhow!(std::io::Error::last_os_error())
                        .context("setns into the test namespace"));
                }
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = output(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// Runs `f` on a new thread that has entered the network and mount
/// namespaces of process `pid` (e.g. a switch started under
/// `unshare --mount`), so paths like `/run/vde.ctl` mean what they mean to
/// that process.
pub fn run_in_namespaces_of<F, R>(pid: nix::unistd::Pid, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let net = File::open(format!("/proc/{pid}/ns/net")).context("opening the net namespace")?;
    let mnt = File::open(format!("/proc/{pid}/ns/mnt")).context("opening the mount namespace")?;
    thread::scope(|s| {
        let handle = s.spawn(|| {
            // A thread may join another mount namespace only once it no
            // longer shares its filesystem attributes with the process.
            // SAFETY: plain syscalls on valid fds; they affect this thread only.
            unsafe {
                if libc::unshare(libc::CLONE_FS) != 0 {
                    return Err(
                        anyhow!(std::io::Error::last_os_error()).context("unshare(CLONE_FS)")
                    );
                }
                if libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    return Err(anyhow!(std::io::Error::last_os_error()).context("setns(mount)"));
                }
                if libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(anyhow!(std::io::Error::last_os_error()).context("setns(net)"));
                }
            }
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
