//! The control socket behind `switchyard ctl`: one JSON request line in,
//! one JSON reply line out, typed in [`crate::protocol`]. Runs beside the
//! data path and reads only its snapshots and atomics: the answers render
//! the same [`Snapshot`] the metrics endpoint does.

mod answer;
pub mod roles;

use answer::no_such_port;
pub use answer::{answer, find_port};

use crate::accept::{Admission, Ended, Limits, Slot, Slots};
use crate::protocol::{Request, Response};
use roles::{Caller, Role, Roles};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchyard_switch::Switch;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The default control socket: /run/switchyard as root, else the user's
/// runtime directory (or /tmp).
pub fn default_path() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/switchyard/control.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => Path::new(&d).join("switchyard/control.sock"),
        None => PathBuf::from(format!(
            "/tmp/switchyard-{}/control.sock",
            nix::unistd::geteuid()
        )),
    }
}

/// Binds the control socket (0660, optional group), replacing a stale one.
pub fn bind(
    path: &Path,
    mode: Option<u32>,
    group: Option<u32>,
) -> anyhow::Result<std::os::unix::net::UnixListener> {
    use anyhow::Context;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
            }
            .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "{} exists and is not a socket; remove it or choose another path with --control",
                path.display()
            );
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale {}", path.display()))?,
            _ => anyhow::bail!(
                "control socket {} is in use by another switchyard; stop it or choose another path with --control",
                path.display()
            ),
        }
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode.unwrap_or(0o660)))
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("cannot set group of {}", path.display()))?;
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

/// A request only the main loop can carry out (it owns the running set).
#[derive(Debug)]
pub enum Command {
    /// Re-read the configuration file.
    Reload(oneshot::Sender<Result<String, String>>),
    /// Add a port from a `--port` spec.
    PortAdd(String, oneshot::Sender<Result<String, String>>),
    /// Remove a configured port, or kick a client's port.
    PortDel(String, oneshot::Sender<Result<String, String>>),
}

/// Answers clients until the runtime stops, within `limits` (see
/// [`crate::accept`]). Requests that change the running set go to the
/// main loop as [`Command`]s, whatever runtime this runs on.
pub(crate) async fn serve(
    listener: std::os::unix::net::UnixListener,
    switch: Arc<Switch>,
    commands: mpsc::Sender<Command>,
    limits: Limits,
    slots: Arc<Slots>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!("control socket: {e}"),
    };
    let accept = || listener.accept();
    crate::accept::accept_forever("control socket", accept, |(stream, _): (UnixStream, _)| {
        let slot = match slots.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                let busy = Response::error(
                    "busy: the control socket is serving its maximum of connections; retry",
                );
                return crate::accept::refuse(stream.into_std(), busy.to_line().as_bytes());
            }
        };
        let switch = switch.clone();
        let commands = commands.clone();
        tokio::spawn(async move {
            if let Err(e) = client(stream, switch, commands, Requests::new(slot, limits)).await {
                tracing::debug!("control client: {e}");
            }
        });
    })
    .await;
}

/// Reads one connection's request lines within its limits: the first
/// within the head timeout, each later one within the idle timeout, none
/// longer than the request limit, and none while a newer connection needs
/// the slot of this idle one.
struct Requests {
    slot: Slot,
    limits: Limits,
    first: bool,
    line: Vec<u8>,
}

impl Requests {
    fn new(slot: Slot, limits: Limits) -> Requests {
        Requests {
            slot,
            limits,
            first: true,
            line: Vec::new(),
        }
    }

    /// The next request line; `None` when the connection should end
    /// (closed, timed out, pushed out or too long: the last three are
    /// told why on `w`).
    async fn next<R: tokio::io::AsyncBufRead + Unpin>(
        &mut self,
        r: &mut R,
        w: &mut tokio::net::unix::OwnedWriteHalf,
    ) -> std::io::Result<Option<String>> {
        let timeout = if self.first {
            self.limits.head_timeout
        } else {
            self.limits.idle_timeout
        };
        self.first = false;
        self.line.clear();
        let max = self.limits.max_request;
        let mut limited = (&mut *r).take(max as u64 + 1);
        let read = limited.read_until(b'\n', &mut self.line);
        let why = match self.slot.idle(timeout, read).await {
            Ok(Ok(0)) => return Ok(None),
            Ok(Ok(_)) if self.line.len() > max => {
                format!("request longer than {} KiB; closing", max / 1024)
            }
            Ok(Ok(_)) => {
                let text = String::from_utf8_lossy(&self.line);
                return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
            }
            Ok(Err(e)) => return Err(e),
            Err(Ended::TimedOut) => format!("no request within {} s; closing", timeout.as_secs()),
            Err(Ended::Evicted) => "closed to make room for a newer connection".to_string(),
        };
        let line = Response::error(why).to_line();
        let _ = tokio::time::timeout(Duration::from_secs(1), w.write_all(line.as_bytes())).await;
        Ok(None)
    }
}

async fn client(
    stream: UnixStream,
    switch: Arc<Switch>,
    commands: mpsc::Sender<Command>,
    mut requests: Requests,
) -> std::io::Result<()> {
    // The credentials the kernel recorded at connect: the caller cannot
    // change them by passing the connection on.
    let caller = Caller::of(&stream);
    let roles = Roles::of(&switch);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    while let Some(line) = requests.next(&mut r, &mut w).await? {
        let reply = match Request::from_line(&line) {
            Err(e) => Response::error(e),
            Ok(req) => match decide(&switch, &roles, &caller, req) {
                Decision::Answer(reply) => reply,
                Decision::Capture(port) => return capture(&mut w, &switch, port).await,
                Decision::MainLoop(make) => run_in_main_loop(&commands, make).await,
            },
        };
        w.write_all(reply.to_line().as_bytes()).await?;
    }
    Ok(())
}

/// What to do with one request.
enum Decision {
    /// Reply this (an answer, an error, a refusal).
    Answer(Response),
    /// Stream this port's frames.
    Capture(Arc<switchyard_switch::Port>),
    /// Hand the change to the main loop.
    MainLoop(MakeCommand),
}

/// Checks `req` against `caller`'s role and decides how it is carried
/// out. A port the request names is looked up once, here, so what is
/// checked is what is used.
fn decide(switch: &Arc<Switch>, roles: &Roles, caller: &Caller, req: Request) -> Decision {
    let port = match &req {
        Request::Capture { port: name } | Request::PortDel { name } => find_port(switch, name),
        _ => None,
    };
    if let Request::Capture { port: name } = &req {
        if port.is_none() {
            return Decision::Answer(Response::error(no_such_port(name)));
        }
    }
    let role = match roles.permit(caller, &req, port.as_deref()) {
        Ok(role) => role,
        Err(why) => {
            return Decision::Answer(Response::error(roles.refuse(req.name(), caller, why)))
        }
    };
    match (req, port) {
        (Request::Capture { .. }, Some(p)) => Decision::Capture(p),
        // An observer's own guest: closed here, on the port that was
        // checked, not looked up again by name in the main loop.
        (Request::PortDel { name }, Some(p)) if role == Role::Observer => {
            p.close();
            tracing::info!(uid = caller.uid, "switchyard ctl: closed {name}");
            Decision::Answer(Response::Ok {
                ok: format!("closed {name}"),
            })
        }
        (req, _) => match for_main_loop(req) {
            Ok(make) => Decision::MainLoop(make),
            Err(query) => Decision::Answer(answer(&query, switch)),
        },
    }
}

/// Hands a change to the main loop and waits for its outcome.
async fn run_in_main_loop(commands: &mpsc::Sender<Command>, make: MakeCommand) -> Response {
    let (tx, rx) = oneshot::channel();
    if commands.send(make(tx)).await.is_err() {
        return Response::error("the switch is shutting down");
    }
    match rx.await {
        Ok(Ok(done)) => Response::Ok { ok: done },
        Ok(Err(e)) => Response::error(e),
        Err(_) => Response::error("the switch is shutting down"),
    }
}

/// Streams a port's frames as pcap until the reader goes away or the port
/// does. The first line is a JSON acknowledgement (or error).
async fn capture(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    switch: &Arc<Switch>,
    port: Arc<switchyard_switch::Port>,
) -> std::io::Result<()> {
    use switchyard_switch::capture::{pcap_header, pcap_record, CaptureSink};
    let name = port.name().to_string();
    let (sink, mut rx) = CaptureSink::new(4096);
    let sink = Arc::new(sink);
    let ack = Response::Ok {
        ok: format!("capturing {name}"),
    };
    w.write_all(ack.to_line().as_bytes()).await?;
    w.write_all(&pcap_header()).await?;
    port.start_capture(sink.clone());
    tracing::info!(port = %name, "capture started");
    let mut tick = switchyard_switch::tick::Ticker::every(std::time::Duration::from_secs(1));
    let mut record = Vec::with_capacity(16 + switchyard_switch::MAX_FRAME);
    let result = loop {
        tokio::select! {
            f = rx.recv() => match f {
                Some(f) => {
                    // Header and frame in one buffer, one write: a reader
                    // cut off mid-stream has whole records before the cut.
                    record.clear();
                    record.extend_from_slice(&pcap_record(&f));
                    record.extend_from_slice(&f.data);
                    if let Err(e) = w.write_all(&record).await {
                        break Err(e);
                    }
                }
                None => break Ok(()),
            },
            _ = tick.tick() => {
                if port.is_closing() || switch.ports().get(port.id()).is_none() {
                    break Ok(());
                }
            }
        }
    };
    port.stop_capture();
    tracing::info!(
        port = %name,
        dropped = sink.dropped.load(std::sync::atomic::Ordering::Relaxed),
        "capture ended"
    );
    result
}

type Reply = oneshot::Sender<Result<String, String>>;

/// A command that builds its main-loop request from the reply channel.
type MakeCommand = Box<dyn FnOnce(Reply) -> Command + Send>;

/// The requests that change the running set, as commands for the main
/// loop; any other request comes back to be answered here.
fn for_main_loop(req: Request) -> Result<MakeCommand, Request> {
    match req {
        Request::Reload => Ok(Box::new(Command::Reload)),
        Request::PortAdd { spec } => Ok(Box::new(move |r| Command::PortAdd(spec, r))),
        Request::PortDel { name } => Ok(Box::new(move |r| Command::PortDel(name, r))),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::answer::{mac_nat_reply, ports_reply, stats_reply};
    use super::*;
    use serde_json::{json, Value};
    use switchyard_switch::EngineConfig;

    fn stats(switch: &Arc<Switch>) -> Value {
        let line = answer(&Request::Stats, switch).to_line();
        serde_json::from_str(&line).expect("a JSON reply")
    }

    #[test]
    fn stats_show_backpressure_and_held_frames() {
        let switch = Switch::new(EngineConfig::default());
        let s = stats(&switch);
        assert_eq!(s["backpressure"], json!(true), "{s}");
        assert_eq!(s["tx_held"], json!(0), "{s}");
        switch.set_backpressure(false);
        let s = stats(&switch);
        assert_eq!(s["backpressure"], json!(false), "{s}");
    }

    #[test]
    fn stats_show_the_busy_poll() {
        let switch = Switch::new(EngineConfig::default());
        let s = stats(&switch);
        assert_eq!(s["busy_poll_us"], json!(0), "{s}");
        switch.set_busy_poll(std::time::Duration::from_micros(20));
        let s = stats(&switch);
        assert_eq!(s["busy_poll_us"], json!(20), "{s}");
    }

    #[test]
    fn a_fresh_switch_answers_in_the_old_shapes() {
        let switch = Switch::new(EngineConfig::default());
        let line = |r: Request| answer(&r, &switch).to_line();
        assert_eq!(line(Request::Ports), "{\"ports\":[]}\n");
        assert_eq!(line(Request::Fdb), "{\"fdb\":[]}\n");
        assert_eq!(line(Request::FdbFlush { port: None }), "{\"flushed\":0}\n");
        assert_eq!(
            line(Request::FdbFlush {
                port: Some("x".into())
            }),
            "{\"error\":\"no port named \\\"x\\\"; see `switchyard ctl ports`\"}\n"
        );
        let s = stats(&switch);
        let keys: Vec<&str> = s
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "backpressure",
                "busy_poll_us",
                "drops",
                "drops_by_reason",
                "fdb_aged",
                "fdb_aging_seconds",
                "fdb_entries",
                "fdb_learned",
                "fdb_max_entries",
                "fdb_moved",
                "fdb_refused",
                "handshakes_refused",
                "handshakes_waiting",
                "mode",
                "ports",
                "rx_frames",
                "stream_connections_refused",
                "tx_frames",
                "tx_held",
                "uptime_seconds"
            ]
        );
    }

    #[test]
    fn a_fixed_snapshot_answers_as_before() {
        let s = crate::stats::sample::snapshot();
        assert_eq!(
            Response::Stats(Box::new(stats_reply(&s))).to_line(),
            "{\"backpressure\":true,\"busy_poll_us\":0,\"drops\":20,\
             \"drops_by_reason\":{\"too_short\":20},\"fdb_aged\":0,\"fdb_aging_seconds\":300,\
             \"fdb_entries\":2,\"fdb_learned\":3,\"fdb_max_entries\":65536,\"fdb_moved\":1,\
             \"fdb_refused\":0,\"handshakes_refused\":{\"bad_version\":1,\"malformed\":1,\
             \"not_permitted\":1,\"silent\":1,\"unreachable\":1},\"handshakes_waiting\":3,\
             \"mode\":\"switch\",\"ports\":2,\"rx_frames\":20,\"stream_connections_refused\":7,\
             \"tx_frames\":21,\"tx_held\":10,\"uptime_seconds\":12}\n"
        );
        assert_eq!(
            ports_reply(&s).to_line().lines().next(),
            Some(
                "{\"ports\":[{\"drops\":{\"too_short\":10},\"fdb_refused\":0,\"id\":1,\
                 \"loop_blocks\":0,\"name\":\"unix:1\",\
                 \"peer\":\"peer of unix:1\",\"rx_bytes\":600,\"rx_frames\":10,\"state\":\"up\",\
                 \"tx_bytes\":660,\"tx_frames\":11,\"tx_held\":5,\"type\":\"unix\",\"vlans\":null},\
                 {\"blocked\":{\"home\":\"unix:1\",\"mac\":\"02:00:00:00:00:01\",\"reason\":\"loop\",\
                 \"seconds_left\":42},\"drops\":{\"too_short\":4},\"fdb_refused\":0,\"id\":2,\
                 \"loop_blocks\":0,\"name\":\"we\\\"ird\\\\name\",\
                 \"peer\":\"peer of we\\\"ird\\\\name\",\"rx_bytes\":240,\"rx_frames\":4,\
                 \"state\":\"blocked (loop, 42 s left)\",\"tx_bytes\":300,\"tx_frames\":5,\"tx_held\":2,\
                 \"type\":\"udp\",\"vlans\":null}]}"
            )
        );
        let Response::Macnat { counters, .. } = mac_nat_reply(&s) else {
            panic!("no MAC-NAT answer");
        };
        assert_eq!(counters["wifi"]["learn_new"], 1);
    }
}
