//! `switchyard ctl`: a client for the control socket, printing tables for
//! people and JSON (`-j`) for programs.

mod capture;

use crate::control::default_path;
use crate::protocol::{Request, Response};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

/// `switchyard ctl`'s usage; the port types come from the port registry.
fn usage() -> String {
    let types = crate::ports::command_line_type_names();
    let types = match types.rsplit_once(", ") {
        Some((first, last)) => format!("{first} or {last}"),
        None => types,
    };
    format!(
        "\
usage: switchyard ctl [-s SOCKET] [-j] COMMAND
commands:
  ports                  ports with type, peer, state and counters
  fdb                    the forwarding table (MAC, VLAN, port, age)
  stats                  switch-wide settings and counters
  fdb flush [PORT]       empty the forwarding table, or one port's entries
  port add SPEC          add a port ({types} spec,
                         as for --port)
  port del NAME          remove a port
  capture PORT [-w FILE] stream PORT's frames as pcap to FILE or stdout
                         (e.g. | tcpdump -n -r -)
  reload                 re-read the configuration file (as SIGHUP does)
  macnat                 the MAC-NAT table
  top [--once] [--interval DURATION] [--sort KEY]
                         live per-port rates, full screen (q quits;
                         `ctl top --help`); --once -j: JSON for scripts
options:
  -s, --socket SOCKET    control socket [default: /run/switchyard/control.sock as root]
  -j, --json             print JSON
roles: root, the daemon's user and members of control.admin_group (--admin-group)
  may do everything; others who can open the socket may read, and capture or
  remove only ports whose client runs as their uid"
    )
}

/// Runs `switchyard ctl …` (argv[0] and "ctl" included).
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let mut args: Vec<String> = argv
        .iter()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut socket = default_path();
    let mut as_json = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-j" | "--json" => {
                as_json = true;
                args.remove(i);
            }
            "-s" | "--socket" if i + 1 < args.len() => {
                socket = PathBuf::from(args.remove(i + 1));
                args.remove(i);
            }
            "-h" | "--help" if args.iter().any(|a| a == "top") => {
                println!("{}", crate::top::USAGE);
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            _ => i += 1,
        }
    }
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    if let ["capture", rest @ ..] = words.as_slice() {
        return capture(&socket, rest);
    }
    if let ["top", rest @ ..] = words.as_slice() {
        return crate::top::main(&socket, as_json, rest);
    }
    let Some(req) = parse_words(&words) else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    let reply = match request(&socket, &req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard ctl: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(err) = reply.get("error").and_then(Value::as_str) {
        eprintln!("switchyard ctl: {err}");
        return ExitCode::from(1);
    }
    if as_json {
        println!("{reply}");
    } else {
        print_human(&reply);
    }
    ExitCode::SUCCESS
}

/// The request the command words ask for (`capture` is handled apart: its
/// reply is a stream); `None`: not a command.
fn parse_words(words: &[&str]) -> Option<Request> {
    let one = |w: &str| w.to_string();
    Some(match words {
        ["ports"] => Request::Ports,
        ["fdb"] => Request::Fdb,
        ["stats"] => Request::Stats,
        ["macnat"] => Request::Macnat,
        ["fdb", "flush"] => Request::FdbFlush { port: None },
        ["fdb", "flush", port] => Request::FdbFlush {
            port: Some(one(port)),
        },
        ["port", "add", spec] => Request::PortAdd { spec: one(spec) },
        ["port", "del", name] => Request::PortDel { name: one(name) },
        ["reload"] => Request::Reload,
        _ => return None,
    })
}

/// `switchyard ctl capture PORT [-w FILE]`.
fn capture(socket: &std::path::Path, args: &[&str]) -> ExitCode {
    let (port, file) = match args {
        [p] => (*p, None),
        [p, "-w", f] | ["-w", f, p] => (*p, Some(*f)),
        _ => {
            eprintln!("usage: switchyard ctl capture PORT [-w FILE]");
            return ExitCode::from(2);
        }
    };
    let mut s = match connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchyard ctl: {e}");
            return ExitCode::from(1);
        }
    };
    let req = Request::Capture {
        port: port.to_string(),
    };
    if let Err(e) = s.write_all(request_line(&req).as_bytes()) {
        eprintln!("switchyard ctl: cannot send request: {e}");
        return ExitCode::from(1);
    }
    let mut reader = BufReader::new(s);
    let mut ack = String::new();
    if let Err(e) = reader.read_line(&mut ack) {
        eprintln!("switchyard ctl: cannot read reply: {e}");
        return ExitCode::from(1);
    }
    let ack: Value = serde_json::from_str(&ack).unwrap_or(Value::Null);
    if let Some(e) = ack.get("error").and_then(Value::as_str) {
        eprintln!("switchyard ctl: {e}");
        return ExitCode::from(1);
    }
    // From here a stop signal ends the copy between records instead of
    // killing it mid-record.
    let signals = match capture::StopSignals::hold() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchyard ctl: cannot hold stop signals: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out: std::fs::File = match file {
        Some(f) => match std::fs::File::create(f) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("switchyard ctl: cannot create {f}: {e}");
                return ExitCode::from(1);
            }
        },
        // Unbuffered, not through stdout's line buffer: each write is
        // whole records.
        None => match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) => {
                eprintln!("switchyard ctl: cannot use stdout: {e}");
                return ExitCode::from(1);
            }
        },
    };
    if let Err(e) = reader
        .get_ref()
        .set_read_timeout(Some(capture::StopSignals::check_every()))
    {
        eprintln!("switchyard ctl: {e}");
        return ExitCode::from(1);
    }
    match capture::copy_records(&mut reader, &mut out, || signals.arrived()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard ctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn connect(socket: &std::path::Path) -> Result<UnixStream, String> {
    UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied on {}: run as root or as a member of the socket's group",
            socket.display()
        ),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "no switchyard is listening on {} (is it running? choose another socket with -s)",
            socket.display()
        ),
        _ => format!("cannot connect to {}: {e}", socket.display()),
    })
}

/// A request as one line.
fn request_line(req: &Request) -> String {
    // A request of plain strings always encodes.
    let mut line = serde_json::to_string(req).unwrap_or_default();
    line.push('\n');
    line
}

/// Sends one request and reads its reply.
pub(crate) fn request(socket: &std::path::Path, req: &Request) -> Result<Value, String> {
    let mut s = connect(socket)?;
    s.write_all(request_line(req).as_bytes())
        .map_err(|e| format!("cannot send request: {e}"))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| format!("cannot read reply: {e}"))?;
    serde_json::from_str(&reply).map_err(|e| format!("bad reply from the daemon: {e}"))
}

/// The non-zero MAC-NAT counters of each port, one `port counter value`
/// line each (every counter, zeros included, is in `-j` and `/metrics`).
fn print_mac_nat_counters(counters: &BTreeMap<String, BTreeMap<String, u64>>) {
    let rows: Vec<Vec<String>> = counters
        .iter()
        .flat_map(|(port, values)| {
            values
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(move |(name, v)| vec![port.clone(), name.clone(), v.to_string()])
        })
        .collect();
    if !rows.is_empty() {
        println!();
        table(&["PORT", "COUNTER", "VALUE"], rows);
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    for line in crate::top::screen::columns(header, rows) {
        println!("{line}");
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints a reply for people: tables for the listings, `key: value`
/// lines for the rest.
fn print_human(reply: &Value) {
    match serde_json::from_value::<Response>(reply.clone()) {
        Ok(Response::Ports { ports }) => table(
            &[
                "NAME", "TYPE", "STATE", "VLANS", "RX", "TX", "HELD", "DROPS", "PEER",
            ],
            ports
                .into_iter()
                .map(|p| {
                    let drops: u64 = p.drops.values().sum();
                    vec![
                        p.name,
                        p.kind,
                        p.state,
                        p.vlans.unwrap_or_else(|| "-".into()),
                        p.rx_frames.to_string(),
                        p.tx_frames.to_string(),
                        p.tx_held.to_string(),
                        drops.to_string(),
                        p.peer,
                    ]
                })
                .collect(),
        ),
        Ok(Response::Macnat { macnat, counters }) => {
            table(
                &["PORT", "VLAN", "ADDRESS", "MAC", "FROM", "AGE"],
                macnat
                    .into_iter()
                    .map(|e| {
                        vec![
                            e.port,
                            e.vlan.to_string(),
                            e.address,
                            e.mac,
                            e.learned_from,
                            format!("{}s", e.age_seconds),
                        ]
                    })
                    .collect(),
            );
            print_mac_nat_counters(&counters);
        }
        Ok(Response::Fdb { fdb }) => table(
            &["MAC", "VLAN", "PORT", "AGE"],
            fdb.into_iter()
                .map(|e| {
                    vec![
                        e.mac,
                        e.vlan.to_string(),
                        e.port,
                        format!("{}s", e.age_seconds),
                    ]
                })
                .collect(),
        ),
        _ => {
            if let Some(m) = reply.as_object() {
                for (k, v) in m {
                    println!("{k}: {}", s(v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_form_makes_its_request() {
        let cases: [(&[&str], Request); 9] = [
            (&["ports"], Request::Ports),
            (&["fdb"], Request::Fdb),
            (&["stats"], Request::Stats),
            (&["macnat"], Request::Macnat),
            (&["fdb", "flush"], Request::FdbFlush { port: None }),
            (
                &["fdb", "flush", "p"],
                Request::FdbFlush {
                    port: Some("p".into()),
                },
            ),
            (&["port", "add", "s"], Request::PortAdd { spec: "s".into() }),
            (&["port", "del", "n"], Request::PortDel { name: "n".into() }),
            (&["reload"], Request::Reload),
        ];
        for (words, req) in cases {
            assert_eq!(parse_words(words), Some(req), "{words:?}");
        }
        for bad in [
            &["ports", "x"][..],
            &["fdb", "flush", "a", "b"],
            &["port", "add"],
            &[],
        ] {
            assert_eq!(parse_words(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_usage_names_every_port_type() {
        let usage = usage();
        let add = usage
            .split("port add SPEC")
            .nth(1)
            .and_then(|r| r.split("port del").next())
            .unwrap_or_default();
        let types = crate::ports::command_line_type_names();
        let types: Vec<&str> = types.split(", ").collect();
        assert!(types.len() >= 5, "{types:?}");
        for t in types {
            let word = |w: &str| w.trim_matches(|c: char| !c.is_alphanumeric()) == t;
            assert!(
                add.split_whitespace().any(word),
                "`port add` forgets {t}: {add}"
            );
        }
    }
}
