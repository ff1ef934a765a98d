//! MAC-NAT's cost on a pcap port. Only switchyard has a pcap port, so it
//! is compared with itself: each repetition starts two, side by side,
//! MAC-NAT off and on, each with a pcap port on one end of its own veth
//! pair ("the NIC") and one guest on a unix port (this benchmark's own VDE
//! client). The veth's other end is "the LAN". The measurement window is
//! cut into short slices that alternate between the two (see [`run`]).
//!
//! - guest → LAN: the guest blasts 64-byte IPv4/UDP frames from its own
//!   MAC and 203.0.113.10 to the LAN's MAC; switchyard injects them on the
//!   NIC (with MAC-NAT: after rewriting the source to the NIC's MAC), and
//!   the LAN's `rx_packets` counts them.
//! - LAN → guest: an AF_PACKET socket on the LAN end sends IPv4/UDP frames
//!   to 203.0.113.10, addressed to the NIC's MAC with MAC-NAT (it maps them
//!   back to the guest by IP address) and to the guest's MAC without, as
//!   fast as the guest receives them; the guest counts what arrives with
//!   its MAC as destination.
//!
//! Before measuring, the guest's first frames must reach the LAN with the
//! expected source MAC (the NIC's with MAC-NAT, the guest's own without):
//! this proves the port is up, that MAC-NAT really is on or off, and it
//! gives MAC-NAT its binding for 203.0.113.10. Both ends of the veth drop
//! every frame at their netfilter ingress hook (which runs after packet
//! capture), so that the kernel's IP stack does the same nothing in both
//! settings.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use switchyard_switch::checksum::sum as sum16;

use super::measure::{self, process_cpu_s, Config, FloodSample, Shape, SMALL_FRAME};
use super::proto::Port;
use super::sys;
use super::world::{self, SwitchKind, SwitchProc};

/// Why uml_switch and vde_switch have no number in this measurement.
pub const NO_PCAP_PORT: &str =
    "uml_switch and vde_switch have no pcap port: macnat_pcap compares switchyard with \
     MAC-NAT on against switchyard with MAC-NAT off (see the MAC-NAT table).";

/// The guest's address (it owns it as far as MAC-NAT is concerned).
const GUEST_IP: [u8; 4] = [203, 0, 113, 10];
/// The LAN host the guest talks to.
const LAN_IP: [u8; 4] = [198, 51, 100, 1];
const GUEST_UDP_PORT: u16 = 40_000;
/// The discard port.
const LAN_UDP_PORT: u16 = 9;
/// Locally administered MACs of the veth ends, distinct from the guest's
/// (02:5b:…) and from fdb_64k's fillers (02:5c:…).
const NIC_MAC: [u8; 6] = [0x02, 0x5d, 0, 0, 0, 0x01];
const LAN_MAC: [u8; 6] = [0x02, 0x5d, 0, 0, 0, 0x02];
const ETH_P_ALL: u16 = 0x0003;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
/// How long the guest's first frames may take to come out on the LAN
/// (the pcap port opens after the control socket appears).
const PRIME_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(1);

/// One setting's counts over a repetition, both directions.
#[derive(Clone, Debug)]
pub struct PcapRun {
    /// guest → LAN: `tx` = frames the guest sent, `rx_frames[0]` = frames
    /// the LAN end received.
    pub out: FloodSample,
    /// LAN → guest: `tx` = frames the LAN's socket sent, `rx_frames[0]` =
    /// frames the guest received.
    pub inbound: FloodSample,
}

/// One repetition: the same measurement with MAC-NAT off and on.
#[derive(Clone, Debug)]
pub struct MacNatSample {
    pub off: PcapRun,
    pub on: PcapRun,
    /// Slices per direction and setting (see [`run`]).
    pub slices: usize,
}

/// Length of one slice of the measurement window (see [`run`]).
const SLICE: Duration = Duration::from_millis(250);
/// Warm-up before each slice, at most.
const SLICE_WARMUP: Duration = Duration::from_millis(100);

/// How `cfg.duration` is cut into slices: their number and a slice's
/// own Config (window and warm-up).
pub fn slicing(cfg: &Config) -> (usize, Config) {
    let n = (cfg.duration.as_secs_f64() / SLICE.as_secs_f64())
        .round()
        .max(3.0) as usize;
    let mut slice = cfg.clone();
    slice.duration = cfg.duration / n as u32;
    slice.warmup = cfg.warmup.min(SLICE_WARMUP);
    (n, slice)
}

/// Rough wall-clock seconds of one repetition: two switches started and
/// primed, then per direction and setting the slices with their warm-ups.
pub fn estimate_s(cfg: &Config) -> f64 {
    let (n, slice) = slicing(cfg);
    let per_slice = slice.warmup.as_secs_f64() + slice.duration.as_secs_f64() + 0.05;
    2.0 + 2.0 * 2.0 * n as f64 * per_slice
}

/// Where the helper programs are; checked once before any run.
#[derive(Clone, Debug)]
pub struct Tools {
    pub nft: PathBuf,
}

impl Tools {
    /// Find `nft` (package nftables), which drops the veth's frames at the
    /// ingress hook.
    pub fn find() -> Result<Tools> {
        let nft = world::find_in_path("nft").context(
            "nft is not installed (needed by macnat_pcap): `apt-get install nftables` \
             (tests/bench/run.sh does that), or leave macnat_pcap out with --only",
        )?;
        Ok(Tools { nft })
    }
}

/// Where a run keeps its files and what it starts.
pub struct Setup<'a> {
    pub exe: &'a Path,
    /// Extra switchyard arguments (--switchyard-arg).
    pub extra: &'a [String],
    pub workdir: &'a Path,
    /// Unique name of this repetition.
    pub tag: &'a str,
    /// Directory for the switch's output (--logs).
    pub logs: Option<&'a Path>,
    pub tools: &'a Tools,
}

/// One repetition. Two switchyards run side by side, MAC-NAT off and on,
/// each with its own veth pair and guest; the measurement window of each
/// direction is cut into slices of about 0.25 s that alternate between the
/// two (ABBA…, the first one changing with `rep`), each after a short
/// warm-up, and the slices' counts are summed per setting. Only one of the
/// two carries traffic at any moment, and a load that other programs put
/// on the machine falls on both settings alike, which a window of several
/// seconds each, one after the other, cannot promise.
pub fn run(setup: &Setup, rep: usize, cfg: &Config) -> Result<MacNatSample> {
    let mut rigs = [Rig::start(setup, false)?, Rig::start(setup, true)?];
    let (n, slice) = slicing(cfg);
    let mut sums: [[Option<FloodSample>; 2]; 2] = Default::default();
    for (d, dir) in [Direction::Out, Direction::In].into_iter().enumerate() {
        for i in 0..n {
            let first = (i + rep) % 2;
            for k in [first, 1 - first] {
                sys::check_interrupted()?;
                let rig = &mut rigs[k];
                let s = rig
                    .measure(dir, &slice)
                    .with_context(|| format!("{} with MAC-NAT {}", dir.label(), rig.setting()))?;
                sums[k][d] = Some(match sums[k][d].take() {
                    Some(acc) => add(acc, &s),
                    None => s,
                });
            }
        }
    }
    for rig in &mut rigs {
        // A crash explains odd numbers better than anything else.
        rig.sw
            .check_alive()
            .with_context(|| format!("MAC-NAT {}", rig.setting()))?;
    }
    let [[off_out, off_in], [on_out, on_in]] = sums;
    let missing = || anyhow!("no slice was measured");
    Ok(MacNatSample {
        off: PcapRun {
            out: off_out.ok_or_else(missing)?,
            inbound: off_in.ok_or_else(missing)?,
        },
        on: PcapRun {
            out: on_out.ok_or_else(missing)?,
            inbound: on_in.ok_or_else(missing)?,
        },
        slices: n,
    })
}

/// Two slices' counts as one window.
fn add(mut acc: FloodSample, s: &FloodSample) -> FloodSample {
    acc.window_s += s.window_s;
    acc.tx_frames += s.tx_frames;
    for (a, b) in acc.rx_frames.iter_mut().zip(&s.rx_frames) {
        *a += b;
    }
    acc.odd_frames += s.odd_frames;
    acc.switch_cpu_s = acc.switch_cpu_s.zip(s.switch_cpu_s).map(|(a, b)| a + b);
    acc
}

#[derive(Clone, Copy, Debug)]
enum Direction {
    /// guest → LAN.
    Out,
    /// LAN → guest.
    In,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Out => "guest → LAN",
            Direction::In => "LAN → guest",
        }
    }
}

/// One switchyard with a pcap port on its own veth pair and one guest,
/// primed in both directions. Fields drop in order: the guest's port and
/// the LAN's socket close, the switch stops, then its NIC goes.
struct Rig {
    guest: Port,
    lan: PacketSocket,
    sw: SwitchProc,
    veth: Veth,
    mac_nat: bool,
    out_frame: Vec<u8>,
    in_frame: Vec<u8>,
}

impl Rig {
    fn start(setup: &Setup, mac_nat: bool) -> Result<Rig> {
        sys::check_interrupted()?;
        let veth = Veth::create(NEXT.fetch_add(1, Ordering::Relaxed), setup.tools)?;
        let setting = if mac_nat { "on" } else { "off" };
        let tag = format!("{}-macnat-{setting}", setup.tag);
        let log = setup.logs.map(|d| d.join(format!("{tag}.log")));
        let mut args = setup.extra.to_vec();
        args.push("--port".into());
        args.push(format!(
            "pcap,name=uplink,device={}{}",
            veth.nic,
            if mac_nat { ",mac_nat=on" } else { "" }
        ));
        let mut sw = SwitchProc::start(
            SwitchKind::Switchyard,
            setup.exe,
            &args,
            setup.workdir,
            &tag,
            log,
        )?;
        sw.wait_ready(Duration::from_secs(10))
            .with_context(|| format!("MAC-NAT {setting}"))?;
        let guest = Port::connect(sw.ctl())?;
        let lan = PacketSocket::bind(veth.lan_index, 0).context("the LAN's sending socket")?;
        let out_frame = ipv4_udp_frame(
            LAN_MAC,
            guest.mac,
            (GUEST_IP, GUEST_UDP_PORT),
            (LAN_IP, LAN_UDP_PORT),
            SMALL_FRAME,
        );
        // With MAC-NAT the LAN knows the guest only under the NIC's MAC.
        let in_dst = if mac_nat { NIC_MAC } else { guest.mac };
        let in_frame = ipv4_udp_frame(
            in_dst,
            LAN_MAC,
            (LAN_IP, LAN_UDP_PORT),
            (GUEST_IP, GUEST_UDP_PORT),
            SMALL_FRAME,
        );
        let mut rig = Rig {
            guest,
            lan,
            sw,
            veth,
            mac_nat,
            out_frame,
            in_frame,
        };
        rig.prime().with_context(|| format!("MAC-NAT {setting}"))?;
        Ok(rig)
    }

    fn setting(&self) -> &'static str {
        if self.mac_nat {
            "on"
        } else {
            "off"
        }
    }

    /// What the guest must get from the LAN: its own MAC as destination
    /// (MAC-NAT put it there), the LAN's as source, our frame's length.
    fn good_in(&self) -> impl Fn(&[u8]) -> bool + Sync {
        let guest_mac = self.guest.mac;
        move |f: &[u8]| {
            f.len() == SMALL_FRAME
                && f[0..6] == guest_mac
                && f[6..12] == LAN_MAC
                && f[12..14] == ETHERTYPE_IPV4
        }
    }

    /// The guest's first frames must reach the LAN from the expected
    /// source MAC, which proves that MAC-NAT is on (or off) and gives it
    /// the guest's binding; then a LAN frame must reach the guest.
    fn prime(&mut self) -> Result<()> {
        let expect_src = if self.mac_nat {
            NIC_MAC
        } else {
            self.guest.mac
        };
        prime_out(
            &mut self.sw,
            &self.guest,
            &self.veth,
            &self.out_frame,
            expect_src,
        )?;
        let good = self.good_in();
        prime_in(&mut self.sw, &self.guest, &self.lan, &self.in_frame, &good)
    }

    /// One slice in one direction.
    fn measure(&mut self, dir: Direction, cfg: &Config) -> Result<FloodSample> {
        let pid = self.sw.pid();
        match dir {
            Direction::Out => outbound(pid, &self.guest, &self.veth, &self.out_frame, cfg),
            Direction::In => {
                let good = self.good_in();
                inbound(pid, &self.guest, &self.lan, &self.in_frame, &good, cfg)
            }
        }
    }
}

/// Send guest frames one at a time until one comes out on the LAN; fail
/// if its source MAC is not `expect_src`.
fn prime_out(
    sw: &mut SwitchProc,
    guest: &Port,
    veth: &Veth,
    frame: &[u8],
    expect_src: [u8; 6],
) -> Result<()> {
    let listener =
        PacketSocket::bind(veth.lan_index, ETH_P_ALL).context("the LAN's listening socket")?;
    let mut buf = [0u8; measure::RECV_SLOT];
    let deadline = Instant::now() + PRIME_TIMEOUT;
    loop {
        sys::check_interrupted()?;
        sw.check_alive()?;
        guest
            .send_one(frame, Duration::from_secs(1))
            .context("sending a guest frame")?;
        if sys::wait_fd(&listener, libc::POLLIN, Duration::from_millis(50))
            .context("poll for POLLIN")?
        {
            while let Some(n) = listener.try_recv(&mut buf)? {
                let f = &buf[..n];
                let ours = n == frame.len() && f[12..] == frame[12..];
                if !ours {
                    continue;
                }
                if f[6..12] != expect_src {
                    bail!(
                        "the LAN saw the guest's frame from {}, expected {} (MAC-NAT {})",
                        fmt_mac(&f[6..12]),
                        fmt_mac(&expect_src),
                        if expect_src == NIC_MAC {
                            "did not rewrite it"
                        } else {
                            "rewrote it although it is off"
                        }
                    );
                }
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no guest frame came out on the LAN within {PRIME_TIMEOUT:?}: the pcap port \
                 did not come up (rerun with --logs DIR to see switchyard's output)"
            );
        }
    }
}

/// Send LAN frames one at a time until the guest gets one, then empty the
/// guest's socket.
fn prime_in(
    sw: &mut SwitchProc,
    guest: &Port,
    lan: &PacketSocket,
    frame: &[u8],
    good: &dyn Fn(&[u8]) -> bool,
) -> Result<()> {
    let mut buf = [0u8; measure::RECV_SLOT];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        sys::check_interrupted()?;
        sw.check_alive()?;
        lan.send(frame).context("sending a LAN frame")?;
        if sys::wait_fd(&guest.data, libc::POLLIN, Duration::from_millis(50))
            .context("poll for POLLIN")?
        {
            let mut got = false;
            loop {
                match guest.data.recv(&mut buf) {
                    Ok(n) => got |= good(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("reading the guest's socket"),
                }
            }
            if got {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no LAN frame reached the guest within 5 s, although the guest's frames \
                 reached the LAN (rerun with --logs DIR to see switchyard's output)"
            );
        }
    }
}

/// guest → LAN: the guest blasts `frame`; the LAN end's rx_packets counts.
fn outbound(
    pid: u32,
    guest: &Port,
    veth: &Veth,
    frame: &[u8],
    cfg: &Config,
) -> Result<FloodSample> {
    let stop = AtomicBool::new(false);
    let tx = AtomicU64::new(0);
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let r = measure::send_loop(&guest.data, frame, cfg.batch, &stop, &tx);
            if r.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            r
        });
        let window = count_window(pid, cfg, &stop, &tx, &|| rx_packets(&veth.lan));
        stop.store(true, Ordering::SeqCst);
        join(sender, "the guest's sender")?;
        window
    })
}

/// LAN → guest: an AF_PACKET socket on the LAN end sends `frame` as fast
/// as the guest receives it; the guest counts the frames `good` accepts.
fn inbound(
    pid: u32,
    guest: &Port,
    lan: &PacketSocket,
    frame: &[u8],
    good: &(dyn Fn(&[u8]) -> bool + Sync),
    cfg: &Config,
) -> Result<FloodSample> {
    let stop = AtomicBool::new(false);
    let tx = AtomicU64::new(0);
    let rx = AtomicU64::new(0);
    let odd = AtomicU64::new(0);
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let r = windowed_send_loop(lan, frame, cfg.batch, &stop, &tx, &rx);
            if r.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            r
        });
        let receiver = s.spawn(|| {
            let r = measure::recv_matching(&guest.data, good, &stop, &rx, &odd);
            if r.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            r
        });
        let window = count_window(pid, cfg, &stop, &tx, &|| Ok(rx.load(Ordering::Relaxed)));
        stop.store(true, Ordering::SeqCst);
        join(sender, "the LAN's sender")?;
        join(receiver, "the guest's receiver")?;
        let mut sample = window?;
        sample.odd_frames = odd.load(Ordering::Relaxed);
        Ok(sample)
    })
}

/// Frames the LAN's sender keeps in flight (sent, not yet at the guest):
/// enough to keep switchyard busy (it reads up to 256 captured frames per
/// wake-up), well below what the capture ring (~1000 frames) and the
/// guest's socket hold, so that nothing is lost for lack of room.
const WINDOW: u64 = 256;
/// A full window with no frame arriving for this long: count the frames
/// in flight as lost and go on. Long, because on a loaded machine the
/// switch may simply not have run for a few milliseconds, and sending
/// another window then would overflow the capture ring.
const STALL: Duration = Duration::from_millis(100);

/// Send `frame` in sendmmsg batches as fast as the guest receives them (a
/// window of [`WINDOW`] frames, like a transport protocol's), not as fast
/// as the socket takes them. A blind flood would spend a whole CPU of this
/// two-core class of machine on frames the capture ring then drops, and
/// measure the scheduler rather than the switch.
fn windowed_send_loop(
    sock: &PacketSocket,
    frame: &[u8],
    batch: usize,
    stop: &AtomicBool,
    tx: &AtomicU64,
    rx: &AtomicU64,
) -> Result<()> {
    let mut msgs = sys::MsgBatch::for_send(batch, frame);
    let batch = msgs.len() as u64;
    // Frames given up for lost, so that they no longer count as in flight.
    let mut lost = 0u64;
    let mut stalled: Option<(Instant, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let (sent, got) = (tx.load(Ordering::Relaxed), rx.load(Ordering::Relaxed));
        let in_flight = sent.saturating_sub(got + lost);
        if in_flight + batch > WINDOW {
            match stalled {
                Some((since, at)) if at == got => {
                    if since.elapsed() >= STALL {
                        lost = sent.saturating_sub(got);
                        stalled = None;
                        continue;
                    }
                }
                _ => stalled = Some((Instant::now(), got)),
            }
            std::thread::sleep(Duration::from_micros(20));
            continue;
        }
        stalled = None;
        let n = usize::try_from(batch.min(WINDOW - in_flight)).unwrap_or(msgs.len());
        match msgs.send(sock, n) {
            Ok(k) => {
                tx.fetch_add(k as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait_fd(sock, libc::POLLOUT, Duration::from_millis(20))
                    .context("poll for POLLOUT")?;
            }
            // The veth dropped the frame (its backlog was full): go on.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("sendmmsg on the LAN's AF_PACKET socket"),
        }
    }
    Ok(())
}

fn join(h: std::thread::ScopedJoinHandle<'_, Result<()>>, what: &str) -> Result<()> {
    h.join()
        .map_err(|_| anyhow!("{what} thread panicked"))?
        .with_context(|| what.to_owned())
}

/// Warm up, then count sent (`tx`) and received (`rx()`) frames and the
/// switch's CPU time over the window.
fn count_window(
    pid: u32,
    cfg: &Config,
    stop: &AtomicBool,
    tx: &AtomicU64,
    rx: &dyn Fn() -> Result<u64>,
) -> Result<FloodSample> {
    let snap = || -> Result<(Instant, u64, u64, Option<f64>)> {
        Ok((
            Instant::now(),
            tx.load(Ordering::Relaxed),
            rx()?,
            process_cpu_s(pid),
        ))
    };
    if !sys::sleep_checked(cfg.warmup, stop)? {
        bail!("a worker thread stopped during warm-up");
    }
    let (t0, tx0, rx0, cpu0) = snap()?;
    if !sys::sleep_checked(cfg.duration, stop)? {
        bail!("a worker thread stopped during the measurement");
    }
    let (t1, tx1, rx1, cpu1) = snap()?;
    Ok(FloodSample {
        shape: Shape::Unicast,
        frame_len: SMALL_FRAME,
        window_s: (t1 - t0).as_secs_f64(),
        tx_frames: tx1 - tx0,
        rx_frames: vec![rx1.saturating_sub(rx0)],
        odd_frames: 0,
        switch_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
    })
}

/// rx_packets of `dev` from /proc/net/dev (the benchmark's namespace: /sys
/// would show the host's devices).
fn rx_packets(dev: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/net/dev").context("reading /proc/net/dev")?;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim() == dev)
        .and_then(|(_, v)| v.split_whitespace().nth(1)?.parse().ok())
        .with_context(|| format!("no rx_packets for {dev} in /proc/net/dev"))
}

/// An Ethernet + IPv4 + UDP frame of exactly `len` bytes (no FCS), with
/// valid IPv4 and UDP checksums, as a guest or a LAN host would send it.
pub fn ipv4_udp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    (src_ip, src_port): ([u8; 4], u16),
    (dst_ip, dst_port): ([u8; 4], u16),
    len: usize,
) -> Vec<u8> {
    assert!(
        (14 + 20 + 8..=1514).contains(&len),
        "bad frame length {len}"
    );
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
    let ip_len = len - 14;
    let udp_len = ip_len - 20;
    // The lengths fit: len ≤ 1514.
    let (ip_len16, udp_len16) = (ip_len as u16, udp_len as u16);
    {
        let ip = &mut f[14..34];
        ip[0] = 0x45; // version 4, 20-byte header
        ip[2..4].copy_from_slice(&ip_len16.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&src_ip);
        ip[16..20].copy_from_slice(&dst_ip);
        let c = checksum(ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    {
        let udp = &mut f[34..];
        udp[0..2].copy_from_slice(&src_port.to_be_bytes());
        udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len16.to_be_bytes());
        for (i, b) in udp[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&src_ip);
        pseudo.extend_from_slice(&dst_ip);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len16.to_be_bytes());
        let c = checksum(udp, sum16(&pseudo, 0));
        // A computed 0 goes on the wire as 0xffff (0 means "none").
        let c = if c == 0 { 0xffff } else { c };
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// The Internet checksum of `data` on top of `acc`.
fn checksum(data: &[u8], acc: u64) -> u16 {
    switchyard_switch::checksum::fold(sum16(data, acc))
}

fn fmt_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A veth pair in the benchmark's namespace, both ends up, IPv6 off (no
/// router solicitations or DAD in the counts), and an nftables table that
/// drops every frame at both ends' ingress hook. Dropping it deletes both.
struct Veth {
    nic: String,
    lan: String,
    lan_index: u32,
    table: String,
    nft: PathBuf,
}

impl Veth {
    fn create(n: u32, tools: &Tools) -> Result<Veth> {
        let (nic, lan) = (format!("sybnic{n}"), format!("syblan{n}"));
        let mac = |m: [u8; 6]| fmt_mac(&m);
        world::ip(&[
            "link",
            "add",
            &nic,
            "address",
            &mac(NIC_MAC),
            "type",
            "veth",
            "peer",
            "name",
            &lan,
            "address",
            &mac(LAN_MAC),
        ])?;
        // From here on, dropping `veth` cleans up.
        let mut veth = Veth {
            nic,
            lan,
            lan_index: 0,
            table: format!("swbench_macnat{n}"),
            nft: tools.nft.clone(),
        };
        for dev in [&veth.nic, &veth.lan] {
            disable_ipv6(dev)?;
        }
        veth.drop_at_ingress()?;
        for dev in [&veth.nic, &veth.lan] {
            world::ip(&["link", "set", dev, "up"])?;
        }
        veth.lan_index = if_index(&veth.lan)?;
        Ok(veth)
    }

    /// The netdev ingress hook runs after packet capture (so the pcap
    /// port and the counting sockets still see every frame) and before the
    /// IP stack, which would otherwise route frames for the NIC's MAC but
    /// ignore those for a guest's.
    fn drop_at_ingress(&self) -> Result<()> {
        let script = format!(
            "table netdev {t} {{\n\
             chain nic {{ type filter hook ingress device \"{nic}\" priority 0; policy drop; }}\n\
             chain lan {{ type filter hook ingress device \"{lan}\" priority 0; policy drop; }}\n\
             }}\n",
            t = self.table,
            nic = self.nic,
            lan = self.lan
        );
        run_nft(&self.nft, &["-f", "-"], Some(&script))
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        if let Err(e) = run_nft(&self.nft, &["delete", "table", "netdev", &self.table], None) {
            eprintln!("warning: {e:#}");
        }
        if let Err(e) = world::ip(&["link", "del", &self.nic]) {
            eprintln!(
                "warning: could not delete the veth pair {}: {e:#}",
                self.nic
            );
        }
    }
}

/// Run `nft ARGS`, feeding `stdin`; fail with its stderr.
fn run_nft(nft: &Path, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut child = Command::new(nft)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", nft.display()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .context("writing the nftables script")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "`nft {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Turn IPv6 off on `dev` (in this thread's namespace: /proc/sys/net
/// follows the opener's namespace). A kernel without IPv6 needs nothing.
fn disable_ipv6(dev: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("writing {path}")),
    }
}

fn if_index(dev: &str) -> Result<u32> {
    let name = CString::new(dev).context("interface name with a NUL byte")?;
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("if_nametoindex({dev})"));
    }
    Ok(index)
}

/// A non-blocking AF_PACKET raw socket bound to one device: it sends
/// whole Ethernet frames there and, with protocol ETH_P_ALL, receives
/// every frame the device sees (protocol 0: none).
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    fn bind(ifindex: u32, protocol: u16) -> Result<PacketSocket> {
        let proto_be = protocol.to_be();
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto_be),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error())
                .context("creating an AF_PACKET socket (needs root or CAP_NET_RAW)");
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is a plain C struct; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = i32::try_from(ifindex).context("interface index out of range")?;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` is an initialised sockaddr_ll and `len` its size; the
        // descriptor is open for the whole call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("binding an AF_PACKET socket to interface {ifindex}"));
        }
        Ok(PacketSocket { fd })
    }

    /// Send one frame, waiting up to a second for room.
    fn send(&self, frame: &[u8]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            // SAFETY: `frame` is valid for reads of its length; the
            // descriptor is open.
            let rc = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            let retry = e.kind() == io::ErrorKind::WouldBlock
                || e.kind() == io::ErrorKind::Interrupted
                || e.raw_os_error() == Some(libc::ENOBUFS);
            if !retry || Instant::now() >= deadline {
                return Err(e).context("send on an AF_PACKET socket");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// One frame if one is queued.
    fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        loop {
            // SAFETY: `buf` is valid for writes of its length; the
            // descriptor is open.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if rc >= 0 {
                return Ok(Some(rc as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e).context("recv on an AF_PACKET socket"),
            }
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_checksums_verify() {
        let f = ipv4_udp_frame(
            LAN_MAC,
            NIC_MAC,
            (GUEST_IP, GUEST_UDP_PORT),
            (LAN_IP, LAN_UDP_PORT),
            64,
        );
        assert_eq!(f.len(), 64);
        // A correct header sums to zero.
        assert_eq!(checksum(&f[14..34], 0), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&GUEST_IP);
        pseudo.extend_from_slice(&LAN_IP);
        pseudo.extend_from_slice(&[0, 17, 0, 30]);
        assert_eq!(checksum(&f[34..], sum16(&pseudo, 0)), 0);
    }
}
