//! Where a port's frontends come from: accepted on the port's own socket
//! (`mode=server`), or connected to the frontend's socket
//! (`mode=client`), again and again with backoff while it is not there.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_switch::ports::stream::{MAX_BACKOFF, MIN_BACKOFF};

/// How often a backoff sleep looks whether the port is closing.
const QUIT_POLL: Duration = Duration::from_millis(50);

/// The source of one frontend after another.
pub(super) enum Frontends {
    /// Accepts on the port's socket.
    Listen(UnixListener),
    /// Connects to the frontend's socket.
    Connect(Reconnect),
}

impl Frontends {
    /// The next frontend; `None` once `quit` is set. An accept error is
    /// returned for the caller to log and pause on.
    pub(super) fn next(
        &mut self,
        name: &str,
        quit: &AtomicBool,
    ) -> Result<Option<UnixStream>, String> {
        match self {
            Frontends::Listen(l) => {
                let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                Ok((!quit.load(Ordering::Acquire)).then_some(s))
            }
            Frontends::Connect(r) => Ok(r.connect(name, quit)),
        }
    }
}

/// Connecting with backoff: 100 ms doubling to 5 s, back to 100 ms once
/// connected. One warning per outage, not per attempt, and one line when
/// the frontend is back.
pub(super) struct Reconnect {
    path: PathBuf,
    delay: Duration,
    /// Nothing to wait for before the first attempt.
    first: bool,
    /// Failed attempts since the last connection.
    failures: u64,
}

impl Reconnect {
    /// Connects to `path`.
    pub(super) fn new(path: &Path) -> Reconnect {
        Reconnect {
            path: path.to_path_buf(),
            delay: MIN_BACKOFF,
            first: true,
            failures: 0,
        }
    }

    /// Waits (the backoff) and tries until connected; `None` once `quit`
    /// is set.
    fn connect(&mut self, name: &str, quit: &AtomicBool) -> Option<UnixStream> {
        loop {
            if !std::mem::take(&mut self.first) {
                if !sleep_unless(quit, self.delay) {
                    return None;
                }
                self.delay = (self.delay * 2).min(MAX_BACKOFF);
            }
            if quit.load(Ordering::Acquire) {
                return None;
            }
            match UnixStream::connect(&self.path) {
                Ok(s) => {
                    if self.failures > 0 {
                        tracing::info!(port = %name, path = %self.path.display(), failures = self.failures, "vhost-user: connected to the frontend after retrying");
                    }
                    self.failures = 0;
                    self.delay = MIN_BACKOFF;
                    return Some(s);
                }
                Err(e) => {
                    if self.failures == 0 {
                        tracing::warn!(port = %name, path = %self.path.display(), "vhost-user: cannot connect to the frontend: {e}; retrying (every 5 s at most)");
                    }
                    self.failures += 1;
                }
            }
        }
    }
}

/// Sleeps `d`, looking at `quit` meanwhile; false when it was set.
fn sleep_unless(quit: &AtomicBool, d: Duration) -> bool {
    let end = std::time::Instant::now() + d;
    loop {
        if quit.load(Ordering::Acquire) {
            return false;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(QUIT_POLL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_waits_for_its_frontend_and_backs_off() {
        let dir = std::env::temp_dir().join(format!("sy-vu-reconnect-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("f.sock");
        let quit = AtomicBool::new(false);
        let mut r = Reconnect::new(&path);
        let t = std::thread::spawn({
            let path = path.clone();
            move || {
                std::thread::sleep(Duration::from_millis(250));
                UnixListener::bind(&path).map(|l| l.accept())
            }
        });
        assert!(r.connect("t", &quit).is_some());
        assert_eq!(r.delay, MIN_BACKOFF, "reset once connected");
        assert!(t.join().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
        quit.store(true, Ordering::Release);
        assert!(r.connect("t", &quit).is_none(), "quit ends the wait");
    }
}
