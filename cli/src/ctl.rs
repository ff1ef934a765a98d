//! `switchyard ctl`: a client for the control socket, printing tables for
//! people and JSON (`-j`) for programs.

use crate::control::default_path;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: switchyard ctl [-s SOCKET] [-j] COMMAND
commands:
  ports                  ports with type, peer, state and counters
  fdb                    the forwarding table (MAC, VLAN, port, age)
  stats                  switch-wide settings and counters
  fdb flush [PORT]       empty the forwarding table, or one port's entries
  port add SPEC          add a port (udp, mcast, stream, vxlan spec as for --port)
  port del NAME          remove a port
  capture PORT [-w FILE] stream PORT's frames as pcap to FILE or stdout
                         (e.g. | tcpdump -n -r -)
  reload                 re-read the configuration file (as SIGHUP does)
  macnat                 the MAC-NAT table
options:
  -s, --socket SOCKET    control socket [default: /run/switchyard/control.sock as root]
  -j, --json             print JSON";

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
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => i += 1,
        }
    }
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let (cmd, rest): (&str, &[&str]) = match words.as_slice() {
        ["fdb", "flush", rest @ ..] if rest.len() <= 1 => ("fdb-flush", rest),
        ["port", "add", rest @ ..] if rest.len() == 1 => ("port-add", rest),
        ["port", "del", rest @ ..] if rest.len() == 1 => ("port-del", rest),
        ["reload"] => ("reload", &[][..]),
        ["capture", rest @ ..] => return capture(&socket, rest),
        [c @ ("ports" | "fdb" | "stats" | "macnat")] => (*c, &[][..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let reply = match request(&socket, &json!({"cmd": cmd, "args": rest})) {
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
        print_human(cmd, &reply);
    }
    ExitCode::SUCCESS
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
    let req = json!({"cmd": "capture", "args": [port]});
    if let Err(e) = s.write_all(format!("{req}\n").as_bytes()) {
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
    let mut out: Box<dyn Write> = match file {
        Some(f) => match std::fs::File::create(f) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("switchyard ctl: cannot create {f}: {e}");
                return ExitCode::from(1);
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let mut buf = [0u8; 65536];
    loop {
        use std::io::Read;
        match reader.read(&mut buf) {
            Ok(0) => return ExitCode::SUCCESS,
            // Flushed at once, so tcpdump and tshark read it live.
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return ExitCode::SUCCESS;
                }
            }
            Err(e) => {
                eprintln!("switchyard ctl: {e}");
                return ExitCode::from(1);
            }
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

fn request(socket: &std::path::Path, req: &Value) -> Result<Value, String> {
    let mut s = connect(socket)?;
    let mut line = req.to_string();
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| format!("cannot send request: {e}"))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| format!("cannot read reply: {e}"))?;
    serde_json::from_str(&reply).map_err(|e| format!("bad reply from the daemon: {e}"))
}

/// The non-zero MAC-NAT counters of each port, one `port counter value`
/// line each (every counter, zeros included, is in `-j` and `/metrics`).
fn print_mac_nat_counters(counters: &Value) {
    let Some(ports) = counters.as_object() else {
        return;
    };
    let rows: Vec<Vec<String>> = ports
        .iter()
        .flat_map(|(port, values)| {
            values
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
                .map(move |(name, v)| vec![port.clone(), name.clone(), s(v)])
        })
        .collect();
    if !rows.is_empty() {
        println!();
        table(&["PORT", "COUNTER", "VALUE"], rows);
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_human(cmd: &str, r: &Value) {
    let empty = Vec::new();
    match cmd {
        "ports" => table(
            &[
                "NAME", "TYPE", "STATE", "VLANS", "RX", "TX", "HELD", "DROPS", "PEER",
            ],
            r["ports"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|p| {
                    let drops: u64 = p["drops"]
                        .as_object()
                        .map(|m| m.values().filter_map(Value::as_u64).sum())
                        .unwrap_or(0);
                    vec![
                        s(&p["name"]),
                        s(&p["type"]),
                        s(&p["state"]),
                        s(&p["vlans"]),
                        s(&p["rx_frames"]),
                        s(&p["tx_frames"]),
                        s(&p["tx_held"]),
                        drops.to_string(),
                        s(&p["peer"]),
                    ]
                })
                .collect(),
        ),
        "macnat" => {
            table(
                &["PORT", "VLAN", "ADDRESS", "MAC", "FROM", "AGE"],
                r["macnat"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .map(|e| {
                        vec![
                            s(&e["port"]),
                            s(&e["vlan"]),
                            s(&e["address"]),
                            s(&e["mac"]),
                            s(&e["learned_from"]),
                            format!("{}s", s(&e["age_seconds"])),
                        ]
                    })
                    .collect(),
            );
            print_mac_nat_counters(&r["counters"]);
        }
        "fdb" => table(
            &["MAC", "VLAN", "PORT", "AGE"],
            r["fdb"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|e| {
                    vec![
                        s(&e["mac"]),
                        s(&e["vlan"]),
                        s(&e["port"]),
                        format!("{}s", s(&e["age_seconds"])),
                    ]
                })
                .collect(),
        ),
        _ => {
            if let Some(m) = r.as_object() {
                for (k, v) in m {
                    println!("{k}: {}", s(v));
                }
            }
        }
    }
}
