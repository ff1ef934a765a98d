//! The few places that need `unsafe`, with the reason each one holds.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A descriptor owned through an `Arc`, shared between a port's receive
/// loop (which watches it) and its transmit side (which sends on it).
#[derive(Debug)]
pub struct SharedFd<T: AsRawFd>(pub Arc<T>);

impl<T: AsRawFd> AsRawFd for SharedFd<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// What a receive loop waits for: data, or an error condition (a tap
/// whose device was deleted reports only EPOLLERR).
pub const RECEIVE_INTEREST: Interest = Interest::READABLE.add(Interest::ERROR);

/// Registers `owner`'s descriptor with the runtime for readability and
/// errors; wait with `ready(RECEIVE_INTEREST)`. The descriptor must already
/// be non-blocking.
pub fn watch_readable<T: AsRawFd>(owner: Arc<T>) -> io::Result<AsyncFd<SharedFd<T>>> {
    // SAFETY: the AsyncFd owns an Arc to the object that owns the
    // descriptor, so the descriptor stays open and the same for the whole
    // life of the AsyncFd; `as_raw_fd` always returns that one descriptor.
    unsafe { AsyncFd::register_with_interest(SharedFd(owner), RECEIVE_INTEREST) }
        .map_err(io::Error::from)
}

/// Registers a descriptor of its own with the runtime for writability
/// only (see [`crate::hold`]: a watch that exists only while frames wait).
pub fn watch_writable(fd: std::os::fd::OwnedFd) -> io::Result<AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, which so stays open and the
    // same for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::WRITABLE) }
        .map_err(io::Error::from)
}

mod gathered;
pub use gathered::{send_gathered, send_gathered_with, send_to_gathered, write_gathered, Foreign};

/// Frames moved per `recvmmsg`/`sendmmsg` call. 256: a client that reads
/// as fast as the switch writes sleeps whenever its queue runs empty, and
/// the switch's next send wakes it, often onto the switch's own vCPU, where
/// it preempts the switch until it has drained the queue. With the 64-byte
/// two-client benchmark on the 2-core VM, 256 frames per call rather than
/// 64 cut those preemptions by about half and raised the rate ~5-9 % (won
/// 16 of 20 alternating runs, 2026-12-06); 64 rather than 32 had given ~9 %.
/// The receive buffers cost 256 x 64 KiB of address space per receiving
/// thread, touched only as far as frames fill them; the call headers are
/// set up once (see [`RecvBatch`]) and sends set up only what they send, so
/// a call that moves a few frames costs no more than with a smaller batch.
pub const MMSG_BATCH: usize = 256;

/// Writes `items` into the front of `slots`, as many as fit, and returns
/// the part written. Per-call scratch arrays of [`MMSG_BATCH`] slots are
/// set up this way so that a call pays only for what it uses: clearing a
/// whole array first would cost a call that moves a few frames several
/// KiB of stores, more than the work itself.
pub fn fill_front<T: Copy>(
    slots: &mut [MaybeUninit<T>],
    items: impl IntoIterator<Item = T>,
) -> &mut [T] {
    let mut n = 0;
    for (slot, item) in slots.iter_mut().zip(items) {
        slot.write(item);
        n += 1;
    }
    // SAFETY: the loop wrote slots[..n], and MaybeUninit<T> has T's
    // layout; T is Copy, so no value is left undropped.
    unsafe { std::slice::from_raw_parts_mut(slots.as_mut_ptr().cast::<T>(), n) }
}

/// Buffers for receiving up to [`MMSG_BATCH`] datagrams with one
/// `recvmmsg` call. Each buffer holds the largest frame plus one byte, so a
/// longer datagram shows up as too long instead of silently cut; the memory
/// is only touched as far as frames fill it.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    /// One iovec per buffer, pointing into it.
    iovecs: Box<[libc::iovec]>,
    /// One header per iovec. Set up once: `recvmmsg` writes only each
    /// header's `msg_len` and `msg_hdr.msg_flags` (there is no name or
    /// control buffer), so the headers serve every call as they are.
    hdrs: Box<[libc::mmsghdr]>,
    lens: [usize; MMSG_BATCH],
    count: usize,
}

// SAFETY: the raw pointers in `iovecs` and `hdrs` point only into heap
// memory this value owns (the buffers and `iovecs`), which moves with it
// and is never shared; a `RecvBatch` sent to another thread takes it along.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("count", &self.count)
            .finish()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        let mut bufs: Vec<Vec<u8>> = (0..MMSG_BATCH)
            .map(|_| vec![0u8; crate::MAX_FRAME + 1])
            .collect();
        let mut iovecs: Box<[libc::iovec]> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let hdrs: Box<[libc::mmsghdr]> = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value
                // (null pointers, zero lengths), completed below.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        RecvBatch {
            bufs,
            iovecs,
            hdrs,
            lens: [0; MMSG_BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Receives what is queued on `fd` (non-blocking), up to a batch.
    pub fn recv(&mut self, fd: &(impl AsRawFd + ?Sized)) -> io::Result<usize> {
        debug_assert_eq!(self.iovecs.len(), MMSG_BATCH);
        // SAFETY: every header points at one iovec of `self.iovecs`, which
        // points into a buffer of `self.bufs` of the stated length; all are
        // owned by self, outlive the call, and are not otherwise borrowed
        // during it. The kernel writes at most MMSG_BATCH entries.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                MMSG_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, hdr) in self.lens.iter_mut().zip(self.hdrs.iter()).take(n) {
            *len = if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                crate::MAX_FRAME + 1
            } else {
                hdr.msg_len as usize
            };
        }
        self.count = n;
        Ok(n)
    }

    /// Receives one datagram from `fd` (non-blocking) into the first
    /// buffer: `Ok(1)`, or the error (`WouldBlock` when none is queued).
    /// Cheaper than [`RecvBatch::recv`] when frames come one at a time:
    /// `recvmmsg` tries for a second datagram before it returns.
    pub fn recv_one(&mut self, fd: &(impl AsRawFd + ?Sized)) -> io::Result<usize> {
        self.count = 0;
        let iov = self.iovecs[0];
        // SAFETY: the first iovec points at the first buffer, of the stated
        // length, which this batch owns and which outlives the call; the
        // kernel writes at most that many bytes. MSG_TRUNC makes it return a
        // longer datagram's real length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                iov.iov_base,
                iov.iov_len,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // Longer than the buffer: marked too long, as `recv` does.
        self.lens[0] = (n as usize).min(crate::MAX_FRAME + 1);
        self.count = 1;
        Ok(1)
    }

    /// The frames of the last [`RecvBatch::recv`] or [`RecvBatch::recv_one`].
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs
            .iter()
            .zip(self.lens.iter())
            .take(self.count)
            .map(|(b, l)| &b[..(*l).min(b.len())])
    }

    /// Calls `f` with the frames of the last receive as one slice (empty
    /// when there were none).
    pub fn with_frames<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let mut slots = [MaybeUninit::<&[u8]>::uninit(); MMSG_BATCH];
        f(fill_front(&mut slots, self.frames()))
    }
}

/// Sends `frames` on a connected datagram socket with one `sendmmsg`
/// (non-blocking); returns how many went, or the error of the first.
pub fn send_batch(fd: &impl AsRawFd, frames: &[&[u8]]) -> io::Result<usize> {
    send_frames(fd, frames, libc::MSG_DONTWAIT)
}

/// [`send_batch`] with the caller's `send(2)` flags: a packet socket that
/// stands in for `pcap_inject` sends as libpcap does, without
/// `MSG_DONTWAIT`.
pub fn send_frames(fd: &impl AsRawFd, frames: &[&[u8]], flags: libc::c_int) -> io::Result<usize> {
    if let [frame] = frames {
        // One frame: `send` costs the kernel less than `sendmmsg`.
        return send_one_with(fd, frame, flags).map(|_| 1);
    }
    let mut iov_slots = [MaybeUninit::<libc::iovec>::uninit(); MMSG_BATCH];
    let mut hdr_slots = [MaybeUninit::<libc::mmsghdr>::uninit(); MMSG_BATCH];
    let iovecs = fill_front(
        &mut iov_slots,
        frames.iter().map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        }),
    );
    let hdrs = fill_front(
        &mut hdr_slots,
        iovecs.iter_mut().map(|iov| {
            // SAFETY: all-zero mmsghdr is valid plain data, completed below.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        }),
    );
    // SAFETY: the headers point at iovecs on this stack frame that point
    // at the caller's frames; the kernel reads only these entries, during
    // the call.
    let sent = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            flags,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Sends one frame on a connected datagram socket (non-blocking) with
/// `send(2)`. `UnixDatagram::send` calls `write(2)`, whose VFS path
/// (permission hook, fsnotify) costs ~0.1 µs more per frame, paid on every
/// hop of a ping-pong.
pub fn send_one(fd: &impl AsRawFd, frame: &[u8]) -> io::Result<usize> {
    send_one_with(fd, frame, libc::MSG_DONTWAIT)
}

fn send_one_with(fd: &impl AsRawFd, frame: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `frame.len()` bytes from `frame`,
    // which outlives the call.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            flags | libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// The send buffer of a port's data socket. Between connected unix
/// datagram sockets this, not `net.unix.max_dgram_qlen`, bounds how many
/// frames wait for a guest: 212 KiB (the default) holds about 280 small
/// frames; 1 MiB absorbs bursts of a few thousand.
pub const DATA_SOCKET_SNDBUF: usize = 1 << 20;

/// Raises a socket's send buffer, past `net.core.wmem_max` when allowed
/// (CAP_NET_ADMIN), else as far as the limit allows. Best effort.
pub fn grow_send_buffer(sock: &impl std::os::fd::AsFd, bytes: usize) {
    let s = socket2::SockRef::from(sock);
    if s.set_send_buffer_size(bytes).is_err() {
        return;
    }
    let forced = bytes as libc::c_int;
    // SAFETY: setsockopt reads exactly size_of::<c_int>() bytes from a
    // live local; the descriptor is borrowed for the call.
    let _ = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&forced as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// An epoll instance for a thread that waits without the async runtime
/// (see [`crate::ports::plane`]). Level-triggered: a descriptor left with
/// data is reported again by the next wait.
#[derive(Debug)]
pub struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    /// A new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result
        // is a fresh descriptor that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above: the descriptor is new and owned only here.
        Ok(Epoll(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live local the kernel only reads during the call.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `events` (`libc::EPOLLIN` …), reported with `token`.
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Changes what `fd` is watched for (0: nothing but errors).
    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` (-1: no limit, 0: just look) and fills
    /// `events`; returns how many.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the kernel writes at most `max` entries into `events`,
        // which is that long and outlives the call.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// A non-blocking eventfd: one thread signals it, the thread that watches
/// it in an [`Epoll`] wakes up and drains it.
#[derive(Debug)]
pub struct EventFd(std::os::fd::OwnedFd);

impl EventFd {
    /// A new eventfd (non-blocking, close-on-exec).
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a
        // fresh descriptor owned only here.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above.
        Ok(EventFd(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    /// Wakes the watcher. Cannot fail in a way worth reporting: a full
    /// counter (EAGAIN) already means a wake-up is pending.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter after a wake-up.
    pub fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live local of that size.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn frame(i: usize) -> Vec<u8> {
        vec![i as u8; 14 + i % 50]
    }

    #[test]
    fn fill_front_writes_what_fits_and_returns_only_that() {
        let mut slots = [MaybeUninit::<u32>::uninit(); 4];
        assert_eq!(fill_front(&mut slots, [7, 8]), &[7, 8]);
        assert_eq!(fill_front(&mut slots, 0..10), &[0, 1, 2, 3]);
        assert!(fill_front(&mut slots, []).is_empty());
    }

    #[test]
    fn full_batches_move_in_order_and_a_short_one_ends_the_queue() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        grow_send_buffer(&a, DATA_SOCKET_SNDBUF);
        let frames: Vec<Vec<u8>> = (0..MMSG_BATCH + 44).map(frame).collect();
        let slices: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert_eq!(send_batch(&a, &slices).expect("first send"), MMSG_BATCH);
        assert_eq!(
            send_batch(&a, &slices[MMSG_BATCH..]).expect("second send"),
            44
        );

        let mut batch = RecvBatch::default();
        for (want, from) in [(MMSG_BATCH, 0), (44, MMSG_BATCH)] {
            assert_eq!(batch.recv(&b).expect("recv"), want);
            let got: Vec<&[u8]> = batch.frames().collect();
            assert_eq!(got.len(), want);
            for (k, f) in got.iter().enumerate() {
                assert_eq!(*f, frames[from + k].as_slice(), "frame {}", from + k);
            }
        }
        let e = batch.recv(&b).expect_err("the queue is empty");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.frames().count(), 0);
    }

    #[test]
    fn headers_set_up_once_serve_calls_of_any_size() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        let mut batch = RecvBatch::default();
        for round in 0..5usize {
            let frames: Vec<Vec<u8>> = (0..=round).map(|i| frame(round * 7 + i)).collect();
            let slices: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            assert_eq!(send_batch(&a, &slices).expect("send"), frames.len());
            assert_eq!(batch.recv(&b).expect("recv"), frames.len());
            assert!(batch.frames().eq(slices.iter().copied()), "round {round}");
        }
        // recv_one fills the first buffer only, and says so.
        send_one(&a, &frame(3)).expect("send_one");
        send_one(&a, &frame(4)).expect("send_one");
        assert_eq!(batch.recv_one(&b).expect("recv_one"), 1);
        assert!(batch.frames().eq([frame(3).as_slice()]));
        assert_eq!(batch.recv(&b).expect("recv"), 1);
        assert!(batch.frames().eq([frame(4).as_slice()]));
    }

    #[test]
    fn with_frames_lends_what_frames_yields() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        let mut batch = RecvBatch::default();
        let lent = |batch: &RecvBatch| {
            batch.with_frames(|f| f.iter().map(|x| x.to_vec()).collect::<Vec<_>>())
        };
        assert!(lent(&batch).is_empty());
        for count in [1usize, 3] {
            let frames: Vec<Vec<u8>> = (0..count).map(|i| frame(40 + i)).collect();
            let slices: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            assert_eq!(send_batch(&a, &slices).expect("send"), count);
            assert_eq!(batch.recv(&b).expect("recv"), count);
            assert_eq!(lent(&batch), frames);
        }
        assert!(batch.recv(&b).is_err());
        assert!(lent(&batch).is_empty());
    }

    #[test]
    fn a_datagram_longer_than_a_frame_is_marked_too_long() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        grow_send_buffer(&a, DATA_SOCKET_SNDBUF);
        let long = vec![7u8; crate::MAX_FRAME + 100];
        let mut batch = RecvBatch::default();
        send_one(&a, &long).expect("send a long datagram");
        assert_eq!(batch.recv(&b).expect("recv"), 1);
        assert_eq!(
            batch.frames().next().map(<[u8]>::len),
            Some(crate::MAX_FRAME + 1)
        );
        send_one(&a, &long).expect("send a long datagram");
        assert_eq!(batch.recv_one(&b).expect("recv_one"), 1);
        assert_eq!(
            batch.frames().next().map(<[u8]>::len),
            Some(crate::MAX_FRAME + 1)
        );
    }
}

/// What [`fstat_kind`] found behind a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A unix socket.
    Socket,
    /// A symbolic link (an `O_PATH|O_NOFOLLOW` descriptor of one).
    Symlink,
    /// Anything else.
    Other,
}

/// The type and owner of the inode behind a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOwner {
    /// Its type.
    pub kind: FileKind,
    /// Its owner's uid.
    pub uid: u32,
}

/// Opens `path` as a bare reference (`O_PATH`) without following a final
/// symbolic link: the descriptor names the inode that was there, whatever
/// happens to the path afterwards.
pub fn open_path_nofollow(path: &std::path::Path) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{open, OFlag};
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    open(path, flags, nix::sys::stat::Mode::empty()).map_err(io::Error::from)
}

/// The type and owner of what `fd` refers to (`fstat`, which works on
/// `O_PATH` descriptors).
pub fn fstat_kind(fd: &impl std::os::fd::AsFd) -> io::Result<FileOwner> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io::Error::from)?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    };
    Ok(FileOwner {
        kind,
        uid: st.st_uid,
    })
}
