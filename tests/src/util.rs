//! Small shared helpers: preconditions, unique names, temp directories,
//! polling with timeouts and running short commands.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Set this to `1` to keep temp directories (logs, sockets) after a test.
pub const KEEP_ENV: &str = "SWITCHYARD_TESTS_KEEP";

/// Fails (never skips) unless the tests run as root: they create network
/// namespaces and tap devices.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the switchyard end-to-end tests must run as root (they create network \
             namespaces, tap devices and UML guests); run `sudo -E cargo test -p switchyard-tests`"
        );
    }
    Ok(())
}

/// Finds `name` on `$PATH` (plus the sbin directories), or fails with a
/// message naming the Debian package that provides it.
pub fn require_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    for dir in std::env::split_paths(&path).chain(extra) {
        let candidate = dir.join(name);
        if let Ok(meta) = fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    let package = match name {
        "linux.uml" => "user-mode-linux",
        "uml_switch" => "uml-utilities",
        "vde_switch" => "vde2 (vde-switch)",
        "vde_plug" => "vdeplug",
        "qemu-system-x86_64" => "qemu-system-x86",
        "ip" => "iproute2",
        "ping" => "iputils-ping",
        "stdbuf" => "coreutils",
        _ => "?",
    };
    bail!("required program `{name}` not found on PATH (Debian package: {package})")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix><pid>x<counter>`.
/// Short enough for interface names when `prefix` has at most 4 characters.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// A temporary directory, removed with everything inside on drop (unless
/// `SWITCHYARD_TESTS_KEEP=1`).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("sy-{}", unique_name(tag)));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1") {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Polls `cond` every 20 ms until it returns true, or fails after `timeout`
/// with a message saying what was awaited.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`wait_until`], but the condition may fail hard (`Err`) or give up.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a short command to completion (stdin from /dev/null) and fails with
/// its output if it does not exit 0. Returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "command {:?} failed with {}: stdout: {} stderr: {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a short command to completion and returns its output whatever the status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))
}

/// `ip ARGS...` in the caller's network namespace.
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// True if a unix socket (or any file) exists at `path`, without following symlinks.
pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}
