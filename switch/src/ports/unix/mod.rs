//! The `unix` port: the uml_switch / VDE control protocol.
//!
//! A client connects to the control socket, sends one request naming its
//! datagram socket, and gets back (110 bytes) the address of a datagram
//! socket of its own on the switch, which was connected to the client's
//! socket before the reply (so it keeps working after vdeplug4 unlinks its
//! path). One datagram is one frame. The port lives as long as the control
//! connection.
//!
//! Two layouts: a VDE directory (`DIR/ctl`, data sockets `DIR/NNN.ID`) that
//! every client reaches, and a plain control socket path (uml_switch style,
//! data sockets with abstract names) that UML `ethN=daemon` reaches.

pub mod handshakes;
mod numbers;
pub mod request;

pub use handshakes::{refusals, waiting, HandshakeCounters, Refusal};
pub use numbers::{ClaimError, PortNumbers};
pub use request::{ClientAddr, Request, RequestError, RequestKind};

use crate::port::{Port, PortId, SendError, Transmit};
use crate::ports::attachment::{Attachment, Client};
use crate::ports::plane::{self, Receiving};
use crate::ports::receive::receive_batched;
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::switch::Switch;
use crate::sys::{watch_readable, SharedFd};
use handshakes::{Room, Waiting, CROWDED_AFTER, MAX_PENDING, REQUEST_TIMEOUT};
use request::{encode_reply, ReplyAddr, SUN_PATH_LEN};
use std::collections::HashSet;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Notify;

/// How often the control socket's file is checked: a socket deleted by
/// hand or by a /tmp cleaner is bound again.
const SOCKET_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Where the control socket lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A VDE directory: `DIR/ctl` plus the data sockets. Reached by
    /// `vde_plug DIR`, QEMU `-netdev vde,sock=DIR`, UML `ethN=vde,DIR` and
    /// UML `ethN=daemon,,unix,DIR/ctl`.
    Directory(PathBuf),
    /// A single control socket (uml_switch style), reached by UML
    /// `ethN=daemon,,unix,PATH`; data sockets get abstract names.
    Socket(PathBuf),
}

/// How to create a control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnixConfig {
    /// Where.
    pub layout: Layout,
    /// Permission bits of the control and data sockets; `None` leaves them
    /// to the umask (uml_switch's behaviour).
    pub mode: Option<u32>,
    /// Permission bits of a VDE directory we create; `None` derives them
    /// from `mode` as vde_switch does (x bits added, setgid).
    pub dir_mode: Option<u32>,
    /// Group owner of the sockets (and the directory).
    pub group: Option<u32>,
}

impl UnixConfig {
    /// A config with default permissions.
    pub fn new(layout: Layout) -> UnixConfig {
        UnixConfig {
            layout,
            mode: None,
            dir_mode: None,
            group: None,
        }
    }

    /// Sets the socket mode, directory mode and group.
    pub fn with_permissions(
        mut self,
        mode: Option<u32>,
        dir_mode: Option<u32>,
        group: Option<u32>,
    ) -> UnixConfig {
        self.mode = mode;
        self.dir_mode = dir_mode;
        self.group = group;
        self
    }
}

/// Failures of the unix control port.
#[derive(Debug, thiserror::Error)]
pub enum UnixPortError {
    /// Another live server answers on the path.
    #[error("control socket {path} is in use by {}; stop it or choose another path", .pid.map(|p| format!("pid {p}")).unwrap_or_else(|| "another process".into()))]
    InUse {
        /// The path.
        path: PathBuf,
        /// The other server's pid, when the kernel tells.
        pid: Option<i32>,
    },
    /// Something that is not a socket is in the way.
    #[error("{path} exists and is not a socket; remove it or choose another path")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A VDE directory path names something else.
    #[error("{path} exists and is not a directory; remove it or choose another path")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A path longer than `sun_path` allows.
    #[error("socket path {path} is longer than 107 bytes; choose a shorter path")]
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// Any other OS error, with what we were doing.
    #[error("{what} {path}: {source}")]
    Io {
        /// The action.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnixPortError + 'a {
    move |source| UnixPortError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes `path` free for a new listening socket: absent is fine, a stale
/// socket (nobody listening) is removed, a live one is an error.
fn clear_stale_socket(path: &Path) -> Result<(), UnixPortError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(UnixPortError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match StdUnixStream::connect(path) {
        Ok(s) => {
            let pid = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
                .ok()
                .map(|c| c.pid());
            Err(UnixPortError::InUse {
                path: path.to_path_buf(),
                pid,
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            tracing::info!(path = %path.display(), "replacing stale control socket");
            std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))
        }
        Err(e) => Err(io_err("cannot probe existing socket", path)(e)),
    }
}

/// A port's datagram socket connected to its client, the socket's path (in
/// a VDE directory) and the encoded reply that tells the client where it is.
type DataSocket = (
    UnixDatagram,
    Option<PathBuf>,
    [u8; request::SOCKADDR_UN_LEN],
);

/// A client may name only a datagram socket it owns (root: any): the
/// switch runs as root and would otherwise send frames, on the client's
/// behalf, to sockets the client may not write to itself. Abstract names
/// have no owner to check; the kernel gives them no permissions either.
fn client_may_use(addr: &ClientAddr, uid: u32) -> Result<(), (Refusal, String)> {
    use std::os::unix::fs::MetadataExt;
    let ClientAddr::Path(path) = addr else {
        return Ok(());
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        (
            Refusal::of_io(&e),
            format!("cannot inspect client socket {}: {e}", path.display()),
        )
    })?;
    if !meta.file_type().is_socket() {
        return Err((
            Refusal::Unreachable,
            format!("client address {} is not a socket", path.display()),
        ));
    }
    if uid != 0 && meta.uid() != uid {
        return Err((
            Refusal::NotPermitted,
            format!(
                "client socket {} belongs to uid {}, not to the connecting uid {uid}",
                path.display(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// The identity of a file: (device, inode).
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Removes data sockets (`NNN.ID`) that a killed switch left in `dir`:
/// only sockets nobody is bound to, so a live switch's are never touched.
fn sweep_stale_data_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_data_name = name.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
        if !is_data_name || !is_socket {
            continue;
        }
        let path = entry.path();
        let stale = UnixDatagram::unbound()
            .and_then(|s| s.connect(&path))
            .is_err_and(|e| e.raw_os_error() == Some(libc::ECONNREFUSED));
        if stale && std::fs::remove_file(&path).is_ok() {
            tracing::debug!(path = %path.display(), "removed stale data socket");
        }
    }
}

fn set_permissions(path: &Path, mode: Option<u32>, group: Option<u32>) -> io::Result<()> {
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(io::Error::from)?;
    }
    Ok(())
}

/// A bound control socket, ready to serve once a runtime runs.
#[derive(Debug)]
pub struct UnixControl {
    config: UnixConfig,
    ctl_path: PathBuf,
    listener: Mutex<Option<UnixListener>>,
    /// (device, inode) of the socket file we bound: cleanup removes only
    /// that file, never one another process put at the same path.
    identity: Mutex<Option<(u64, u64)>>,
    /// True when we made the directory (a failure to remove it is worth
    /// a warning).
    created_dir: bool,
    data_paths: Mutex<HashSet<PathBuf>>,
    /// Connections that have not sent their request yet.
    waiting: Mutex<Waiting>,
    /// Signalled whenever a waiting connection leaves.
    room: Notify,
    bad_request_log: LogLimiter,
    accept_log: LogLimiter,
}

/// Creates the VDE directory if it is missing (with the configured
/// permissions) and binds the control socket at `ctl_path`, replacing a
/// stale one. Returns the listener and whether the directory was made.
fn bind_listener(
    config: &UnixConfig,
    ctl_path: &Path,
) -> Result<(UnixListener, bool), UnixPortError> {
    let mut created_dir = false;
    if let Layout::Directory(dir) = &config.layout {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => sweep_stale_data_sockets(dir),
            Ok(_) => return Err(UnixPortError::NotADirectory { path: dir.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(dir).map_err(io_err("cannot create directory", dir))?;
                created_dir = true;
                let dir_mode = config.dir_mode.unwrap_or_else(|| {
                    // vde_switch: the socket mode plus x bits, setgid.
                    let m = config.mode.unwrap_or(0o600);
                    0o2000 | m | ((m & 0o444) >> 2)
                });
                set_permissions(dir, Some(dir_mode), config.group)
                    .map_err(io_err("cannot set permissions of", dir))?;
            }
            Err(e) => return Err(io_err("cannot inspect", dir)(e)),
        }
    }
    clear_stale_socket(ctl_path)?;
    let listener = UnixListener::bind(ctl_path).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            UnixPortError::InUse {
                path: ctl_path.to_path_buf(),
                pid: None,
            }
        } else {
            io_err("cannot bind control socket", ctl_path)(e)
        }
    })?;
    set_permissions(ctl_path, config.mode, config.group)
        .map_err(io_err("cannot set permissions of", ctl_path))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("cannot configure", ctl_path))?;
    Ok((listener, created_dir))
}

/// True for the errors that mean "no descriptor left for a new socket".
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A descriptor held in reserve, given up for a moment to accept and
/// close a connection when the process is out of descriptors, so that the
/// client reads EOF at once instead of waiting in the listen queue.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// A connection's place among those waiting for their request; leaving
/// (drop) makes room for the next.
struct Ticket<'a> {
    control: &'a UnixControl,
    key: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.control.waiting().leave(self.key);
        self.control.room.notify_one();
    }
}

/// Why a connection produced no usable request.
#[derive(Debug)]
enum ReadFailure {
    /// Closed (or reset) before a single byte.
    HungUp,
    /// Nothing within [`REQUEST_TIMEOUT`].
    Silent,
    /// Closed to make room (see [`handshakes`]).
    Crowded,
    /// Bytes that are not a request.
    Bad(RequestError),
}

impl ReadFailure {
    fn refusal(&self) -> Refusal {
        match self {
            ReadFailure::HungUp => Refusal::HungUp,
            ReadFailure::Silent => Refusal::Silent,
            ReadFailure::Crowded => Refusal::Crowded,
            ReadFailure::Bad(RequestError::BadMagic(_)) => Refusal::BadMagic,
            ReadFailure::Bad(RequestError::UnsupportedVersion(_)) => Refusal::BadVersion,
            ReadFailure::Bad(RequestError::UnsupportedType(_)) => Refusal::BadType,
            ReadFailure::Bad(_) => Refusal::Malformed,
        }
    }
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::HungUp => write!(f, "it closed the connection without a request"),
            ReadFailure::Silent => write!(
                f,
                "no request within {} s of connecting",
                REQUEST_TIMEOUT.as_secs()
            ),
            ReadFailure::Crowded => write!(
                f,
                "closed after {} ms without a request to make room: {MAX_PENDING} connections \
                 were waiting, or the switch ran out of file descriptors",
                CROWDED_AFTER.as_millis()
            ),
            ReadFailure::Bad(e) => write!(f, "{e}"),
        }
    }
}

impl UnixControl {
    /// Creates the directory (VDE layout) and binds the control socket,
    /// replacing a stale one. Paths are made absolute so that a later
    /// `--daemon` chdir does not break cleanup.
    pub fn bind(config: UnixConfig) -> Result<UnixControl, UnixPortError> {
        let mut config = config;
        let absolute = |p: &Path| -> Result<PathBuf, UnixPortError> {
            std::path::absolute(p).map_err(io_err("cannot resolve", p))
        };
        config.layout = match &config.layout {
            Layout::Directory(d) => Layout::Directory(absolute(d)?),
            Layout::Socket(s) => Layout::Socket(absolute(s)?),
        };
        let ctl_path = match &config.layout {
            Layout::Directory(dir) => dir.join("ctl"),
            Layout::Socket(path) => path.clone(),
        };
        if ctl_path.as_os_str().len() >= SUN_PATH_LEN {
            return Err(UnixPortError::PathTooLong { path: ctl_path });
        }
        let (listener, created_dir) = bind_listener(&config, &ctl_path)?;
        let identity = file_identity(&ctl_path);
        Ok(UnixControl {
            config,
            ctl_path,
            listener: Mutex::new(Some(listener)),
            identity: Mutex::new(identity),
            created_dir,
            data_paths: Mutex::new(HashSet::new()),
            waiting: Mutex::new(Waiting::default()),
            room: Notify::new(),
            bad_request_log: LogLimiter::default(),
            accept_log: LogLimiter::default(),
        })
    }

    /// The control socket's path.
    pub fn ctl_path(&self) -> &Path {
        &self.ctl_path
    }

    /// The layout, with absolute paths.
    pub fn layout(&self) -> &Layout {
        &self.config.layout
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn identity(&self) -> std::sync::MutexGuard<'_, Option<(u64, u64)>> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections on this socket that have not sent their request yet.
    pub fn waiting_connections(&self) -> usize {
        self.waiting().len()
    }

    /// Removes the control socket (if it is still ours), the data sockets
    /// and a directory we created. Called on shutdown.
    pub fn cleanup(&self) {
        let ours = *self.identity();
        if ours.is_none() || file_identity(&self.ctl_path) == ours {
            let _ = std::fs::remove_file(&self.ctl_path);
        }
        let paths: Vec<PathBuf> = self
            .data_paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
        // vde_switch removes its directory on exit; one that still holds
        // someone else's files stays.
        if let Layout::Directory(dir) = &self.config.layout {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if self.created_dir => {
                    tracing::warn!(dir = %dir.display(), "cannot remove control directory: {e}")
                }
                Err(_) => {}
            }
        }
    }

    /// Checks that the control socket's file is still ours. A deleted one
    /// is bound again (clients could no longer connect); one replaced by
    /// another process's is left to it. Returns a new listener when it
    /// bound again.
    fn check_socket_file(&self, switch: &Switch, watching: &mut bool) -> Option<UnixListener> {
        let ours = *self.identity();
        let now = file_identity(&self.ctl_path);
        if ours.is_none() {
            // Unknown at bind (a failed stat): take what is there now.
            *self.identity() = now;
            return None;
        }
        if now == ours || !*watching {
            return None;
        }
        if now.is_some() {
            tracing::error!(
                ctl = %self.ctl_path.display(),
                "control socket was replaced by another file; new clients reach that one, \
                 not this switch (clients already attached keep their ports)"
            );
            *watching = false;
            return None;
        }
        match bind_listener(&self.config, &self.ctl_path) {
            Ok((l, _)) => {
                *self.identity() = file_identity(&self.ctl_path);
                tracing::warn!(
                    ctl = %self.ctl_path.display(),
                    "control socket was deleted; bound it again (clients already attached keep their ports)"
                );
                Some(l)
            }
            Err(e) => {
                if let Some(suppressed) = self.accept_log.allow(switch.now(), LOG_INTERVAL) {
                    tracing::error!(
                        ctl = %self.ctl_path.display(), suppressed,
                        "control socket was deleted and cannot be bound again: {e}; retrying"
                    );
                }
                None
            }
        }
    }

    /// Waits until another connection may be accepted: fewer than
    /// [`MAX_PENDING`] waiting, or the oldest of them closed to make room.
    async fn wait_for_room(&self, stop: &crate::Stop) {
        loop {
            let room = self.room.notified();
            let r =
                self.waiting()
                    .make_room(tokio::time::Instant::now(), MAX_PENDING, CROWDED_AFTER);
            match r {
                Room::Free | Room::Evicted => return,
                Room::NotBefore(t) => {
                    tokio::select! {
                        _ = stop.stopped() => return,
                        _ = room => {}
                        _ = tokio::time::sleep_until(t) => {}
                    }
                }
            }
        }
    }

    /// Out of descriptors while accepting: close the longest-silent
    /// waiting connection (after its grace period; the new client waits in
    /// the listen queue meanwhile). With none waiting, every descriptor
    /// belongs to a real port: refuse the next client at once, with the
    /// spare descriptor, rather than leave it hanging in the queue.
    async fn relieve_descriptor_shortage(
        &self,
        listener: &tokio::net::UnixListener,
        spare: &mut Option<std::fs::File>,
        switch: &Switch,
        stop: &crate::Stop,
        e: &io::Error,
    ) {
        if let Some(suppressed) = self.accept_log.allow(switch.now(), LOG_INTERVAL) {
            tracing::warn!(
                ctl = %self.ctl_path.display(), suppressed,
                "out of file descriptors ({e}): closing silent connections and refusing new \
                 clients until some leave; raise the limit (LimitNOFILE=, ulimit -n) or lower --numports"
            );
        }
        let room = self
            .waiting()
            .evict_oldest(tokio::time::Instant::now(), CROWDED_AFTER);
        match room {
            Room::Evicted => {
                // Its task closes it; give it a moment to run.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Room::NotBefore(t) => {
                tokio::select! {
                    _ = stop.stopped() => {}
                    _ = tokio::time::sleep_until(t) => {}
                }
            }
            Room::Free => match spare.take() {
                Some(f) => {
                    drop(f);
                    let refused =
                        tokio::time::timeout(Duration::from_millis(10), listener.accept()).await;
                    if let Ok(Ok((s, _))) = refused {
                        drop(s);
                        handshakes::count(switch, Refusal::NoDescriptors);
                    }
                    *spare = spare_descriptor();
                }
                None => {
                    *spare = spare_descriptor();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    /// Accepts clients until `stop`. Each client becomes a port; stopping
    /// closes them all and removes the sockets.
    pub async fn serve(
        self: Arc<Self>,
        switch: Arc<Switch>,
        numbers: Arc<PortNumbers>,
        stop: crate::Stop,
    ) -> io::Result<()> {
        let std_listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| io::Error::other("control socket is already being served"))?;
        self.waiting().attach(switch.shared());
        let mut listener = tokio::net::UnixListener::from_std(std_listener)?;
        let mut spare = spare_descriptor();
        let mut check = crate::tick::Ticker::every(SOCKET_CHECK_INTERVAL);
        let mut watching = true;
        loop {
            self.wait_for_room(&stop).await;
            let accepted = tokio::select! {
                _ = stop.stopped() => break,
                _ = check.tick() => {
                    if let Some(l) = self.check_socket_file(&switch, &mut watching) {
                        match tokio::net::UnixListener::from_std(l) {
                            Ok(l) => listener = l,
                            Err(e) => tracing::error!(ctl = %self.ctl_path.display(), "cannot serve the control socket again: {e}"),
                        }
                    }
                    continue;
                }
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    let (key, evict) = self.waiting().enter(tokio::time::Instant::now());
                    let me = self.clone();
                    let switch = switch.clone();
                    let numbers = numbers.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        me.client(stream, key, evict, switch, numbers, stop).await
                    });
                }
                Err(e) if out_of_descriptors(&e) => {
                    self.relieve_descriptor_shortage(&listener, &mut spare, &switch, &stop, &e)
                        .await;
                }
                Err(e) => {
                    // Anything else: back off instead of spinning, and say
                    // so once a minute.
                    if let Some(suppressed) = self.accept_log.allow(switch.now(), LOG_INTERVAL) {
                        tracing::warn!(path = %self.ctl_path.display(), suppressed, "accept failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        drop(listener);
        // Give the clients' teardown a moment to remove their own sockets.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.cleanup();
        tracing::info!(ctl = %self.ctl_path.display(), "control socket stopped");
        Ok(())
    }

    /// Counts a refused client and logs it (one line a second at most,
    /// with the number suppressed since).
    /// A probe that hung up without a word is logged at debug level only.
    fn refuse(&self, switch: &Switch, reason: Refusal, who: &str, why: &dyn std::fmt::Display) {
        handshakes::count(switch, reason);
        if let Some(suppressed) = self.bad_request_log.allow(switch.now(), LOG_INTERVAL / 60) {
            if reason == Refusal::HungUp {
                tracing::debug!(
                    ctl = %self.ctl_path.display(), client = who, suppressed,
                    "refused a client: {why}"
                );
            } else {
                tracing::warn!(
                    ctl = %self.ctl_path.display(), client = who, reason = reason.as_str(), suppressed,
                    "refused a client: {why}"
                );
            }
        }
    }

    async fn client(
        self: Arc<Self>,
        mut stream: UnixStream,
        key: u64,
        evict: Arc<Notify>,
        switch: Arc<Switch>,
        numbers: Arc<PortNumbers>,
        stop: crate::Stop,
    ) {
        let ticket = Ticket {
            control: &self,
            key,
        };
        let cred = stream.peer_cred().ok();
        let pid = cred.as_ref().and_then(|c| c.pid()).unwrap_or(0);
        let uid = cred.as_ref().map(|c| c.uid()).unwrap_or(u32::MAX);
        let who = format!("pid {pid} uid {uid}");
        let read = tokio::select! {
            r = read_request(&mut stream) => r,
            _ = evict.notified() => Err(ReadFailure::Crowded),
        };
        drop(ticket);
        let req = match read {
            Ok(r) => r,
            Err(e) => {
                self.refuse(&switch, e.refusal(), &who, &e);
                return;
            }
        };
        let description = if req.description.is_empty() {
            "UML daemon transport".to_string()
        } else {
            req.description.clone()
        };
        if let Err((reason, why)) = client_may_use(&req.addr, uid) {
            self.refuse(&switch, reason, &who, &why);
            return;
        }
        let requested = match (req.kind, req.port) {
            (RequestKind::NewPort0, _) => Some(0),
            (RequestKind::NewPort, 0) => None,
            (RequestKind::NewPort, n) => Some(n),
        };
        let number = match numbers.claim(requested, &format!("{description} ({who})")) {
            Ok(n) => n,
            Err(e) => {
                // Closing the connection is the refusal every client
                // understands (it reads EOF instead of a reply).
                self.refuse(&switch, Refusal::PortUnavailable, &who, &e);
                return;
            }
        };
        let id = switch.allocate_id();
        let (sock, data_path, reply) = match self
            .open_data_socket_making_room(number, id, &req.addr)
            .await
        {
            Ok(x) => x,
            Err(e) => {
                numbers.release(number);
                self.refuse(
                    &switch,
                    Refusal::of_io(&e),
                    &who,
                    &format!("cannot reach client socket {:?}: {e}", req.addr),
                );
                return;
            }
        };
        let port_cleanup = |me: &UnixControl| {
            numbers.release(number);
            if let Some(p) = &data_path {
                let _ = std::fs::remove_file(p);
                me.data_paths
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(p);
            }
        };
        if let Err(e) = stream.write_all(&reply).await {
            self.refuse(
                &switch,
                Refusal::HungUp,
                &who,
                &format!("cannot send reply: {e}"),
            );
            port_cleanup(&self);
            return;
        }
        let sock = Arc::new(sock);
        let name = format!("unix:{number}");
        let peer = format!("{description} ({who})");
        let port = Arc::new(Port::new(
            id,
            name.clone(),
            "unix",
            peer,
            Box::new(DatagramTx(sock.clone())),
        ));
        let mut data = match DataPath::start(&switch, &port, sock) {
            Ok(d) => d,
            Err(e) => {
                self.refuse(
                    &switch,
                    Refusal::of_io(&e),
                    &who,
                    &format!("cannot watch data socket: {e}"),
                );
                port_cleanup(&self);
                return;
            }
        };
        let attached = Attachment::new(&switch, &stop, port.clone(), Some(Client { pid, uid }));
        let why = run_port(&switch, &port, &mut stream, &mut data).await;
        data.stop().await;
        attached.detach(why);
        port_cleanup(&self);
    }

    /// [`UnixControl::open_data_socket`]; when the process is out of
    /// descriptors, a connection that has waited silently for its request
    /// longer than [`CROWDED_AFTER`] is closed to make room, and the socket
    /// is tried again (a real client is worth more than a silent one).
    async fn open_data_socket_making_room(
        &self,
        number: u32,
        id: PortId,
        client: &ClientAddr,
    ) -> io::Result<DataSocket> {
        let mut tries = 0;
        loop {
            match self.open_data_socket(number, id, client) {
                Err(e) if out_of_descriptors(&e) && tries < 3 => {
                    tries += 1;
                    let room = self
                        .waiting()
                        .evict_oldest(tokio::time::Instant::now(), CROWDED_AFTER);
                    if room != Room::Evicted {
                        return Err(e);
                    }
                    // The evicted connection's task closes it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    }

    /// Creates the port's datagram socket, connects it to the client and
    /// returns it with its path (if any) and the encoded reply.
    fn open_data_socket(
        &self,
        number: u32,
        id: PortId,
        client: &ClientAddr,
    ) -> io::Result<DataSocket> {
        let client_addr = match client {
            ClientAddr::Abstract(name) => SocketAddr::from_abstract_name(&name[..])?,
            ClientAddr::Path(p) => SocketAddr::from_pathname(p)?,
        };
        let (sock, path, reply) = match &self.config.layout {
            Layout::Directory(dir) => {
                let path = dir.join(format!("{number:03}.{id}"));
                let bytes = path.as_os_str().as_encoded_bytes().to_vec();
                if bytes.len() >= SUN_PATH_LEN {
                    return Err(io::Error::other(format!(
                        "data socket path {} is too long",
                        path.display()
                    )));
                }
                let _ = std::fs::remove_file(&path);
                let sock = UnixDatagram::bind(&path)?;
                self.data_paths
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(path.clone());
                if let Err(e) = set_permissions(&path, self.config.mode, self.config.group) {
                    tracing::warn!(path = %path.display(), "cannot set permissions: {e}");
                }
                let reply = encode_reply(&ReplyAddr::Path(&bytes));
                (sock, Some(path), reply)
            }
            Layout::Socket(_) => {
                // Bound with the full 107-byte name: UML sends to the whole
                // 110-byte address it is given, and abstract names compare
                // over their exact length.
                let mut name = [0u8; SUN_PATH_LEN - 1];
                let label = format!("switchyard.{}.{}", std::process::id(), id);
                name[..label.len()].copy_from_slice(label.as_bytes());
                let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name)?)?;
                (sock, None, encode_reply(&ReplyAddr::Abstract(&name)))
            }
        };
        crate::sys::grow_send_buffer(&sock, crate::sys::DATA_SOCKET_SNDBUF);
        let setup = sock
            .connect_addr(&client_addr)
            .and_then(|()| sock.set_nonblocking(true));
        if let Err(e) = setup {
            if let Some(p) = &path {
                let _ = std::fs::remove_file(p);
                self.data_paths
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(p);
            }
            return Err(e);
        }
        Ok((sock, path, reply))
    }
}

/// Reads one request. It normally arrives in one write; a short read gets
/// 100 ms to complete, a silent client [`REQUEST_TIMEOUT`] to start.
async fn read_request(stream: &mut UnixStream) -> Result<Request, ReadFailure> {
    let mut buf = [0u8; 512];
    let mut len = 0;
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return Err(ReadFailure::HungUp),
        Ok(Ok(n)) => len += n,
        Err(_) => return Err(ReadFailure::Silent),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    loop {
        match request::parse(&buf[..len]) {
            Err(RequestError::TooShort(_)) if len < buf.len() => {}
            other => return other.map_err(ReadFailure::Bad),
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[len..])).await {
            Ok(Ok(n)) if n > 0 => len += n,
            _ => return request::parse(&buf[..len]).map_err(ReadFailure::Bad),
        }
    }
}

/// Moves frames until the control connection ends or the port is closed;
/// returns why it stopped.
async fn run_port(
    switch: &Switch,
    port: &Port,
    ctl: &mut UnixStream,
    data: &mut DataPath,
) -> &'static str {
    let mut scratch = [0u8; 256];
    let mut extra_logged = false;
    // Built once: the select below must not restart the receive loop.
    let receive = data.serve(switch, port);
    tokio::pin!(receive);
    loop {
        tokio::select! {
            // The data path first; no random branch order per wake-up.
            biased;
            r = &mut receive => {
                return match r {
                    Ok(()) => "peer socket gone",
                    Err(e) => {
                        tracing::warn!(port = %port.name(), "receive failed: {e}");
                        "data socket failed"
                    }
                };
            }
            r = ctl.read(&mut scratch) => match r {
                Ok(0) => return "control connection closed",
                Ok(n) => {
                    // uml_switch would tear the port down here; clients
                    // that send stray bytes keep their port with us.
                    if !extra_logged {
                        tracing::debug!(port = %port.name(), bytes = n, "ignoring bytes on control connection");
                        extra_logged = true;
                    }
                }
                Err(_) => return "control connection failed",
            },
        }
    }
}

/// Where a port's frames are received: on the data plane thread, or on the
/// runtime when that thread is not available.
enum DataPath {
    Plane(Receiving),
    Runtime(AsyncFd<SharedFd<UnixDatagram>>),
}

impl DataPath {
    fn start(
        switch: &Arc<Switch>,
        port: &Arc<Port>,
        sock: Arc<UnixDatagram>,
    ) -> io::Result<DataPath> {
        match plane::plane() {
            Some(p) => Ok(DataPath::Plane(p.attach(
                switch.clone(),
                port.clone(),
                sock,
            ))),
            None => watch_readable(sock).map(DataPath::Runtime),
        }
    }

    /// Receives (or serves the plane's held frames) until the port closes
    /// (`Ok`) or its socket fails.
    async fn serve(&mut self, switch: &Switch, port: &Port) -> io::Result<()> {
        match self {
            DataPath::Plane(r) => r.serve(switch, port).await,
            DataPath::Runtime(afd) => receive_batched(switch, port, afd).await,
        }
    }

    /// Stops receiving, so the port can leave the switch.
    async fn stop(self) {
        match self {
            DataPath::Plane(r) => r.stop().await,
            DataPath::Runtime(afd) => drop(afd),
        }
    }
}

/// Non-blocking send on a connected datagram socket.
struct DatagramTx(Arc<UnixDatagram>);

impl Transmit for DatagramTx {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        let mut done = 0;
        while done < frames.len() {
            match crate::sys::send_batch(&*self.0, &frames[done..]) {
                Ok(0) => return (done, Some(SendError::Full)),
                Ok(n) => done += n,
                Err(e) => return (done, Some(SendError::from_io(e))),
            }
        }
        (done, None)
    }

    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        // Connected, so poll(2) reports it unwritable while the client's
        // queue is full and wakes it when the client reads (the kernel's
        // peer wake-up for unix datagram sockets).
        Some(std::os::fd::AsFd::as_fd(&*self.0))
    }
}
