//! Hand-made Ethernet frames sent from inside a namespace through an
//! AF_PACKET socket: for frames the host kernel cannot make itself (an
//! 802.1Q tag on a kernel without VLAN support, a forged source).

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// Sends each of `frames` (whole Ethernet frames, no FCS) out of `dev` in
/// `ns`.
pub fn send_frames(ns: &Netns, dev: &str, frames: &[Vec<u8>]) -> Result<()> {
    let dev = dev.to_string();
    let frames = frames.to_vec();
    ns.run(move || send_here(&dev, &frames))?
}

fn send_here(dev: &str, frames: &[Vec<u8>]) -> Result<()> {
    let name = std::ffi::CString::new(dev).context("device name")?;
    // SAFETY: a plain libc call with a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no device {dev}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: creating a socket has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and is owned here only.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    for f in frames {
        addr.sll_addr[..6].copy_from_slice(&f[..6]);
        // SAFETY: buffer and address point to live memory of the given sizes.
        let n = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            bail!(
                "sending a frame on {dev}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// A broadcast ARP request from `src_mac` asking for `target`, with an
/// 802.1Q tag for `vid` when given.
pub fn arp_request(
    src_mac: [u8; 6],
    sender: std::net::Ipv4Addr,
    target: std::net::Ipv4Addr,
    vid: Option<u16>,
) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    if let Some(v) = vid {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&(v & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(f.len().max(60), 0);
    f
}
