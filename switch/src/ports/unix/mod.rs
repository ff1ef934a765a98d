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

mod numbers;
pub mod request;

pub use numbers::{ClaimError, PortNumbers};
pub use request::{ClientAddr, Request, RequestError, RequestKind};

use crate::port::{Port, PortId, SendError, Transmit};
use crate::ports::receive::receive_batched;
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::switch::Switch;
use crate::sys::{watch_readable, SharedFd};
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

/// A client may name only a datagram socket it owns (root: any): the
/// switch runs as root and would otherwise send frames, on the client's
/// behalf, to sockets the client may not write to itself. Abstract names
/// have no owner to check; the kernel gives them no permissions either.
fn client_may_use(addr: &ClientAddr, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let ClientAddr::Path(path) = addr else {
        return Ok(());
    };
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot inspect client socket {}: {e}", path.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!("client address {} is not a socket", path.display()));
    }
    if uid != 0 && meta.uid() != uid {
        return Err(format!(
            "client socket {} belongs to uid {}, not to the connecting uid {uid}",
            path.display(),
            meta.uid()
        ));
    }
    Ok(())
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
    /// True when we made the directory (a failure to remove it is worth
    /// a warning).
    created_dir: bool,
    data_paths: Mutex<HashSet<PathBuf>>,
    bad_request_log: LogLimiter,
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
        let mut created_dir = false;
        let ctl_path = match &config.layout {
            Layout::Directory(dir) => {
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
                dir.join("ctl")
            }
            Layout::Socket(path) => path.clone(),
        };
        if ctl_path.as_os_str().len() >= SUN_PATH_LEN {
            return Err(UnixPortError::PathTooLong { path: ctl_path });
        }
        clear_stale_socket(&ctl_path)?;
        let listener = UnixListener::bind(&ctl_path).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                UnixPortError::InUse {
                    path: ctl_path.clone(),
                    pid: None,
                }
            } else {
                io_err("cannot bind control socket", &ctl_path)(e)
            }
        })?;
        set_permissions(&ctl_path, config.mode, config.group)
            .map_err(io_err("cannot set permissions of", &ctl_path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("cannot configure", &ctl_path))?;
        Ok(UnixControl {
            config,
            ctl_path,
            listener: Mutex::new(Some(listener)),
            created_dir,
            data_paths: Mutex::new(HashSet::new()),
            bad_request_log: LogLimiter::default(),
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

    /// Removes the control socket, the data sockets and a directory we
    /// created. Called on shutdown.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.ctl_path);
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
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        loop {
            let accepted = tokio::select! {
                _ = stop.stopped() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    let me = self.clone();
                    let switch = switch.clone();
                    let numbers = numbers.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move { me.client(stream, switch, numbers, stop).await });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // say so once a minute.
                    if let Some(suppressed) = self.bad_request_log.allow(switch.now(), LOG_INTERVAL)
                    {
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

    fn log_refusal(&self, switch: &Switch, who: &str, why: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.bad_request_log.allow(switch.now(), LOG_INTERVAL / 60) {
            tracing::warn!(
                ctl = %self.ctl_path.display(), client = who, suppressed,
                "refused a client: {why}"
            );
        }
    }

    async fn client(
        self: Arc<Self>,
        mut stream: UnixStream,
        switch: Arc<Switch>,
        numbers: Arc<PortNumbers>,
        stop: crate::Stop,
    ) {
        let cred = stream.peer_cred().ok();
        let pid = cred.as_ref().and_then(|c| c.pid()).unwrap_or(0);
        let uid = cred.as_ref().map(|c| c.uid()).unwrap_or(u32::MAX);
        let who = format!("pid {pid} uid {uid}");
        let req = match read_request(&mut stream).await {
            Ok(r) => r,
            Err(e) => {
                self.log_refusal(&switch, &who, &e);
                return;
            }
        };
        let description = if req.description.is_empty() {
            "UML daemon transport".to_string()
        } else {
            req.description.clone()
        };
        if let Err(why) = client_may_use(&req.addr, uid) {
            self.log_refusal(&switch, &who, &why);
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
                self.log_refusal(&switch, &who, &e);
                return;
            }
        };
        let id = switch.allocate_id();
        let (sock, data_path, reply) = match self.open_data_socket(number, id, &req.addr) {
            Ok(x) => x,
            Err(e) => {
                numbers.release(number);
                self.log_refusal(
                    &switch,
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
            self.log_refusal(&switch, &who, &format!("cannot send reply: {e}"));
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
        let afd = match watch_readable(sock) {
            Ok(a) => a,
            Err(e) => {
                self.log_refusal(&switch, &who, &format!("cannot watch data socket: {e}"));
                port_cleanup(&self);
                return;
            }
        };
        switch.add_port(port.clone());
        stop.adopt(&port);
        tracing::info!(
            port = %name, pid, uid, client = %description, ctl = %self.ctl_path.display(),
            "port attached"
        );
        let why = run_port(&switch, &port, &mut stream, &afd).await;
        switch.remove_port(id);
        drop(afd);
        port_cleanup(&self);
        let c = port.counters().snapshot();
        tracing::info!(
            port = %name, pid, uid, client = %description, reason = why,
            rx_frames = c.rx_frames, tx_frames = c.tx_frames,
            "port detached"
        );
    }

    /// Creates the port's datagram socket, connects it to the client and
    /// returns it with its path (if any) and the encoded reply.
    fn open_data_socket(
        &self,
        number: u32,
        id: PortId,
        client: &ClientAddr,
    ) -> io::Result<(
        UnixDatagram,
        Option<PathBuf>,
        [u8; request::SOCKADDR_UN_LEN],
    )> {
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
/// 100 ms to complete, a silent client 5 s to start.
async fn read_request(stream: &mut UnixStream) -> Result<Request, RequestError> {
    let mut buf = [0u8; 512];
    let mut len = 0;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    match first {
        Ok(Ok(n)) => len += n,
        _ => return Err(RequestError::TooShort(0)),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    loop {
        match request::parse(&buf[..len]) {
            Err(RequestError::TooShort(_)) if len > 0 && len < buf.len() => {}
            other => return other,
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[len..])).await {
            Ok(Ok(n)) if n > 0 => len += n,
            _ => return request::parse(&buf[..len]),
        }
    }
}

/// Moves frames until the control connection ends or the port is closed;
/// returns why it stopped.
async fn run_port(
    switch: &Switch,
    port: &Port,
    ctl: &mut UnixStream,
    data: &AsyncFd<SharedFd<UnixDatagram>>,
) -> &'static str {
    let mut scratch = [0u8; 256];
    let mut extra_logged = false;
    // Built once: the select below must not restart the receive loop.
    let receive = receive_batched(switch, port, data);
    tokio::pin!(receive);
    loop {
        tokio::select! {
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
            r = &mut receive => {
                return match r {
                    Ok(()) => "peer socket gone",
                    Err(e) => {
                        tracing::warn!(port = %port.name(), "receive failed: {e}");
                        "data socket failed"
                    }
                };
            }
        }
    }
}

/// Non-blocking send on a connected datagram socket.
struct DatagramTx(Arc<UnixDatagram>);

impl Transmit for DatagramTx {
    fn transmit(&self, frame: &[u8]) -> Result<(), SendError> {
        self.0.send(frame).map(|_| ()).map_err(SendError::from_io)
    }

    fn transmit_batch(&self, frames: &[&[u8]]) -> (usize, Option<SendError>) {
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
}
