//! The `stream` port: QEMU's stream framing (a 4-byte big-endian length,
//! then the frame) over TCP or a unix stream socket: QEMU `-netdev stream`
//! and `socket,listen=/connect=`, and passt. As a server every accepted
//! connection is a port of its own; as a client it reconnects with backoff
//! whenever the peer goes away (QEMU 7.2's server never reconnects).
//!
//! Sending never blocks: a frame is written at once when the socket takes
//! it, otherwise queued whole (up to [`TX_QUEUE_BYTES`]) for a writer task;
//! a full queue drops the frame. Frames are never split across a drop.
//!
//! What a connection may cost is bounded: a receive buffer of 16 KiB (two
//! of the largest records once such a record arrives), the send queue and
//! the socket's kernel buffers; a listener takes at most
//! [`MAX_CONNECTIONS`] at once; one more is
//! accepted and closed at once (the client sees EOF), counted in
//! [`connections_refused`] and logged at most once a minute.

mod connection;
mod tx;

pub use connection::{make_room, prefix, Prefix};

use super::{remove_stale_socket_file, Endpoint, PortError};
use crate::counters::DropReason;
use crate::egress::{Frames, Overflow};
use crate::port::{transmit_each, Port, PortId, SendError, Transmit};
use crate::switch::Switch;
use crate::Stop;
use connection::{run_connection, Conn};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Notify;

/// Bytes a connection may have queued for sending before frames drop.
pub const TX_QUEUE_BYTES: usize = 256 * 1024;
/// Connections one listening stream port serves at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection's receive buffer to start with: many ordinary frames per
/// read, little memory for an idle connection.
#[doc(hidden)] // public for the fuzz target fuzz/fuzz_targets/stream_framing.rs
pub const READ_BUFFER: usize = 16 * 1024;
/// The buffer once a record longer than [`READ_BUFFER`] arrives: room for
/// the largest record and more behind it.
const READ_BUFFER_MAX: usize = 2 * (crate::MAX_FRAME + 4);
/// Below this much free space at the end, the partial record at the front
/// is moved to the start of the buffer before the next read.
const MIN_READ_ROOM: usize = 2048;
/// The longest reconnect delay (also the vhost-user port's, in client
/// mode).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first reconnect delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Server or client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRole {
    /// Listen; every accepted connection becomes a port.
    Listen,
    /// Connect, and reconnect whenever the connection ends.
    Connect,
}

/// Settings of a stream port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// The port's name (accepted connections get `NAME:N`).
    pub name: String,
    /// Server or client.
    pub role: StreamRole,
    /// Where to listen or connect.
    pub endpoint: Endpoint,
}

impl StreamConfig {
    /// A config from its parts.
    pub fn new(name: impl Into<String>, role: StreamRole, endpoint: Endpoint) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            role,
            endpoint,
        }
    }
}

/// Connections refused because their listener had [`MAX_CONNECTIONS`],
/// every stream listener of one switch together, since start (the switch
/// keeps it, [`Switch::shared`], so it survives a reload).
#[derive(Debug, Default)]
pub struct StreamCounters {
    refused: AtomicU64,
}

/// Connections `switch`'s stream listeners refused since start (each was
/// at [`MAX_CONNECTIONS`]).
pub fn connections_refused(switch: &Switch) -> u64 {
    switch
        .shared::<StreamCounters>()
        .refused
        .load(Ordering::Relaxed)
}

#[derive(Debug)]
enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

/// An open stream port (bound, for a server).
#[derive(Debug)]
pub struct StreamPort {
    config: StreamConfig,
    listener: Option<Listener>,
}

impl StreamPort {
    /// Binds the listening socket (server); a client only checks its
    /// settings here and connects once serving.
    pub fn open(config: StreamConfig) -> Result<StreamPort, PortError> {
        let mut config = config;
        let name = config.name.clone();
        // Absolute, so that --daemon's chdir to / changes nothing.
        if let Endpoint::Unix(p) = &config.endpoint {
            config.endpoint = Endpoint::Unix(std::path::absolute(p).map_err(PortError::io(
                &name,
                "resolve",
                p.display(),
            ))?);
        }
        let listener = match (config.role, &config.endpoint) {
            (StreamRole::Connect, _) => None,
            (StreamRole::Listen, Endpoint::Inet(a)) => {
                let l =
                    std::net::TcpListener::bind(a).map_err(PortError::io(&name, "listen on", a))?;
                l.set_nonblocking(true)
                    .map_err(PortError::io(&name, "configure", a))?;
                Some(Listener::Tcp(l))
            }
            (StreamRole::Listen, Endpoint::Unix(p)) => {
                let p =
                    std::path::absolute(p).map_err(PortError::io(&name, "resolve", p.display()))?;
                remove_stale_socket_file(&p).map_err(PortError::io(
                    &name,
                    "replace",
                    p.display(),
                ))?;
                let l = std::os::unix::net::UnixListener::bind(&p).map_err(PortError::io(
                    &name,
                    "listen on",
                    p.display(),
                ))?;
                l.set_nonblocking(true)
                    .map_err(PortError::io(&name, "configure", p.display()))?;
                Some(Listener::Unix(l, p))
            }
        };
        Ok(StreamPort { config, listener })
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The listening socket's path (unix server), to remove on shutdown.
    pub fn cleanup_path(&self) -> Option<PathBuf> {
        match &self.listener {
            Some(Listener::Unix(_, p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// Accepts or connects until the switch stops.
    pub async fn serve(self, switch: Arc<Switch>, stop: Stop) {
        let name = self.config.name.clone();
        let path = self.cleanup_path();
        match self.listener {
            Some(l) => {
                if let Err(e) = accept_loop(l, &name, switch, &stop).await {
                    tracing::error!(port = %name, "listener failed: {e}");
                }
            }
            None => connect_loop(&self.config, switch, &stop).await,
        }
        if let Some(p) = path {
            let _ = std::fs::remove_file(p);
        }
        tracing::info!(port = %name, "port stopped");
    }
}

/// A listening socket of either family, registered with the runtime.
enum AsyncListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl AsyncListener {
    /// The next connection and who is on the other end, in words.
    async fn accept(&self) -> io::Result<(Conn, String)> {
        match self {
            AsyncListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                tune_tcp(&s);
                Ok((Conn::Tcp(s), peer.to_string()))
            }
            AsyncListener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                let who = match s.peer_cred() {
                    Ok(c) => format!("{} pid {}", path.display(), c.pid().unwrap_or(0)),
                    Err(_) => path.display().to_string(),
                };
                Ok((Conn::Unix(s), who))
            }
        }
    }
}

async fn accept_loop(
    listener: Listener,
    name: &str,
    switch: Arc<Switch>,
    stop: &Stop,
) -> io::Result<()> {
    let listener = match listener {
        Listener::Tcp(l) => AsyncListener::Tcp(tokio::net::TcpListener::from_std(l)?),
        Listener::Unix(l, path) => {
            AsyncListener::Unix(tokio::net::UnixListener::from_std(l)?, path)
        }
    };
    let mut n: u64 = 0;
    let open = Arc::new(AtomicUsize::new(0));
    let full_log = crate::ratelimit::LogLimiter::default();
    let counters = switch.shared::<StreamCounters>();
    loop {
        let accepted = tokio::select! {
            _ = stop.stopped() => return Ok(()),
            a = listener.accept() => a,
        };
        match accepted {
            Ok((conn, peer)) => {
                if open.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                    drop(conn);
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) =
                        full_log.allow(switch.now(), crate::ratelimit::LOG_INTERVAL)
                    {
                        tracing::warn!(
                            port = %name, %peer, suppressed,
                            "refused a connection: this listener already serves {MAX_CONNECTIONS} \
                             connections, the most it takes"
                        );
                    }
                    continue;
                }
                n += 1;
                let slot = ConnectionSlot::take(&open);
                let (switch, stop, name) = (switch.clone(), stop.clone(), format!("{name}:{n}"));
                tokio::spawn(async move {
                    run_connection(switch, name, peer, Arc::new(conn), stop).await;
                    drop(slot);
                });
            }
            Err(e) => accept_failed(name, e).await,
        }
    }
}

/// One of a listener's [`MAX_CONNECTIONS`], given back on drop.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn take(open: &Arc<AtomicUsize>) -> ConnectionSlot {
        open.fetch_add(1, Ordering::AcqRel);
        ConnectionSlot(open.clone())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// No Nagle delay for frames; keepalives so a peer that vanished without
/// a FIN does not keep a port (and its queue) for ever.
fn tune_tcp(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(s).set_tcp_keepalive(&ka);
}

async fn accept_failed(name: &str, e: io::Error) {
    // EMFILE and friends repeat until something closes: say it once a
    // second at most, and back off.
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let say = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    };
    if say {
        tracing::warn!(port = %name, "accept failed: {e}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn connect(endpoint: &Endpoint) -> io::Result<Conn> {
    Ok(match endpoint {
        Endpoint::Inet(a) => {
            let s = TcpStream::connect(a).await?;
            tune_tcp(&s);
            Conn::Tcp(s)
        }
        Endpoint::Unix(p) => Conn::Unix(UnixStream::connect(p).await?),
    })
}

async fn connect_loop(config: &StreamConfig, switch: Arc<Switch>, stop: &Stop) {
    let mut backoff = MIN_BACKOFF;
    let mut failures: u64 = 0;
    loop {
        let connected = tokio::select! {
            _ = stop.stopped() => return,
            c = connect(&config.endpoint) => c,
        };
        match connected {
            Ok(conn) => {
                if failures > 0 {
                    tracing::info!(port = %config.name, peer = %config.endpoint, failures, "connected after retrying");
                }
                failures = 0;
                backoff = MIN_BACKOFF;
                run_connection(
                    switch.clone(),
                    config.name.clone(),
                    config.endpoint.to_string(),
                    Arc::new(conn),
                    stop.clone(),
                )
                .await;
            }
            Err(e) => {
                // One line for the first failure, then one a minute.
                if failures.is_multiple_of(60) {
                    tracing::warn!(port = %config.name, peer = %config.endpoint, "cannot connect: {e}; retrying");
                }
                failures += 1;
            }
        }
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
