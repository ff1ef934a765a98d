//! `switchyard`'s own command line (clap), plus a small translator so the
//! single-dash uml_switch spellings (`-unix`, `-hub`, `-tap`, `-daemon`)
//! work here too.

use super::port_spec;
use super::usage::Usage;
use crate::settings::{parse_group, parse_octal, Flavor, Settings, StdinPolicy, TapSpec};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use switchyard_switch::ports::unix::{Layout, UnixConfig};
use switchyard_switch::{EngineConfig, FdbConfig, LoopGuard, Mode};

const EXAMPLES_TEMPLATE: &str = "\
Examples:
  switchyard
      serve the default control sockets: /run/vde.ctl (VDE directory),
      /run/uml-utilities/uml_switch.ctl and /tmp/uml.ctl (as root)
  switchyard --vde /run/sw --tap tap0
      a VDE directory for vde_plug, QEMU and UML, plus a tap port
  switchyard --unix /tmp/uml.ctl --hub
      a uml_switch-style hub

Clients:
  UML        linux eth0=daemon,,unix,/tmp/uml.ctl   (or eth0=daemon,,unix,DIR/ctl)
  UML        linux eth0=vde,DIR
  vde_plug   vde_plug tap://vtap0 DIR
  QEMU       -netdev vde,id=n0,sock=DIR -device virtio-net-pci,netdev=n0

Port specs (--port):
{PORTS}

Subcommands:
  switchyard check-config FILE        validate a configuration file (exit 0, or 2 with the line)
  switchyard ctl [-s SOCKET] [-j] CMD  ports, fdb, stats, macnat, fdb flush, port add|del,
                                       capture, reload, top (`switchyard ctl --help`); changes
                                       need root or the admin group (--admin-group)
  switchyard ctl top [--once] [-j]    live per-port rates, drops, held frames, FDB
  switchyard generate man|bash|zsh|fish   the man page or a completion script

Signals: SIGHUP reloads --config; SIGINT and SIGTERM remove the sockets and exit.

Invoked as `uml_switch` or `vde_switch` (a symlink), switchyard takes those
programs' command lines unchanged.";

/// A switch-wide setting given as `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// A virtual Ethernet switch for UML, QEMU and VDE guests, tap devices and
/// the host.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
struct NativeArgs {
    /// A uml_switch-style control socket (UML `ethN=daemon,,unix,PATH`).
    /// Repeatable.
    #[arg(long = "unix", value_name = "PATH")]
    unix: Vec<PathBuf>,

    /// A VDE control directory holding DIR/ctl (vde_plug DIR, QEMU
    /// `-netdev vde,sock=DIR`, UML `ethN=vde,DIR`). Repeatable. Without
    /// --unix or --vde the default sockets are served.
    #[arg(long = "vde", value_name = "DIR")]
    vde: Vec<PathBuf>,

    /// Attach tap device IF as a port, creating it if it does not exist.
    /// Repeatable.
    #[arg(long = "tap", value_name = "IF")]
    tap: Vec<String>,

    /// Another transport: udp, mcast, stream, vxlan, pcap or vhost-user, as TYPE,key=value,…
    /// (see below). Repeatable.
    #[arg(long = "port", value_name = "SPEC")]
    port: Vec<String>,

    /// Be a hub: flood every frame to every other port, learn nothing.
    #[arg(long)]
    hub: bool,

    /// Permission bits of the control and data sockets, octal
    /// [default: 600, or 660 with --group].
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    mode: Option<u32>,

    /// Permission bits of a VDE directory switchyard creates, octal
    /// [default: derived from --mode, e.g. 2700].
    #[arg(long = "dir-mode", value_name = "OCTAL", value_parser = parse_octal)]
    dir_mode: Option<u32>,

    /// Group owner of every socket, those of --config included (name or
    /// number), so its members' guests may connect. On the control socket
    /// its members are observers: they may list and capture their own
    /// guests, not change the switch (see --admin-group).
    #[arg(long, value_name = "GROUP", value_parser = parse_group)]
    group: Option<u32>,

    /// Members of GROUP (name or number; primary or supplementary) are
    /// admins on the control socket: they may add and remove any port,
    /// flush the FDB, reload and capture any port, as root may. Others who
    /// can open the socket are observers. [YAML: control.admin_group]
    #[arg(long = "admin-group", value_name = "GROUP", value_parser = parse_group)]
    admin_group: Option<u32>,

    /// Async runtime threads, for taps, pcap, UDP, stream and VXLAN ports
    /// and control connections (VDE/UML frames move on the data plane
    /// thread). 1 (the default) forwards most frames per CPU-second and
    /// leaves the other cores to the guests.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,

    /// Detach from the terminal once the sockets are bound.
    #[arg(long)]
    daemon: bool,

    /// Write the process id to FILE (removed on exit).
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,

    /// Forget an address not seen for this many seconds.
    #[arg(long = "fdb-aging", value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    fdb_aging: u64,

    /// The most addresses the forwarding table holds; beyond it frames are
    /// still forwarded (flooded) but new addresses are not learned.
    #[arg(long = "fdb-max-entries", value_name = "N", default_value_t = 65_536)]
    fdb_max_entries: usize,

    /// The most addresses one port may hold in the forwarding table, so
    /// no guest can fill it [default: 2048]; beyond it the port's frames
    /// are forwarded without learning (counted, logged once a minute).
    /// 0: no per-port limit.
    #[arg(long = "fdb-port-max-entries", value_name = "N")]
    fdb_port_max_entries: Option<usize>,

    /// Loop protection: block a port through which frames of an address
    /// that lives on another port keep coming back (a bridge behind it
    /// joins it to another port), for --loop-hold-down.
    #[arg(long = "loop-protection", value_name = "on|off", default_value = "on")]
    loop_protection: OnOff,

    /// Flaps into one port within a second that make loop protection
    /// block it.
    #[arg(long = "loop-threshold", value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    loop_threshold: u32,

    /// How long loop protection keeps a port blocked; then it forwards
    /// again, and is blocked again if the loop is still there.
    #[arg(long = "loop-hold-down", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    loop_hold_down: u64,

    /// Drop spanning-tree BPDUs and other 802.1D link-local frames that
    /// ports send (01:80:c2:00:00:00-0f).
    #[arg(long = "bpdu-guard")]
    bpdu_guard: bool,

    /// Broadcast frames per second a port may send (0: no limit).
    #[arg(long = "storm-broadcast", value_name = "N", default_value_t = 0)]
    storm_broadcast: u32,

    /// Multicast frames per second a port may send (0: no limit).
    #[arg(long = "storm-multicast", value_name = "N", default_value_t = 0)]
    storm_multicast: u32,

    /// Unknown-unicast (flooded) frames per second a port may send (0: no
    /// limit).
    #[arg(long = "storm-unknown-unicast", value_name = "N", default_value_t = 0)]
    storm_unknown_unicast: u32,

    /// Pause the VDE and UML guests sending unicast to one whose queue is
    /// full (UML's daemon transport queues 10 frames) until it takes the
    /// frames, instead of dropping them; a guest that takes nothing for
    /// 20 ms (or keeps a sender 50 ms) gets tail drop for 1 s. off: strict
    /// tail drop (egress_full), a sender is never paused. Broadcast and
    /// multicast are never held.
    #[arg(long, value_name = "on|off", default_value = "on")]
    backpressure: OnOff,

    /// Lower latency where waking an idle CPU is slow (VMs): a unix port
    /// whose queue ran empty keeps polling this long for the next frame
    /// before its thread sleeps, e.g. 20us (at most 1ms). Costs a busy core
    /// while traffic flows. 0: off.
    #[arg(long = "busy-poll", value_name = "DURATION", default_value = "0",
          value_parser = crate::values::parse_busy_poll)]
    busy_poll: Duration,

    /// A static MAC entry, MAC@PORT (e.g. 02:00:00:00:00:01@tap:tap0):
    /// frames to it go to that port, and other ports may not use it.
    /// Repeatable.
    #[arg(long = "static-mac", value_name = "MAC@PORT")]
    static_mac: Vec<String>,

    /// A port's 802.1Q VLANs, PORT=UNTAGGED[/TAGGED]: `unix:1=10` (access
    /// port of VLAN 10), `tap:tap0=/10,20-30` (trunk, no native VLAN),
    /// `tap:tap0=1/10,20` (both). PORT may end in `*` (`unix:*`). The first
    /// match wins; with any rule the switch is VLAN-aware and other ports
    /// are in VLAN 1. Repeatable.
    #[arg(long = "vlan", value_name = "PORT=VLANS")]
    vlan: Vec<String>,

    /// Highest port number VDE clients may ask for (`DIR[N]`).
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    numports: u32,

    /// Read settings and ports from this YAML file (see
    /// deploy/examples/); flags given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Serve Prometheus metrics on ADDR, an ADDRESS:PORT (e.g. 127.0.0.1:9590).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,

    /// The control socket for `switchyard ctl`
    /// [default: /run/switchyard/control.sock as root].
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long = "log-level", value_name = "LEVEL", default_value = "info")]
    log_level: String,
}

/// The full clap definition, for the man page and completions.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    NativeArgs::command().after_help(EXAMPLES_TEMPLATE.replace("{PORTS}", &port_spec::syntax()))
}

/// `--fdb-port-max-entries` as the engine takes it: `None` when not
/// given, `Some(None)` for 0 (no limit).
/// The flag's value when it was given on the command line, else the
/// configuration file's (flags override the file).
fn flag_or<T>(given: bool, flag: T, file: T) -> T {
    if given {
        flag
    } else {
        file
    }
}

fn port_limit(flag: Option<usize>) -> Option<Option<usize>> {
    flag.map(|n| (n > 0).then_some(n))
}

/// Rewrites uml_switch's single-dash long flags into clap's spelling.
fn translate(args: Vec<OsString>) -> Vec<OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 {
                return a;
            }
            match a.to_str() {
                Some("-unix") => "--unix".into(),
                Some("-hub") => "--hub".into(),
                Some("-tap") => "--tap".into(),
                Some("-daemon") => "--daemon".into(),
                _ => a,
            }
        })
        .collect()
}

/// Parses `switchyard [OPTIONS]`.
pub fn parse(args: Vec<OsString>) -> Result<Settings, Usage> {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let after_help = EXAMPLES_TEMPLATE.replace("{PORTS}", &port_spec::syntax());
    let argv = args.clone();
    let matches = NativeArgs::command()
        .after_help(after_help)
        .try_get_matches_from(translate(args))?;
    let a = NativeArgs::from_arg_matches(&matches)?;
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let mut s = Settings {
        flavor: Flavor::Native,
        controls: Vec::new(),
        taps: Vec::new(),
        ports: Vec::new(),
        engine: EngineConfig::new(
            Mode::Switch,
            FdbConfig::new(
                Duration::from_secs(a.fdb_aging),
                a.fdb_max_entries,
                port_limit(a.fdb_port_max_entries)
                    .unwrap_or(FdbConfig::default().max_entries_per_port),
            ),
        )
        .with_loop_guard(LoopGuard::new(
            a.loop_protection == OnOff::On,
            a.loop_threshold,
            Duration::from_secs(a.loop_hold_down),
        )),
        numports: a.numports,
        threads: usize::from(a.threads),
        backpressure: a.backpressure == OnOff::On,
        busy_poll: a.busy_poll,
        daemon: a.daemon,
        pidfile: a.pidfile.clone(),
        log_level: a.log_level.clone(),
        stdin: StdinPolicy::Ignore,
        notes: Vec::new(),
        static_macs: Vec::new(),
        vlans: Vec::new(),
        extras: Default::default(),
    };
    // The file first, then what the command line says explicitly on top.
    if let Some(path) = &a.config {
        s.extras = crate::config::load(path, &mut s).map_err(|e| Usage::error(e.to_string()))?;
        s.extras.config_path = Some(path.clone());
    }
    s.extras.argv = argv;
    if a.hub {
        s.engine.mode = Mode::Hub;
    }
    let fdb = s.engine.fdb;
    s.engine.fdb = FdbConfig::new(
        flag_or(
            given("fdb_aging"),
            Duration::from_secs(a.fdb_aging),
            fdb.aging,
        ),
        flag_or(given("fdb_max_entries"), a.fdb_max_entries, fdb.max_entries),
        port_limit(a.fdb_port_max_entries).unwrap_or(fdb.max_entries_per_port),
    );
    let l = s.engine.loops;
    s.engine.loops = LoopGuard::new(
        flag_or(
            given("loop_protection"),
            a.loop_protection == OnOff::On,
            l.enabled,
        ),
        flag_or(given("loop_threshold"), a.loop_threshold, l.threshold),
        flag_or(
            given("loop_hold_down"),
            Duration::from_secs(a.loop_hold_down),
            l.hold_down,
        ),
    );
    if given("numports") {
        s.numports = a.numports;
    }
    let g = s.engine.guards;
    s.engine.guards = switchyard_switch::engine::Guards::new(
        a.bpdu_guard || g.bpdu_guard,
        flag_or(
            given("storm_broadcast"),
            a.storm_broadcast,
            g.storm_broadcast,
        ),
        flag_or(
            given("storm_multicast"),
            a.storm_multicast,
            g.storm_multicast,
        ),
        flag_or(
            given("storm_unknown_unicast"),
            a.storm_unknown_unicast,
            g.storm_unknown_unicast,
        ),
    );
    if given("backpressure") {
        s.backpressure = a.backpressure == OnOff::On;
    }
    if given("busy_poll") {
        s.busy_poll = a.busy_poll;
    }
    if given("log_level") {
        s.log_level = a.log_level.clone();
    }
    if let Some(m) = a.metrics {
        s.extras.metrics = Some(m);
    }
    if let Some(c) = &a.control {
        // --control moves the socket; the file's mode and group still apply.
        let (mode, group) = match &s.extras.control {
            Some((_, m, g)) => (*m, *g),
            None => (None, None),
        };
        s.extras.control = Some((c.clone(), mode, group));
    }
    if let Some(g) = a.admin_group {
        s.extras.admin_group = Some(g);
    }
    if let Some(group) = a.group {
        // Flags override the file: --group owns every socket, the file's
        // unix ports and control socket included.
        group_every_socket(&mut s, group, a.mode, a.dir_mode);
    }
    let mut per_type: std::collections::HashMap<String, usize> = Default::default();
    for spec in &a.port {
        let kind = spec.split(',').next().unwrap_or_default().to_string();
        let n = per_type.entry(kind).or_insert(0);
        *n += 1;
        let p = port_spec::parse(spec, *n)
            .map_err(|e| Usage::error(format!("error: --port {spec}: {e}")))?;
        s.ports.push(p);
    }
    s.taps.extend(a.tap.iter().map(TapSpec::device));
    for entry in &a.static_mac {
        let (mac, port) = entry.split_once('@').ok_or_else(|| {
            Usage::error(format!("error: --static-mac {entry}: expected MAC@PORT"))
        })?;
        let mac = mac
            .parse()
            .map_err(|e| Usage::error(format!("error: --static-mac {entry}: {e}")))?;
        s.static_macs.push((mac, port.to_string()));
    }
    // Command-line rules come first: the first match wins.
    let mut rules = Vec::new();
    for entry in &a.vlan {
        let (port, vlans) = entry.split_once('=').ok_or_else(|| {
            Usage::error(format!(
                "error: --vlan {entry}: expected PORT=VLANS (e.g. unix:1=10 or tap:tap0=/10,20)"
            ))
        })?;
        let vlans = vlans
            .parse()
            .map_err(|e| Usage::error(format!("error: --vlan {entry}: {e}")))?;
        rules.push((switchyard_switch::vlan::PortPattern::new(port), vlans));
    }
    rules.append(&mut s.vlans);
    s.vlans = rules;
    let mode = a.mode.or(a.group.map(|_| 0o660)).or(Some(0o600));
    let with_perms = |layout| UnixConfig::new(layout).with_permissions(mode, a.dir_mode, a.group);
    s.controls.extend(
        a.vde
            .iter()
            .map(|d| with_perms(Layout::Directory(d.clone())))
            .chain(a.unix.iter().map(|p| with_perms(Layout::Socket(p.clone())))),
    );
    if s.controls.is_empty() && a.config.is_none() {
        s.controls = Settings::default_controls(nix::unistd::geteuid().is_root())
            .into_iter()
            .map(|c| with_perms(c.layout))
            .collect();
    }
    Ok(s)
}

/// Gives the sockets the file configured to `group`, and `mode`/`dir_mode`
/// where given. A socket mode with no group bits (the file's default, 600)
/// becomes group read-write: the group is given to let its members in.
fn group_every_socket(s: &mut Settings, group: u32, mode: Option<u32>, dir_mode: Option<u32>) {
    let group_mode = |m: Option<u32>| match mode.or(m) {
        Some(m) if m & 0o070 == 0 => Some(m | ((m & 0o600) >> 3)),
        Some(m) => Some(m),
        None => Some(0o660),
    };
    for c in &mut s.controls {
        c.group = Some(group);
        c.mode = group_mode(c.mode);
        c.dir_mode = dir_mode.or(c.dir_mode);
    }
    if let Some((_, m, g)) = &mut s.extras.control {
        *g = Some(group);
        *m = group_mode(*m);
    }
}

#[cfg(test)]
mod tests;
