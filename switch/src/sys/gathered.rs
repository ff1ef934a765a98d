//! System calls for frames in two parts (see [`crate::gather`]): the
//! pieces of another process's memory they point into, and the sends that
//! hand those pieces to the kernel as iovecs.

use super::{fill_front, MMSG_BATCH};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

/// A run of bytes in memory the switch shares with another process, which
/// may rewrite them at any moment (a vhost-user guest's buffers): see
/// [`crate::gather`]. Never read as a slice, only copied out, or handed to
/// the kernel as an iovec.
#[derive(Debug, Clone, Copy)]
pub struct Foreign<'a> {
    ptr: *const u8,
    len: usize,
    _mapped: std::marker::PhantomData<&'a [u8]>,
}

// SAFETY: a `Foreign` is an address and a length in memory mapped for
// `'a` (the contract of `Foreign::new`); reading it from any thread is as
// sound as from the one that made it, and it is only ever copied out.
unsafe impl Send for Foreign<'_> {}
// SAFETY: as for `Send`: shared references only copy out of it.
unsafe impl Sync for Foreign<'_> {}

impl Foreign<'static> {
    /// No bytes: fills an array of pieces before use.
    pub const EMPTY: Foreign<'static> = Foreign {
        ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
        _mapped: std::marker::PhantomData,
    };
}

impl<'a> Foreign<'a> {
    /// The `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr + len` must stay mapped and readable for `'a`. Its
    /// contents may change meanwhile: they are only copied.
    pub unsafe fn new(ptr: *const u8, len: usize) -> Foreign<'a> {
        Foreign {
            ptr,
            len,
            _mapped: std::marker::PhantomData,
        }
    }

    /// The bytes of `bytes` (the switch's own, for tests and tools that
    /// play the other process).
    pub fn from_slice(bytes: &'a [u8]) -> Foreign<'a> {
        // SAFETY: a slice is mapped for its lifetime.
        unsafe { Foreign::new(bytes.as_ptr(), bytes.len()) }
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `len` bytes from `offset`.
    ///
    /// # Panics
    /// When they run past the end (a caller's bug).
    pub fn sub(&self, offset: usize, len: usize) -> Foreign<'a> {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len),
            "a piece past a Foreign's end"
        );
        // SAFETY: within this run (checked above), so mapped for 'a as
        // this one is.
        unsafe { Foreign::new(self.ptr.add(offset), len) }
    }

    /// The first byte's address, for an iovec the kernel copies from, or a
    /// copy into another guest's memory.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Copies `dst.len()` bytes from `offset` into `dst`.
    ///
    /// # Panics
    /// When `offset + dst.len()` is past the end (a caller's bug, never
    /// the other process's doing: lengths come from the switch, not the
    /// memory).
    pub fn copy_to(&self, offset: usize, dst: &mut [u8]) {
        let end = offset.checked_add(dst.len());
        assert!(
            end.is_some_and(|e| e <= self.len),
            "copy past a Foreign's end"
        );
        // SAFETY: in bounds (checked above) of memory mapped for 'a;
        // `dst` is the switch's own and cannot overlap it. The bytes may
        // change while copied: the copy is then of some mix of old and
        // new, which is the other process's business.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) }
    }
}

/// The most iovecs one `sendmmsg` of gathered frames carries: a frame's
/// head and its foreign pieces each take one.
const GATHER_IOVECS: usize = 1024;

/// The iovecs of `prefix` (when not empty) and then `frame`'s pieces,
/// written to the front of `slots`; `None` when they do not fit.
fn gathered_iovecs<'s>(
    prefix: &[u8],
    frame: &crate::gather::Gathered<'_>,
    slots: &'s mut [MaybeUninit<libc::iovec>],
) -> Option<&'s mut [libc::iovec]> {
    let count = usize::from(!prefix.is_empty()) + 1 + frame.rest().len();
    if count > slots.len() {
        return None;
    }
    let prefix = (!prefix.is_empty()).then_some((prefix.as_ptr(), prefix.len()));
    let head = std::iter::once((frame.head().as_ptr(), frame.head().len()));
    let rest = frame.rest().iter().map(|p| (p.as_ptr(), p.len()));
    let all = prefix.into_iter().chain(head).chain(rest);
    Some(fill_front(
        slots,
        all.map(|(ptr, len)| libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        }),
    ))
}

/// [`send_batch`](super::send_batch) for frames in two parts (see [`crate::gather`]): each
/// frame's head and foreign pieces go as its iovecs, so the kernel's copy
/// into the socket is the only one. Returns how many frames went (fewer
/// than given when their pieces outnumber one call's iovecs), or the
/// error of the first.
pub fn send_gathered(
    fd: &impl AsRawFd,
    frames: &[crate::gather::Gathered<'_>],
) -> io::Result<usize> {
    send_gathered_with(fd, frames, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// [`send_gathered`] with the caller's `send(2)` flags (a packet socket
/// standing in for `pcap_inject` sends without `MSG_DONTWAIT`, as
/// [`send_frames`](super::send_frames) does).
pub fn send_gathered_with(
    fd: &impl AsRawFd,
    frames: &[crate::gather::Gathered<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    let mut iov_slots = [MaybeUninit::<libc::iovec>::uninit(); GATHER_IOVECS];
    let mut hdr_slots = [MaybeUninit::<libc::mmsghdr>::uninit(); MMSG_BATCH];
    // Each frame's iovecs are split off the front of what is free, so
    // every header points into its own part of the array.
    let mut free: &mut [MaybeUninit<libc::iovec>] = &mut iov_slots;
    let mut n = 0;
    for (frame, slot) in frames.iter().zip(hdr_slots.iter_mut()) {
        let count = 1 + frame.rest().len();
        if count > free.len() {
            break;
        }
        let (mine, rest) = std::mem::take(&mut free).split_at_mut(count);
        free = rest;
        let Some(iovecs) = gathered_iovecs(&[], frame, mine) else {
            break;
        };
        // SAFETY: all-zero mmsghdr is valid plain data, completed here.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_iov = iovecs.as_mut_ptr();
        h.msg_hdr.msg_iovlen = iovecs.len();
        slot.write(h);
        n += 1;
    }
    if n == 0 {
        return Err(too_many_pieces());
    }
    // SAFETY: the first `n` headers were written above; they point at
    // iovecs on this stack frame that point at the frames' heads and at
    // foreign memory whose owner keeps it mapped while it is forwarded
    // (`Foreign::new`); the kernel reads only these, during the call, and
    // fails with EFAULT rather than faulting if that memory was cut short.
    let sent = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdr_slots.as_mut_ptr().cast::<libc::mmsghdr>(),
            n as libc::c_uint,
            flags,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Sends `prefix` (a VXLAN header, or nothing) and then `frame`'s pieces
/// as one datagram to `to` with one `sendmsg` (non-blocking): the
/// kernel's copy is the only one.
pub fn send_to_gathered(
    fd: &impl AsRawFd,
    to: &socket2::SockAddr,
    prefix: &[u8],
    frame: &crate::gather::Gathered<'_>,
) -> io::Result<usize> {
    let mut iov_slots = [MaybeUninit::<libc::iovec>::uninit(); GATHER_IOVECS];
    let iovecs = gathered_iovecs(prefix, frame, &mut iov_slots).ok_or_else(too_many_pieces)?;
    // SAFETY: all-zero msghdr is valid plain data, completed here.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = to.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = to.len();
    msg.msg_iov = iovecs.as_mut_ptr();
    msg.msg_iovlen = iovecs.len();
    // SAFETY: as in `send_gathered`; the address is the caller's, read
    // during the call only.
    let sent = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

fn too_many_pieces() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a frame in more pieces than one system call takes",
    )
}

/// Writes `prefix` (a tap's virtio-net header, or nothing) and then
/// `frame`'s pieces with one `writev`: one copy, the kernel's.
pub fn write_gathered(
    fd: &impl AsRawFd,
    prefix: &[u8],
    frame: &crate::gather::Gathered<'_>,
) -> io::Result<usize> {
    let mut iov_slots = [MaybeUninit::<libc::iovec>::uninit(); GATHER_IOVECS];
    let iovecs = gathered_iovecs(prefix, frame, &mut iov_slots).ok_or_else(too_many_pieces)?;
    // SAFETY: as in `send_gathered`: iovecs on this stack frame over the
    // caller's prefix, the frame's head and mapped foreign memory, read by
    // the kernel during the call only.
    let written =
        unsafe { libc::writev(fd.as_raw_fd(), iovecs.as_ptr(), iovecs.len() as libc::c_int) };
    if written < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(written as usize)
}
