//! vde_switch 2.3.2's command line (getopt_long style), for scripts that
//! start `vde_switch`.

use super::usage::Usage;
use crate::settings::{parse_group, parse_octal, Flavor, Settings, StdinPolicy, TapSpec};
use clap::{Arg, ArgAction, Command};
use std::ffi::OsString;
use std::path::PathBuf;
use switchyard_switch::ports::unix::{Layout, UnixConfig};
use switchyard_switch::{EngineConfig, FdbConfig, Mode};

fn command() -> Command {
    let value =
        |id: &'static str, short: Option<char>, longs: &[&'static str], help: &'static str| {
            let mut a = Arg::new(id)
                .long(longs[0])
                .num_args(1)
                .action(ArgAction::Set)
                .help(help);
            for l in &longs[1..] {
                a = a.visible_alias(*l);
            }
            if let Some(s) = short {
                a = a.short(s);
            }
            a
        };
    let flag = |id: &'static str, short: Option<char>, long: &'static str, help: &'static str| {
        let mut a = Arg::new(id)
            .long(long)
            .action(ArgAction::SetTrue)
            .help(help);
        if let Some(s) = short {
            a = a.short(s);
        }
        a
    };
    Command::new("vde_switch")
        .about("switchyard in vde_switch compatibility mode")
        .disable_version_flag(true)
        .infer_long_args(true)
        .arg(value(
            "sock",
            Some('s'),
            &["sock", "vdesock", "unix"],
            "control directory",
        ))
        .arg(value(
            "mode",
            Some('m'),
            &["mode"],
            "socket permissions, octal (default 600)",
        ))
        .arg(value(
            "dirmode",
            None,
            &["dirmode"],
            "directory permissions, octal (default 2700)",
        ))
        .arg(value(
            "group",
            Some('g'),
            &["group"],
            "group owner of the sockets",
        ))
        .arg(value(
            "numports",
            Some('n'),
            &["numports"],
            "number of ports (default 32)",
        ))
        .arg(flag("hub", Some('x'), "hub", "be a hub"))
        .arg(flag(
            "fstp",
            Some('F'),
            "fstp",
            "fast spanning tree (not supported)",
        ))
        .arg(value(
            "macaddr",
            None,
            &["macaddr"],
            "switch MAC for FSTP (ignored)",
        ))
        .arg(value(
            "priority",
            None,
            &["priority"],
            "FSTP priority (ignored)",
        ))
        .arg(value(
            "hashsize",
            None,
            &["hashsize"],
            "FDB buckets (ignored: the table grows as needed)",
        ))
        .arg(flag("daemon", Some('d'), "daemon", "run in the background"))
        .arg(value(
            "pidfile",
            Some('p'),
            &["pidfile"],
            "write the pid to FILE",
        ))
        .arg(value(
            "rcfile",
            Some('f'),
            &["rcfile"],
            "startup script (not supported)",
        ))
        .arg(value(
            "mgmt",
            Some('M'),
            &["mgmt"],
            "management socket (not supported)",
        ))
        .arg(value(
            "mgmtmode",
            None,
            &["mgmtmode"],
            "management socket mode (ignored)",
        ))
        .arg(value(
            "mgmtgroup",
            None,
            &["mgmtgroup"],
            "management socket group (ignored)",
        ))
        .arg(value(
            "debugclients",
            Some('D'),
            &["debugclients"],
            "debug clients (ignored)",
        ))
        .arg(value("tap", Some('t'), &["tap"], "attach a tap device").action(ArgAction::Append))
        .arg(flag("nostdin", None, "nostdin", "do not end on stdin EOF"))
        .arg(flag("version", Some('v'), "version", "print the version"))
}

/// Parses a vde_switch command line.
pub fn parse(args: Vec<OsString>) -> Result<Settings, Usage> {
    let m = command().try_get_matches_from(args)?;
    if m.get_flag("version") {
        return Err(Usage::info(format!(
            "VDE 2.3.2 compatible switch (switchyard {})",
            env!("CARGO_PKG_VERSION")
        )));
    }
    for (id, what) in [
        ("fstp", "the fast spanning tree (-F)"),
        ("rcfile", "startup scripts (-f)"),
        ("mgmt", "the management socket (-M)"),
    ] {
        let given = m.get_flag_or_value(id);
        if given {
            return Err(Usage::error(format!(
                "vde_switch: switchyard does not support {what}; remove the option \
                 (switchyard ctl will offer management)"
            )));
        }
    }
    let mut notes = Vec::new();
    for id in [
        "macaddr",
        "priority",
        "hashsize",
        "mgmtmode",
        "mgmtgroup",
        "debugclients",
    ] {
        if m.get_one::<String>(id).is_some() {
            notes.push(format!(
                "ignoring vde_switch option --{id}: it has no effect in switchyard"
            ));
        }
    }
    let octal = |id: &str| -> Result<Option<u32>, Usage> {
        m.get_one::<String>(id)
            .map(|s| parse_octal(s).map_err(|e| Usage::error(format!("--{id}: {e}"))))
            .transpose()
    };
    let mode = octal("mode")?;
    let dirmode = octal("dirmode")?;
    // vde_switch derives one from the other: the directory gets the
    // socket's bits plus x and setgid; the socket drops the x bits.
    let (mode, dirmode) = match (mode, dirmode) {
        (Some(m), d) => (m, d.unwrap_or(0o2000 | m | ((m & 0o444) >> 2))),
        (None, Some(d)) => (d & 0o666, d),
        (None, None) => (0o600, 0o2700),
    };
    let group = m
        .get_one::<String>("group")
        .map(|g| parse_group(g).map_err(|e| Usage::error(format!("--group: {e}"))))
        .transpose()?;
    let numports = match m.get_one::<String>("numports") {
        Some(n) => n
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=65_535).contains(n))
            .ok_or_else(|| {
                Usage::error(format!("--numports: {n:?} is not a number from 1 to 65535"))
            })?,
        None => 32,
    };
    let root = nix::unistd::geteuid().is_root();
    let dir = m
        .get_one::<String>("sock")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(if root {
                "/var/run/vde.ctl"
            } else {
                "/tmp/vde.ctl"
            })
        });
    let daemon = m.get_flag("daemon");
    Ok(Settings {
        flavor: Flavor::VdeSwitch,
        controls: vec![UnixConfig::new(Layout::Directory(dir)).with_permissions(
            Some(mode),
            Some(dirmode),
            group,
        )],
        ports: Vec::new(),
        taps: m
            .get_many::<String>("tap")
            .map(|v| v.map(TapSpec::device).collect())
            .unwrap_or_default(),
        engine: EngineConfig::new(
            if m.get_flag("hub") {
                Mode::Hub
            } else {
                Mode::Switch
            },
            FdbConfig::default(),
        ),
        numports,
        threads: 1,
        backpressure: true,
        busy_poll: std::time::Duration::ZERO,
        daemon,
        pidfile: m.get_one::<String>("pidfile").map(PathBuf::from),
        log_level: "info".into(),
        stdin: if daemon || m.get_flag("nostdin") {
            StdinPolicy::Ignore
        } else {
            StdinPolicy::AnyEof
        },
        notes,
        static_macs: Vec::new(),
        vlans: Vec::new(),
        extras: Default::default(),
    })
}

trait FlagOrValue {
    fn get_flag_or_value(&self, id: &str) -> bool;
}

impl FlagOrValue for clap::ArgMatches {
    fn get_flag_or_value(&self, id: &str) -> bool {
        match self.try_get_one::<bool>(id) {
            Ok(Some(b)) => *b,
            _ => self.try_get_one::<String>(id).ok().flatten().is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Settings, Usage> {
        parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn common_command_lines() {
        let s = p(&[
            "vde_switch",
            "-s",
            "/tmp/sw",
            "-x",
            "-t",
            "tap0",
            "--tap=tap1",
            "-n",
            "8",
        ])
        .expect("parses");
        assert_eq!(s.controls[0].layout, Layout::Directory("/tmp/sw".into()));
        assert_eq!(s.engine.mode, Mode::Hub);
        assert_eq!(
            s.taps,
            vec![TapSpec::device("tap0"), TapSpec::device("tap1")]
        );
        assert_eq!(s.numports, 8);
        assert_eq!(s.stdin, StdinPolicy::AnyEof);
        assert_eq!(
            (s.controls[0].mode, s.controls[0].dir_mode),
            (Some(0o600), Some(0o2700))
        );
        let s = p(&[
            "vde_switch",
            "--sock=/tmp/sw",
            "-m",
            "660",
            "-d",
            "-p",
            "/tmp/pid",
        ])
        .expect("parses");
        assert_eq!(
            (s.controls[0].mode, s.controls[0].dir_mode),
            (Some(0o660), Some(0o2770))
        );
        assert!(s.daemon);
        assert_eq!(s.stdin, StdinPolicy::Ignore);
        let s = p(&["vde_switch", "--vdesock", "/tmp/a", "--dirmode", "2770"]).expect("parses");
        assert_eq!(
            (s.controls[0].mode, s.controls[0].dir_mode),
            (Some(0o660), Some(0o2770))
        );
    }

    #[test]
    fn unsupported_and_ignored() {
        let e = p(&["vde_switch", "-F"]).expect_err("fstp");
        assert_eq!(e.code, 2);
        assert!(e.message.contains("spanning tree"));
        assert_eq!(
            p(&["vde_switch", "-M", "/tmp/m"]).expect_err("mgmt").code,
            2
        );
        assert_eq!(p(&["vde_switch", "--bogus"]).expect_err("bad").code, 2);
        let s = p(&["vde_switch", "--hashsize", "256"]).expect("parses");
        assert_eq!(s.notes.len(), 1);
        assert_eq!(p(&["vde_switch", "-v"]).expect_err("version").code, 0);
    }
}
