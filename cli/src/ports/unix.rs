//! `unix`: a uml_switch/VDE control socket; each client that connects is a
//! port of its own. On the command line: `--unix PATH`, `--vde DIR`.

use super::source::{one_of, Key, Name, PortType, SpecError, Values};
use super::spec::{Built, Configured};
use crate::values::{parse_group, parse_octal};
use std::path::PathBuf;
use switchyard_switch::ports::unix::{Layout, UnixConfig};

const PATH: Key = Key::text("path", "PATH", "a uml_switch-style control socket").one_of();
const DIRECTORY: Key = Key::text("directory", "DIR", "a VDE control directory (DIR/ctl)").one_of();
const MODE: Key =
    Key::text("mode", "OCTAL", "permission bits of the sockets").default("600 (660 with group)");
const DIR_MODE: Key = Key::text(
    "dir_mode",
    "OCTAL",
    "permission bits of a VDE directory switchyard creates",
);
const GROUP: Key = Key::text(
    "group",
    "GROUP",
    "group owner of the sockets (name or number)",
);

/// The unix type.
pub const TYPE: PortType = PortType {
    name: "unix",
    summary: "a uml_switch/VDE control socket; one port per client",
    keys: &[PATH, DIRECTORY, MODE, DIR_MODE, GROUP],
    flag: Some("--unix PATH or --vde DIR"),
    vlans: false,
    build,
};

fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
    let layout = match (v.take(&PATH), v.take(&DIRECTORY)) {
        (Some(p), None) => Layout::Socket(PathBuf::from(p.value)),
        (None, Some(d)) => Layout::Directory(PathBuf::from(d.value)),
        _ => return Err(one_of(v, &[&PATH, &DIRECTORY])),
    };
    let group = v.parse(&GROUP, parse_group)?;
    let mode = v
        .parse(&MODE, parse_octal)?
        .or(group.map(|_| 0o660))
        .or(Some(0o600));
    let dir_mode = v.parse(&DIR_MODE, parse_octal)?;
    Ok(Built {
        name: name.get(),
        port: Configured::Unix(UnixConfig::new(layout).with_permissions(mode, dir_mode, group)),
    })
}
