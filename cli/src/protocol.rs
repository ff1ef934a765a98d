//! The control socket's protocol, shared by the daemon and `switchyard
//! ctl`: one JSON [`Request`] line in, one JSON [`Response`] line out.
//!
//! On the wire a request is `{"args":[ARG…],"cmd":"NAME"}` and a reply an
//! object whose keys are sorted (`{"error":…}`, `{"ok":…}`, `{"ports":[…]}`,
//! …), as scripts and the end-to-end tests have always read them. The
//! daemon is lenient about requests as it always was: `args` may be
//! missing, and an argument that is not a string counts as absent.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A command's name on the wire (`"cmd"`). The declaration order is the
/// order of the hint an unknown command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandName {
    /// `ports`.
    Ports,
    /// `fdb`.
    Fdb,
    /// `stats`.
    Stats,
    /// `macnat`.
    Macnat,
    /// `fdb-flush`.
    FdbFlush,
    /// `port-add`.
    PortAdd,
    /// `port-del`.
    PortDel,
    /// `reload`.
    Reload,
    /// `capture`.
    Capture,
}

impl CommandName {
    /// Every command, in declaration order.
    pub const ALL: [CommandName; 9] = [
        CommandName::Ports,
        CommandName::Fdb,
        CommandName::Stats,
        CommandName::Macnat,
        CommandName::FdbFlush,
        CommandName::PortAdd,
        CommandName::PortDel,
        CommandName::Reload,
        CommandName::Capture,
    ];

    /// Its place in [`CommandName::ALL`], for per-command counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The command as a metric label (`port_add`).
    pub fn label(self) -> &'static str {
        match self {
            CommandName::Ports => "ports",
            CommandName::Fdb => "fdb",
            CommandName::Stats => "stats",
            CommandName::Macnat => "macnat",
            CommandName::FdbFlush => "fdb_flush",
            CommandName::PortAdd => "port_add",
            CommandName::PortDel => "port_del",
            CommandName::Reload => "reload",
            CommandName::Capture => "capture",
        }
    }

    /// The command as `switchyard ctl` spells it (`port add`).
    pub fn words(self) -> &'static str {
        match self {
            CommandName::FdbFlush => "fdb flush",
            CommandName::PortAdd => "port add",
            CommandName::PortDel => "port del",
            other => other.label(),
        }
    }

    /// Every command's wire name, in declaration order, as serde's derive
    /// spells them (so the list cannot fall behind the enum).
    pub fn all() -> &'static [&'static str] {
        use serde::de::IntoDeserializer;
        // Asking for a name no variant has makes the derived code report
        // the names it knows.
        let probe: serde::de::value::StrDeserializer<'_, KnownNames> = "".into_deserializer();
        match CommandName::deserialize(probe) {
            Err(KnownNames(names)) => names,
            Ok(_) => &[],
        }
    }
}

/// The variant names serde reports for an unknown variant.
#[derive(Debug)]
struct KnownNames(&'static [&'static str]);

impl std::fmt::Display for KnownNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl std::error::Error for KnownNames {}

impl serde::de::Error for KnownNames {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        KnownNames(&[])
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        KnownNames(expected)
    }
}

/// What `switchyard ctl` asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireRequest", try_from = "Value")]
#[non_exhaustive]
pub enum Request {
    /// Every port with its type, peer, state and counters.
    Ports,
    /// The forwarding table.
    Fdb,
    /// Switch-wide settings and counters.
    Stats,
    /// The MAC-NAT bindings and counters of every port with MAC-NAT.
    Macnat,
    /// Empty the forwarding table, or only the named port's entries.
    FdbFlush {
        /// The port whose entries go; `None`: all.
        port: Option<String>,
    },
    /// Add a port from a `--port` spec.
    PortAdd {
        /// `TYPE,key=value,…`.
        spec: String,
    },
    /// Remove a configured port, or close a client's port.
    PortDel {
        /// The port's name.
        name: String,
    },
    /// Re-read the configuration file.
    Reload,
    /// Stream a port's frames as pcap after a JSON acknowledgement.
    Capture {
        /// The port's name.
        port: String,
    },
}

/// A request as it is written: the keys in the order serde_json sorts
/// them, so the bytes are what `switchyard ctl` has always sent.
#[derive(Serialize)]
struct WireRequest {
    args: Vec<String>,
    cmd: CommandName,
}

impl Request {
    /// The command's wire name.
    pub fn name(&self) -> CommandName {
        match self {
            Request::Ports => CommandName::Ports,
            Request::Fdb => CommandName::Fdb,
            Request::Stats => CommandName::Stats,
            Request::Macnat => CommandName::Macnat,
            Request::FdbFlush { .. } => CommandName::FdbFlush,
            Request::PortAdd { .. } => CommandName::PortAdd,
            Request::PortDel { .. } => CommandName::PortDel,
            Request::Reload => CommandName::Reload,
            Request::Capture { .. } => CommandName::Capture,
        }
    }

    /// The request from a command and its arguments (missing ones are
    /// absent, or empty where the command needs one).
    fn from_parts(cmd: CommandName, mut arg: impl FnMut(usize) -> Option<String>) -> Request {
        let mut required = || arg(0).unwrap_or_default();
        match cmd {
            CommandName::Ports => Request::Ports,
            CommandName::Fdb => Request::Fdb,
            CommandName::Stats => Request::Stats,
            CommandName::Macnat => Request::Macnat,
            CommandName::FdbFlush => Request::FdbFlush { port: arg(0) },
            CommandName::PortAdd => Request::PortAdd { spec: required() },
            CommandName::PortDel => Request::PortDel { name: required() },
            CommandName::Reload => Request::Reload,
            CommandName::Capture => Request::Capture { port: required() },
        }
    }
}

impl From<Request> for WireRequest {
    fn from(r: Request) -> WireRequest {
        let cmd = r.name();
        let args = match r {
            Request::FdbFlush { port } => port.into_iter().collect(),
            Request::PortAdd { spec: a }
            | Request::PortDel { name: a }
            | Request::Capture { port: a } => vec![a],
            Request::Ports | Request::Fdb | Request::Stats | Request::Macnat | Request::Reload => {
                Vec::new()
            }
        };
        WireRequest { args, cmd }
    }
}

/// A request the daemon cannot carry out as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// `cmd` is missing or names no command.
    #[error("unknown command {0:?}; try {hint}", hint = CommandName::all().join(", "))]
    UnknownCommand(String),
}

impl TryFrom<Value> for Request {
    type Error = RequestError;

    fn try_from(v: Value) -> Result<Request, RequestError> {
        let name = v["cmd"].as_str().unwrap_or_default();
        let cmd = serde_json::from_value(Value::String(name.to_string()))
            .map_err(|_| RequestError::UnknownCommand(name.to_string()))?;
        let arg = |i: usize| v["args"].get(i).and_then(Value::as_str).map(String::from);
        Ok(Request::from_parts(cmd, arg))
    }
}

impl Request {
    /// Parses one line a client wrote to the control socket (a JSON
    /// object with `cmd` and `args`); the error is the reply's text.
    pub fn from_line(line: &str) -> Result<Request, String> {
        let v = serde_json::from_str::<Value>(line).map_err(|e| format!("bad request: {e}"))?;
        Request::try_from(v).map_err(|e| e.to_string())
    }
}

/// The daemon's answer to one request.
///
/// Untagged: each variant is told apart by its keys (a `stats` reply has
/// `"ports"` too, but as a number, so it is tried last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Response {
    /// The request failed; the text says why and what to do.
    Error {
        /// The message.
        error: String,
    },
    /// A change was made (or a capture begins); the text says what.
    Ok {
        /// The message.
        ok: String,
    },
    /// Answer to [`Request::Ports`].
    Ports {
        /// One row per live port, in the port table's order.
        ports: Vec<PortRow>,
    },
    /// Answer to [`Request::Fdb`].
    Fdb {
        /// One row per address.
        fdb: Vec<FdbRow>,
    },
    /// Answer to [`Request::FdbFlush`].
    Flushed {
        /// Entries removed.
        flushed: u64,
    },
    /// Answer to [`Request::Macnat`].
    Macnat {
        /// Every binding of every MAC-NAT port.
        macnat: Vec<BindingRow>,
        /// Every counter (zeros included) by port, then counter label.
        counters: BTreeMap<String, BTreeMap<String, u64>>,
    },
    /// Answer to [`Request::Stats`].
    Stats(Box<StatsReply>),
}

impl Response {
    /// An error answer.
    pub fn error(message: impl Into<String>) -> Response {
        Response::Error {
            error: message.into(),
        }
    }

    /// The reply line (with its newline), keys sorted as serde_json's
    /// `Value` sorts them.
    pub fn to_line(&self) -> String {
        let mut line = match serde_json::to_value(self) {
            Ok(v) => v.to_string(),
            Err(e) => {
                serde_json::json!({ "error": format!("cannot encode the reply: {e}") }).to_string()
            }
        };
        line.push('\n');
        line
    }
}

/// One port in [`Response::Ports`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    /// The switch's id for the port.
    pub id: u32,
    /// The port's name.
    pub name: String,
    /// The transport (`unix`, `udp`, `tap`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Who is on the other side.
    pub peer: String,
    /// `up`, or `closing` while it is being removed.
    pub state: String,
    /// The port's VLAN membership; `None`: VLAN-transparent.
    pub vlans: Option<String>,
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames held for a full peer.
    pub tx_held: u64,
    /// Drops by reason, only reasons that happened.
    pub drops: BTreeMap<String, u64>,
    /// Source addresses not learned because an FDB limit was reached.
    #[serde(default)]
    pub fdb_refused: u64,
    /// Times loop protection blocked the port.
    #[serde(default)]
    pub loop_blocks: u64,
    /// Why the port is blocked now, if it is (its `state` says so too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<PortBlock>,
}

/// A block on a port in [`PortRow::blocked`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBlock {
    /// Why: `loop` (loop protection).
    pub reason: String,
    /// The address whose frames kept coming back through the port.
    pub mac: String,
    /// The port that address lives on.
    pub home: String,
    /// Seconds until the port forwards again.
    pub seconds_left: u64,
}

/// One address in [`Response::Fdb`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRow {
    /// The address.
    pub mac: String,
    /// Its VLAN.
    pub vlan: u16,
    /// The port's name (its id if it is gone).
    pub port: String,
    /// Seconds since it was last seen.
    pub age_seconds: u64,
}

/// One binding in [`Response::Macnat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRow {
    /// The MAC-NAT port's name.
    pub port: String,
    /// The VLAN of the outermost tag (0 untagged).
    pub vlan: u16,
    /// The guest's IP address.
    pub address: String,
    /// The guest's MAC.
    pub mac: String,
    /// How it was learned (`arp`, `ip`, `nd`, `dhcp`).
    pub learned_from: String,
    /// Seconds since it was last refreshed.
    pub age_seconds: u64,
}

/// The answer to [`Request::Stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// `switch` or `hub`.
    pub mode: String,
    /// Whether full peers pause their senders.
    pub backpressure: bool,
    /// The busy poll in µs (0: off).
    pub busy_poll_us: u64,
    /// Live ports.
    pub ports: u64,
    /// Addresses in the forwarding table.
    pub fdb_entries: u64,
    /// The forwarding table's limit.
    pub fdb_max_entries: u64,
    /// The aging time.
    pub fdb_aging_seconds: u64,
    /// Addresses learned.
    pub fdb_learned: u64,
    /// Addresses that moved.
    pub fdb_moved: u64,
    /// Addresses aged out.
    pub fdb_aged: u64,
    /// Addresses not learned for a limit.
    pub fdb_refused: u64,
    /// Frames received, ports that are gone included.
    pub rx_frames: u64,
    /// Frames sent, ports that are gone included.
    pub tx_frames: u64,
    /// Frames held, ports that are gone included.
    pub tx_held: u64,
    /// Frames dropped, every reason.
    pub drops: u64,
    /// Drops by reason, only reasons that happened.
    pub drops_by_reason: BTreeMap<String, u64>,
    /// Seconds since the switch started.
    pub uptime_seconds: u64,
    /// Clients the control sockets refused, only reasons that happened.
    pub handshakes_refused: BTreeMap<String, u64>,
    /// Connections on the control sockets still to send their request.
    pub handshakes_waiting: u64,
    /// Connections the stream listeners refused.
    pub stream_connections_refused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every request and the exact line `switchyard ctl` has always sent
    /// for it.
    fn wire_shapes() -> Vec<(Request, &'static str)> {
        vec![
            (Request::Ports, r#"{"args":[],"cmd":"ports"}"#),
            (Request::Fdb, r#"{"args":[],"cmd":"fdb"}"#),
            (Request::Stats, r#"{"args":[],"cmd":"stats"}"#),
            (Request::Macnat, r#"{"args":[],"cmd":"macnat"}"#),
            (
                Request::FdbFlush { port: None },
                r#"{"args":[],"cmd":"fdb-flush"}"#,
            ),
            (
                Request::FdbFlush {
                    port: Some("udp1".into()),
                },
                r#"{"args":["udp1"],"cmd":"fdb-flush"}"#,
            ),
            (
                Request::PortAdd {
                    spec: "udp,local=127.0.0.1:1,remote=127.0.0.1:2".into(),
                },
                r#"{"args":["udp,local=127.0.0.1:1,remote=127.0.0.1:2"],"cmd":"port-add"}"#,
            ),
            (
                Request::PortDel {
                    name: "udp1".into(),
                },
                r#"{"args":["udp1"],"cmd":"port-del"}"#,
            ),
            (Request::Reload, r#"{"args":[],"cmd":"reload"}"#),
            (
                Request::Capture {
                    port: "unix:1".into(),
                },
                r#"{"args":["unix:1"],"cmd":"capture"}"#,
            ),
        ]
    }

    #[test]
    fn every_request_round_trips_in_the_wire_shape() {
        let shapes = wire_shapes();
        for (req, line) in &shapes {
            assert_eq!(serde_json::to_string(req).ok().as_deref(), Some(*line));
            let back: Request = serde_json::from_str(line).expect("a request");
            assert_eq!(&back, req, "{line}");
        }
        // Every command is covered above.
        let covered: Vec<CommandName> = shapes.iter().map(|(r, _)| r.name()).collect();
        for name in CommandName::all() {
            let cmd: CommandName = serde_json::from_value(json!(name)).expect("a command name");
            assert!(covered.contains(&cmd), "{name} has no wire shape test");
        }
    }

    #[test]
    fn the_command_list_and_labels_follow_the_enum() {
        for (i, c) in CommandName::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
            let wire = serde_json::to_value(c).expect("a name");
            assert_eq!(wire, json!(CommandName::all()[i]));
            assert_eq!(c.label().replace('_', "-"), CommandName::all()[i]);
            assert_eq!(c.words().replace(' ', "-"), CommandName::all()[i]);
        }
        assert_eq!(CommandName::ALL.len(), CommandName::all().len());
    }

    #[test]
    fn requests_are_read_leniently_as_before() {
        let read = |v: Value| Request::try_from(v);
        assert_eq!(read(json!({"cmd": "ports"})), Ok(Request::Ports));
        assert_eq!(
            read(json!({"cmd": "fdb-flush", "args": [5]})),
            Ok(Request::FdbFlush { port: None })
        );
        assert_eq!(
            read(json!({"cmd": "port-del"})),
            Ok(Request::PortDel {
                name: String::new()
            })
        );
        assert_eq!(
            read(json!({"cmd": "capture", "args": ["a", "b"]})),
            Ok(Request::Capture { port: "a".into() })
        );
    }

    #[test]
    fn unknown_commands_get_every_command_in_the_hint() {
        assert_eq!(
            CommandName::all(),
            [
                "ports",
                "fdb",
                "stats",
                "macnat",
                "fdb-flush",
                "port-add",
                "port-del",
                "reload",
                "capture"
            ]
        );
        let e = Request::try_from(json!({"cmd": "nope"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown command \"nope\"; try ports, fdb, stats, macnat, fdb-flush, port-add, \
             port-del, reload, capture"
        );
        let e = Request::try_from(json!([1])).unwrap_err();
        assert_eq!(e, RequestError::UnknownCommand(String::new()));
    }

    #[test]
    fn replies_keep_their_keys_sorted() {
        let r = Response::Fdb {
            fdb: vec![FdbRow {
                mac: "02:00:00:00:00:01".into(),
                vlan: 0,
                port: "udp1".into(),
                age_seconds: 1,
            }],
        };
        let line = r.to_line();
        assert_eq!(
            line,
            "{\"fdb\":[{\"age_seconds\":1,\"mac\":\"02:00:00:00:00:01\",\"port\":\"udp1\",\"vlan\":0}]}\n"
        );
        let back: Response = serde_json::from_str(&line).expect("a reply");
        assert_eq!(back, r);
        let err: Response = serde_json::from_str(r#"{"error":"x"}"#).expect("a reply");
        assert_eq!(err, Response::error("x"));
    }
}
