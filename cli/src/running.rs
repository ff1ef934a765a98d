//! What is running now, so that a reload (SIGHUP, `switchyard ctl reload`)
//! can start what the configuration adds, stop what it drops, and leave
//! every unchanged port — and its connections — alone.

use crate::args::port_spec::PortSpec;
use crate::ports::OpenPort;
use crate::settings::{Settings, TapSpec};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use switchyard_bridge::TapDevice;
use switchyard_switch::ports::unix::{PortNumbers, UnixConfig, UnixControl};
use switchyard_switch::{Stop, Switch};

/// The configured ports and how to stop each.
pub struct Running {
    switch: Arc<Switch>,
    numbers: Arc<PortNumbers>,
    controls: Vec<(UnixConfig, Arc<UnixControl>, Stop)>,
    taps: Vec<(TapSpec, Stop)>,
    ports: Vec<(PortSpec, Option<PathBuf>, Stop)>,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Ports (or control sockets, taps) started.
    pub added: Vec<String>,
    /// Ports stopped.
    pub removed: Vec<String>,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "added [{}], removed [{}]",
            self.added.join(", "),
            self.removed.join(", ")
        )
    }
}

fn spec_name(spec: &PortSpec) -> String {
    match spec {
        PortSpec::Udp(c) => c.name.clone(),
        PortSpec::Mcast(c) => c.name.clone(),
        PortSpec::Stream(c) => c.name.clone(),
        PortSpec::Vxlan(c) => c.name.clone(),
    }
}

impl Running {
    /// Nothing running yet.
    pub fn new(switch: Arc<Switch>, numbers: Arc<PortNumbers>) -> Running {
        Running {
            switch,
            numbers,
            controls: Vec::new(),
            taps: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// Serves a bound control socket.
    pub fn start_control(&mut self, control: Arc<UnixControl>, config: UnixConfig) {
        let stop = Stop::new();
        let (c, switch, numbers, s) = (
            control.clone(),
            self.switch.clone(),
            self.numbers.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let path = c.ctl_path().to_path_buf();
            if let Err(e) = c.serve(switch, numbers, s).await {
                tracing::error!(ctl = %path.display(), "control socket failed: {e}");
            }
        });
        self.controls.push((config, control, stop));
    }

    /// Serves an open tap.
    pub fn start_tap(&mut self, tap: TapDevice, spec: TapSpec) {
        let stop = Stop::new();
        tokio::spawn(tap.serve(self.switch.clone(), stop.clone()));
        self.taps.push((spec, stop));
    }

    /// Serves an open transport.
    pub fn start_port(&mut self, spec: PortSpec, port: OpenPort) {
        let stop = Stop::new();
        let path = port.socket_path();
        port.spawn(self.switch.clone(), stop.clone());
        self.ports.push((spec, path, stop));
    }

    /// Brings the running set in line with `new`. Everything new is opened
    /// first; if anything fails nothing changes and the error says why.
    pub fn apply(&mut self, new: &Settings) -> Result<Changes> {
        let mut changes = Changes::default();
        let add_controls: Vec<&UnixConfig> = new
            .controls
            .iter()
            .filter(|c| !self.controls.iter().any(|(have, _, _)| have == *c))
            .collect();
        let add_taps: Vec<&TapSpec> = new
            .taps
            .iter()
            .filter(|t| !self.taps.iter().any(|(have, _)| have == *t))
            .collect();
        let add_ports: Vec<&PortSpec> = new
            .ports
            .iter()
            .filter(|p| !self.ports.iter().any(|(have, _, _)| have == *p))
            .collect();
        // Stop first what goes away, so a changed port can take its
        // address back; then open the new ones.
        let mut keep_controls = Vec::new();
        for (cfg, ctl, stop) in self.controls.drain(..) {
            if new.controls.contains(&cfg) {
                keep_controls.push((cfg, ctl, stop));
            } else {
                stop.stop();
                ctl.cleanup();
                changes.removed.push(ctl.ctl_path().display().to_string());
            }
        }
        self.controls = keep_controls;
        let mut keep_taps = Vec::new();
        for (name, stop) in self.taps.drain(..) {
            if new.taps.contains(&name) {
                keep_taps.push((name, stop));
            } else {
                stop.stop();
                changes.removed.push(name.port_name());
            }
        }
        self.taps = keep_taps;
        let mut keep_ports = Vec::new();
        for (spec, path, stop) in self.ports.drain(..) {
            if new.ports.contains(&spec) {
                keep_ports.push((spec, path, stop));
            } else {
                stop.stop();
                if let Some(p) = &path {
                    let _ = std::fs::remove_file(p);
                }
                changes.removed.push(spec_name(&spec));
            }
        }
        self.ports = keep_ports;
        let mut opened_controls = Vec::new();
        for cfg in add_controls {
            let c = UnixControl::bind(cfg.clone()).context("reload")?;
            opened_controls.push((Arc::new(c), cfg.clone()));
        }
        let mut opened_taps = Vec::new();
        for t in add_taps {
            let dev = TapDevice::open(&t.device).context("reload")?;
            opened_taps.push((dev.with_port_name(t.name.clone()), t.clone()));
        }
        let mut opened_ports = Vec::new();
        for p in add_ports {
            match OpenPort::open(p) {
                Ok(o) => opened_ports.push((p.clone(), o)),
                Err(e) => {
                    for (c, _) in &opened_controls {
                        c.cleanup();
                    }
                    return Err(e).context("reload");
                }
            }
        }
        for (c, cfg) in opened_controls {
            changes.added.push(c.ctl_path().display().to_string());
            self.start_control(c, cfg);
        }
        for (t, spec) in opened_taps {
            changes.added.push(spec.port_name());
            self.start_tap(t, spec);
        }
        for (spec, o) in opened_ports {
            changes.added.push(spec_name(&spec));
            self.start_port(spec, o);
        }
        self.switch.set_config(new.engine);
        Ok(changes)
    }

    /// `switchyard ctl port add SPEC`.
    pub fn add(&mut self, spec: &str) -> Result<String, String> {
        // Names must be unique among configured ports, taps and every live
        // port (client ports included): the first free TYPE<n> by default.
        let taken = |name: &str| {
            self.ports.iter().any(|(s, _, _)| spec_name(s) == name)
                || self.taps.iter().any(|(t, _)| t.port_name() == name)
                || self.switch.ports().iter().any(|p| p.name() == name)
        };
        let kind = spec.split(',').next().unwrap_or_default();
        let n = (1..).find(|n| !taken(&format!("{kind}{n}"))).unwrap_or(1);
        let spec = crate::args::port_spec::parse(spec, n)?;
        let name = spec_name(&spec);
        if taken(&name) {
            return Err(format!(
                "a port named {name:?} exists; choose another with name=…"
            ));
        }
        let port = OpenPort::open(&spec).map_err(|e| e.to_string())?;
        self.start_port(spec, port);
        Ok(format!("added {name}"))
    }

    /// `switchyard ctl port del NAME`: stops a configured port, or closes a
    /// client's port (the client sees its connection end).
    pub fn remove(&mut self, name: &str) -> Result<String, String> {
        if let Some(i) = self.ports.iter().position(|(s, _, _)| spec_name(s) == name) {
            let (_, path, stop) = self.ports.remove(i);
            stop.stop();
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
            return Ok(format!("removed {name}"));
        }
        if let Some(i) = self.taps.iter().position(|(t, _)| t.port_name() == name) {
            let (_, stop) = self.taps.remove(i);
            stop.stop();
            return Ok(format!("removed {name}"));
        }
        if let Some(i) = self
            .controls
            .iter()
            .position(|(_, c, _)| c.ctl_path() == std::path::Path::new(name))
        {
            let (_, c, stop) = self.controls.remove(i);
            stop.stop();
            c.cleanup();
            return Ok(format!("removed control socket {name}"));
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
        for (_, c, _) in &self.controls {
            c.cleanup();
        }
        for p in self.ports.iter().filter_map(|(_, p, _)| p.as_ref()) {
            let _ = std::fs::remove_file(p);
        }
    }
}
