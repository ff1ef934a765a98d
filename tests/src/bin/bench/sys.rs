//! Thin wrappers over the system calls the generator needs: poll(2),
//! sendmmsg(2)/recvmmsg(2), and a SIGINT/SIGTERM flag.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Set by SIGINT, SIGTERM or SIGHUP; every loop checks it so that the RAII
/// guards (switch processes, namespace, temporary directory) always run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Route SIGINT, SIGTERM and SIGHUP to [`interrupted`] instead of killing
/// the process, so that cleanup happens on the normal error path.
pub fn install_signal_handlers() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to a static atomic, which is
        // async-signal-safe; no other handler for these signals is relied on.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a handler for {signal}"))?;
    }
    Ok(())
}

/// True once a termination signal has arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fail if a termination signal has arrived.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted by a signal");
    }
    Ok(())
}

/// Sleep for `total`, waking every few milliseconds to check for a signal
/// and for `stop` (set by a worker thread that failed). Returns Ok(false)
/// when `stop` cut the sleep short.
pub fn sleep_checked(total: Duration, stop: &AtomicBool) -> Result<bool> {
    let end = Instant::now() + total;
    loop {
        check_interrupted()?;
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(true);
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// poll(2) one socket for `events` (POLLIN / POLLOUT). Returns whether any
/// event (including an error condition) is pending; an EINTR counts as "no".
pub fn wait_fd(sock: &impl AsRawFd, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is a valid, initialised pollfd on our stack and nfds is 1;
    // the descriptor is kept open by the borrowed socket for the whole call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    if pfd.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::other("poll: descriptor is not open (POLLNVAL)"));
    }
    Ok(rc > 0)
}

/// A fixed set of `count` message slots of `slot` bytes each, with the
/// iovec and mmsghdr arrays that sendmmsg/recvmmsg need. The three heap
/// buffers are allocated once and never resized, so the raw pointers
/// between them stay valid for the lifetime of the value.
pub struct MsgBatch {
    bufs: Vec<u8>,
    slot: usize,
    // Referenced by `hdrs` through raw pointers; kept alive here.
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl MsgBatch {
    /// Slots for receiving: each iovec covers a whole slot.
    pub fn for_recv(count: usize, slot: usize) -> Self {
        Self::new(count, slot, slot)
    }

    /// Slots for sending: every slot holds a copy of `frame`.
    pub fn for_send(count: usize, frame: &[u8]) -> Self {
        let mut batch = Self::new(count, frame.len(), frame.len());
        for chunk in batch.bufs.chunks_exact_mut(frame.len()) {
            chunk.copy_from_slice(frame);
        }
        batch
    }

    fn new(count: usize, slot: usize, iov_len: usize) -> Self {
        assert!(count > 0 && slot > 0 && iov_len <= slot);
        let mut bufs = vec![0u8; count * slot];
        let base = bufs.as_mut_ptr();
        let mut iovs: Vec<libc::iovec> = (0..count)
            .map(|i| libc::iovec {
                iov_base: base.wrapping_add(i * slot).cast(),
                iov_len,
            })
            .collect();
        let iov_base = iovs.as_mut_ptr();
        let hdrs = (0..count)
            .map(|i| {
                // SAFETY: mmsghdr is a plain C struct (pointers and integers)
                // for which the all-zero bit pattern is a valid value.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov_base.wrapping_add(i);
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        MsgBatch {
            bufs,
            slot,
            iovs,
            hdrs,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.hdrs.len()
    }

    /// sendmmsg(2) the first `n` slots without blocking on any connected
    /// or bound datagram socket (unix, or AF_PACKET bound to a device).
    /// Returns how many datagrams the kernel accepted; EAGAIN comes back
    /// as WouldBlock.
    pub fn send(&mut self, sock: &impl AsRawFd, n: usize) -> io::Result<usize> {
        let n = n.min(self.hdrs.len());
        let vlen = libc::c_uint::try_from(n).map_err(io::Error::other)?;
        // SAFETY: `self.hdrs[..n]` are initialised mmsghdrs whose msg_iov
        // points into `self.iovs`, whose iov_base/iov_len stay inside
        // `self.bufs`; all three live in `self` and are not reallocated. The
        // descriptor is kept open by the borrowed socket during the call.
        let rc = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// recvmmsg(2) up to `len()` datagrams without blocking. Returns how
    /// many arrived; read them with [`MsgBatch::frame`].
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        let vlen = libc::c_uint::try_from(self.hdrs.len()).map_err(io::Error::other)?;
        // SAFETY: as in `send`: every header points at one iovec covering
        // exactly one `slot`-sized region of `self.bufs`, all owned by `self`
        // and never reallocated; the kernel writes at most `slot` bytes per
        // message plus `msg_len`/`msg_flags`. No timeout pointer is passed.
        let rc = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// The bytes of send slot `i`, to rewrite before the next
    /// [`MsgBatch::send`] (the iovec keeps pointing at the same bytes).
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.iovs[i].iov_len;
        &mut self.bufs[i * self.slot..i * self.slot + len]
    }

    /// The datagram received into slot `i` by the last [`MsgBatch::recv`].
    pub fn frame(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.slot);
        &self.bufs[i * self.slot..i * self.slot + len]
    }
}
