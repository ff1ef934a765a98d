//! The data plane: one plain thread that receives from every unix datagram
//! port (the data sockets of UML, `vde_plug` and QEMU clients) with
//! `epoll_wait` and `recvmmsg`, and forwards each batch where it arrived.
//!
//! Why a thread outside the async runtime: on a virtual machine a frame's
//! latency grows several times faster than the CPU time the switch spends
//! on it, because a busy vCPU makes the clients' wake-ups land on the other,
//! halted one. Adding 4 µs of work per hop to a minimal relay raised its
//! ping-pong p50 from 61 to 97–108 µs (this project's 2-core VM). The
//! runtime's wake-up, poll and park path cost switchyard about 2.5 µs of
//! user time per hop against vde_switch's 0.4 µs, and its p99 was 1.2–1.5×
//! vde_switch's. This loop does per hop what vde_switch does: one wait, one
//! receive, one send.
//!
//! The runtime keeps everything else: the control connection, closing, and
//! backpressure. A batch that leaves unicast [`Held`] for a full peer stops
//! the port's reads here and hands the held frames to the port's task,
//! which delivers them with [`Held::release_unless_closed`] (waiting for
//! the peer as before) and then lets this thread read the port again. Holds
//! are rare and bounded (see [`crate::hold`]), so the detour costs nothing
//! on the common path.

use crate::egress::{Frames, Overflow};
use crate::hold::Held;
use crate::port::Port;
use crate::switch::Switch;
use crate::sys::{Epoll, EventFd, RecvBatch, MMSG_BATCH};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Frames read from one port per wake-up before the others get a turn.
const BATCH: usize = crate::ports::receive::BATCH;

/// Readiness reports per `epoll_wait`.
const EVENTS: usize = 64;

/// A wait shorter than this did not sleep (see [`receive`]).
const HOT: Duration = Duration::from_micros(5);

/// The token of the plane's own wake-up descriptor.
const WAKE: u64 = u64::MAX;

/// The plane's ports by key. Keys are a counter, so they need no
/// collision-resistant (and slower) hash.
type Entries = HashMap<u64, Entry, std::hash::BuildHasherDefault<KeyHasher>>;

/// Fibonacci hashing of a `u64` key.
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A descriptor the plane can receive from.
pub type DataSocket = Arc<dyn AsRawFd + Send + Sync>;

/// The data plane thread and the way to give it work.
#[derive(Debug)]
pub struct Plane {
    epoll: Epoll,
    wake: EventFd,
    inbox: Mutex<Vec<Command>>,
    next_key: AtomicU64,
    /// False once the thread has ended (it never should): new ports then
    /// receive on the runtime.
    alive: AtomicBool,
}

enum Command {
    Add(Entry),
    Resume(u64),
    Remove(u64, oneshot::Sender<()>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add(e) => write!(f, "Add({})", e.key),
            Command::Resume(k) => write!(f, "Resume({k})"),
            Command::Remove(k, _) => write!(f, "Remove({k})"),
        }
    }
}

/// What the plane tells a port's task.
enum Event {
    /// Unicast a full peer refused; the port is not read until the task
    /// has delivered it and sent [`Command::Resume`].
    Held(Held),
    /// Receiving failed; the port is no longer read.
    Failed(io::Error),
}

/// One port the plane receives from.
struct Entry {
    key: u64,
    switch: Arc<Switch>,
    port: Arc<Port>,
    sock: DataSocket,
    events: mpsc::UnboundedSender<Event>,
    /// Taken out of the epoll set while its held frames are delivered.
    paused: bool,
    /// Frames come in bursts: read with `recvmmsg` (see [`receive`]).
    bursty: bool,
    /// The last turn of the loop that read this port.
    last_turn: u64,
}

impl Entry {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// The process's data plane, started on first use; `None` when its thread
/// cannot be started or has ended (ports then receive on the runtime, as
/// before: correct, only slower to wake).
pub fn plane() -> Option<&'static Plane> {
    static PLANE: OnceLock<Option<&'static Plane>> = OnceLock::new();
    let p = (*PLANE.get_or_init(|| match start() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("cannot start the data plane thread ({e}): unix ports receive on the async runtime, with more latency per frame");
            None
        }
    }))?;
    p.alive.load(Ordering::Acquire).then_some(p)
}

fn start() -> io::Result<&'static Plane> {
    let plane = Plane {
        epoll: Epoll::new()?,
        wake: EventFd::new()?,
        inbox: Mutex::new(Vec::new()),
        next_key: AtomicU64::new(0),
        alive: AtomicBool::new(true),
    };
    plane
        .epoll
        .add(plane.wake.as_raw_fd(), libc::EPOLLIN as u32, WAKE)?;
    // Lives as long as the process: one thread, however many switches.
    let plane: &'static Plane = Box::leak(Box::new(plane));
    std::thread::Builder::new()
        .name("switchyard-data".into())
        .spawn(move || {
            let _alive = Alive(plane);
            plane.run();
        })?;
    Ok(plane)
}

/// Marks the plane dead when its thread ends, also by a panic.
struct Alive(&'static Plane);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        tracing::error!("the data plane thread ended; new unix ports receive on the async runtime");
    }
}

impl Plane {
    /// Starts receiving from `sock` for `port` of `switch`. The returned
    /// handle must be served ([`Receiving::serve`]) for held frames to be
    /// delivered, and stopped ([`Receiving::stop`]) before the port leaves
    /// the switch.
    pub fn attach(
        &'static self,
        switch: Arc<Switch>,
        port: Arc<Port>,
        sock: DataSocket,
    ) -> Receiving {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.command(Command::Add(Entry {
            key,
            switch,
            port,
            sock,
            events: tx,
            paused: false,
            bursty: false,
            last_turn: 0,
        }));
        Receiving {
            plane: self,
            key,
            events: rx,
            stopped: false,
        }
    }

    fn command(&self, c: Command) {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).push(c);
        self.wake.signal();
    }

    fn run(&self) {
        let mut entries = Entries::default();
        let mut batch = RecvBatch::default();
        let mut held = Held::default();
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // Busy polling (`--busy-poll`): when the last frame came, and for
        // how long to keep looking after it.
        let mut last_frame: Option<Instant> = None;
        let mut busy = Duration::ZERO;
        let mut turn: u64 = 0;
        loop {
            turn = turn.wrapping_add(1);
            let polling = !busy.is_zero() && last_frame.is_some_and(|t| t.elapsed() < busy);
            let waiting = Instant::now();
            let n = match self.epoll.wait(&mut ready, if polling { 0 } else { -1 }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("data plane: epoll_wait failed: {e}");
                    for (_, e) in entries.drain() {
                        let _ = e.events.send(Event::Failed(io::Error::other(
                            "the data plane thread stopped",
                        )));
                    }
                    return;
                }
            };
            let woke = Instant::now();
            // Back at once: frames arrived while the last ones were
            // forwarded. Waking from a real sleep takes far longer.
            let hot = woke.duration_since(waiting) < HOT;
            for ev in &ready[..n] {
                let (key, flags) = (ev.u64, ev.events);
                if key == WAKE {
                    self.wake.drain();
                    self.take_commands(&mut entries);
                    continue;
                }
                let Some(entry) = entries.get_mut(&key) else {
                    continue;
                };
                if entry.paused {
                    continue;
                }
                // Ready again on the very next turn after a read: more
                // was queued than that read took.
                entry.bursty |= hot || entry.last_turn.wrapping_add(1) == turn;
                entry.last_turn = turn;
                let now = woke.saturating_duration_since(entry.switch.epoch());
                match receive(entry, &mut batch, &mut held, flags, now) {
                    Ok(0) => {}
                    Ok(_) => {
                        last_frame = Some(woke);
                        busy = entry.switch.busy_poll();
                    }
                    Err(e) => {
                        let _ = self.epoll.delete(entry.fd());
                        if let Some(entry) = entries.remove(&key) {
                            let _ = entry.events.send(Event::Failed(e));
                        }
                        continue;
                    }
                }
                if !held.is_empty() {
                    // Not read again until the task has delivered these.
                    let _ = self.epoll.delete(entry.fd());
                    entry.paused = true;
                    let frames = std::mem::take(&mut held);
                    if let Err(mpsc::error::SendError(Event::Held(mut frames))) =
                        entry.events.send(Event::Held(frames))
                    {
                        // The task is gone; so is the port.
                        frames.abandon(entry.switch.now());
                    }
                }
            }
        }
    }

    fn take_commands(&self, entries: &mut Entries) {
        let commands = std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|p| p.into_inner()));
        for c in commands {
            match c {
                Command::Add(e) => {
                    let key = e.key;
                    match self.epoll.add(e.fd(), libc::EPOLLIN as u32, key) {
                        Ok(()) => {
                            entries.insert(key, e);
                        }
                        Err(err) => {
                            let _ = e.events.send(Event::Failed(err));
                        }
                    }
                }
                Command::Resume(key) => {
                    if let Some(e) = entries.get_mut(&key) {
                        if e.paused {
                            e.paused = false;
                            if let Err(err) = self.epoll.add(e.fd(), libc::EPOLLIN as u32, key) {
                                if let Some(e) = entries.remove(&key) {
                                    let _ = e.events.send(Event::Failed(err));
                                }
                            }
                        }
                    }
                }
                Command::Remove(key, done) => {
                    if let Some(e) = entries.remove(&key) {
                        if !e.paused {
                            let _ = self.epoll.delete(e.fd());
                        }
                    }
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Reads and forwards frames from one port; returns how many. Unicast a
/// full peer refuses is left in `held`, and reading stops.
///
/// A port whose frames come one at a time gets one `recv` per wake-up: the
/// loop is level-triggered, so a second frame is reported by the next wait.
/// A bursty port gets `recvmmsg` batches, up to [`BATCH`] frames. `recvmmsg`
/// looks for a second datagram before it returns, which costs a lone frame
/// more kernel time (in a C relay: ping-pong p50 54 µs against 46 µs with
/// `recv`), and on a VM every microsecond per frame shows several times
/// over in the latency. A port turns bursty when the wait before its read
/// returned at once or it is ready again on the next turn of the loop, and
/// back when a batch brought one frame.
fn receive(
    entry: &mut Entry,
    batch: &mut RecvBatch,
    held: &mut Held,
    flags: u32,
    now: Duration,
) -> io::Result<usize> {
    let mut total = 0;
    while total < BATCH {
        let read = if entry.bursty {
            batch.recv(&*entry.sock)
        } else {
            batch.recv_one(&*entry.sock)
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n > 0 {
            batch.with_frames(|frames| {
                let frames = Frames::Plain(frames);
                entry
                    .switch
                    .forward(&entry.port, frames, Overflow::Hold(held), now)
            });
        }
        total += n;
        if !entry.bursty {
            break;
        }
        if n <= 1 && total <= 1 {
            entry.bursty = false;
        }
        // A short batch means the queue is empty (MSG_DONTWAIT).
        if n < MMSG_BATCH || !held.is_empty() {
            break;
        }
    }
    if total == 0 && flags & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
        // Level-triggered: a hang-up with nothing to read would be
        // reported again at once, forever.
        return Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the data socket hung up",
        ));
    }
    Ok(total)
}

/// A port the plane receives from, seen from the port's task.
#[derive(Debug)]
pub struct Receiving {
    plane: &'static Plane,
    key: u64,
    events: mpsc::UnboundedReceiver<Event>,
    stopped: bool,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Held(_) => f.write_str("Held"),
            Event::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

impl Receiving {
    /// Delivers the frames the plane held for full peers, until `port`
    /// closes (`Ok`) or receiving fails (`Err`).
    pub async fn serve(&mut self, switch: &Switch, port: &Port) -> io::Result<()> {
        let closed = port.closed();
        tokio::pin!(closed);
        loop {
            tokio::select! {
                biased;
                ev = self.events.recv() => match ev {
                    Some(Event::Held(mut held)) => {
                        if !held.release_unless_closed(port, || switch.now()).await {
                            return Ok(());
                        }
                        self.plane.command(Command::Resume(self.key));
                    }
                    Some(Event::Failed(e)) => return Err(e),
                    None => return Err(io::Error::other("the data plane thread stopped")),
                },
                _ = &mut closed => return Ok(()),
            }
        }
    }

    /// Stops receiving. Once this returns the plane neither reads nor
    /// forwards from the port, so it can leave the switch without a late
    /// frame teaching the switch its address again.
    pub async fn stop(mut self) {
        self.stopped = true;
        let (tx, rx) = oneshot::channel();
        self.plane.command(Command::Remove(self.key, tx));
        // An error means the thread is gone, which also stops it.
        let _ = rx.await;
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if !self.stopped {
            // The task was cancelled: stop without waiting.
            let (tx, _) = oneshot::channel();
            self.plane.command(Command::Remove(self.key, tx));
        }
    }
}
