//! The `unix` port: the uml_switch / VDE control protocol.
//!
//! A client connects to the control socket, sends one request naming its
//! datagram socket, and gets back (110 bytes) the address of a datagram
//! socket of its own on the switch, which was connected to the client's
//! socket before the reply (so it keeps working after vdeplug4 unlinks its
//! path). One datagram is one frame. The port lives as long as the control
//! connection.
//!
//! Two layouts: a VDE directory (`DIR/ctl`, data sockets `DIR/NNN.ID`) that
//! every client reaches, and a plain control socket path (uml_switch style,
//! data sockets with abstract names) that UML `ethN=daemon` reaches.

mod client;
mod data;
pub mod handshakes;
mod listener;
mod numbers;
pub mod request;

pub use handshakes::{refusals, waiting, HandshakeCounters, Refusal};
pub use listener::{out_of_descriptors, spare_descriptor, UnixControl};
pub use numbers::{ClaimError, PortNumbers};
pub use request::{ClientAddr, Request, RequestError, RequestKind};

use crate::port::{Port, PortId, SendError, Transmit};
use crate::ports::attachment::{Attachment, Client};
use crate::ports::plane::{self, Receiving};
use crate::ports::receive::receive_batched;
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::switch::Switch;
use crate::sys::{watch_readable, SharedFd};
use handshakes::{Room, Waiting, CROWDED_AFTER, MAX_PENDING, REQUEST_TIMEOUT};
use request::{encode_reply, ReplyAddr, SUN_PATH_LEN};
use std::collections::HashSet;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::Notify;

/// How often the control socket's file is checked: a socket deleted by
/// hand or by a /tmp cleaner is bound again.
const SOCKET_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Where the control socket lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A VDE directory: `DIR/ctl` plus the data sockets. Reached by
    /// `vde_plug DIR`, QEMU `-netdev vde,sock=DIR`, UML `ethN=vde,DIR` and
    /// UML `ethN=daemon,,unix,DIR/ctl`.
    Directory(PathBuf),
    /// A single control socket (uml_switch style), reached by UML
    /// `ethN=daemon,,unix,PATH`; data sockets get abstract names.
    Socket(PathBuf),
}

/// How to create a control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnixConfig {
    /// Where.
    pub layout: Layout,
    /// Permission bits of the control and data sockets; `None` leaves them
    /// to the umask (uml_switch's behaviour).
    pub mode: Option<u32>,
    /// Permission bits of a VDE directory we create; `None` derives them
    /// from `mode` as vde_switch does (x bits added, setgid).
    pub dir_mode: Option<u32>,
    /// Group owner of the sockets (and the directory).
    pub group: Option<u32>,
}

impl UnixConfig {
    /// A config with default permissions.
    pub fn new(layout: Layout) -> UnixConfig {
        UnixConfig {
            layout,
            mode: None,
            dir_mode: None,
            group: None,
        }
    }

    /// Sets the socket mode, directory mode and group.
    pub fn with_permissions(
        mut self,
        mode: Option<u32>,
        dir_mode: Option<u32>,
        group: Option<u32>,
    ) -> UnixConfig {
        self.mode = mode;
        self.dir_mode = dir_mode;
        self.group = group;
        self
    }
}

/// Failures of the unix control port.
#[derive(Debug, thiserror::Error)]
pub enum UnixPortError {
    /// Another live server answers on the path.
    #[error("control socket {path} is in use by {}; stop it or choose another path", .pid.map(|p| format!("pid {p}")).unwrap_or_else(|| "another process".into()))]
    InUse {
        /// The path.
        path: PathBuf,
        /// The other server's pid, when the kernel tells.
        pid: Option<i32>,
    },
    /// Something that is not a socket is in the way.
    #[error("{path} exists and is not a socket; remove it or choose another path")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A VDE directory path names something else.
    #[error("{path} exists and is not a directory; remove it or choose another path")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A path longer than `sun_path` allows.
    #[error("socket path {path} is longer than 107 bytes; choose a shorter path")]
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// Any other OS error, with what we were doing.
    #[error("{what} {path}: {source}")]
    Io {
        /// The action.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnixPortError + 'a {
    move |source| UnixPortError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
