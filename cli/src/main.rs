//! `switchyard`: a virtual Ethernet switch for UML, QEMU and VDE guests,
//! tap devices and the host. Also answers to `uml_switch` and `vde_switch`.

mod args;
mod ports;
mod run;
mod settings;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let settings = match args::parse(argv) {
        Ok(s) => s,
        Err(usage) => {
            if usage.stdout {
                let _ = writeln!(std::io::stdout(), "{}", usage.message.trim_end());
            } else {
                let _ = writeln!(std::io::stderr(), "{}", usage.message.trim_end());
            }
            return ExitCode::from(usage.code.clamp(0, 255) as u8);
        }
    };
    init_logging(&settings.log_level);
    for note in &settings.notes {
        tracing::warn!("{note}");
    }
    match run::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "switchyard: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(nix::unistd::isatty(std::io::stderr()).unwrap_or(false))
        .with_target(false);
    // journald stamps each line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
