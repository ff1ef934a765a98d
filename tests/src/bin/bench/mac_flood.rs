//! A guest floods the FDB: port C sends from 100,000 distinct source
//! addresses it chose while A blasts B. What the others' unicast rate
//! loses to it, and whether bystander D's learned address survives.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::measure::{self, Config, FloodSample, Rx, RxMode, Shape, Tx, TxMode, SMALL_FRAME};
use super::proto::{self, Port};
use super::sys::{self, MsgBatch};

/// Distinct source addresses the attacker uses.
pub const ATTACK_MACS: usize = 100_000;
/// The attacker's rate while A→B is measured, after one unpaced pass
/// over every address: a guest that keeps its addresses fresh, slowly
/// enough that what it costs the switch is the FDB's doing, not a second
/// blast competing for the same core.
pub const ATTACK_FPS: f64 = 20_000.0;

/// A→B alone, with C sending at the same rate from one address (what
/// any busy neighbour costs), and with the attacker.
#[derive(Clone, Debug)]
pub struct MacFloodSample {
    pub base: FloodSample,
    pub control: FloodSample,
    pub attacked: FloodSample,
    /// Seconds for the first pass over every attacker address.
    pub fill_s: f64,
    /// Attacker frames sent per second during the attacked window.
    pub attack_fps: f64,
    /// D's address still answered where it was learned (forwarded to D
    /// only) after the attack.
    pub bystander_kept: bool,
}

impl MacFloodSample {
    /// Share of A→B's rate the attack took away (negative: it went up).
    pub fn slowdown_pct(&self) -> f64 {
        lost(&self.base, &self.attacked)
    }

    /// Share of A→B's rate the attack took away beyond what the same
    /// rate from one address takes: the FDB's part.
    pub fn fdb_slowdown_pct(&self) -> f64 {
        lost(&self.control, &self.attacked)
    }
}

fn lost(before: &FloodSample, after: &FloodSample) -> f64 {
    let b = before.rx_fps(0);
    if b == 0.0 {
        return f64::NAN;
    }
    100.0 * (1.0 - after.rx_fps(0) / b)
}

/// The i-th attacker address: locally administered, distinct from the
/// ports' (02:5b:…) and the 64 k row's fillers (02:5c:…).
fn attack_mac(i: usize) -> [u8; 6] {
    let b = (i as u32).to_be_bytes();
    [0x02, 0x5d, b[0], b[1], b[2], b[3]]
}

/// Sends from attacker addresses `next..`, cycling, addressed to `own`
/// (the attacker's port, so the switch learns and forwards nothing):
/// one pass as fast as the switch takes it when `fps` is `None`, else
/// paced until `stop`. Returns frames sent.
fn attack(
    sock: &UnixDatagram,
    (own, macs): ([u8; 6], usize),
    batch: usize,
    fps: Option<f64>,
    stop: &AtomicBool,
) -> Result<u64> {
    let frame = proto::build_frame(own, own, SMALL_FRAME);
    let mut msgs = MsgBatch::for_send(batch, &frame);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    let mut sent: u64 = 0;
    loop {
        sys::check_interrupted()?;
        match fps {
            None if sent as usize >= ATTACK_MACS => return Ok(sent),
            None if Instant::now() > deadline => {
                bail!("the switch took only {sent} of {ATTACK_MACS} attacker frames in 30 s")
            }
            Some(_) if stop.load(Ordering::Relaxed) => return Ok(sent),
            Some(rate) => {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                if due < sent + msgs.len() as u64 {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            None => {}
        }
        let n = msgs.len();
        for i in 0..n {
            let mac = attack_mac((sent as usize + i) % macs);
            msgs.slot_mut(i)[6..12].copy_from_slice(&mac);
        }
        match msgs.send(sock, n) {
            Ok(k) => sent += k as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait_fd(sock, libc::POLLOUT, Duration::from_millis(20))
                    .context("poll for POLLOUT")?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("sendmmsg (attacker frames)"),
        }
    }
}

/// A→B as in the unicast measurement.
fn a_to_b(pid: u32, cfg: &Config, a: &Port, b: &Port) -> Result<FloodSample> {
    let tx = [Tx {
        sock: &a.data,
        frame: proto::build_frame(b.mac, a.mac, SMALL_FRAME),
        mode: TxMode::Batched,
    }];
    let rx = [Rx {
        sock: &b.data,
        src: a.mac,
        mode: RxMode::Batched,
    }];
    measure::run_flood(pid, cfg, Shape::Unicast, SMALL_FRAME, &tx, &rx)
}

/// Read and discard what is queued; returns how many frames from `src`
/// to `dst` were among them.
fn count_from(sock: &UnixDatagram, src: [u8; 6], dst: [u8; 6]) -> Result<u64> {
    let mut buf = [0u8; measure::SMALL_FRAME * 32];
    let mut n = 0;
    loop {
        match sock.recv(&mut buf) {
            Ok(len) if len >= 14 && buf[0..6] == dst && buf[6..12] == src => n += 1,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("draining a socket"),
        }
    }
}

/// A→D once: true when D got it and B did not (D's address is learned).
fn bystander_kept(a: &Port, b: &Port, d: &Port) -> Result<bool> {
    count_from(&b.data, a.mac, d.mac)?;
    count_from(&d.data, a.mac, d.mac)?;
    let frame = proto::build_frame(d.mac, a.mac, SMALL_FRAME);
    a.send_one(&frame, Duration::from_secs(1))
        .context("sending the bystander probe")?;
    std::thread::sleep(Duration::from_millis(50));
    let at_d = count_from(&d.data, a.mac, d.mac)?;
    let at_b = count_from(&b.data, a.mac, d.mac)?;
    Ok(at_d == 1 && at_b == 0)
}

/// Ports A, B, C (the attacker) and D attach and are learned. A→B is
/// measured alone; C sends once from each of its addresses, then keeps
/// cycling through them at [`ATTACK_FPS`] while A→B is measured again;
/// then A probes D's address.
pub fn run(ctl: &Path, pid: u32, cfg: &Config) -> Result<MacFloodSample> {
    let ports = (0..4)
        .map(|_| Port::connect(ctl))
        .collect::<Result<Vec<_>>>()?;
    proto::learn_all(&ports)?;
    let [a, b, c, d] = &ports[..] else {
        bail!("expected four ports");
    };
    let base = a_to_b(pid, cfg, a, b)?;
    let (control, _) = while_c_sends(pid, cfg, (a, b, c), 1)?;
    let t = Instant::now();
    let once = AtomicBool::new(false);
    attack(&c.data, (c.mac, ATTACK_MACS), cfg.batch, None, &once)?;
    let fill_s = t.elapsed().as_secs_f64();
    let (attacked, attack_fps) = while_c_sends(pid, cfg, (a, b, c), ATTACK_MACS)?;
    let bystander_kept = bystander_kept(a, b, d)?;
    Ok(MacFloodSample {
        base,
        control,
        attacked,
        fill_s,
        attack_fps,
        bystander_kept,
    })
}

/// A→B while C sends at [`ATTACK_FPS`] from `macs` addresses; returns
/// the flood and C's rate.
fn while_c_sends(
    pid: u32,
    cfg: &Config,
    (a, b, c): (&Port, &Port, &Port),
    macs: usize,
) -> Result<(FloodSample, f64)> {
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let (flood, window) = std::thread::scope(|s| {
        let attacker = s.spawn(|| {
            let n = attack(&c.data, (c.mac, macs), cfg.batch, Some(ATTACK_FPS), &stop);
            sent.store(*n.as_ref().unwrap_or(&0), Ordering::Relaxed);
            n
        });
        let t = Instant::now();
        let flood = a_to_b(pid, cfg, a, b);
        let window = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let joined = attacker
            .join()
            .map_err(|_| anyhow::anyhow!("the attacker thread panicked"));
        (
            flood.and_then(|f| joined.and_then(|r| r.map(|_| f))),
            window,
        )
    });
    Ok((
        flood?,
        sent.load(Ordering::Relaxed) as f64 / window.max(1e-9),
    ))
}
