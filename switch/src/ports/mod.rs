//! Socket ports. One module per transport, each with the same small
//! surface: open (synchronously, so errors surface before the daemon
//! detaches), serve (the receive loop), a non-blocking send, counters.

pub mod attachment;
pub mod mcast;
pub mod plane;
pub mod receive;
pub mod stream;
pub mod udp;
pub mod unix;
pub mod vxlan;

use std::io;

/// Why a socket port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A system call failed.
    #[error("port {port}: cannot {what} {addr}: {source}")]
    Io {
        /// The port's name.
        port: String,
        /// What was being done ("bind", "join group" …).
        what: &'static str,
        /// The address or path involved.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// The settings do not make sense.
    #[error("port {port}: {message}")]
    Config {
        /// The port's name.
        port: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

impl PortError {
    pub(crate) fn io(
        port: &str,
        what: &'static str,
        addr: impl std::fmt::Display,
    ) -> impl FnOnce(io::Error) -> PortError {
        let port = port.to_string();
        let addr = addr.to_string();
        move |source| PortError::Io {
            port,
            what,
            addr,
            source,
        }
    }
}

/// Where a datagram or stream port's socket lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An IPv4 or IPv6 address and port.
    Inet(std::net::SocketAddr),
    /// A unix socket path.
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Inet(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    /// `HOST:PORT` (`[V6]:PORT` for IPv6) or a path containing a `/`.
    fn from_str(s: &str) -> Result<Endpoint, String> {
        if s.contains('/') {
            return Ok(Endpoint::Unix(s.into()));
        }
        s.parse::<std::net::SocketAddr>()
            .map(Endpoint::Inet)
            .map_err(|_| format!("{s:?} is neither ADDRESS:PORT (e.g. 127.0.0.1:5000, [::1]:5000) nor a socket path (containing '/')"))
    }
}

/// Removes a stale unix socket file at `path` before binding; refuses to
/// remove anything that is not a socket.
pub(crate) fn remove_stale_socket_file(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            "127.0.0.1:5000".parse::<Endpoint>(),
            Ok(Endpoint::Inet("127.0.0.1:5000".parse().expect("addr")))
        );
        assert_eq!(
            "[::1]:5000".parse::<Endpoint>(),
            Ok(Endpoint::Inet("[::1]:5000".parse().expect("addr")))
        );
        assert_eq!(
            "/tmp/q.sock".parse::<Endpoint>(),
            Ok(Endpoint::Unix("/tmp/q.sock".into()))
        );
        assert!("localhost".parse::<Endpoint>().is_err());
    }
}
