//! `switchyard`: a virtual Ethernet switch for UML, QEMU and VDE guests,
//! tap devices and the host. Also answers to `uml_switch` and `vde_switch`.

use switchyard_cli::{args, ctl, run};

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let settings = match args::parse(argv) {
        Ok(args::Invocation::Run(s)) => *s,
        Ok(args::Invocation::CheckConfig(path)) => return check_config(&path),
        Ok(args::Invocation::Ctl(argv)) => return ctl::main(argv),
        Ok(args::Invocation::Generate(what)) => return generate(&what),
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
            let _ = writeln!(std::io::stderr(), "switchyard: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The man page: clap_mangen's sections, except that the examples, client
/// lines and port specs after the options keep their line breaks (groff
/// would fill them into one paragraph).
fn render_man(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let extra = cmd.get_after_help().map(|h| h.to_string());
    let man = clap_mangen::Man::new(cmd);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if let Some(extra) = extra {
        writeln!(out, ".SH EXTRA\n.nf")?;
        for line in extra.lines() {
            // roff: a backslash is an escape; a line starting with `.` or
            // `'` would be a request.
            let line = line.replace('\\', "\\e");
            if line.starts_with(['.', '\'']) {
                writeln!(out, "\\&{line}")?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
        writeln!(out, ".fi")?;
    }
    man.render_version_section(out)
}

/// Writes the man page or a shell completion script to stdout.
fn generate(what: &str) -> ExitCode {
    let mut cmd = args::native::command();
    let mut out = std::io::stdout();
    let result = match what {
        "man" => render_man(cmd, &mut out),
        shell => {
            let shell = match shell {
                "bash" => clap_complete::Shell::Bash,
                "zsh" => clap_complete::Shell::Zsh,
                _ => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "switchyard", &mut out);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "switchyard generate: {e}");
            ExitCode::from(1)
        }
    }
}

/// `switchyard check-config FILE`: 0 when the file is valid, 2 otherwise.
fn check_config(path: &std::path::Path) -> ExitCode {
    let argv = vec![
        "switchyard".into(),
        "--config".into(),
        path.as_os_str().to_owned(),
    ];
    match args::native::parse(argv) {
        Ok(s) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok ({} control sockets, {} taps, {} other ports)",
                path.display(),
                s.controls.len(),
                s.taps.len(),
                s.ports.len()
            );
            ExitCode::SUCCESS
        }
        Err(usage) => {
            let _ = writeln!(std::io::stderr(), "{}", usage.message.trim_end());
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each cause added only when the message so far
/// does not already say it (library errors quote their OS error).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // rust-vmm's virtio-queue logs what a guest got wrong on every call; a
    // hostile guest could flood the log through it. The vhost-user port
    // counts those itself and logs them at most once a minute.
    if let Ok(quiet) = "virtio_queue=off".parse() {
        filter = filter.add_directive(quiet);
    }
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
