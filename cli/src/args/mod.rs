//! Command lines: switchyard's own, and uml_switch's and vde_switch's for
//! when the binary is invoked under those names.

pub mod native;
pub mod port_spec;
pub mod uml_switch;
mod usage;
pub mod vde_switch;

use crate::settings::{Flavor, Settings};
use std::ffi::OsString;
pub use usage::Usage;

/// Which conventions apply, from the name the binary was run under.
pub fn flavor_of(argv0: &std::ffi::OsStr) -> Flavor {
    let name = std::path::Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "uml_switch" => Flavor::UmlSwitch,
        "vde_switch" => Flavor::VdeSwitch,
        _ => Flavor::Native,
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the switch.
    Run(Box<Settings>),
    /// `switchyard check-config FILE`: validate and exit.
    CheckConfig(std::path::PathBuf),
    /// `switchyard ctl …`: talk to a running daemon.
    Ctl(Vec<OsString>),
    /// `switchyard generate man|bash|zsh|fish`: packaging assets on stdout.
    Generate(String),
}

/// Parses a whole command line (argv[0] included).
pub fn parse(args: Vec<OsString>) -> Result<Invocation, Usage> {
    let argv0 = args.first().cloned().unwrap_or_default();
    match flavor_of(&argv0) {
        Flavor::UmlSwitch => uml_switch::parse(&args).map(|s| Invocation::Run(Box::new(s))),
        Flavor::VdeSwitch => vde_switch::parse(args).map(|s| Invocation::Run(Box::new(s))),
        Flavor::Native => match args.get(1).and_then(|a| a.to_str()) {
            Some("check-config") => match args.get(2) {
                Some(f) if args.len() == 3 => Ok(Invocation::CheckConfig(f.into())),
                _ => Err(Usage::error("usage: switchyard check-config FILE")),
            },
            Some("ctl") => Ok(Invocation::Ctl(args)),
            Some("generate") => match args.get(2).and_then(|a| a.to_str()) {
                Some(what @ ("man" | "bash" | "zsh" | "fish")) if args.len() == 3 => {
                    Ok(Invocation::Generate(what.to_string()))
                }
                _ => Err(Usage::error("usage: switchyard generate man|bash|zsh|fish")),
            },
            _ => native::parse(args).map(|s| Invocation::Run(Box::new(s))),
        },
    }
}
