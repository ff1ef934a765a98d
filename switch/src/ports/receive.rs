//! The receive loop every datagram-like port shares: wait for readiness,
//! read a batch, forward each frame where it arrived.

use super::attachment::Attachment;
use crate::egress::{Frames, Overflow};
use crate::hold::Held;
use crate::port::Port;
use crate::switch::Switch;
use crate::sys::{RecvBatch, SharedFd, MMSG_BATCH, RECEIVE_INTEREST};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use tokio::io::unix::AsyncFd;

/// Registers `sock` for receiving and attaches `port` to the switch
/// (stopped with `stop`); `None`, logged, when the socket cannot be
/// watched.
pub fn attach<T: AsRawFd>(
    switch: &std::sync::Arc<Switch>,
    stop: &crate::Stop,
    port: &std::sync::Arc<Port>,
    sock: std::sync::Arc<T>,
) -> Option<(AsyncFd<SharedFd<T>>, Attachment)> {
    match crate::sys::watch_readable(sock) {
        Ok(afd) => Some((afd, Attachment::new(switch, stop, port.clone(), None))),
        Err(e) => {
            tracing::error!(port = %port.name(), "cannot watch socket: {e}");
            None
        }
    }
}

/// Ends the port of a finished [`receive_loop`] or [`receive_batched`]:
/// detaches it, with the loop's error (also logged as one) or its
/// closing as the reason.
pub fn detach_after(result: io::Result<()>, attachment: Attachment) {
    match result {
        Ok(()) => attachment.detach("port closed"),
        Err(e) => {
            tracing::error!(port = %attachment.port().name(), "port stopped: {e}");
            attachment.detach(format!("receive failed: {e}"));
        }
    }
}

/// Frames per wake-up before yielding to other tasks.
pub const BATCH: usize = 256;

/// What a port's read function made of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A frame at these bytes of the buffer.
    Frame(Range<usize>),
    /// Nothing to forward (our own looped-back datagram, a transient
    /// error); already counted if it was a drop.
    Skip,
}

/// Reads from `fd` with `read` until the port is closed (`Ok`) or the
/// descriptor fails (`Err`). `buf` must hold the largest datagram.
pub async fn receive_loop<T: AsRawFd>(
    switch: &Switch,
    port: &Port,
    fd: &AsyncFd<SharedFd<T>>,
    buf: &mut [u8],
    mut read: impl FnMut(&T, &mut [u8]) -> io::Result<Received>,
) -> io::Result<()> {
    loop {
        let mut guard = tokio::select! {
            _ = port.closed() => return Ok(()),
            g = fd.ready(RECEIVE_INTEREST) => g?,
        };
        let now = switch.now();
        let mut n = 0;
        while n < BATCH {
            match read(&guard.get_inner().0, buf) {
                Ok(Received::Frame(r)) => {
                    switch.forward(port, Frames::Plain(&[&buf[r]]), Overflow::Drop, now);
                    n += 1;
                }
                Ok(Received::Skip) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == BATCH {
            tokio::task::yield_now().await;
        }
    }
}

thread_local! {
    /// One set of receive buffers per runtime thread, shared by every port
    /// that thread serves: a batch is received and forwarded without an
    /// await in between, so no two ports use it at once, and a thousand idle
    /// ports cost no buffer memory.
    static SCRATCH: std::cell::RefCell<RecvBatch> = std::cell::RefCell::new(RecvBatch::default());
}

/// Receives and forwards one `recvmmsg` batch; returns how many frames.
/// Unicast a full peer refuses is left in `held`.
fn receive_one_batch<T: AsRawFd>(
    switch: &Switch,
    port: &Port,
    fd: &T,
    held: &mut Held,
) -> io::Result<usize> {
    SCRATCH.with(|cell| {
        let mut batch = cell.borrow_mut();
        let n = batch.recv(fd)?;
        if n > 0 {
            batch.with_frames(|frames| {
                switch.forward(
                    port,
                    Frames::Plain(frames),
                    Overflow::Hold(held),
                    switch.now(),
                )
            });
        }
        Ok(n)
    })
}

/// Like [`receive_loop`] for a connected datagram socket: `recvmmsg`
/// batches, forwarded with [`Switch::forward`]. Unicast that
/// a full peer refuses is delivered before the next batch is read, so the
/// sender waits instead of the frames being lost (see [`crate::hold`]).
pub async fn receive_batched<T: AsRawFd>(
    switch: &Switch,
    port: &Port,
    fd: &AsyncFd<SharedFd<T>>,
) -> io::Result<()> {
    let mut held = Held::default();
    let mut idle_since: Option<std::time::Instant> = None;
    // Registered once, not on every wake-up: a wake-up per frame is the
    // common case at low rates, and each registration takes a lock.
    let closed = port.closed();
    tokio::pin!(closed);
    loop {
        if port.is_closing() {
            return Ok(());
        }
        let mut guard = tokio::select! {
            // Readiness first: when a frame is waiting, `closed` is not
            // polled at all (the check above sees a close soon enough).
            biased;
            g = fd.ready(RECEIVE_INTEREST) => g?,
            _ = &mut closed => return Ok(()),
        };
        let mut frames = 0;
        loop {
            let read = receive_one_batch(switch, port, &*guard.get_inner().0, &mut held);
            if !held.is_empty() && !held.release_unless_closed(port, || switch.now()).await {
                return Ok(());
            }
            let drained = match read {
                // A short batch means recvmmsg met an empty queue
                // (MSG_DONTWAIT): no need for a read that would only say
                // EAGAIN.
                Ok(n) if n < MMSG_BATCH => {
                    frames += n;
                    if n > 0 {
                        idle_since = None;
                    }
                    true
                }
                Ok(n) => {
                    frames += n;
                    idle_since = None;
                    if frames >= BATCH {
                        break;
                    }
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
                Err(e) => return Err(e),
            };
            if drained {
                let busy = switch.busy_poll();
                if !busy.is_zero() && !port.is_closing() && {
                    let now = std::time::Instant::now();
                    now.duration_since(*idle_since.get_or_insert(now)) < busy
                } {
                    // Busy polling: look again after the other tasks and
                    // the reactor had a turn, instead of sleeping, so the
                    // next frame finds this thread awake.
                    tokio::task::yield_now().await;
                    continue;
                }
                idle_since = None;
                // Keeps any readiness that came in since this guard was
                // taken, so no frame is missed.
                guard.clear_ready();
                break;
            }
        }
        if frames >= BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// A receive buffer for the largest frame plus one byte, so that an
/// oversized datagram shows up as too long instead of silently cut.
pub fn frame_buffer() -> Vec<u8> {
    vec![0u8; crate::MAX_FRAME + 1]
}
