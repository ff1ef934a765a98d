//! The `tap` port: a Linux tap device (IFF_TAP | IFF_NO_PI), attached if it
//! exists (e.g. made persistent with `ip tuntap add`), created otherwise
//! (then it disappears when the switch exits, as with uml_switch).

use std::io;
use std::sync::Arc;
use switchyard_switch::port::{Port, SendError, Transmit};
use switchyard_switch::ports::receive::{frame_buffer, receive_loop, Received};
use switchyard_switch::sys::watch_readable;
use switchyard_switch::Switch;
use tun_tap::{Iface, Mode};

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

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
    iface: Arc<Iface>,
    created: bool,
    port_name: Option<String>,
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
    /// Attaches to tap `name`, or creates it.
    pub fn open(name: &str) -> Result<TapDevice, TapError> {
        if !valid_ifname(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        // Asked of the kernel: /sys may show another network namespace.
        let existed = nix::net::if_::if_nametoindex(name).is_ok();
        let iface = Iface::without_packet_info(name, Mode::Tap).map_err(|source| {
            let name = name.to_string();
            match source.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => TapError::Permission { name, source },
                Some(libc::EBUSY | libc::EINVAL) => TapError::Busy { name, source },
                _ => TapError::Io { name, source },
            }
        })?;
        set_nonblocking(&iface).map_err(|source| TapError::Io {
            name: name.to_string(),
            source,
        })?;
        Ok(TapDevice {
            iface: Arc::new(iface),
            created: !existed,
            port_name: None,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        self.iface.name()
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
            Box::new(TapTx(self.iface.clone())),
        ));
        let afd = match watch_readable(self.iface.clone()) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(tap = %name, "cannot watch tap device: {e}");
                return;
            }
        };
        switch.add_port(port.clone());
        stop.adopt(&port);
        tracing::info!(
            port = %port.name(), tap = %name,
            "port attached ({} tap)", if self.created { "created" } else { "existing" }
        );
        let mut buf = frame_buffer();
        let read = |iface: &Iface, b: &mut [u8]| iface.recv(b).map(|n| Received::Frame(0..n));
        let why = match receive_loop(&switch, &port, &afd, &mut buf, read).await {
            Ok(()) => "device gone",
            Err(e) => {
                // EBADFD: the device was deleted under us.
                tracing::warn!(tap = %name, "tap read failed: {e}");
                "device gone"
            }
        };
        switch.remove_port(id);
        let c = port.counters().snapshot();
        tracing::info!(
            port = %port.name(), tap = %name, reason = why,
            rx_frames = c.rx_frames, tx_frames = c.tx_frames,
            "port detached"
        );
    }
}

fn set_nonblocking(fd: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // SAFETY: the descriptor is borrowed from a live Iface for this call only.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Non-blocking write of one frame to the tap.
struct TapTx(Arc<Iface>);

impl Transmit for TapTx {
    fn transmit(&self, frame: &[u8]) -> Result<(), SendError> {
        self.0.send(frame).map(|_| ()).map_err(SendError::from_io)
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
