//! `vhost-user`: guests whose virtio-net rings live in memory they share
//! with the switch (QEMU `-netdev vhost-user`, libvirt `type='vhostuser'`,
//! cloud-hypervisor, UML `virtio_uml.device=`). Switchyard is the device
//! (backend): it listens on a unix socket for one frontend at a time and,
//! when that one goes, waits for the next; or (`mode=client`) it connects
//! to a frontend that listens, and reconnects with backoff when that one
//! goes. The protocol is rust-vmm's
//! `vhost`/`vhost-user-backend`; the rings are `virtio-queue` over
//! `vm-memory`.
//!
//! Per connection: a daemon thread answers the frontend's messages, a
//! worker thread drains the guest's TX queue into the switch, and the
//! port's [`Transmit`](switchyard_switch::Transmit) fills the guest's RX
//! queue from whichever thread forwards to it.

mod backend;
mod config;
mod datapath;
mod frontends;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod relay;

pub use config::{parse_mac, parse_queues, VhostUserConfig, VhostUserMode, MAX_QUEUES};

use backend::{NetBackend, HELLO};
use datapath::{FromGuest, Rings, ToGuest};
use frontends::{Frontends, Reconnect};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_switch::ports::attachment::Attachment;
use switchyard_switch::{Port, Stop, Switch};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

/// Why a vhost-user port could not open.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The socket could not be bound.
    #[error("vhost-user port {port}: cannot listen on {path}: {message}")]
    Listen {
        /// The port.
        port: String,
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        message: String,
    },
}

/// A vhost-user port whose socket is bound (or, in client mode, whose
/// frontend's socket is known), ready to serve.
pub struct VhostUserPort {
    config: Arc<VhostUserConfig>,
    /// Where frontends come from.
    frontends: Frontends,
}

impl std::fmt::Debug for VhostUserPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserPort")
            .field("config", &self.config)
            .finish()
    }
}

impl VhostUserPort {
    /// Binds the socket (a stale socket file is replaced); in client mode
    /// nothing is bound: the frontend's socket may appear later.
    pub fn open(config: VhostUserConfig) -> Result<VhostUserPort, VhostUserError> {
        if config.mode == VhostUserMode::Client {
            remove_stale_dirs();
            return Ok(VhostUserPort {
                frontends: Frontends::Connect(Reconnect::new(&config.path)),
                config: Arc::new(config),
            });
        }
        let fail = |path: &std::path::Path, e: &dyn std::fmt::Display| VhostUserError::Listen {
            port: config.name.clone(),
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if std::fs::symlink_metadata(&config.path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            let _ = std::fs::remove_file(&config.path);
        }
        let public = UnixListener::bind(&config.path).map_err(|e| fail(&config.path, &e))?;
        remove_stale_dirs();
        Ok(VhostUserPort {
            config: Arc::new(config),
            frontends: Frontends::Listen(public),
        })
    }

    /// The socket file to remove on shutdown: ours in server mode; in
    /// client mode it is the frontend's.
    pub fn cleanup_path(&self) -> Option<PathBuf> {
        (self.config.mode == VhostUserMode::Server).then(|| self.config.path.clone())
    }

    /// Serves one frontend after another until `stop` (or until this task
    /// is dropped).
    pub async fn serve(self, switch: Arc<Switch>, stop: Stop) {
        let quit = Arc::new(AtomicBool::new(false));
        let wake = Wake {
            quit: quit.clone(),
            // A client sleeps in short steps and needs no wake-up call (and
            // must not ring the frontend's socket).
            path: (self.config.mode == VhostUserMode::Server).then(|| self.config.path.clone()),
        };
        let name = self.config.name.clone();
        let rt = tokio::runtime::Handle::current();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vhost-user {name}"))
            .spawn(move || self.accept_loop(&switch, &stop2, &quit, &rt));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(port = %name, "cannot start the vhost-user thread: {e}");
                return;
            }
        };
        let mut joined = tokio::task::spawn_blocking(move || thread.join());
        tokio::select! {
            _ = stop.stopped() => {}
            _ = &mut joined => return,
        }
        drop(wake);
        // Lets the thread hang up on its guest before the process exits.
        let _ = tokio::time::timeout(Duration::from_secs(2), joined).await;
    }

    fn accept_loop(
        mut self,
        switch: &Arc<Switch>,
        stop: &Stop,
        quit: &AtomicBool,
        rt: &tokio::runtime::Handle,
    ) {
        let name = self.config.name.clone();
        match self.config.mode {
            VhostUserMode::Server => {
                tracing::info!(port = %name, path = %self.config.path.display(), "vhost-user: waiting for a frontend");
            }
            VhostUserMode::Client => {
                tracing::info!(port = %name, path = %self.config.path.display(), "vhost-user: connecting to the frontend");
            }
        }
        while !quit.load(Ordering::Acquire) {
            let frontend = match self.frontends.next(&name, quit) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(port = %name, "vhost-user: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            if let Err(e) = self.one_frontend(frontend, switch, stop, rt) {
                tracing::warn!(port = %name, "vhost-user: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Serves one frontend until it goes.
    fn one_frontend(
        &self,
        frontend: UnixStream,
        switch: &Arc<Switch>,
        stop: &Stop,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), String> {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let rings = Arc::new(Rings::new(mem.clone()));
        let port = Arc::new(Port::new(
            switch.allocate_id(),
            self.config.name.clone(),
            "vhost-user",
            self.config.path.display().to_string(),
            Box::new(ToGuest {
                rings: rings.clone(),
            }),
        ));
        let from_guest = Arc::new(FromGuest::new(rings.clone(), switch.clone(), port.clone()));
        let backend = NetBackend::new(self.config.clone(), rings, from_guest)
            .map_err(|e| format!("eventfd: {e}"))?;
        let hello = backend.hello.clone();
        // Declared before the daemon: dropped after it.
        let _exit_events = backend.exit_events();
        let mut daemon = VhostUserDaemon::new(self.config.name.clone(), backend, mem)
            .map_err(|e| format!("cannot start the device: {e}"))?;
        for h in daemon.get_epoll_handlers() {
            h.register_listener(hello.as_raw_fd(), EventSet::IN, u64::from(HELLO))
                .map_err(|e| format!("cannot watch the hello event: {e}"))?;
        }
        hello.write(1).map_err(|e| format!("hello event: {e}"))?;
        let relay = hand_over(&mut daemon)?;
        let pumps = Pumps::start(frontend, relay).map_err(|e| format!("relay: {e}"))?;
        let attachment = Attachment::new(switch, stop, port.clone(), None);
        // Closing the port (stop, `ctl port remove`) hangs up on the guest.
        let closer = daemon.shutdown_handle().map(|h| {
            let port = port.clone();
            rt.spawn(async move {
                port.closed().await;
                h.shutdown();
            })
        });
        let result = daemon.wait();
        if let Some(c) = closer {
            c.abort();
        }
        port.close();
        pumps.finish();
        match result {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => attachment.detach("frontend disconnected"),
            Err(e) => attachment.detach(format!("frontend gone: {e}")),
        }
        Ok(())
    }
}

/// The two directions of the relay, each on its own thread.
struct Pumps {
    frontend: UnixStream,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pumps {
    fn start(frontend: UnixStream, relay: UnixStream) -> std::io::Result<Pumps> {
        let (f1, r1) = (frontend.try_clone()?, relay.try_clone()?);
        let down = std::thread::Builder::new()
            .name("vhost-user relay".into())
            .spawn(move || {
                if let Err(e) = relay::pump(&f1, &r1, true) {
                    tracing::debug!("vhost-user relay from the frontend: {e}");
                }
            })?;
        let f2 = frontend.try_clone()?;
        let up = std::thread::Builder::new()
            .name("vhost-user relay".into())
            .spawn(move || {
                if let Err(e) = relay::pump(&relay, &f2, false) {
                    tracing::debug!("vhost-user relay to the frontend: {e}");
                }
            })?;
        Ok(Pumps {
            frontend,
            threads: vec![down, up],
        })
    }

    /// Hangs up on the frontend and waits for both directions to end.
    fn finish(self) {
        let _ = self.frontend.shutdown(std::net::Shutdown::Both);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Connects the relay to a fresh `daemon`: rust-vmm's backend takes its
/// connection from a listener, so one lives for a moment in a directory
/// only we may enter, and is gone once the backend has accepted.
fn hand_over(daemon: &mut VhostUserDaemon<NetBackend>) -> Result<UnixStream, String> {
    let dir = private_dir().map_err(|e| format!("backend directory: {e}"))?;
    let path = dir.join("backend.sock");
    let result = (|| {
        let mut inner = Listener::new(&path, true).map_err(|e| format!("backend socket: {e}"))?;
        // Connected before the backend accepts: the listen backlog holds it.
        let relay =
            UnixStream::connect(&path).map_err(|e| format!("cannot reach the backend: {e}"))?;
        daemon
            .start(&mut inner)
            .map_err(|e| format!("backend accept: {e}"))?;
        Ok(relay)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh directory only this user may enter, for the backend's socket.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchyard-vhost-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Removes the backend directories of switchyards that are gone (killed
/// before they could clean up).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("switchyard-vhost-"))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Ends the accept loop when the switch stops or the serving task is
/// dropped: sets `quit` and, for a listening port, connects once, so a
/// blocked accept returns.
struct Wake {
    quit: Arc<AtomicBool>,
    path: Option<PathBuf>,
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Release);
        if let Some(path) = &self.path {
            let _ = std::os::unix::net::UnixStream::connect(path);
        }
    }
}
