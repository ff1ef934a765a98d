//! What is running now, so that a reload (SIGHUP, `switchyard ctl reload`)
//! can start what the configuration adds, stop what it drops, and leave
//! every unchanged port — and its connections — alone.

use crate::ports::{OpenPort, PortSpec};
use crate::settings::{Settings, TapSpec};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard_bridge::TapDevice;
use switchyard_switch::ports::unix::{PortNumbers, UnixConfig, UnixControl};
use switchyard_switch::{Stop, Switch};
use tokio::task::JoinHandle;

/// How long a stopped port may take to let go of its sockets.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// What a configured port is, for comparing two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Control(UnixConfig),
    Tap(TapSpec),
    Port(PortSpec),
}

impl Key {
    fn name(&self) -> String {
        match self {
            Key::Control(c) => match &c.layout {
                switchyard_switch::ports::unix::Layout::Directory(d) => d.display().to_string(),
                switchyard_switch::ports::unix::Layout::Socket(p) => p.display().to_string(),
            },
            Key::Tap(t) => t.port_name(),
            Key::Port(p) => p.name().to_string(),
        }
    }
}

/// Something bound and ready to serve.
enum Opened {
    Control(Arc<UnixControl>),
    Tap(TapDevice),
    Port(OpenPort),
}

struct Entry {
    key: Key,
    /// Added by `switchyard ctl port add`, not by the configuration: a
    /// reload keeps it (unless the new configuration takes its name).
    runtime: bool,
    stop: Stop,
    task: JoinHandle<()>,
    control: Option<Arc<UnixControl>>,
    socket: Option<PathBuf>,
}

/// The configured ports and how to stop each.
pub struct Running {
    switch: Arc<Switch>,
    numbers: Arc<PortNumbers>,
    entries: Vec<Entry>,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Ports (or control sockets, taps) started.
    pub added: Vec<String>,
    /// Ports stopped.
    pub removed: Vec<String>,
    /// Ports added with `switchyard ctl port add` that are still running
    /// (a reload keeps them).
    pub kept_runtime: Vec<String>,
    /// The VLAN rules changed (the FDB entries of re-assigned ports were
    /// purged).
    pub vlans: bool,
    /// Backpressure was switched on (`Some(true)`) or off.
    pub backpressure: Option<bool>,
    /// The busy poll changed to this (zero: off).
    pub busy_poll: Option<std::time::Duration>,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added [{}], removed [{}]{}{}{}{}",
            self.added.join(", "),
            self.removed.join(", "),
            if self.kept_runtime.is_empty() {
                String::new()
            } else {
                format!(
                    ", kept ports added at run time [{}]",
                    self.kept_runtime.join(", ")
                )
            },
            if self.vlans { ", VLANs changed" } else { "" },
            match self.backpressure {
                Some(true) => ", backpressure on",
                Some(false) => ", backpressure off",
                None => "",
            },
            match self.busy_poll {
                Some(d) => format!(", busy poll {}", crate::values::show_busy_poll(d)),
                None => String::new(),
            }
        )
    }
}

fn open(key: &Key) -> Result<Opened, String> {
    match key {
        Key::Control(cfg) => UnixControl::bind(cfg.clone())
            .map(|c| Opened::Control(Arc::new(c)))
            .map_err(|e| e.to_string()),
        Key::Tap(t) => TapDevice::open_with(&t.device, t.offload)
            .map(|d| Opened::Tap(d.with_port_name(t.name.clone())))
            .map_err(|e| e.to_string()),
        Key::Port(p) => OpenPort::open(p)
            .map(Opened::Port)
            .map_err(|e| e.to_string()),
    }
}

fn keys(s: &Settings) -> Vec<Key> {
    s.controls
        .iter()
        .cloned()
        .map(Key::Control)
        .chain(s.taps.iter().cloned().map(Key::Tap))
        .chain(s.ports.iter().cloned().map(Key::Port))
        .collect()
}

impl Running {
    /// Nothing running yet.
    pub fn new(switch: Arc<Switch>, numbers: Arc<PortNumbers>) -> Running {
        Running {
            switch,
            numbers,
            entries: Vec::new(),
        }
    }

    /// The switch the ports run on.
    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    fn start(&mut self, key: Key, opened: Opened) {
        self.start_as(key, opened, false);
    }

    fn start_as(&mut self, key: Key, opened: Opened, runtime: bool) {
        let stop = Stop::new();
        let (task, control, socket) = match opened {
            Opened::Control(c) => {
                let (c2, switch, numbers, s) = (
                    c.clone(),
                    self.switch.clone(),
                    self.numbers.clone(),
                    stop.clone(),
                );
                let task = tokio::spawn(async move {
                    let path = c2.ctl_path().to_path_buf();
                    if let Err(e) = c2.serve(switch, numbers, s).await {
                        tracing::error!(ctl = %path.display(), "control socket failed: {e}");
                    }
                });
                (task, Some(c), None)
            }
            Opened::Tap(t) => (
                tokio::spawn(t.serve(self.switch.clone(), stop.clone())),
                None,
                None,
            ),
            Opened::Port(p) => {
                let socket = p.socket_path();
                (p.spawn(self.switch.clone(), stop.clone()), None, socket)
            }
        };
        self.entries.push(Entry {
            key,
            runtime,
            stop,
            task,
            control,
            socket,
        });
    }

    /// Serves a bound control socket.
    pub fn start_control(&mut self, control: Arc<UnixControl>, config: UnixConfig) {
        self.start(Key::Control(config), Opened::Control(control));
    }

    /// Serves an open tap.
    pub fn start_tap(&mut self, tap: TapDevice, spec: TapSpec) {
        self.start(Key::Tap(spec), Opened::Tap(tap));
    }

    /// Serves an open transport.
    pub fn start_port(&mut self, spec: PortSpec, port: OpenPort) {
        self.start(Key::Port(spec), Opened::Port(port));
    }

    /// Stops entries and waits until their tasks have let go of their
    /// sockets. All are told to stop first, then waited for against one
    /// deadline: stopping several takes as long as the slowest, not the
    /// sum of them.
    async fn finish(entries: Vec<Entry>) {
        for e in &entries {
            e.stop.stop();
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        for e in entries {
            if tokio::time::timeout_at(deadline, e.task).await.is_err() {
                tracing::warn!(port = %e.key.name(), "port did not stop in time");
            }
            if let Some(c) = &e.control {
                c.cleanup();
            }
            if let Some(p) = &e.socket {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Brings the running set in line with `new`: stops what it drops or
    /// changes (all at once, and waits for them), then opens what it adds.
    /// Ports added at run time stay unless `new` configures a port of the
    /// same name. If anything fails to open, what was stopped is started
    /// again and the error says what happened.
    pub async fn apply(&mut self, new: &Settings) -> Result<Changes, String> {
        let wanted = keys(new);
        let names: Vec<String> = wanted.iter().map(Key::name).collect();
        let stays =
            |e: &Entry| wanted.contains(&e.key) || (e.runtime && !names.contains(&e.key.name()));
        let (keep, gone): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(stays);
        self.entries = keep;
        for e in &mut self.entries {
            // The configuration now names it: it goes when the file drops it.
            if e.runtime && wanted.contains(&e.key) {
                e.runtime = false;
            }
        }
        let add: Vec<Key> = wanted
            .into_iter()
            .filter(|k| !self.entries.iter().any(|e| &e.key == k))
            .collect();
        let mut changes = Changes::default();
        let mut stopped = Vec::new();
        for e in &gone {
            changes.removed.push(e.key.name());
            stopped.push((e.key.clone(), e.runtime));
        }
        Self::finish(gone).await;
        let mut opened = Vec::new();
        for k in &add {
            match open(k) {
                Ok(o) => opened.push((k.clone(), o)),
                Err(e) => {
                    for (_, o) in opened {
                        if let Opened::Control(c) = o {
                            c.cleanup();
                        }
                    }
                    let mut restored = Vec::new();
                    for (k, runtime) in stopped {
                        match open(&k) {
                            Ok(o) => {
                                restored.push(k.name());
                                self.start_as(k, o, runtime);
                            }
                            Err(e2) => tracing::error!(port = %k.name(), "cannot restore: {e2}"),
                        }
                    }
                    return Err(format!(
                        "{}: {e}; kept the running ports (restored: [{}])",
                        k.name(),
                        restored.join(", ")
                    ));
                }
            }
        }
        for (k, o) in opened {
            changes.added.push(k.name());
            self.start(k, o);
        }
        changes.kept_runtime = self
            .entries
            .iter()
            .filter(|e| e.runtime)
            .map(|e| e.key.name())
            .collect();
        self.switch.set_config(new.engine);
        if new.backpressure != self.switch.backpressure() {
            changes.backpressure = Some(new.backpressure);
            self.switch.set_backpressure(new.backpressure);
        }
        if new.busy_poll != self.switch.busy_poll() {
            changes.busy_poll = Some(new.busy_poll);
            self.switch.set_busy_poll(new.busy_poll);
        }
        self.switch.set_static_macs(new.static_macs.clone());
        let rules = switchyard_switch::VlanRules::new(new.vlans.clone());
        if rules != self.switch.vlan_rules() {
            changes.vlans = true;
            self.switch.set_vlan_rules(rules);
        }
        Ok(changes)
    }

    /// `switchyard ctl port add SPEC`.
    pub fn add(&mut self, spec: &str) -> Result<String, String> {
        // Names must be unique among configured ports, taps and every live
        // port (client ports included): the first free TYPE<n> by default.
        let taken = |name: &str| {
            self.entries.iter().any(|e| e.key.name() == name)
                || self.switch.ports().iter().any(|p| p.name() == name)
        };
        let kind = spec.split(',').next().unwrap_or_default();
        let n = (1..).find(|n| !taken(&format!("{kind}{n}"))).unwrap_or(1);
        let spec = crate::args::port_spec::parse(spec, n)?;
        let name = spec.name().to_string();
        if taken(&name) {
            return Err(format!(
                "a port named {name:?} exists; choose another with name=…"
            ));
        }
        let port = OpenPort::open(&spec).map_err(|e| e.to_string())?;
        self.start_as(Key::Port(spec), Opened::Port(port), true);
        Ok(format!("added {name}"))
    }

    /// `switchyard ctl port del NAME`: stops a configured port, or closes a
    /// client's port (the client sees its connection end).
    pub async fn remove(&mut self, name: &str) -> Result<String, String> {
        if let Some(i) = self.entries.iter().position(|e| e.key.name() == name) {
            let e = self.entries.remove(i);
            Self::finish(vec![e]).await;
            return Ok(format!("removed {name}"));
        }
        match crate::control::find_port(&self.switch, name) {
            Some(p) => {
                p.close();
                Ok(format!("closed {name}"))
            }
            None => Err(format!(
                "no port named {name:?}; see `switchyard ctl ports`"
            )),
        }
    }

    /// Removes every socket file on shutdown.
    pub fn cleanup(&self) {
        for e in &self.entries {
            if let Some(c) = &e.control {
                c.cleanup();
            }
            if let Some(p) = &e.socket {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_the_busy_poll() {
        let mut c = Changes {
            busy_poll: Some(std::time::Duration::from_micros(20)),
            ..Changes::default()
        };
        assert_eq!(c.to_string(), "added [], removed [], busy poll 20 µs");
        c.busy_poll = Some(std::time::Duration::ZERO);
        assert_eq!(c.to_string(), "added [], removed [], busy poll off");
    }

    /// Which port did what, when.
    type StopLog = Arc<std::sync::Mutex<Vec<(usize, &'static str, std::time::Instant)>>>;

    /// An entry whose task takes `delay` to end once stopped, noting
    /// when it saw the stop and when it ended.
    fn slow_entry(n: usize, delay: Duration, log: StopLog) -> Entry {
        let stop = Stop::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            s.stopped().await;
            let note = |what| {
                log.lock().unwrap_or_else(|p| p.into_inner()).push((
                    n,
                    what,
                    std::time::Instant::now(),
                ))
            };
            note("stopping");
            tokio::time::sleep(delay).await;
            note("stopped");
        });
        Entry {
            key: Key::Tap(TapSpec::device(format!("t{n}"))),
            runtime: false,
            stop,
            task,
            control: None,
            socket: None,
        }
    }

    #[tokio::test]
    async fn changed_ports_are_stopped_together() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let delay = Duration::from_millis(200);
        let entries = (0..3).map(|n| slow_entry(n, delay, log.clone())).collect();
        Running::finish(entries).await;
        let log = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let order: Vec<&str> = log.iter().map(|(_, what, _)| *what).collect();
        // Every port was told to stop before the first one had finished:
        // the three stops overlap instead of following one another.
        assert_eq!(
            order,
            ["stopping", "stopping", "stopping", "stopped", "stopped", "stopped"],
            "{log:?}"
        );
    }

    #[test]
    fn changes_name_the_ports_kept_from_run_time() {
        let c = Changes {
            kept_runtime: vec!["udp1".into(), "extra".into()],
            ..Changes::default()
        };
        assert_eq!(
            c.to_string(),
            "added [], removed [], kept ports added at run time [udp1, extra]"
        );
    }
}
