//! What to run, whichever command line it came from.

pub use crate::ports::TapSpec;
pub use crate::values::{parse_group, parse_octal};
use std::net::SocketAddr;
use std::path::PathBuf;
use switchyard_switch::ports::unix::{Layout, UnixConfig};
use switchyard_switch::EngineConfig;

/// Which program's conventions the daemon follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `switchyard` itself.
    Native,
    /// Invoked as `uml_switch`.
    UmlSwitch,
    /// Invoked as `vde_switch`.
    VdeSwitch,
}

/// When stdin ends the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinPolicy {
    /// Never watched (native; systemd gives /dev/null).
    Ignore,
    /// EOF ends the switch only when stdin is a terminal (uml_switch).
    TerminalEof,
    /// EOF on any stdin ends a foreground switch (vde_switch 2.3.2).
    AnyEof,
}

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Command-line conventions.
    pub flavor: Flavor,
    /// Control sockets to serve.
    pub controls: Vec<UnixConfig>,
    /// Tap devices to attach or create.
    pub taps: Vec<TapSpec>,
    /// Other transports (`--port`).
    pub ports: Vec<crate::ports::PortSpec>,
    /// Engine mode and FDB limits.
    pub engine: EngineConfig,
    /// Highest VDE port number.
    pub numports: u32,
    /// Async runtime threads (1: a single-threaded runtime); VDE/UML
    /// frames move on the data plane thread whatever this is.
    pub threads: usize,
    /// Hold unicast for a full unix-socket peer, pausing its sender,
    /// instead of tail-dropping it ([`switchyard_switch::Switch::set_backpressure`]).
    pub backpressure: bool,
    /// How long an idle unix port keeps polling for its next frame before
    /// its thread sleeps; zero: off ([`switchyard_switch::Switch::set_busy_poll`]).
    pub busy_poll: std::time::Duration,
    /// Detach from the terminal after binding.
    pub daemon: bool,
    /// Where to write the pid.
    pub pidfile: Option<PathBuf>,
    /// tracing filter, e.g. "info".
    pub log_level: String,
    /// What stdin EOF does.
    pub stdin: StdinPolicy,
    /// Remarks about the command line, logged once logging is up.
    pub notes: Vec<String>,
    /// Static MAC entries: (MAC, port name).
    pub static_macs: Vec<(switchyard_switch::MacAddr, String)>,
    /// VLAN rules by port name, first match first; none: VLAN-transparent.
    pub vlans: Vec<(
        switchyard_switch::vlan::PortPattern,
        switchyard_switch::PortVlans,
    )>,
    /// Metrics and control socket settings.
    pub extras: Extras,
}

impl Settings {
    /// The default control sockets when none are given: the VDE directory
    /// that `vde_plug`, QEMU and UML `ethN=vde` find without a path, and the
    /// control sockets Debian's and upstream's UML kernels try by default.
    pub fn default_controls(root: bool) -> Vec<UnixConfig> {
        if root {
            vec![
                UnixConfig::new(Layout::Directory(PathBuf::from("/run/vde.ctl"))),
                UnixConfig::new(Layout::Socket(PathBuf::from(
                    "/run/uml-utilities/uml_switch.ctl",
                ))),
                UnixConfig::new(Layout::Socket(PathBuf::from("/tmp/uml.ctl"))),
            ]
        } else {
            vec![
                UnixConfig::new(Layout::Directory(PathBuf::from("/tmp/vde.ctl"))),
                UnixConfig::new(Layout::Socket(PathBuf::from("/tmp/uml.ctl"))),
            ]
        }
    }
}

/// The parts of a config file beyond the ports and switch settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Where the metrics endpoint listens.
    pub metrics: Option<SocketAddr>,
    /// The control socket: path, mode, gid.
    pub control: Option<(PathBuf, Option<u32>, Option<u32>)>,
    /// The group whose members are admins on the control socket
    /// (`control.admin_group`, `--admin-group`).
    pub admin_group: Option<u32>,
    /// The file these came from, for reload.
    pub config_path: Option<PathBuf>,
    /// The command line, re-read on reload so flags still override.
    pub argv: Vec<std::ffi::OsString>,
}
