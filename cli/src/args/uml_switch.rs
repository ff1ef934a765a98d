//! uml_switch's command line, parsed as the original does: exact
//! single-dash words, in any order.

use super::usage::Usage;
use crate::settings::{Flavor, Settings, StdinPolicy, TapSpec};
use std::ffi::OsString;
use std::path::PathBuf;
use switchyard_switch::ports::unix::{Layout, UnixConfig};
use switchyard_switch::{EngineConfig, FdbConfig, Mode};

/// The original's usage text.
pub const USAGE: &str =
    "Usage : uml_switch [ -unix control-socket ] [ -hub ] [ -tap tap-device ] [ -daemon ]\n\
(switchyard in uml_switch compatibility mode; -compat-v0 is not supported)";

/// uml_switch's built-in control socket.
pub const DEFAULT_CTL: &str = "/tmp/uml.ctl";

/// Parses `uml_switch [ -unix CTL ] [ -hub ] [ -tap IF ] [ -daemon ]`.
pub fn parse(args: &[OsString]) -> Result<Settings, Usage> {
    let mut ctl: Option<PathBuf> = None;
    let mut hub = false;
    let mut taps = Vec::new();
    let mut daemon = false;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-unix") => match it.next() {
                Some(p) => ctl = Some(PathBuf::from(p)),
                None => return Err(Usage::error(format!("-unix needs a control socket path\n{USAGE}"))),
            },
            Some("-hub") => hub = true,
            Some("-tap") => match it.next() {
                Some(t) => taps.push(t.to_string_lossy().into_owned()),
                None => return Err(Usage::error(format!("-tap needs a device name\n{USAGE}"))),
            },
            Some("-daemon") => daemon = true,
            Some("-compat-v0") => {
                return Err(Usage::error(format!(
                    "-compat-v0: version 0 clients are not supported; use a current UML kernel\n{USAGE}"
                )))
            }
            Some("-h" | "--help" | "-help") => return Err(Usage::info(USAGE)),
            _ => {
                return Err(Usage::error(format!(
                    "Bad option : {}\n{USAGE}",
                    a.to_string_lossy()
                )))
            }
        }
    }
    let ctl = ctl.unwrap_or_else(|| PathBuf::from(DEFAULT_CTL));
    Ok(Settings {
        flavor: Flavor::UmlSwitch,
        // uml_switch never chmods its socket: the umask decides.
        controls: vec![UnixConfig::new(Layout::Socket(ctl))],
        taps: taps.into_iter().map(TapSpec::device).collect(),
        ports: Vec::new(),
        engine: EngineConfig::new(
            if hub { Mode::Hub } else { Mode::Switch },
            FdbConfig::default(),
        ),
        numports: 1024,
        threads: 1,
        backpressure: true,
        busy_poll: std::time::Duration::ZERO,
        daemon,
        pidfile: None,
        log_level: "info".into(),
        stdin: StdinPolicy::TerminalEof,
        notes: Vec::new(),
        static_macs: Vec::new(),
        vlans: Vec::new(),
        extras: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Settings, Usage> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&v)
    }

    #[test]
    fn debian_init_script_command_line() {
        let s = p(&[
            "uml_switch",
            "-unix",
            "/var/run/uml-utilities/uml_switch.ctl",
            "-tap",
            "tap0",
        ])
        .expect("parses");
        assert_eq!(
            s.controls[0].layout,
            Layout::Socket("/var/run/uml-utilities/uml_switch.ctl".into())
        );
        assert_eq!(s.controls[0].mode, None);
        assert_eq!(s.taps, vec![TapSpec::device("tap0")]);
        assert_eq!(s.stdin, StdinPolicy::TerminalEof);
    }

    #[test]
    fn defaults_and_errors() {
        let s = p(&["uml_switch"]).expect("parses");
        assert_eq!(s.controls[0].layout, Layout::Socket(DEFAULT_CTL.into()));
        assert_eq!(s.engine.mode, Mode::Switch);
        assert_eq!(
            p(&["uml_switch", "-hub", "-daemon"])
                .expect("parses")
                .engine
                .mode,
            Mode::Hub
        );
        assert_eq!(p(&["uml_switch", "--unix", "x"]).expect_err("bad").code, 2);
        assert_eq!(p(&["uml_switch", "-unix"]).expect_err("bad").code, 2);
        assert_eq!(p(&["uml_switch", "-compat-v0"]).expect_err("bad").code, 2);
    }
}
