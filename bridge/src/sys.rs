//! The system calls of the host-side ports that have no safe wrapper:
//! attaching to a tap through `/dev/net/tun`, asking a NIC for its MTU
//! (reads and writes go through nix's safe `read`, `write` and `writev`),
//! and the SIGBUS guard over vhost-user guests' memory. Every `unsafe` of
//! the crate is here, each with the reason it holds.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The longest interface name the kernel takes (IFNAMSIZ less the NUL).
pub(crate) const MAX_IFNAME: usize = 15;

/// An `ifreq` naming `name` (at most [`MAX_IFNAME`] bytes; longer names
/// are refused).
fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    if name.len() > MAX_IFNAME || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is too long or has a NUL byte"),
        ));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value (and
    // leaves the name NUL-terminated after at most 15 bytes).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

/// Opens `/dev/net/tun` (non-blocking) and attaches it to tap `name`,
/// with a virtio-net header on every frame when `vnet` is set.
pub(crate) fn attach_tun(name: &str, vnet: bool) -> io::Result<OwnedFd> {
    use nix::fcntl::{open, OFlag};
    let fd = open(
        "/dev/net/tun",
        OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let mut ifr = ifreq_named(name)?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if vnet {
        flags |= libc::IFF_VNET_HDR;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sets the offloads (`TUN_F_*`) of an IFF_VNET_HDR tap.
pub(crate) fn set_tun_offloads(fd: &OwnedFd, offloads: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no
    // memory of ours.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(offloads),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The MTU of network device `device`, as SIOCGIFMTU reports it in this
/// process's network namespace.
pub(crate) fn device_mtu(device: &str) -> io::Result<i32> {
    let mut req = ifreq_named(device)?;
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu inside `req`,
    // which lives across the call; the socket is open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled in the ifru_mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu })
}

/// Takes ownership of descriptors the kernel just passed us in an
/// `SCM_RIGHTS` message (the vhost-user relay), so they are closed once
/// forwarded.
pub(crate) fn received_fds(fds: &[std::os::fd::RawFd]) -> Vec<OwnedFd> {
    use std::os::fd::FromRawFd;
    fds.iter()
        // SAFETY: each descriptor was installed in this process by the
        // recvmsg that returned it and nothing else refers to it: we are
        // its only owner.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Closes `fd`, the read side of an exit event that vhost-user-backend
/// 0.24.0 takes from the port and never closes (it keeps only the raw
/// number, in an epoll set that is gone once the connection's threads are
/// joined). Only an eventfd is closed: if the number were anything else,
/// it would not be that leaked descriptor.
pub(crate) fn close_leaked_eventfd(fd: std::os::fd::RawFd) {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
    if link.is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]") {
        let _ = nix::unistd::close(fd);
    }
}

/// Guest memory mappings a SIGBUS may hit: host address ranges
/// `[start, end)`, a free slot has `start` 0. A guest whose memory file
/// cannot be sealed (tmpfs, hugetlbfs, a memfd made without sealing) may
/// cut the file short under the switch's mapping; touching a page past
/// the file's new end raises SIGBUS, which would end the daemon.
static GUEST_MAPS: [(AtomicUsize, AtomicUsize); GUEST_SLOTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; GUEST_SLOTS];

/// How many guest mappings are watched at once.
pub(crate) const GUEST_SLOTS: usize = 64;

/// Slots (bit per slot) whose mapping faulted and was patched.
static FAULTED: AtomicU64 = AtomicU64::new(0);

/// The guard is installed once, on the first watched mapping.
static INSTALLED: std::sync::Once = std::sync::Once::new();

/// The SIGBUS action there was before the guard (Rust's runtime has one),
/// for faults outside guest memory.
static PREVIOUS: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

/// Watches `[start, start + len)` (a mapping of guest memory); returns
/// its slot, or `None` when every slot is taken (the mapping is then not
/// guarded).
pub(crate) fn watch_guest_memory(start: usize, len: usize) -> Option<usize> {
    INSTALLED.call_once(install_sigbus_guard);
    for (i, (s, e)) in GUEST_MAPS.iter().enumerate() {
        // Claim the slot by its end first: the handler reads `start` and
        // sees a slot only once both are set.
        if e.compare_exchange(0, start + len, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            FAULTED.fetch_and(!(1u64 << i), Ordering::AcqRel);
            s.store(start, Ordering::Release);
            return Some(i);
        }
    }
    None
}

/// Stops watching `slot` (its mapping is going away).
pub(crate) fn unwatch_guest_memory(slot: usize) {
    if let Some((s, e)) = GUEST_MAPS.get(slot) {
        s.store(0, Ordering::Release);
        FAULTED.fetch_and(!(1u64 << slot), Ordering::AcqRel);
        e.store(0, Ordering::Release);
    }
}

/// Which of the slots in `mask` faulted since they were watched.
pub(crate) fn guest_memory_faulted(mask: u64) -> u64 {
    FAULTED.load(Ordering::Acquire) & mask
}

fn install_sigbus_guard() {
    if let Ok(Some(size)) = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        if let Ok(size) = usize::try_from(size) {
            PAGE.store(size, Ordering::Release);
        }
    }
    // SAFETY: the handler below only loads and stores atomics and calls
    // mmap(2), which is async-signal-safe; `sigaction` is given a zeroed
    // struct with the handler, SA_SIGINFO and an empty mask filled in.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) == 0 {
            let _ = PREVIOUS.set(old);
        }
        if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
            tracing::warn!(
                "cannot install the SIGBUS guard over guest memory: {}; a guest that \
                 truncates an unsealed memory file can end the switch",
                io::Error::last_os_error()
            );
        }
    }
}

/// A SIGBUS in a watched guest mapping: the rest of that mapping from the
/// faulting page on becomes private zero pages (the guest that cut its
/// file short loses the shared view of them; nothing else changes), the
/// slot is marked faulted for its port to notice, and the access is
/// retried. Any other SIGBUS gets the default action: the daemon ends
/// with it, as it would have without this handler.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler;
    // si_addr is the faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    for (i, (s, e)) in GUEST_MAPS.iter().enumerate() {
        let (start, end) = (s.load(Ordering::Acquire), e.load(Ordering::Acquire));
        if start == 0 || addr < start || addr >= end {
            continue;
        }
        let page = addr & !(PAGE.load(Ordering::Acquire) - 1);
        // SAFETY: [page, end) lies inside a mapping of guest memory the
        // switch made and still holds (a watched slot); replacing it with
        // anonymous memory at the same address keeps every pointer into
        // it valid, and the mapping's owner unmaps the whole range later.
        let r = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                end - page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            FAULTED.fetch_or(1u64 << i, Ordering::AcqRel);
            return;
        }
    }
    match PREVIOUS.get() {
        Some(old)
            if old.sa_flags & libc::SA_SIGINFO != 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN =>
        {
            // SAFETY: `old` is the action the process had, a SA_SIGINFO
            // handler with this signature; it gets what it would have got.
            unsafe {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(old.sa_sigaction);
                f(_sig, info, _ctx);
            }
        }
        // SAFETY: restoring the default action and raising the signal
        // again is what the kernel would have done without the handler.
        _ => unsafe {
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            libc::raise(libc::SIGBUS);
        },
    }
}

/// The system's page size, read when the guard is installed: the
/// handler's `mmap(MAP_FIXED)` needs an address aligned to it.
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The guest memory `slice` covers, to be forwarded from where it is (see
/// `switchyard_switch::gather`).
pub(crate) fn foreign<'a, B: vm_memory::bitmap::BitmapSlice>(
    slice: &vm_memory::VolatileSlice<'a, B>,
) -> switchyard_switch::gather::Foreign<'a> {
    // SAFETY: a `VolatileSlice<'a>` is mapped for 'a (it borrows the
    // guest memory it came from); a frontend that cuts the file short
    // under it meets the SIGBUS guard above, or EFAULT in the kernel.
    unsafe { switchyard_switch::gather::Foreign::new(slice.ptr_guard().as_ptr(), slice.len()) }
}

/// Copies `dst.len()` bytes of `src` from `offset` into `dst`, guest
/// memory: a frame going from one guest's buffers straight into another's
/// (see `switchyard_switch::gather`).
///
/// # Panics
/// When that range is past `src`'s end (the caller's bug: the lengths are
/// the switch's).
pub(crate) fn copy_foreign<B: vm_memory::bitmap::BitmapSlice>(
    src: &switchyard_switch::gather::Foreign<'_>,
    offset: usize,
    dst: &vm_memory::VolatileSlice<'_, B>,
) {
    let end = offset.checked_add(dst.len());
    assert!(
        end.is_some_and(|e| e <= src.len()),
        "copy past a Foreign's end"
    );
    let to = dst.ptr_guard_mut();
    // SAFETY: both ranges are mapped (`dst` by its slice's lifetime, `src`
    // by `Foreign::new`'s contract) and in bounds (checked above); they
    // are different guests' buffers, or the same guest's TX and RX buffers,
    // which do not overlap unless a guest posts one buffer on both queues
    // (then the bytes it gets are its own, in some order).
    unsafe { std::ptr::copy(src.as_ptr().add(offset), to.as_ptr(), dst.len()) }
    dst.bitmap().mark_dirty(0, dst.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_too_long_or_with_nul_are_refused() {
        assert!(ifreq_named("a23456789012345").is_ok());
        assert!(ifreq_named("a234567890123456").is_err());
        assert!(ifreq_named("ta\0p").is_err());
    }

    #[test]
    fn loopback_has_an_mtu() {
        assert!(device_mtu("lo").is_ok_and(|m| m >= 68));
        assert!(device_mtu("no-such-if0").is_err());
    }
}
