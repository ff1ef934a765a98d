//! The few places that need `unsafe`, with the reason each one holds.

use std::io;
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
