//! The system calls of the daemon that have no safe wrapper: `fork`, and
//! `getsockopt(SO_PEERGROUPS)` (nix 0.31 and libc do not name it for
//! Linux). Every `unsafe` of the crate is here, with the reason it holds.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// How many threads this process runs (the entries of /proc/self/task).
fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// `fork(2)`, refused unless this process runs a single thread: only then
/// may the child run arbitrary code (no lock can be held by a thread that
/// does not exist in the child).
pub(crate) fn fork_single_threaded() -> io::Result<nix::unistd::ForkResult> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "the process already runs {threads} threads; fork only before starting any"
        )));
    }
    // SAFETY: checked just above that this is the only thread, and nothing
    // in this function starts another before the fork.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// `SO_PEERGROUPS` (Linux 4.13): the supplementary groups the peer of a
/// unix socket had when it connected. 59 in the generic
/// `asm-generic/socket.h` and on mips; sparc has its own numbering.
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_PEERGROUPS: libc::c_int = 59;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_PEERGROUPS: libc::c_int = 0x003d;

/// The most groups a process can have (`NGROUPS_MAX` on Linux).
const MAX_GROUPS: usize = 65_536;

/// The supplementary groups of the process on the other end of `socket`
/// (a connected unix stream socket), as the kernel recorded them at
/// `connect`: no lookup in /etc/group, so it works for uids that have no
/// passwd entry and cannot be changed by the peer afterwards.
pub(crate) fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * std::mem::size_of::<libc::gid_t>())
            .map_err(|_| io::Error::other("too many groups"))?;
        // SAFETY: `groups` is a live, writable buffer of exactly `len`
        // bytes; the kernel writes at most `len` bytes into it and stores
        // the length it wrote (or, on ERANGE, the length it needs) in
        // `len`, which outlives the call. The descriptor is borrowed, so
        // it stays open for the call.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n.min(groups.len()));
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // ERANGE: the buffer was too small; `len` says how big it must be.
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= MAX_GROUPS {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_has_the_groups_of_this_process() -> io::Result<()> {
        use std::os::fd::AsFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair()?;
        let mut got = peer_groups(a.as_fd())?;
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .map_err(io::Error::from)?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        want.dedup();
        got.dedup();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn a_process_with_threads_is_not_forked() {
        // The test harness runs this test on a thread of its own.
        assert!(thread_count().is_ok_and(|n| n > 1));
        assert!(fork_single_threaded().is_err());
    }
}
