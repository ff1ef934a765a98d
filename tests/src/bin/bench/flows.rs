//! The frame-level scenarios of the speed issue: two pairs blasting at
//! once, UML-style clients that use sendto()/recvfrom() per frame, switch
//! CPU at a fixed sending rate, and unicast with 64 k learned addresses.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::measure::{
    self, Config, FloodSample, Rx, RxMode, Shape, Tx, TxMode, LARGE_FRAME, RECV_SLOT, SMALL_FRAME,
};
use super::proto::{self, Port, ETHERTYPE};
use super::sys::{self, MsgBatch};

/// How long a blocking sendto/recvfrom waits before checking `stop`.
const BLOCK_SLICE: Duration = Duration::from_millis(20);

/// A→B and C→D at once, each from its own thread, 64-byte frames.
pub fn pairs(ctl: &Path, pid: u32, cfg: &Config) -> Result<FloodSample> {
    let ports = (0..4)
        .map(|_| Port::connect(ctl))
        .collect::<Result<Vec<_>>>()?;
    proto::learn_all(&ports)?;
    let [a, b, c, d] = &ports[..] else {
        bail!("expected four ports");
    };
    let tx = [
        Tx {
            sock: &a.data,
            frame: proto::build_frame(b.mac, a.mac, SMALL_FRAME),
            mode: TxMode::Batched,
        },
        Tx {
            sock: &c.data,
            frame: proto::build_frame(d.mac, c.mac, SMALL_FRAME),
            mode: TxMode::Batched,
        },
    ];
    let rx = [
        Rx {
            sock: &b.data,
            src: a.mac,
            mode: RxMode::Batched,
        },
        Rx {
            sock: &d.data,
            src: c.mac,
            mode: RxMode::Batched,
        },
    ];
    measure::run_flood(pid, cfg, Shape::Pairs, SMALL_FRAME, &tx, &rx)
}

/// A→B with unconnected data sockets, one `sendto` per frame and one
/// `recvfrom` per frame, as UML's daemon transport does.
pub fn sendto(ctl: &Path, pid: u32, cfg: &Config) -> Result<FloodSample> {
    let ports = [Port::attach(ctl, false)?, Port::attach(ctl, false)?];
    proto::learn_all(&ports)?;
    let [a, b] = &ports;
    let tx = [Tx {
        sock: &a.data,
        frame: proto::build_frame(b.mac, a.mac, SMALL_FRAME),
        mode: TxMode::SendTo(&a.remote),
    }];
    let rx = [Rx {
        sock: &b.data,
        src: a.mac,
        mode: RxMode::RecvFrom,
    }];
    measure::run_flood(pid, cfg, Shape::Unicast, SMALL_FRAME, &tx, &rx)
}

/// A→B with 1514-byte frames at `cfg.paced_fps`.
pub fn paced(ctl: &Path, pid: u32, cfg: &Config) -> Result<FloodSample> {
    let ports = [Port::connect(ctl)?, Port::connect(ctl)?];
    proto::learn_all(&ports)?;
    let [a, b] = &ports;
    let tx = [Tx {
        sock: &a.data,
        frame: proto::build_frame(b.mac, a.mac, LARGE_FRAME),
        mode: TxMode::Paced(cfg.paced_fps),
    }];
    let rx = [Rx {
        sock: &b.data,
        src: a.mac,
        mode: RxMode::Batched,
    }];
    measure::run_flood(pid, cfg, Shape::Unicast, LARGE_FRAME, &tx, &rx)
}

/// One `sendto(remote)` per frame on a blocking socket with a short send
/// timeout (a full switch queue makes the sender wait, as with the
/// batched sender, instead of dropping).
pub fn sendto_loop(
    sock: &UnixDatagram,
    remote: &SocketAddr,
    frame: &[u8],
    stop: &AtomicBool,
    tx: &AtomicU64,
) -> Result<()> {
    sock.set_nonblocking(false)
        .context("making the socket blocking")?;
    sock.set_write_timeout(Some(BLOCK_SLICE))
        .context("setting the send timeout")?;
    while !stop.load(Ordering::Relaxed) {
        match sock.send_to_addr(frame, remote) {
            Ok(_) => {
                tx.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e).context("sendto"),
        }
    }
    Ok(())
}

/// Count frames read with one `recvfrom` each until `stop` and a quiet
/// moment.
pub fn recvfrom_loop(
    sock: &UnixDatagram,
    src: [u8; 6],
    frame_len: usize,
    stop: &AtomicBool,
    count: &AtomicU64,
    odd: &AtomicU64,
) -> Result<()> {
    sock.set_nonblocking(false)
        .context("making the socket blocking")?;
    sock.set_read_timeout(Some(BLOCK_SLICE))
        .context("setting the receive timeout")?;
    let mut buf = [0u8; RECV_SLOT];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _from)) => {
                let f = &buf[..n];
                if n == frame_len && f[6..12] == src && f[12..14] == ETHERTYPE {
                    count.fetch_add(1, Ordering::Relaxed);
                } else {
                    odd.fetch_add(1, Ordering::Relaxed);
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("recvfrom"),
        }
    }
}

/// sendmmsg batches of `batch` frames paced to `fps` by a token bucket
/// that holds at most four batches (a late wake-up is made up for with a
/// short burst, a long stall is not).
pub fn paced_loop(
    sock: &UnixDatagram,
    frame: &[u8],
    batch: usize,
    fps: f64,
    stop: &AtomicBool,
    tx: &AtomicU64,
) -> Result<()> {
    let mut msgs = MsgBatch::for_send(batch, frame);
    let batch = msgs.len() as u64;
    let burst = 4 * batch;
    let start = Instant::now();
    // Tokens handed out so far, sent or forfeited.
    let mut used: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * fps) as u64;
        if due > used + burst {
            used = due - burst;
        }
        let tokens = due - used.min(due);
        if tokens < batch {
            let wait = (batch - tokens) as f64 / fps;
            std::thread::sleep(Duration::from_secs_f64(wait));
            continue;
        }
        let n = usize::try_from(tokens.min(batch)).unwrap_or(msgs.len());
        match msgs.send(sock, n) {
            Ok(sent) => {
                used += sent as u64;
                tx.fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait_fd(sock, libc::POLLOUT, Duration::from_millis(20))
                    .context("poll for POLLOUT")?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("sendmmsg"),
        }
    }
    Ok(())
}

/// The unicast flood after the switch has seen `fdb_macs` source MACs.
#[derive(Clone, Debug)]
pub struct FdbSample {
    /// A→B; `rx_frames` = [B, C] where C is a bystander that counts A→B
    /// frames flooded to it (B's address no longer known).
    pub flood: FloodSample,
    /// Distinct source MACs the switch saw: the three ports' plus fillers.
    pub macs: usize,
    /// Seconds to push the filler frames into the switch.
    pub fill_s: f64,
    /// Frames A sent to a sample of filler MACs after the fill.
    pub probes: usize,
    /// Probes that reached C (where their address was learned).
    pub probes_at_c: u64,
    /// Probes that also reached B, i.e. were flooded: not learned.
    pub probes_at_b: u64,
    /// VmRSS of the switch after the ports attached, after the fill and
    /// after the flood, in KiB.
    pub rss_before_kib: Option<f64>,
    pub rss_after_fill_kib: Option<f64>,
    pub rss_after_kib: Option<f64>,
}

impl FdbSample {
    /// Share of the sampled filler MACs the switch forwarded to C only.
    pub fn learned_pct(&self) -> f64 {
        if self.probes == 0 {
            return f64::NAN;
        }
        let learned = self.probes_at_c.saturating_sub(self.probes_at_b);
        100.0 * learned as f64 / self.probes as f64
    }
}

/// VmRSS of process `pid` in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The i-th filler address: locally administered, distinct from the
/// ports' (02:5b:…).
fn filler_mac(i: usize) -> [u8; 6] {
    let b = (i as u32).to_be_bytes();
    [0x02, 0x5c, b[0], b[1], b[2], b[3]]
}

const PROBES: usize = 256;

/// Ports A, B and C attach; C then sends one 64-byte frame from each of
/// `fdb_macs - 3` further source MACs (so the switch has seen `fdb_macs`
/// in all), addressed to C itself so that the switch learns the source
/// and forwards nothing. A probes a sample of those addresses, then
/// blasts B as in the unicast measurement while C counts what is flooded
/// to it.
pub fn fdb(ctl: &Path, pid: u32, cfg: &Config) -> Result<FdbSample> {
    let ports = [
        Port::connect(ctl)?,
        Port::connect(ctl)?,
        Port::connect(ctl)?,
    ];
    proto::learn_all(&ports)?;
    let [a, b, c] = &ports;
    let fillers = cfg.fdb_macs.saturating_sub(ports.len());
    let rss_before_kib = rss_kib(pid);

    let t = Instant::now();
    fill(&c.data, c.mac, fillers, cfg.batch)?;
    let fill_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    drain(&b.data)?;
    drain(&c.data)?;
    let rss_after_fill_kib = rss_kib(pid);

    let (probes, probes_at_c, probes_at_b) = probe(a, b, c, fillers)?;

    let tx = [Tx {
        sock: &a.data,
        frame: proto::build_frame(b.mac, a.mac, SMALL_FRAME),
        mode: TxMode::Batched,
    }];
    let rx = [
        Rx {
            sock: &b.data,
            src: a.mac,
            mode: RxMode::Batched,
        },
        Rx {
            sock: &c.data,
            src: a.mac,
            mode: RxMode::Batched,
        },
    ];
    let flood = measure::run_flood(pid, cfg, Shape::Unicast, SMALL_FRAME, &tx, &rx)?;
    Ok(FdbSample {
        flood,
        macs: fillers + ports.len(),
        fill_s,
        probes,
        probes_at_c,
        probes_at_b,
        rss_before_kib,
        rss_after_fill_kib,
        rss_after_kib: rss_kib(pid),
    })
}

/// Send `count` frames to `own` (the sending port's MAC) from filler
/// source MACs 0..count, in sendmmsg batches.
fn fill(sock: &UnixDatagram, own: [u8; 6], count: usize, batch: usize) -> Result<()> {
    let frame = proto::build_frame(own, own, SMALL_FRAME);
    let mut msgs = MsgBatch::for_send(batch, &frame);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 0;
    while next < count {
        sys::check_interrupted()?;
        if Instant::now() > deadline {
            bail!("the switch took only {next} of {count} filler frames in 30 s");
        }
        let n = msgs.len().min(count - next);
        for i in 0..n {
            msgs.slot_mut(i)[6..12].copy_from_slice(&filler_mac(next + i));
        }
        match msgs.send(sock, n) {
            Ok(sent) => next += sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait_fd(sock, libc::POLLOUT, Duration::from_millis(20))
                    .context("poll for POLLOUT")?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("sendmmsg (filler frames)"),
        }
    }
    Ok(())
}

/// Read and discard whatever is queued on a non-blocking socket.
fn drain(sock: &UnixDatagram) -> Result<usize> {
    let mut buf = [0u8; RECV_SLOT];
    let mut n = 0;
    loop {
        match sock.recv(&mut buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("draining a socket"),
        }
    }
}

/// Count the frames on `sock` from `src` to a filler address.
fn count_probes(sock: &UnixDatagram, src: [u8; 6]) -> Result<u64> {
    let mut buf = [0u8; RECV_SLOT];
    let mut n = 0;
    loop {
        match sock.recv(&mut buf) {
            Ok(len) => {
                let f = &buf[..len];
                if len >= 14 && f[0..2] == [0x02, 0x5c] && f[6..12] == src {
                    n += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading probe frames"),
        }
    }
}

/// A sends one frame to each of `PROBES` filler MACs spread over the
/// fill, one at a time; returns (probes, seen at C, seen at B).
fn probe(a: &Port, b: &Port, c: &Port, fillers: usize) -> Result<(usize, u64, u64)> {
    if fillers == 0 {
        return Ok((0, 0, 0));
    }
    let probes = PROBES.min(fillers);
    let (mut at_c, mut at_b) = (0, 0);
    for k in 0..probes {
        sys::check_interrupted()?;
        let dst = filler_mac(k * fillers / probes);
        let frame = proto::build_frame(dst, a.mac, SMALL_FRAME);
        a.send_one(&frame, Duration::from_secs(1))
            .context("sending a probe")?;
        // Wait for it at C (a learned address goes there, and so does a
        // flooded one); the flooded copy for B is counted as it comes.
        let t = Instant::now();
        loop {
            let got = count_probes(&c.data, a.mac)?;
            at_c += got;
            if got > 0 || t.elapsed() > Duration::from_millis(20) {
                break;
            }
            sys::wait_fd(&c.data, libc::POLLIN, Duration::from_millis(5))
                .context("poll for POLLIN")?;
        }
        at_b += count_probes(&b.data, a.mac)?;
    }
    std::thread::sleep(Duration::from_millis(50));
    at_c += count_probes(&c.data, a.mac)?;
    at_b += count_probes(&b.data, a.mac)?;
    Ok((probes, at_c, at_b))
}
