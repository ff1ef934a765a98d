//! One client of the control socket: its request, the checks on the
//! socket it names, its data socket, and the port it becomes.

use super::data::{run_port, DataPath, DatagramTx};
use super::listener::{out_of_descriptors, set_permissions};
use super::*;
use std::os::fd::{AsRawFd, OwnedFd};

/// A port's datagram socket connected to its client, the socket's path (in
/// a VDE directory) and the encoded reply that tells the client where it is.
type DataSocket = (
    UnixDatagram,
    Option<PathBuf>,
    [u8; request::SOCKADDR_UN_LEN],
);

/// The client's socket as checked: an abstract name, or a descriptor
/// (`O_PATH`) for the very inode whose type and owner were checked.
pub(super) enum Checked {
    /// An abstract name: no owner to check, nothing on disk to swap.
    Abstract(Box<[u8; SUN_PATH_LEN - 1]>),
    /// A path's socket, held open so that it cannot be swapped.
    Path(OwnedFd),
}

impl Checked {
    /// The address the data socket connects to: the abstract name, or
    /// `/proc/self/fd/N`, which the kernel resolves to the inode the
    /// descriptor holds (not to whatever the client's path names by then),
    /// and which stays far below `sun_path`'s 108 bytes.
    fn connect_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Checked::Abstract(name) => SocketAddr::from_abstract_name(&name[..]),
            Checked::Path(fd) => {
                SocketAddr::from_pathname(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            }
        }
    }
}

/// A client may name only a datagram socket it owns (root: any): the
/// switch runs as root and would otherwise send frames, on the client's
/// behalf, to sockets the client may not write to itself. Abstract names
/// have no owner to check; the kernel gives them no permissions either.
///
/// The path is opened without following a final symbolic link
/// (`O_PATH|O_NOFOLLOW`) and the descriptor is what is checked and, later,
/// connected to: a client that swaps its path for a link to another
/// guest's socket after the check still gets its frames on the socket
/// that was checked, or none; a link named in the request is refused.
fn client_may_use(addr: &ClientAddr, uid: u32) -> Result<Checked, (Refusal, String)> {
    let path = match addr {
        ClientAddr::Abstract(name) => return Ok(Checked::Abstract(name.clone())),
        ClientAddr::Path(path) => path,
    };
    let fd = crate::sys::open_path_nofollow(path).map_err(|e| {
        (
            Refusal::of_io(&e),
            format!("cannot inspect client socket {}: {e}", path.display()),
        )
    })?;
    let st = crate::sys::fstat_kind(&fd).map_err(|e| {
        (
            Refusal::of_io(&e),
            format!("cannot inspect client socket {}: {e}", path.display()),
        )
    })?;
    match st.kind {
        crate::sys::FileKind::Socket => {}
        crate::sys::FileKind::Symlink => {
            return Err((
                Refusal::NotPermitted,
                format!(
                    "client address {} is a symbolic link; the switch connects only to the \
                     socket itself",
                    path.display()
                ),
            ))
        }
        crate::sys::FileKind::Other => {
            return Err((
                Refusal::Unreachable,
                format!("client address {} is not a socket", path.display()),
            ))
        }
    }
    if uid != 0 && st.uid != uid {
        return Err((
            Refusal::NotPermitted,
            format!(
                "client socket {} belongs to uid {}, not to the connecting uid {uid}",
                path.display(),
                st.uid
            ),
        ));
    }
    Ok(Checked::Path(fd))
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

    pub(super) async fn client(
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
        let checked = match client_may_use(&req.addr, uid) {
            Ok(c) => c,
            Err((reason, why)) => {
                self.refuse(&switch, reason, &who, &why);
                return;
            }
        };
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
            .open_data_socket_making_room(number, id, &checked)
            .await
        {
            Ok(x) => x,
            Err(e) => {
                numbers.release(number);
                let refusal = Refusal::of_io(&e);
                let why = if refusal == Refusal::NoDescriptors {
                    // The operator's fix, not the client's: say so.
                    format!(
                        "out of file descriptors: cannot reach client socket {:?} ({e}); {}",
                        req.addr,
                        super::listener::FD_HINT
                    )
                } else {
                    format!("cannot reach client socket {:?}: {e}", req.addr)
                };
                self.refuse(&switch, refusal, &who, &why);
                return;
            }
        };
        // Connected: the kernel holds the peer now, the descriptor is done.
        drop(checked);
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
        client: &Checked,
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
        client: &Checked,
    ) -> io::Result<DataSocket> {
        let client_addr = client.connect_addr()?;
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
