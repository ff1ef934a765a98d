//! What to run, whichever command line it came from.

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

/// A tap port: the device and, from a config file, the port's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// The port's name; `None` means `tap:DEVICE`.
    pub name: Option<String>,
    /// The interface.
    pub device: String,
    /// Ask for checksum and TSO offloads (virtio-net header); a kernel
    /// that refuses gets a plain tap anyway.
    pub offload: bool,
}

impl TapSpec {
    /// A tap named after its device.
    pub fn device(device: impl Into<String>) -> TapSpec {
        TapSpec {
            name: None,
            device: device.into(),
            offload: true,
        }
    }

    /// The port's name as `switchyard ctl` shows it.
    pub fn port_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("tap:{}", self.device))
    }
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
    pub ports: Vec<crate::args::port_spec::PortSpec>,
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
    pub extras: crate::config::Extras,
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

/// Parses an octal permission mode such as `660` or `0o2770`.
pub fn parse_octal(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal permission mode (e.g. 660)"))
}

/// Resolves a group name or number to a gid.
pub fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("group {s:?} does not exist")),
        Err(e) => Err(format!("cannot look up group {s:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal("660"), Ok(0o660));
        assert_eq!(parse_octal("0660"), Ok(0o660));
        assert_eq!(parse_octal("0o2770"), Ok(0o2770));
        assert!(parse_octal("999").is_err());
        assert!(parse_octal("77777").is_err());
    }

    #[test]
    fn groups() {
        assert_eq!(parse_group("0"), Ok(0));
        assert_eq!(parse_group("root"), Ok(0));
        assert!(parse_group("no-such-group-switchyard").is_err());
    }
}
