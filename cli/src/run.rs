//! The daemon's life: bind, (daemonize), serve, and clean up on a signal or
//! stdin EOF.

use crate::control::Command;
use crate::ports::OpenPort;
use crate::running::Running;
use crate::settings::{Flavor, Settings, StdinPolicy, TapSpec};
use anyhow::{Context, Result};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard_bridge::TapDevice;
use switchyard_switch::ports::unix::{Layout, PortNumbers, UnixControl};
use switchyard_switch::{Mode, Switch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Every port holds two or three descriptors: use the whole hard limit
/// rather than the 1024 soft default.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!("cannot raise the open-file limit: {e}");
            }
        }
    }
}

fn termination_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Why the switch stops.
#[derive(Debug)]
enum Shutdown {
    Signal(i32),
    StdinEof,
    Console,
}

fn say(flavor: Flavor, line: &str) {
    // The compatibility modes print their classic lines on stdout, where
    // scripts written for the originals look for them.
    if flavor == Flavor::UmlSwitch {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Binds every control socket, each recorded in `leftovers` at once.
fn bind_controls(settings: &Settings, leftovers: &mut Leftovers) -> Result<Vec<Arc<UnixControl>>> {
    let mut controls = Vec::new();
    for cfg in &settings.controls {
        if let Layout::Socket(path) = &cfg.layout {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.exists() {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!(
                            "cannot create directory {} for the control socket",
                            parent.display()
                        )
                    })?;
                }
            }
        }
        let c = Arc::new(UnixControl::bind(cfg.clone())?);
        leftovers.controls.push(c.clone());
        controls.push(c);
    }
    Ok(controls)
}

/// The control socket and metrics listener, bound before detaching.
#[derive(Debug, Default)]
struct Operations {
    control: Option<(PathBuf, std::os::unix::net::UnixListener)>,
    metrics: Option<std::net::TcpListener>,
}

fn bind_operations(settings: &Settings) -> Result<Operations> {
    let mut ops = Operations::default();
    if settings.flavor == Flavor::Native {
        match &settings.extras.control {
            Some((path, mode, group)) => {
                // Absolute, so that --daemon's chdir to / changes nothing.
                let path = &std::path::absolute(path).unwrap_or_else(|_| path.clone());
                let l = crate::control::bind(path, *mode, *group)?;
                tracing::info!(path = %path.display(), "control socket for `switchyard ctl`");
                ops.control = Some((path.clone(), l));
            }
            None => {
                // The default is a convenience: a second switch on this
                // host runs without one rather than failing.
                let path = crate::control::default_path();
                match crate::control::bind(&path, None, None) {
                    Ok(l) => {
                        tracing::info!(path = %path.display(), "control socket for `switchyard ctl`");
                        ops.control = Some((path, l));
                    }
                    Err(e) => tracing::warn!("no control socket: {e:#}"),
                }
            }
        }
    }
    if let Some(addr) = settings.extras.metrics {
        let l = crate::metrics::bind(addr)?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        ops.metrics = Some(l);
    }
    Ok(ops)
}

fn open_taps(settings: &Settings) -> Result<Vec<(TapDevice, TapSpec)>> {
    let mut taps = Vec::new();
    for spec in &settings.taps {
        match TapDevice::open_with(&spec.device, spec.offload) {
            Ok(t) => taps.push((t.with_port_name(spec.name.clone()), spec.clone())),
            // The originals run on without a tap that cannot be opened.
            Err(e) if settings.flavor != Flavor::Native => {
                tracing::error!("{e}; continuing without it");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(taps)
}

/// What to remove when `run` returns, by success or failure: every socket
/// and the pid file. (A launcher that forked leaves by `process::exit`,
/// which runs no destructor, so the detached child keeps its sockets.)
#[derive(Debug, Default)]
struct Leftovers {
    controls: Vec<Arc<UnixControl>>,
    sockets: Vec<PathBuf>,
    pidfile: Option<PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for c in &self.controls {
            c.cleanup();
        }
        for p in self.sockets.iter().chain(&self.pidfile) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs the switch until it is told to stop.
pub fn run(settings: Settings) -> Result<()> {
    // Hold termination signals until the runtime's handlers exist, so a
    // SIGTERM right after the sockets appear still cleans them up.
    let held = termination_signals();
    if let Err(e) = held.thread_block() {
        tracing::warn!("cannot hold signals during start-up: {e}");
    }
    raise_fd_limit();
    let mut leftovers = Leftovers::default();
    let controls = bind_controls(&settings, &mut leftovers)?;
    let taps = open_taps(&settings)?;
    let mut ports = Vec::new();
    for spec in &settings.ports {
        let p = OpenPort::open(spec)?;
        leftovers.sockets.extend(p.socket_path());
        ports.push(p);
    }
    let ops = bind_operations(&settings)?;
    if let Some((path, _)) = &ops.control {
        leftovers.sockets.push(path.clone());
    }
    announce(&settings, &controls, &taps);
    // Resolved before --daemon changes directory to /.
    let pidfile = settings
        .pidfile
        .as_ref()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    let mut parent = None;
    if settings.daemon {
        // Keep stderr (our log) unless vde_switch's -d, which detaches all.
        let noclose = settings.flavor != Flavor::VdeSwitch;
        parent = Some(daemonize(noclose)?);
    }
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", p.display()))?;
        leftovers.pidfile = Some(p.clone());
    }
    // The launching process exits only now, so whoever started us finds
    // the sockets bound and the pid file written.
    if let Some(p) = parent {
        p.release();
    }
    // One runtime thread by default: on small hosts the guests need the
    // other cores, and a single thread forwards about twice the frames of
    // a work-stealing pool per CPU-second (see the README's benchmark).
    let runtime = match settings.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .thread_name("switchyard")
            .build(),
    }
    .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(&settings, &controls, taps, ports, ops));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    drop(leftovers);
    match result {
        Ok(Shutdown::Signal(n)) => {
            say(
                settings.flavor,
                &format!("Caught signal {n}, cleaning up and exiting"),
            );
            tracing::info!(signal = n, "stopping on signal");
        }
        Ok(Shutdown::StdinEof) => {
            say(settings.flavor, "EOF on stdin, cleaning up and exiting");
            tracing::info!("stopping: EOF on stdin");
        }
        Ok(Shutdown::Console) => tracing::info!("stopping: shutdown from the console"),
        Err(e) => return Err(e),
    }
    // Do not wait for tasks blocked on stdin.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

fn announce(settings: &Settings, controls: &[Arc<UnixControl>], taps: &[(TapDevice, TapSpec)]) {
    let mode = if settings.engine.mode == Mode::Hub {
        "hub"
    } else {
        "switch"
    };
    for c in controls {
        match c.layout() {
            Layout::Directory(dir) => tracing::info!(
                ctl = %c.ctl_path().display(), mode,
                "listening: VDE directory {d} (vde_plug {d}, qemu -netdev vde,sock={d}, UML eth0=vde,{d} or eth0=daemon,,unix,{d}/ctl)",
                d = dir.display()
            ),
            Layout::Socket(p) => tracing::info!(
                ctl = %p.display(), mode,
                "listening: control socket {p} (UML eth0=daemon,,unix,{p})",
                p = p.display()
            ),
        }
    }
    if settings.flavor == Flavor::UmlSwitch {
        if settings.engine.mode == Mode::Hub {
            say(
                settings.flavor,
                "uml_switch will be a hub instead of a switch",
            );
        }
        let ctl = match controls.first().map(|c| c.layout()) {
            Some(Layout::Socket(p)) => p.display().to_string(),
            _ => String::new(),
        };
        let mut line = format!("uml_switch attached to unix socket '{ctl}'");
        for (t, _) in taps {
            line.push_str(&format!(" tap device '{}'", t.name()));
        }
        say(settings.flavor, &line);
    }
}

/// The detached child's link to the process that launched it.
struct Launcher(std::os::fd::OwnedFd);

impl Launcher {
    /// Lets the launching process exit 0.
    fn release(self) {
        let _ = nix::unistd::write(&self.0, b"1");
    }
}

/// Forks: the parent waits until the child calls [`Launcher::release`]
/// (exit 0) or dies first (exit 1); the child starts a new session in `/`
/// with stdin and stdout (and stderr unless `noclose`) on /dev/null.
fn daemonize(noclose: bool) -> Result<Launcher> {
    use nix::unistd::ForkResult;
    use std::io::Read;
    let (read_end, write_end) = nix::unistd::pipe().context("cannot create a pipe")?;
    // The runtime and the stdin thread start later.
    match crate::sys::fork_single_threaded().context("cannot fork")? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut b = [0u8; 1];
            let ok = std::fs::File::from(read_end)
                .read(&mut b)
                .is_ok_and(|n| n == 1);
            std::process::exit(if ok { 0 } else { 1 });
        }
        ForkResult::Child => drop(read_end),
    }
    nix::unistd::setsid().context("cannot start a session")?;
    std::env::set_current_dir("/").context("cannot change directory to /")?;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    nix::unistd::dup2_stdin(&devnull).context("cannot redirect stdin")?;
    nix::unistd::dup2_stdout(&devnull).context("cannot redirect stdout")?;
    if !noclose {
        nix::unistd::dup2_stderr(&devnull).context("cannot redirect stderr")?;
    }
    Ok(Launcher(write_end))
}

async fn serve(
    settings: &Settings,
    controls: &[Arc<UnixControl>],
    taps: Vec<(TapDevice, TapSpec)>,
    ports: Vec<OpenPort>,
    ops: Operations,
) -> Result<Shutdown> {
    let switch = Switch::new(settings.engine);
    switch.set_backpressure(settings.backpressure);
    if !settings.backpressure {
        tracing::info!("backpressure off: frames a full peer refuses are dropped");
    }
    switch.set_busy_poll(settings.busy_poll);
    if !settings.busy_poll.is_zero() {
        tracing::info!(
            "busy polling {} after each burst: lower latency, one core busy while traffic flows",
            crate::config::show_busy_poll(settings.busy_poll)
        );
    }
    switch.set_static_macs(settings.static_macs.clone());
    switch.set_vlan_rules(switchyard_switch::VlanRules::new(settings.vlans.clone()));
    crate::control::roles::Roles::of(&switch).set_admin_group(settings.extras.admin_group);
    let numbers = Arc::new(PortNumbers::new(settings.numports));
    let mut running = Running::new(switch.clone(), numbers);
    for (c, cfg) in controls.iter().zip(&settings.controls) {
        running.start_control(c.clone(), cfg.clone());
    }
    for (t, spec) in taps {
        running.start_tap(t, spec);
    }
    for (spec, p) in settings.ports.iter().zip(ports) {
        running.start_port(spec.clone(), p);
    }
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(8);
    // Held until the main loop ends; dropping them stops both threads.
    let _listeners = start_listeners(ops, &switch, cmd_tx)?;
    {
        let switch = switch.clone();
        tokio::spawn(async move {
            let mut tick = switchyard_switch::tick::Ticker::every(Duration::from_secs(1));
            loop {
                tick.tick().await;
                switch.age();
            }
        });
    }
    // Every port task is spawned and every socket bound: tell systemd.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd: {e}");
    }
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<Shutdown>();
    watch_stdin(settings, stop_tx);
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    // Handlers are in place: take what arrived meanwhile.
    if let Err(e) = termination_signals().thread_unblock() {
        tracing::warn!("cannot release held signals: {e}");
    }
    let mut stdin_watched = true;
    let why = loop {
        tokio::select! {
            _ = sigint.recv() => break Shutdown::Signal(libc::SIGINT),
            _ = sigterm.recv() => break Shutdown::Signal(libc::SIGTERM),
            _ = sighup.recv() => {
                if settings.flavor != Flavor::Native {
                    break Shutdown::Signal(libc::SIGHUP);
                }
                let _ = reload(&mut running, settings).await;
            }
            Some(cmd) = cmd_rx.recv() => match cmd {
                Command::Reload(reply) => {
                    let _ = reply.send(reload(&mut running, settings).await);
                }
                Command::PortAdd(spec, reply) => {
                    let r = running.add(&spec);
                    settle().await;
                    if let Ok(done) = &r {
                        tracing::info!("switchyard ctl: {done}");
                    }
                    let _ = reply.send(r);
                }
                Command::PortDel(name, reply) => {
                    let r = running.remove(&name).await;
                    if let Ok(done) = &r {
                        tracing::info!("switchyard ctl: {done}");
                    }
                    let _ = reply.send(r);
                }
            },
            why = stop_rx.recv(), if stdin_watched => match why {
                Some(why) => break why,
                // The stdin thread is gone (or was never started): stop
                // polling a closed channel.
                None => stdin_watched = false,
            },
        }
    };
    running.cleanup();
    Ok(why)
}

/// Serves the control socket and the metrics endpoint, each on a thread
/// and runtime of its own (see [`crate::accept`]): a flood of connections
/// or a large scrape never delays the data path, nor it them. Returns what
/// stops both when dropped.
fn start_listeners(
    ops: Operations,
    switch: &Arc<Switch>,
    commands: mpsc::Sender<Command>,
) -> Result<Vec<tokio::sync::oneshot::Sender<()>>> {
    use crate::accept::{spawn_thread, CONTROL_LIMITS, METRICS_LIMITS};
    let listeners = crate::metrics::Listeners::new();
    let mut stops = Vec::new();
    if let Some((_, l)) = ops.control {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (switch, slots) = (switch.clone(), listeners.control.clone());
        spawn_thread("control", rx, move || {
            crate::control::serve(l, switch, commands, CONTROL_LIMITS, slots)
        })
        .context("cannot start the control socket's thread")?;
        stops.push(tx);
    }
    if let Some(l) = ops.metrics {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let switch = switch.clone();
        spawn_thread("metrics", rx, move || {
            crate::metrics::serve(l, switch, METRICS_LIMITS, listeners)
        })
        .context("cannot start the metrics endpoint's thread")?;
        stops.push(tx);
    }
    Ok(stops)
}

/// Re-reads the command line and configuration file and applies what
/// changed. A bad file changes nothing.
async fn reload(running: &mut Running, settings: &Settings) -> Result<String, String> {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
    let result = match &settings.extras.config_path {
        None => {
            Err("switchyard was started without --config: there is nothing to reload".to_string())
        }
        Some(_) => match crate::args::native::parse(settings.extras.argv.clone()) {
            Err(u) => Err(u.message.trim_end().to_string()),
            Ok(new) => {
                let applied = running.apply(&new).await.map(|c| c.to_string());
                if applied.is_ok() {
                    let roles = crate::control::roles::Roles::of(running.switch());
                    roles.set_admin_group(new.extras.admin_group);
                }
                applied
            }
        },
    };
    settle().await;
    match &result {
        Ok(changes) => tracing::info!("configuration reloaded: {changes}"),
        Err(e) => tracing::error!("reload failed: {e}"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    result
}

/// Lets the ports just started attach before the reply goes out, so that
/// whoever asked (`ctl`, `systemctl reload`) finds them listed at once:
/// a port's task attaches before its first wait, and on the default
/// single-threaded runtime a yield runs every task spawned before it.
async fn settle() {
    for _ in 0..2 {
        tokio::task::yield_now().await;
    }
}

/// Watches stdin on a plain thread (reads block) when the flavor asks for
/// it. As vde_switch, stdin is a console: `shutdown` stops the switch, other
/// commands are not implemented.
fn watch_stdin(settings: &Settings, stop: mpsc::UnboundedSender<Shutdown>) {
    let watch = match settings.stdin {
        StdinPolicy::Ignore => false,
        StdinPolicy::TerminalEof => nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
        StdinPolicy::AnyEof => true,
    };
    if !watch {
        return;
    }
    let console = settings.flavor == Flavor::VdeSwitch;
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut line = Vec::new();
            loop {
                line.clear();
                // Bytes, not text: a stray non-UTF-8 byte is not an EOF.
                match stdin.lock().read_until(b'\n', &mut line) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Ok(0) | Err(_) => {
                        let _ = stop.send(Shutdown::StdinEof);
                        return;
                    }
                    Ok(_) if console => {
                        let text = String::from_utf8_lossy(&line);
                        let cmd = text.trim();
                        if cmd == "shutdown" {
                            let _ = stop.send(Shutdown::Console);
                            return;
                        }
                        if !cmd.is_empty() {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "1038 Function not implemented");
                            let _ = out.flush();
                        }
                    }
                    Ok(_) => {}
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch stdin: {e}");
    }
}
