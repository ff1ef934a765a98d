//! The system calls of the host-side ports that have no safe wrapper:
//! attaching to a tap through `/dev/net/tun` and asking a NIC for its MTU
//! (reads and writes go through nix's safe `read`, `write` and `writev`). Every `unsafe` of the crate is
//! here, each with the reason it holds.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

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
