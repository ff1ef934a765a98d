//! `switchyard ctl top`: per-port rates from the daemon's counters, polled
//! over the control socket. Full screen on a terminal; `--once` (and
//! `-j`) print the rates over one interval for scripts.
//!
//! The rates are computed here from two polls of `ports` and `stats`
//! ([`rates`], pure), shown by [`screen`] (text) and [`term`] (the
//! terminal), so the daemon keeps no per-client state.

pub mod rates;
pub mod screen;
pub mod term;

use crate::protocol::{Request, Response};
use rates::{compute, sort, FdbCounters, Sample, SortKey, View};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `ctl top`'s own usage.
pub const USAGE: &str = "\
usage: switchyard ctl [-s SOCKET] [-j] top [--once] [--interval DURATION] [--sort KEY]
  per-port frames/s and bits/s in and out, drops/s by reason, held frames,
  FDB size and learn/move/age rates; full screen on a terminal, refreshed
  every interval (default 1s); keys: t traffic, f frames, d drops, h held,
  n name, s next sort key, q quit.
  --once              measure over one interval, print, exit
  -j                  JSON (with --once: one object; without: one line per interval)
  --interval DURATION the time to measure rates over (e.g. 500ms, 1s, 5s)
  --sort KEY          traffic (default), frames, drops, held or name";

/// The options after `top`.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    once: bool,
    interval: Duration,
    sort: SortKey,
}

fn parse(args: &[&str]) -> Result<Options, String> {
    let mut o = Options {
        once: false,
        interval: Duration::from_secs(1),
        sort: SortKey::default(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (*a, None),
        };
        let mut value = || {
            inline
                .or_else(|| it.next().copied())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--once" => o.once = true,
            "--interval" | "-i" => {
                o.interval = crate::values::parse_duration(value()?)?;
                if o.interval.is_zero() {
                    return Err("--interval must be more than 0".into());
                }
            }
            "--sort" => {
                let v = value()?;
                o.sort = SortKey::parse(v).ok_or_else(|| format!("unknown sort key {v:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// Runs `switchyard ctl top ARGS` against `socket`.
pub fn main(socket: &Path, as_json: bool, args: &[&str]) -> ExitCode {
    if args.iter().any(|a| *a == "-h" || *a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("switchyard ctl top: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let poll = || poll(socket, start);
    let interactive =
        !opts.once && !as_json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let result = if interactive {
        term::run(poll, opts.interval, opts.sort)
    } else {
        plain(poll, &opts, as_json)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard ctl top: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints the rates of each interval as a table or a JSON line: once with
/// `--once`, else until the daemon cannot be reached or stdout closes.
fn plain(
    mut poll: impl FnMut() -> Result<Sample, String>,
    opts: &Options,
    as_json: bool,
) -> Result<(), String> {
    use std::io::Write;
    let mut prev = poll()?;
    loop {
        std::thread::sleep(opts.interval);
        let cur = poll()?;
        let mut view: View = compute(&prev, &cur);
        sort(&mut view.ports, opts.sort);
        let text = if as_json {
            serde_json::to_string(&view).map_err(|e| format!("cannot encode: {e}"))?
        } else {
            let mut lines = vec![screen::summary(&view, opts.sort)];
            lines.extend(screen::table(&view));
            lines.join("\n") + "\n"
        };
        let mut out = std::io::stdout();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() || opts.once {
            return Ok(());
        }
        prev = cur;
    }
}

/// One poll: the ports, then the FDB counters; `at` is taken between the
/// request for the ports and its reply, where their counters were read.
fn poll(socket: &Path, start: Instant) -> Result<Sample, String> {
    let before = start.elapsed();
    let ports = match ask(socket, &Request::Ports)? {
        Response::Ports { ports } => ports,
        other => return Err(format!("unexpected reply to ports: {other:?}")),
    };
    let after = start.elapsed();
    let fdb = match ask(socket, &Request::Stats)? {
        Response::Stats(s) => FdbCounters::from(&*s),
        other => return Err(format!("unexpected reply to stats: {other:?}")),
    };
    Ok(Sample {
        at: before + (after.saturating_sub(before)) / 2,
        ports,
        fdb,
    })
}

fn ask(socket: &Path, req: &Request) -> Result<Response, String> {
    let reply = crate::ctl::request(socket, req)?;
    match serde_json::from_value(reply) {
        Ok(Response::Error { error }) => Err(error),
        Ok(r) => Ok(r),
        Err(e) => Err(format!("bad reply from the daemon: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse(&[]).expect("no options");
        assert!(!o.once && o.interval == Duration::from_secs(1) && o.sort == SortKey::Traffic);
        let o = parse(&["--once", "--interval", "500ms", "--sort=drops"]).expect("parses");
        assert_eq!(
            o,
            Options {
                once: true,
                interval: Duration::from_millis(500),
                sort: SortKey::Drops
            }
        );
        assert_eq!(
            parse(&["-i", "2"]).map(|o| o.interval),
            Ok(Duration::from_secs(2))
        );
        for bad in [
            &["--interval"][..],
            &["--interval", "0"],
            &["--interval", "x"],
            &["--sort", "size"],
            &["--bogus"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
