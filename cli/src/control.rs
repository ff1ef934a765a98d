//! The control socket behind `switchyard ctl`: one JSON request line in,
//! one JSON reply line out. Runs beside the data path and reads only its
//! snapshots and atomics.

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchyard_switch::{DropReason, Mode, Switch};
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

/// Answers clients until the runtime stops.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    switch: Arc<Switch>,
    commands: mpsc::Sender<Command>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!("control socket: {e}"),
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let switch = switch.clone();
                let commands = commands.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(stream, switch, commands).await {
                        tracing::debug!("control client: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client(
    stream: UnixStream,
    switch: Arc<Switch>,
    commands: mpsc::Sender<Command>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(64 * 1024)).lines();
    while let Some(line) = lines.next_line().await? {
        if let Ok(req) = serde_json::from_str::<Value>(&line) {
            if req["cmd"] == "capture" {
                let name = req["args"].get(0).and_then(Value::as_str).unwrap_or("");
                return capture(&mut w, &switch, name).await;
            }
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => match main_loop_command(&req) {
                Some(make) => {
                    let (tx, rx) = oneshot::channel();
                    if commands.send(make(tx)).await.is_err() {
                        json!({"error": "the switch is shutting down"})
                    } else {
                        match rx.await {
                            Ok(Ok(done)) => json!({"ok": done}),
                            Ok(Err(e)) => json!({"error": e}),
                            Err(_) => json!({"error": "the switch is shutting down"}),
                        }
                    }
                }
                None => answer(&req, &switch),
            },
            Err(e) => json!({"error": format!("bad request: {e}")}),
        };
        let mut text = reply.to_string();
        text.push('\n');
        w.write_all(text.as_bytes()).await?;
    }
    Ok(())
}

/// Streams a port's frames as pcap until the reader goes away or the port
/// does. The first line is a JSON acknowledgement (or error).
async fn capture(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    switch: &Arc<Switch>,
    name: &str,
) -> std::io::Result<()> {
    use switchyard_switch::capture::{pcap_header, pcap_record, CaptureSink};
    let Some(port) = find_port(switch, name) else {
        let e = json!({"error": format!("no port named {name:?}; see `switchyard ctl ports`")});
        return w.write_all(format!("{e}\n").as_bytes()).await;
    };
    let (sink, mut rx) = CaptureSink::new(4096);
    let sink = Arc::new(sink);
    w.write_all(format!("{}\n", json!({"ok": format!("capturing {name}")})).as_bytes())
        .await?;
    w.write_all(&pcap_header()).await?;
    port.start_capture(sink.clone());
    tracing::info!(port = %name, "capture started");
    let mut tick = switchyard_switch::tick::Ticker::every(std::time::Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            f = rx.recv() => match f {
                Some(f) => {
                    let r = async {
                        w.write_all(&pcap_record(&f)).await?;
                        w.write_all(&f.data).await
                    }.await;
                    if let Err(e) = r {
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

/// The requests that change the running set, as commands for the main loop.
fn main_loop_command(req: &Value) -> Option<MakeCommand> {
    let arg = req["args"]
        .get(0)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match req["cmd"].as_str().unwrap_or_default() {
        "reload" => Some(Box::new(Command::Reload)),
        "port-add" => Some(Box::new(move |r| Command::PortAdd(arg, r))),
        "port-del" => Some(Box::new(move |r| Command::PortDel(arg, r))),
        _ => None,
    }
}

/// Finds a live port by name.
pub fn find_port(switch: &Switch, name: &str) -> Option<Arc<switchyard_switch::Port>> {
    switch.ports().iter().find(|p| p.name() == name).cloned()
}

/// Clients the control sockets refused since start, by reason (only
/// reasons that happened).
fn handshakes_refused() -> serde_json::Map<String, Value> {
    switchyard_switch::ports::unix::refusals()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.as_str().to_string(), json!(n)))
        .collect()
}

/// One request, one reply.
pub fn answer(req: &Value, switch: &Arc<Switch>) -> Value {
    let arg = |i: usize| req["args"].get(i).and_then(Value::as_str);
    match req["cmd"].as_str().unwrap_or_default() {
        "ports" => {
            let ports: Vec<Value> = switch
                .ports()
                .iter()
                .map(|p| {
                    let c = p.counters().snapshot();
                    let drops: serde_json::Map<String, Value> = DropReason::ALL
                        .iter()
                        .filter(|r| c.drops(**r) > 0)
                        .map(|r| (r.as_str().to_string(), json!(c.drops(*r))))
                        .collect();
                    json!({
                        "id": p.id().0, "name": p.name(), "type": p.kind(), "peer": p.peer(),
                        "state": if p.is_closing() { "closing" } else { "up" },
                        "vlans": p.vlans().map(|v| v.to_string()),
                        "rx_frames": c.rx_frames, "rx_bytes": c.rx_bytes,
                        "tx_frames": c.tx_frames, "tx_bytes": c.tx_bytes, "tx_held": c.tx_held,
                        "drops": drops,
                    })
                })
                .collect();
            json!({ "ports": ports })
        }
        "fdb" => {
            let table = switch.ports();
            let entries: Vec<Value> = switch
                .fdb_entries()
                .iter()
                .map(|e| {
                    let port = table.get(e.port).map(|p| p.name().to_string()).unwrap_or_else(|| e.port.to_string());
                    json!({"mac": e.mac.to_string(), "vlan": e.vlan, "port": port, "age_seconds": e.age.as_secs()})
                })
                .collect();
            json!({ "fdb": entries })
        }
        "fdb-flush" => match arg(0) {
            None => json!({"flushed": switch.fdb_flush(None)}),
            Some(name) => match find_port(switch, name) {
                Some(p) => json!({"flushed": switch.fdb_flush(Some(p.id()))}),
                None => {
                    json!({"error": format!("no port named {name:?}; see `switchyard ctl ports`")})
                }
            },
        },
        "stats" => {
            let ev = switch.fdb_events();
            let table = switch.ports();
            let t = switch.totals();
            let (rx, tx, drops) = (t.rx_frames, t.tx_frames, t.drops.iter().sum::<u64>());
            let by_reason: serde_json::Map<String, Value> = DropReason::ALL
                .iter()
                .filter(|r| t.drops(**r) > 0)
                .map(|r| (r.as_str().to_string(), json!(t.drops(*r))))
                .collect();
            let cfg = switch.config();
            json!({
                "mode": if cfg.mode == Mode::Hub { "hub" } else { "switch" },
                "backpressure": switch.backpressure(),
                "busy_poll_us": u64::try_from(switch.busy_poll().as_micros()).unwrap_or(u64::MAX),
                "ports": table.len(), "fdb_entries": switch.fdb_len(),
                "fdb_max_entries": cfg.fdb.max_entries, "fdb_aging_seconds": cfg.fdb.aging.as_secs(),
                "fdb_learned": ev.learned, "fdb_moved": ev.moved, "fdb_aged": ev.aged, "fdb_refused": ev.refused,
                "rx_frames": rx, "tx_frames": tx, "tx_held": t.tx_held,
                "drops": drops, "drops_by_reason": by_reason,
                "uptime_seconds": switch.now().as_secs(),
                "handshakes_refused": handshakes_refused(),
                "handshakes_waiting": switchyard_switch::ports::unix::waiting(),
                "stream_connections_refused": switchyard_switch::ports::stream::connections_refused(),
            })
        }
        "macnat" => {
            let tables = switchyard_bridge::pcap::mac_nat_tables();
            if tables.is_empty() {
                return json!({"error": "no port has MAC-NAT on (a pcap port with mac_nat=on)"});
            }
            let now = switch.now();
            let mut entries = Vec::new();
            let mut counters = serde_json::Map::new();
            for (port, t) in tables {
                let (snap, values) = {
                    let t = t.lock().unwrap_or_else(|p| p.into_inner());
                    (t.snapshot(), t.counters().clone())
                };
                let values: serde_json::Map<String, Value> = values
                    .iter()
                    .map(|(c, v)| (c.label().to_string(), json!(v)))
                    .collect();
                counters.insert(port.clone(), Value::Object(values));
                for e in snap.entries {
                    entries.push(json!({
                        "port": port, "vlan": e.vlan, "address": e.addr.to_string(),
                        "mac": e.mac.to_string(), "learned_from": e.source.label(),
                        "age_seconds": now.saturating_sub(e.last_seen).as_secs(),
                    }));
                }
            }
            json!({ "macnat": entries, "counters": counters })
        }
        other => {
            json!({"error": format!("unknown command {other:?}; try ports, fdb, stats, fdb-flush, port-add, port-del, reload")})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_switch::EngineConfig;

    #[test]
    fn stats_show_backpressure_and_held_frames() {
        let switch = Switch::new(EngineConfig::default());
        let stats = answer(&json!({"cmd": "stats"}), &switch);
        assert_eq!(stats["backpressure"], json!(true), "{stats}");
        assert_eq!(stats["tx_held"], json!(0), "{stats}");
        switch.set_backpressure(false);
        let stats = answer(&json!({"cmd": "stats"}), &switch);
        assert_eq!(stats["backpressure"], json!(false), "{stats}");
    }

    #[test]
    fn stats_show_the_busy_poll() {
        let switch = Switch::new(EngineConfig::default());
        let stats = answer(&json!({"cmd": "stats"}), &switch);
        assert_eq!(stats["busy_poll_us"], json!(0), "{stats}");
        switch.set_busy_poll(std::time::Duration::from_micros(20));
        let stats = answer(&json!({"cmd": "stats"}), &switch);
        assert_eq!(stats["busy_poll_us"], json!(20), "{stats}");
    }
}
