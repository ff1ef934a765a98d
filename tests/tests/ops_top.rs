//! `switchyard ctl top` against a running daemon under a paced load: the
//! `--once -j` rates agree with the counters' deltas `ctl -j ports` reads
//! around it, and the full-screen view, driven through a pseudo-terminal,
//! shows the ports, sorts on a key, redraws after a resize and quits on
//! `q`.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::ops::{ctl_ok, ctl_ports, parse_json, require_program, Json};
use switchyard_tests::proto::{self, Client};
use switchyard_tests::scenarios::pass_frame;
use switchyard_tests::switch::{switchyard_bin, Switch};
use switchyard_tests::{preflight, wait_until, Netns, SwitchCmd, TempDir};

/// Frames per second the sender keeps to.
const PACE: f64 = 400.0;
/// Bytes per frame.
const FRAME: usize = 200;

/// A switch with a VDE directory and two clients, `a` and `b`, that know
/// each other's address.
struct Lan {
    tmp: TempDir,
    ns: Netns,
    _sw: Switch,
    ctl: PathBuf,
    dir: PathBuf,
    a: Client,
    b: Client,
}

impl Lan {
    fn start(tag: &str) -> Result<Lan> {
        let tmp = TempDir::new(tag)?;
        let ns = Netns::new()?;
        let dir = tmp.join("vde");
        let ctl = tmp.join("control.sock");
        let sw = SwitchCmd::native()?
            .arg("--vde")
            .arg(&dir)
            .arg("--control")
            .arg(&ctl)
            .expect_socket(&dir.join("ctl"))
            .start(Some(&ns))?;
        let scratch = tmp.path().to_path_buf();
        let (a, b) = ns.run(|| -> Result<(Client, Client)> {
            Ok((
                Client::attach(&dir, 0, &scratch, proto::mac(0xa1))?,
                Client::attach(&dir, 0, &scratch, proto::mac(0xb1))?,
            ))
        })??;
        pass_frame(&a, &b, proto::BROADCAST, 60, 1)?;
        pass_frame(&b, &a, a.mac(), 60, 2)?;
        Ok(Lan {
            tmp,
            ns,
            _sw: sw,
            ctl,
            dir,
            a,
            b,
        })
    }

    /// Sends `a` → `b` at [`PACE`] frames/s (catching up after a late
    /// wake-up, so every window of a second holds PACE frames give or take
    /// a few) while `b` drains them, until `stop`.
    fn blast(&self, stop: &AtomicBool) -> Result<()> {
        let frame = proto::frame(self.b.mac(), self.a.mac(), FRAME, 7);
        let start = Instant::now();
        let mut sent = 0u64;
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let _ = self.b.recv_into(&mut buf, Duration::from_millis(50));
                }
            });
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * PACE) as u64;
                while sent < due {
                    self.a.send(&frame)?;
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    }
}

/// A port's counter in a `ctl -j ports` reply.
fn counter(ports: &[Json], name: &str, key: &str) -> Result<f64> {
    ports
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p[key].as_u64())
        .map(|v| v as f64)
        .with_context(|| format!("no {key} for port {name} in {ports:?}"))
}

/// Under a load of PACE frames/s from a to b, `ctl -j top --once
/// --interval 2s` runs between two `ctl -j ports` reads. Its window lies
/// inside theirs and the counters only grow, so for every port and
/// direction rate × interval is at most the outer delta (to float
/// rounding); and the outer window is longer than top's by the wall time
/// the test measures around it, during which at most PACE × that time
/// frames went by, plus the catch-up burst of a sender that woke up late
/// (100 frames: a quarter second late on a busy machine), which bounds it
/// from below. a's receive rate is PACE within 20 % (a 2 s window holds
/// 800 frames; such late wake-ups at both edges move at most 160 of them
/// across). A client that attaches during the interval is listed as new,
/// without rates.
#[test]
fn once_json_rates_agree_with_the_counters() -> Result<()> {
    preflight()?;
    let lan = Lan::start("top1")?;
    let stop = AtomicBool::new(false);
    let (before, top, after, wall) = std::thread::scope(|s| -> Result<_> {
        let sender = s.spawn(|| lan.blast(&stop));
        std::thread::sleep(Duration::from_millis(700));
        let late = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(900));
            let scratch = lan.tmp.path().to_path_buf();
            lan.ns
                .run(|| Client::attach(&lan.dir, 0, &scratch, proto::mac(0xc1)))
        });
        let t0 = Instant::now();
        let before = ctl_ports(&lan.ctl)?;
        let text = ctl_ok(&lan.ctl, &["-j", "top", "--once", "--interval", "2s"])?;
        let after = ctl_ports(&lan.ctl)?;
        let wall = t0.elapsed().as_secs_f64();
        let _late_client = late
            .join()
            .map_err(|_| anyhow::anyhow!("attach panicked"))???;
        stop.store(true, Ordering::Relaxed);
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
        let top = parse_json(text.trim()).with_context(|| format!("top printed {text:?}"))?;
        Ok((before, top, after, wall))
    })?;

    let interval = top["interval_seconds"]
        .as_f64()
        .context("no interval_seconds")?;
    ensure!(
        (1.9..3.0).contains(&interval) && interval < wall,
        "interval {interval} s (wall {wall} s)"
    );
    let rows = top["ports"].as_array().context("no ports")?;
    let outside = wall - interval;
    let mut checked = 0;
    for row in rows.iter().filter(|r| r["new"] == false) {
        let name = row["name"].as_str().context("no name")?;
        for (rate, key, scale) in [
            ("rx_frames_per_second", "rx_frames", 1.0),
            ("tx_frames_per_second", "tx_frames", 1.0),
            ("rx_bits_per_second", "rx_bytes", 8.0),
            ("tx_bits_per_second", "tx_bytes", 8.0),
        ] {
            let seen = row[rate].as_f64().context("no rate")? * interval / scale;
            let delta = counter(&after, name, key)? - counter(&before, name, key)?;
            let per_frame = if scale == 1.0 { 1.0 } else { FRAME as f64 };
            let slack = (PACE * outside + 100.0) * per_frame;
            ensure!(
                seen <= delta * 1.000_001 + 1e-6 && seen >= delta - slack,
                "{name} {rate}: top counted {seen:.1} over {interval:.3} s, the counters moved \
                 {delta} over {wall:.3} s (slack {slack:.0})"
            );
            checked += 1;
        }
        ensure!(
            row["drops_per_second"].is_object() && row["held_per_second"].is_number(),
            "{row}"
        );
    }
    ensure!(checked == 8, "expected a and b with rates: {top}");
    let by_mac_rx = |want: f64| {
        rows.iter()
            .filter_map(|r| r["rx_frames_per_second"].as_f64())
            .any(|v| (v - want).abs() <= want * 0.2)
    };
    ensure!(by_mac_rx(PACE), "no port receives {PACE} frames/s: {top}");
    let new: Vec<&Json> = rows.iter().filter(|r| r["new"] == true).collect();
    ensure!(
        new.len() == 1 && new[0].get("rx_frames_per_second").is_none(),
        "the client that came during the interval should be new, without rates: {top}"
    );
    ensure!(top["fdb"]["entries"].as_u64() >= Some(2), "fdb: {top}");
    Ok(())
}

/// A pseudo-terminal with `switchyard ctl top` on its other side: the
/// output is collected by a thread until the program closes the terminal.
struct Pty {
    child: Child,
    slave: PathBuf,
    output: Arc<Mutex<Vec<u8>>>,
    master: std::fs::File,
}

impl Pty {
    fn spawn(ctl: &Path, args: &[&str], cols: u16, rows: u16) -> Result<Pty> {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).context("openpty")?;
        let slave = nix::unistd::ttyname(&pty.slave).context("ttyname")?;
        let io = |fd: &OwnedFd| -> Result<Stdio> { Ok(Stdio::from(fd.try_clone()?)) };
        // setsid -c: a session of its own with the terminal as its
        // controlling terminal, so a resize signals it.
        let child = Command::new(require_program("setsid", "util-linux")?)
            .args(["-w", "-c"])
            .arg(switchyard_bin()?)
            .args(["ctl", "-s"])
            .arg(ctl)
            .arg("top")
            .args(args)
            .env("TERM", "xterm")
            .stdin(io(&pty.slave)?)
            .stdout(io(&pty.slave)?)
            .stderr(io(&pty.slave)?)
            .spawn()
            .context("spawning ctl top on a pty")?;
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone()?, output.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the program has closed the terminal.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(Pty {
            child,
            slave,
            output,
            master,
        })
    }

    /// Everything printed so far, from byte `from` on.
    fn text_from(&self, from: usize) -> String {
        let out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(out.get(from..).unwrap_or_default()).into_owned()
    }

    fn len(&self) -> usize {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until the output from `from` on satisfies `ok`.
    fn wait(&self, from: usize, what: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
        let r = wait_until(Duration::from_secs(5), what, || ok(&self.text_from(from)));
        let text = self.text_from(from);
        r.with_context(|| format!("the screen printed {text:?}"))?;
        Ok(text)
    }

    fn key(&mut self, k: &[u8]) -> Result<()> {
        use std::io::Write;
        self.master.write_all(k).context("typing a key")
    }

    /// Resizes the terminal the way a terminal emulator does: TIOCSWINSZ
    /// on it (stty), which sends SIGWINCH to its foreground process.
    fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let out = Command::new("stty")
            .arg("-F")
            .arg(&self.slave)
            .args(["cols", &cols.to_string(), "rows", &rows.to_string()])
            .output()
            .context("stty")?;
        ensure!(out.status.success(), "stty: {out:?}");
        Ok(())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when the output ends with a whole screen: each draw ends by
/// clearing below its last line.
fn drawn(t: &str) -> bool {
    t.ends_with("\x1b[J")
}

/// The full-screen view on a 160×30 pseudo-terminal with a 30 s interval
/// (so every redraw seen is one a key or a resize caused): it shows the
/// summary, the header and a row per client port; `n` redraws sorted by
/// name; a resize to 40 columns redraws at once, every line cut to the
/// new width (the PEER column is gone); `q` leaves the alternate screen
/// and exits 0.
#[test]
fn the_full_screen_view_sorts_resizes_and_quits() -> Result<()> {
    preflight()?;
    let lan = Lan::start("top2")?;
    let names: Vec<String> = ctl_ports(&lan.ctl)?
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    ensure!(names.len() == 2, "two client ports: {names:?}");
    let mut pty = Pty::spawn(&lan.ctl, &["--interval", "30s"], 160, 30)?;
    let first = pty.wait(0, "the first screen", |t| {
        drawn(t) && t.contains("PEER") && names.iter().all(|n| t.contains(&format!("{n} ")))
    })?;
    ensure!(
        first.contains("\x1b[?1049h") && first.contains("switchyard top: 2 ports"),
        "no full screen: {first:?}"
    );
    ensure!(first.contains("sort: traffic"), "{first:?}");

    let mark = pty.len();
    pty.key(b"n")?;
    pty.wait(mark, "a redraw sorted by name", |t| {
        drawn(t) && t.contains("sort: name")
    })?;

    let mark = pty.len();
    pty.resize(40, 12)?;
    let resized = pty.wait(mark, "a redraw after the resize", |t| {
        drawn(t)
            && t.contains("switchyard top: 2 ports")
            && names.iter().all(|n| t.contains(n.as_str()))
    })?;
    ensure!(
        !resized.contains("PEER") && !resized.contains("sort: name"),
        "lines not cut to 40 columns after the resize: {resized:?}"
    );

    let mark = pty.len();
    pty.key(b"q")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = pty.child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            bail!("ctl top did not quit on q: {:?}", pty.text_from(mark));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(status.success(), "ctl top exited {status}");
    pty.wait(mark, "the normal screen back", |t| {
        t.contains("\x1b[?1049l")
    })?;
    Ok(())
}
