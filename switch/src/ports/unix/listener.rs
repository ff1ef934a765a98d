//! The control socket: binding it (replacing a stale one, never a live
//! one), accepting clients within the descriptor and waiting limits, and
//! cleaning up what the switch made.

use super::*;

/// The identity of a file: (device, inode).
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
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

pub(super) fn set_permissions(
    path: &Path,
    mode: Option<u32>,
    group: Option<u32>,
) -> io::Result<()> {
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
    pub(super) config: UnixConfig,
    pub(super) ctl_path: PathBuf,
    pub(super) listener: Mutex<Option<UnixListener>>,
    /// (device, inode) of the socket file we bound: cleanup removes only
    /// that file, never one another process put at the same path.
    pub(super) identity: Mutex<Option<(u64, u64)>>,
    /// True when we made the directory (a failure to remove it is worth
    /// a warning).
    pub(super) created_dir: bool,
    pub(super) data_paths: Mutex<HashSet<PathBuf>>,
    /// Connections that have not sent their request yet.
    pub(super) waiting: Mutex<Waiting>,
    /// Signalled whenever a waiting connection leaves.
    pub(super) room: Notify,
    pub(super) bad_request_log: LogLimiter,
    pub(super) accept_log: LogLimiter,
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

/// What the operator can do when the switch runs out of descriptors.
pub(super) const FD_HINT: &str = "raise the limit (LimitNOFILE=, ulimit -n) or lower --numports";

/// True for the errors that mean "no descriptor left for a new socket".
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A descriptor held in reserve, given up for a moment to accept and
/// close a connection when the process is out of descriptors, so that the
/// client reads EOF at once instead of waiting in the listen queue.
pub fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Whether the two descriptors a handshake needs besides its connection
/// can be had now.
fn room_for_a_handshake() -> bool {
    let (a, b) = (spare_descriptor(), spare_descriptor());
    a.is_some() && b.is_some()
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

    pub(super) fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
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
        self.log_shortage(switch, e);
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

    /// Says once a minute that the switch is out of descriptors, and what
    /// to do about it.
    fn log_shortage(&self, switch: &Switch, e: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.accept_log.allow(switch.now(), LOG_INTERVAL) {
            tracing::warn!(
                ctl = %self.ctl_path.display(), suppressed,
                "out of file descriptors ({e}): closing silent connections and refusing new \
                 clients until some leave; {FD_HINT}"
            );
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
                    if !room_for_a_handshake() {
                        // The connection took the last descriptors but a
                        // handshake needs two more (the client's socket,
                        // opened to be checked, and the data socket): the
                        // client would only wait for its refusal.
                        drop(stream);
                        handshakes::count(&switch, Refusal::NoDescriptors);
                        self.log_shortage(&switch, &"no room for a handshake");
                        continue;
                    }
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
}
