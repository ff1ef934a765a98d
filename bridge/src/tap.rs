//! The `tap` port: a Linux tap device (IFF_TAP | IFF_NO_PI), attached if it
//! exists (e.g. made persistent with `ip tuntap add`), created otherwise
//! (then it disappears when the switch exits, as with uml_switch).
//!
//! Offloads: the tap is opened with IFF_VNET_HDR and TUNSETOFFLOAD
//! (checksum, TSO over IPv4 and IPv6), so the kernel hands over TCP
//! super-frames of up to 64 KiB with a partial checksum, and takes them
//! back whole: tap-to-tap TCP moves one frame per 64 KiB instead of one
//! per 1.5 KiB. Ports that cannot take such frames get them segmented in
//! software by the switch. A kernel that refuses either ioctl gets a
//! plain tap, as does `offload: false`.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use switchyard_switch::gather::Gathered;
use switchyard_switch::gso::{VnetHdr, MAX_GSO_FRAME};
use switchyard_switch::hold::Held;
use switchyard_switch::port::{transmit_each, Port, PortId, SendError, Transmit};
use switchyard_switch::ports::attachment::Attachment;
use switchyard_switch::sys::{watch_readable, SharedFd, RECEIVE_INTEREST};
use switchyard_switch::{Frames, Overflow, Switch};
use tokio::io::unix::AsyncFd;

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
use crate::sys::{self, MAX_IFNAME};

/// Failures opening a tap device.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be an interface name.
    #[error(
        "tap name {0:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)"
    )]
    BadName(String),
    /// No permission to open /dev/net/tun or create the device.
    #[error("cannot open tap {name}: {source}; run as root or with CAP_NET_ADMIN, or create it beforehand with `ip tuntap add dev {name} mode tap user $USER`")]
    Permission {
        /// The device.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// The name belongs to a device that is not a tap, or a tap in use.
    #[error("cannot attach tap {name}: {source}; the name is taken by a device that is not a free tap (is another program attached to it?)")]
    Busy {
        /// The device.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// Anything else.
    #[error("cannot open tap {name}: {source}")]
    Io {
        /// The device.
        name: String,
        /// The OS error.
        source: io::Error,
    },
}

/// An open tap device, not yet serving.
#[derive(Debug)]
pub struct TapDevice {
    tun: Arc<TunFd>,
    created: bool,
    port_name: Option<String>,
}

/// The open `/dev/net/tun` descriptor attached to one tap.
#[derive(Debug)]
struct TunFd {
    fd: OwnedFd,
    name: String,
    /// Frames carry a virtio-net header and offloads are on.
    vnet: bool,
}

impl AsRawFd for TunFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TunFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The offloads asked for: checksum and TCP segmentation, not UDP (the
/// switch cannot segment UDP in software).
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// Attaches to tap `name` with offloads when `offload` is set and the
/// kernel agrees, plain otherwise; says which it got.
fn open_tap(name: &str, offload: bool) -> io::Result<TunFd> {
    if offload {
        match sys::attach_tun(name, true) {
            Ok(fd) => match sys::set_tun_offloads(&fd, OFFLOADS) {
                Ok(()) => {
                    return Ok(TunFd {
                        fd,
                        name: name.to_string(),
                        vnet: true,
                    })
                }
                Err(e) => {
                    tracing::info!(tap = %name, "tap offloads refused ({e}): using a plain tap");
                    // Dropping the descriptor first: a tap this attach
                    // created goes, and the plain attach makes it anew.
                    drop(fd);
                }
            },
            // Permission and a busy name fail the plain attach the same way.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EACCES | libc::EBUSY)
                ) =>
            {
                return Err(e)
            }
            Err(e) => {
                tracing::info!(tap = %name, "tap with virtio-net header refused ({e}): using a plain tap");
            }
        }
    }
    Ok(TunFd {
        fd: sys::attach_tun(name, false)?,
        name: name.to_string(),
        vnet: false,
    })
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name.contains(['/', ':', '%'])
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl TapDevice {
    /// Attaches to tap `name`, or creates it, with offloads if the kernel
    /// has them.
    pub fn open(name: &str) -> Result<TapDevice, TapError> {
        Self::open_with(name, true)
    }

    /// Attaches to tap `name`, or creates it; `offload: false` asks for a
    /// plain tap (no virtio-net header, no TSO).
    pub fn open_with(name: &str, offload: bool) -> Result<TapDevice, TapError> {
        if !valid_ifname(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        // Asked of the kernel: /sys may show another network namespace.
        let existed = nix::net::if_::if_nametoindex(name).is_ok();
        let tun = open_tap(name, offload).map_err(|source| {
            let name = name.to_string();
            match source.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => TapError::Permission { name, source },
                Some(libc::EBUSY | libc::EINVAL) => TapError::Busy { name, source },
                _ => TapError::Io { name, source },
            }
        })?;
        Ok(TapDevice {
            tun: Arc::new(tun),
            created: !existed,
            port_name: None,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.tun.name
    }

    /// True when frames cross with a virtio-net header and TSO/checksum
    /// offloads are on.
    pub fn offloads(&self) -> bool {
        self.tun.vnet
    }

    /// Names the port (default `tap:DEVICE`).
    pub fn with_port_name(mut self, name: Option<String>) -> TapDevice {
        self.port_name = name;
        self
    }

    /// True when this switch created the device (it goes when we exit).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Makes the device a port and moves frames until it vanishes; the
    /// port is then removed and the switch keeps running.
    pub async fn serve(self, switch: Arc<Switch>, stop: switchyard_switch::Stop) {
        let name = self.name().to_string();
        let id = switch.allocate_id();
        let port = Arc::new(Port::new(
            id,
            self.port_name
                .clone()
                .unwrap_or_else(|| format!("tap:{name}")),
            "tap",
            format!("tap device {name}"),
            Box::new(TapTx(self.tun.clone())),
        ));
        let afd = match watch_readable(self.tun.clone()) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(tap = %name, "cannot watch tap device: {e}");
                return;
            }
        };
        let attached = Attachment::new(&switch, &stop, port.clone(), None);
        tracing::debug!(
            port = %port.name(), tap = %name, created = self.created, offloads = self.tun.vnet,
            "tap device in use"
        );
        let why = match receive(&switch, &port, &afd).await {
            Ok(()) => "device gone",
            Err(e) => {
                // EBADFD: the device was deleted under us.
                tracing::warn!(tap = %name, "tap read failed: {e}");
                "device gone"
            }
        };
        attached.detach(why);
    }
}

/// Frames read per wake-up before yielding to other tasks.
const BATCH: usize = 256;

/// Reads frames from the tap until the port is closed (`Ok`) or the
/// device fails (`Err`), forwarding each: offloaded frames with their
/// virtio-net header, the others as plain frames. Unicast a full guest
/// refuses is delivered before the next read (see
/// [`switchyard_switch::hold`]).
async fn receive(switch: &Switch, port: &Port, afd: &AsyncFd<SharedFd<TunFd>>) -> io::Result<()> {
    let vnet = afd.get_ref().0.vnet;
    let skip = if vnet { VnetHdr::LEN } else { 0 };
    // One byte more than the largest frame, so that an oversized one shows
    // up as too long instead of silently cut.
    let mut buf = vec![0u8; skip + MAX_GSO_FRAME + 1];
    let mut held = Held::default();
    loop {
        let mut guard = tokio::select! {
            _ = port.closed() => return Ok(()),
            g = afd.ready(RECEIVE_INTEREST) => g?,
        };
        let now = switch.now();
        let mut n = 0;
        while n < BATCH {
            let read = nix::unistd::read(&*guard.get_inner().0, &mut buf).map_err(io::Error::from);
            let len = match read {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            n += 1;
            let got = &buf[..len];
            if !vnet {
                switch.forward(port, Frames::Plain(&[got]), Overflow::Hold(&mut held), now);
            } else {
                match VnetHdr::parse(got) {
                    // Taken whole, a tiny segment size would make another
                    // tap's kernel cut it into thousands of frames.
                    Some(hdr) if hdr.gso_too_small() => {
                        port.drop_frame(switchyard_switch::DropReason::GsoTooSmall, now, None)
                    }
                    Some(hdr) => {
                        let frames = Frames::Offloaded(&hdr, &got[skip..]);
                        switch.forward(port, frames, Overflow::Hold(&mut held), now)
                    }
                    // Shorter than the header: nothing a kernel would send.
                    None => port.drop_frame(switchyard_switch::DropReason::TooShort, now, None),
                }
            }
            // A full VDE/UML guest: stop reading the tap until it takes what
            // it refused (the tap's own queue absorbs the wait).
            if !held.is_empty() && !held.release_unless_closed(port, || switch.now()).await {
                return Ok(());
            }
        }
        if n == BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// Non-blocking write of one frame to the tap.
struct TapTx(Arc<TunFd>);

impl TapTx {
    /// Writes `frame` behind the header `hdr` in one system call.
    fn write_with_header(&self, hdr: &VnetHdr, frame: &[u8]) -> Result<(), SendError> {
        let h = hdr.to_bytes();
        nix::sys::uio::writev(&*self.0, &[IoSlice::new(&h), IoSlice::new(frame)])
            .map(|_| ())
            .map_err(|e| SendError::from_io(e.into()))
    }
}

impl Transmit for TapTx {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| {
            if self.0.vnet {
                // A plain frame: no flags, no GSO.
                return self.write_with_header(&VnetHdr::default(), frame);
            }
            nix::unistd::write(&*self.0, frame)
                .map(|_| ())
                .map_err(|e| SendError::from_io(e.into()))
        })
    }

    fn transmit_offloaded(
        &self,
        _ingress: PortId,
        hdr: &VnetHdr,
        frame: &[u8],
    ) -> Option<Result<(), SendError>> {
        if !self.0.vnet {
            return None;
        }
        Some(self.write_with_header(hdr, frame))
    }

    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        // A plain frame behind a tap's header: no flags, no GSO.
        let plain = VnetHdr::default().to_bytes();
        let prefix: &[u8] = if self.0.vnet { &plain } else { &[] };
        Some(transmit_each(frames, |frame| {
            self.write_gathered(prefix, &frame)
        }))
    }

    fn transmit_offloaded_gathered(
        &self,
        _ingress: PortId,
        hdr: &VnetHdr,
        frame: &Gathered<'_>,
    ) -> Option<Result<(), SendError>> {
        if !self.0.vnet {
            return None;
        }
        Some(self.write_gathered(&hdr.to_bytes(), frame))
    }
}

impl TapTx {
    /// Writes `prefix` and `frame`'s pieces in one system call.
    fn write_gathered(&self, prefix: &[u8], frame: &Gathered<'_>) -> Result<(), SendError> {
        switchyard_switch::sys::write_gathered(&*self.0, prefix, frame)
            .map(|_| ())
            .map_err(SendError::from_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_ifname("tap0"));
        assert!(valid_ifname("a23456789012345"));
        assert!(!valid_ifname("a234567890123456"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("tap/0"));
        assert!(!valid_ifname("tap 0"));
        assert!(!valid_ifname("tap%d"));
    }
}
