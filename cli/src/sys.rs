//! The one system call of the daemon that has no safe wrapper: `fork`.
//! Every `unsafe` of the crate is here, with the reason it holds.

use std::io;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_with_threads_is_not_forked() {
        // The test harness runs this test on a thread of its own.
        assert!(thread_count().is_ok_and(|n| n > 1));
        assert!(fork_single_threaded().is_err());
    }
}
