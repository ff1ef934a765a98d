//! What the control socket and the metrics endpoint share: a thread of
//! their own, an accept loop that survives running out of descriptors,
//! and a fixed number of connection slots.
//!
//! A slot is *idle* while its connection has not sent (the rest of) a
//! request: such a connection costs the daemon a descriptor and nothing
//! else, so when every slot is taken the oldest idle one is closed to make
//! room for the newcomer. A flood of silent connections therefore pushes
//! out only its own members, and a real client, which sends its request
//! at once, gets through. Only when every slot is busy (rendering,
//! writing a reply, streaming a capture) is a newcomer turned away, with a
//! short answer and at once, never queued.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use switchyard_switch::ports::unix::{out_of_descriptors, spare_descriptor};
use tokio::sync::oneshot;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a new connection may take to send its whole request head
    /// (or its first request line).
    pub head_timeout: Duration,
    /// How long a connection may stay silent between two requests.
    pub idle_timeout: Duration,
    /// The largest request head (or request line) in bytes.
    pub max_request: usize,
    /// How long writing one reply may take.
    pub write_timeout: Duration,
}

/// The metrics endpoint: a scraper or two and a curl need a handful of
/// slots; 64 leaves room for several Prometheus servers, agents and people
/// at once while holding at most 64 descriptors and 64 × 8 KiB of buffers.
pub(crate) const METRICS_LIMITS: Limits = Limits {
    max_connections: 64,
    head_timeout: Duration::from_secs(2),
    idle_timeout: Duration::from_secs(2),
    max_request: 8 * 1024,
    write_timeout: Duration::from_secs(10),
};

/// The control socket: `ctl` opens one connection per command (a `top`
/// or `capture` keeps one open), so 64 allows many operators and scripts
/// at once; a request line is far below 64 KiB.
pub(crate) const CONTROL_LIMITS: Limits = Limits {
    max_connections: 64,
    head_timeout: Duration::from_secs(2),
    idle_timeout: Duration::from_secs(60),
    max_request: 64 * 1024,
    write_timeout: Duration::from_secs(10),
};

/// Runs `serve` on a thread of its own, on a single-threaded runtime of its
/// own, so that no request ever waits for the data path's threads, nor
/// they for it. The thread ends when `serve` does or when `stop` is
/// dropped (the runtime then drops every connection it still holds).
pub(crate) fn spawn_thread<F, Fut>(
    name: &str,
    stop: oneshot::Receiver<()>,
    serve: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let what = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    _ = serve() => tracing::error!("{what} stopped serving"),
                    _ = stop => {}
                }
            });
            // Connections still open end here, not at process exit.
            runtime.shutdown_timeout(Duration::from_millis(100));
        })
}

/// Accepts connections until the runtime stops and hands each to
/// `handle`. A failed accept is logged as "`what` accept failed" and
/// retried after a pause instead of spinning. Out of descriptors, the
/// spare one kept for the purpose is given up for a moment to accept and
/// close the oldest waiting connection, so the backlog drains (its clients
/// see their connection closed) instead of filling with connections that
/// would wait in vain.
pub(crate) async fn accept_forever<S, F>(
    what: &str,
    accept: impl Fn() -> F,
    mut handle: impl FnMut(S),
) where
    F: Future<Output = std::io::Result<S>>,
{
    let mut spare = spare_descriptor();
    loop {
        match accept().await {
            Ok(s) => {
                handle(s);
                // Let the new connection read what it was sent before the
                // next accept: a client that sent its whole request is
                // then busy, no longer idle, and a burst of newcomers
                // cannot push it out before it was looked at.
                tokio::task::yield_now().await;
            }
            Err(e) if out_of_descriptors(&e) && spare.is_some() => {
                tracing::warn!("{what} accept failed: {e}; closing a waiting connection");
                drop(spare.take());
                if let Ok(s) = accept().await {
                    drop(s);
                }
                spare = spare_descriptor();
                if spare.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(e) => {
                tracing::warn!("{what} accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                if spare.is_none() {
                    spare = spare_descriptor();
                }
            }
        }
    }
}

/// Answers a connection that gets no slot, without waiting: the socket is
/// taken back from the runtime (whose write readiness a fresh socket has
/// not seen yet) and written once; a fresh socket's send buffer is empty,
/// so a short answer fits.
pub(crate) fn refuse<S: std::io::Write>(socket: std::io::Result<S>, answer: &[u8]) {
    if let Ok(mut s) = socket {
        let _ = s.write(answer);
    }
}

/// Why a connection stopped waiting for its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It took longer than its time.
    TimedOut,
    /// Its slot went to a newer connection.
    Evicted,
}

/// A listener's connection slots.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    live: usize,
    next_id: u64,
    /// Idle connections, oldest first, with the sender whose drop tells
    /// each to close.
    idle: VecDeque<(u64, oneshot::Sender<()>)>,
    evicted: u64,
    refused: u64,
}

/// What [`Slots::admit`] decided for a new connection.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Serve it.
    Admitted(Slot),
    /// Every slot is busy: answer briefly and close.
    Refused,
}

impl Slots {
    /// `max` slots, none taken.
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (plain counters).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new connection, closing the oldest idle one if
    /// every slot is taken, or refuses when every slot is busy.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        let mut s = self.lock();
        if s.live >= self.max {
            // Dropping the sender ends that connection's wait; its slot
            // is given back when its task lets go of it, a moment later.
            if s.idle.pop_front().is_none() {
                s.refused += 1;
                return Admission::Refused;
            }
            s.evicted += 1;
        }
        s.live += 1;
        s.next_id += 1;
        Admission::Admitted(Slot {
            slots: self.clone(),
            id: s.next_id,
        })
    }

    /// Connections being served (evicted ones not yet gone included).
    pub(crate) fn live(&self) -> usize {
        self.lock().live
    }

    /// Idle connections closed for newer ones, and connections refused,
    /// since start.
    pub(crate) fn shed(&self) -> (u64, u64) {
        let s = self.lock();
        (s.evicted, s.refused)
    }
}

/// One connection's slot; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Slot {
    /// Waits for `request` while the connection is idle: at most
    /// `timeout`, and only until a newer connection needs the slot.
    pub(crate) async fn idle<T>(
        &self,
        timeout: Duration,
        request: impl Future<Output = T>,
    ) -> Result<T, Ended> {
        let (tx, rx) = oneshot::channel();
        self.slots.lock().idle.push_back((self.id, tx));
        let r = tokio::select! {
            r = request => Ok(r),
            _ = rx => Err(Ended::Evicted),
            _ = tokio::time::sleep(timeout) => Err(Ended::TimedOut),
        };
        self.busy();
        r
    }

    fn busy(&self) {
        self.slots.lock().idle.retain(|(id, _)| *id != self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock();
        s.idle.retain(|(id, _)| *id != self.id);
        s.live = s.live.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: Admission) -> Slot {
        match a {
            Admission::Admitted(s) => s,
            Admission::Refused => panic!("refused"),
        }
    }

    #[tokio::test]
    async fn a_newcomer_pushes_out_the_oldest_idle_connection() {
        let slots = Slots::new(2);
        let (a, b) = (admitted(slots.admit()), admitted(slots.admit()));
        let c = {
            let never = std::future::pending::<()>;
            let (wa, wb) = (
                a.idle(Duration::from_secs(60), never()),
                b.idle(Duration::from_secs(60), never()),
            );
            tokio::pin!(wa, wb);
            // Let both register as idle.
            assert!(futures_poll(&mut wa).is_none() && futures_poll(&mut wb).is_none());
            let c = admitted(slots.admit());
            assert_eq!(wa.await, Err(Ended::Evicted), "the oldest goes first");
            assert!(futures_poll(&mut wb).is_none(), "the younger one stays");
            c
        };
        drop(a);
        assert_eq!(slots.live(), 2);
        assert_eq!(slots.shed(), (1, 0));
        drop((b, c));
        assert_eq!(slots.live(), 0);
    }

    #[tokio::test]
    async fn busy_connections_are_kept_and_newcomers_refused() {
        let slots = Slots::new(1);
        let a = admitted(slots.admit());
        assert!(matches!(slots.admit(), Admission::Refused));
        assert_eq!(slots.shed(), (0, 1));
        drop(a);
        let _b = admitted(slots.admit());
    }

    #[tokio::test]
    async fn a_silent_connection_times_out() {
        let slots = Slots::new(1);
        let a = admitted(slots.admit());
        let r = a
            .idle(Duration::from_millis(20), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(Ended::TimedOut));
        assert_eq!(a.idle(Duration::from_secs(2), async { 7 }).await, Ok(7));
    }

    /// Polls a future once.
    fn futures_poll<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    /// Tight limits for the listener tests.
    const TIGHT: Limits = Limits {
        max_connections: 2,
        head_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        max_request: 64,
        write_timeout: Duration::from_secs(2),
    };

    fn switch() -> Arc<switchyard_switch::Switch> {
        switchyard_switch::Switch::new(switchyard_switch::EngineConfig::default())
    }

    async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(r.is_ok(), "no answer within 5 s; got {out:?}");
        String::from_utf8_lossy(&out).into_owned()
    }

    fn tcp_listener() -> (std::net::TcpListener, std::net::SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        (l, addr)
    }

    /// A listening control socket in a directory of its own.
    fn unix_listener(
        tag: &str,
    ) -> (
        std::os::unix::net::UnixListener,
        std::path::PathBuf,
        std::path::PathBuf,
    ) {
        let dir = std::env::temp_dir().join(format!("sy-{tag}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("control.sock");
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        (l, dir, path)
    }

    #[tokio::test]
    async fn metrics_serve_past_silent_connections_and_bound_heads() {
        use tokio::io::AsyncWriteExt;
        use tokio::net::TcpStream;
        let (l, addr) = tcp_listener();
        let listeners = crate::metrics::Listeners {
            metrics: Slots::new(TIGHT.max_connections),
            control: Slots::new(1),
        };
        tokio::spawn(crate::metrics::serve(l, switch(), TIGHT, listeners.clone()));
        // Two silent connections and one with half a head fill both slots.
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut half = TcpStream::connect(addr).await.expect("connect");
        half.write_all(b"GET /metrics HTTP/1.1\r\nHo")
            .await
            .expect("write");
        // A scrape, its head cut across writes at the blank line, still
        // gets through.
        let mut scrape = TcpStream::connect(addr).await.expect("connect");
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\n\r")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        scrape.write_all(b"\n").await.expect("write");
        let text = read_all(&mut scrape).await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(
            text.contains(
                "switchyard_listener_shed_total{listener=\"metrics\",reason=\"evicted\"} 2"
            ),
            "{text}"
        );
        // The half head was kept (the youngest idle) until its time ran out.
        assert!(read_all(&mut half).await.starts_with("HTTP/1.1 408"));
        // A head longer than the limit.
        let mut long = TcpStream::connect(addr).await.expect("connect");
        long.write_all(&[b'a'; 100]).await.expect("write");
        assert!(read_all(&mut long).await.starts_with("HTTP/1.1 431"));
    }

    #[tokio::test]
    async fn control_lines_are_bounded_in_time_and_size() {
        use tokio::io::AsyncWriteExt;
        use tokio::net::UnixStream;
        let (l, dir, path) = unix_listener("accept");
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(crate::control::serve(l, switch(), tx, TIGHT, Slots::new(2)));
        let mut silent = UnixStream::connect(&path).await.expect("connect");
        let mut long = UnixStream::connect(&path).await.expect("connect");
        long.write_all(&[b'x'; 100]).await.expect("write");
        let said = read_all(&mut long).await;
        assert!(said.contains("request longer than"), "{said}");
        let said = read_all(&mut silent).await;
        assert!(said.contains("no request within"), "{said}");
        // A request and then silence: answered, then closed after the
        // idle time.
        let mut c = UnixStream::connect(&path).await.expect("connect");
        c.write_all(b"{\"cmd\":\"ports\"}\n").await.expect("write");
        let said = read_all(&mut c).await;
        assert!(said.starts_with("{\"ports\":[]}\n"), "{said}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn newcomers_are_answered_at_once_while_every_slot_is_busy() {
        use tokio::net::{TcpStream, UnixStream};
        let (l, addr) = tcp_listener();
        let listeners = crate::metrics::Listeners {
            metrics: Slots::new(1),
            control: Slots::new(1),
        };
        // Taken and never idle: as busy as a scrape being rendered.
        let _metrics_busy = admitted(listeners.metrics.admit());
        let _control_busy = admitted(listeners.control.admit());
        tokio::spawn(crate::metrics::serve(l, switch(), TIGHT, listeners.clone()));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let said = read_all(&mut s).await;
        assert!(said.starts_with("HTTP/1.1 503"), "{said}");

        let (l, dir, path) = unix_listener("busy");
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let slots = listeners.control.clone();
        tokio::spawn(crate::control::serve(l, switch(), tx, TIGHT, slots));
        let mut c = UnixStream::connect(&path).await.expect("connect");
        let said = read_all(&mut c).await;
        assert!(said.starts_with("{\"error\":\"busy:"), "{said}");
        assert_eq!(listeners.metrics.shed(), (0, 1));
        assert_eq!(listeners.control.shed(), (0, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
