//! A vhost-user frontend for the tests: a well-behaved guest (`good`) or
//! a hostile one (every other mode), speaking to switchyard's vhost-user
//! port through rust-vmm's `vhost` frontend.
//!
//! `sy-vhost-frontend SOCK MODE [--listen] [--frames N] [--interval-us U]
//! [--linger-ms L] [--delay-ms D] [--hold-ms H] [--mac MAC] [--no-seal]`
//!
//! `good` posts RX buffers, waits D ms (receiving), sends N counted broadcast frames on its TX
//! queue (a batch of up to 32, then U µs), keeps receiving for L ms after
//! the last one and prints `sent=N received=M tx_done=K`: M counts the
//! counted frames of *other* frontends it received. A hostile mode sets
//! up the device like `good`, does its one bad thing, keeps the
//! connection (reposting what it received) for H ms and prints
//! `attacked=MODE`. `--listen` listens on SOCK instead of connecting (for
//! the switch's `mode=client`); `--no-seal` shares memory the switch
//! cannot seal against shrinking.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchyard_tests::vhost_frontend::{
    shared_memory, Driver, BUF, F_NEXT, F_WRITE, MEM_SIZE, QSIZE, RX, RX_BUFS, TX, TX_BUFS,
};

/// The EtherType of counted frames (IEEE local experimental).
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// What a counted frame's payload starts with.
const MAGIC: &[u8; 8] = b"SYVHOST1";

/// Every mode, as the test lists them.
const MODES: &[&str] = &[
    "good",
    "outside",
    "loop",
    "loop-short",
    "long",
    "avail-jump",
    "huge-len",
    "tx-writable",
    "rx-readonly",
    "rx-outside",
    "remap",
    "shrink",
    "disconnect",
];

struct Opts {
    sock: std::path::PathBuf,
    mode: String,
    listen: bool,
    sealable: bool,
    frames: u64,
    interval: Duration,
    linger: Duration,
    delay: Duration,
    hold: Duration,
    mac: [u8; 6],
}

fn opts() -> Result<Opts> {
    let mut args = std::env::args().skip(1);
    let usage = || format!("usage: sy-vhost-frontend SOCK MODE [options]; modes: {MODES:?}");
    let sock = args.next().with_context(usage)?.into();
    let mode = args.next().with_context(usage)?;
    if !MODES.contains(&mode.as_str()) {
        bail!("unknown mode {mode:?}; {}", usage());
    }
    let mut o = Opts {
        sock,
        mode,
        listen: false,
        sealable: true,
        frames: 100,
        interval: Duration::from_micros(500),
        linger: Duration::from_millis(500),
        delay: Duration::ZERO,
        hold: Duration::from_millis(2000),
        mac: [2, 0, 0, 0, 0x77, 1],
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => o.listen = true,
            "--no-seal" => o.sealable = false,
            "--frames" => o.frames = value()?.parse().context("--frames")?,
            "--interval-us" => {
                o.interval = Duration::from_micros(value()?.parse().context("--interval-us")?)
            }
            "--linger-ms" => {
                o.linger = Duration::from_millis(value()?.parse().context("--linger-ms")?)
            }
            "--delay-ms" => {
                o.delay = Duration::from_millis(value()?.parse().context("--delay-ms")?)
            }
            "--hold-ms" => o.hold = Duration::from_millis(value()?.parse().context("--hold-ms")?),
            "--mac" => {
                let v = value()?;
                let bytes: Vec<u8> = v
                    .split(':')
                    .map(|b| u8::from_str_radix(b, 16))
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--mac {v}"))?;
                o.mac = bytes
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("--mac {v}: six bytes"))?;
            }
            _ => bail!("unknown option {a:?}; {}", usage()),
        }
    }
    Ok(o)
}

fn main() -> Result<()> {
    let o = opts()?;
    let sock = switchyard_tests::vhost_frontend::open_socket(&o.sock, o.listen)?;
    let mut d = Driver::start(sock, o.sealable)?;
    if o.mode == "good" {
        return good(&mut d, &o);
    }
    attack(&mut d, &o)?;
    hold(&mut d, o.hold)?;
    println!("attacked={}", o.mode);
    Ok(())
}

/// A counted frame: broadcast, from `mac`, sequence `seq`.
fn frame(mac: &[u8; 6], seq: u64) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(mac);
    f[12..14].copy_from_slice(&ETHERTYPE);
    f[14..22].copy_from_slice(MAGIC);
    f[22..30].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Whether `f` is a counted frame from another frontend than `mac`.
fn counted(f: &[u8], mac: &[u8; 6]) -> bool {
    f.len() >= 22 && f[12..14] == ETHERTYPE && &f[14..22] == MAGIC && f[6..12] != mac[..]
}

/// Takes what the device wrote into RX, counts counted frames, reposts
/// the buffers; how many counted frames arrived.
fn receive(d: &mut Driver, mac: &[u8; 6]) -> Result<u64> {
    let used = d.take_used(RX)?;
    let mut n = 0;
    for &(id, len) in &used {
        if id < QSIZE && counted(&d.rx_frame(id, len)?, mac) {
            n += 1;
        }
        d.repost_rx(id % QSIZE)?;
    }
    if !used.is_empty() {
        d.kick(RX)?;
    }
    Ok(n)
}

fn good(d: &mut Driver, o: &Opts) -> Result<()> {
    d.post_rx(F_WRITE, RX_BUFS)?;
    let mut free: Vec<u16> = (0..QSIZE).rev().collect();
    let (mut sent, mut received, mut done) = (0u64, 0u64, 0u64);
    let mut last_send = Instant::now();
    let start = Instant::now() + o.delay;
    loop {
        for (id, _) in d.take_used(TX)? {
            free.push(id % QSIZE);
            done += 1;
        }
        received += receive(d, &o.mac)?;
        if Instant::now() < start {
            std::thread::sleep(Duration::from_micros(200));
        } else if sent < o.frames {
            let batch = free.len().min(32).min((o.frames - sent) as usize);
            for _ in 0..batch {
                let Some(i) = free.pop() else { break };
                d.queue_tx(i, &frame(&o.mac, sent))?;
                sent += 1;
            }
            if batch > 0 {
                d.kick(TX)?;
                last_send = Instant::now();
            }
            std::thread::sleep(o.interval.max(Duration::from_micros(100)));
        } else if last_send.elapsed() >= o.linger {
            break;
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    println!("sent={sent} received={received} tx_done={done}");
    Ok(())
}

/// Keeps the connection for `t`, reposting whatever the device used.
fn hold(d: &mut Driver, t: Duration) -> Result<()> {
    let end = Instant::now() + t;
    while Instant::now() < end {
        let _ = d.take_used(TX)?;
        let used = d.take_used(RX)?;
        for &(id, _) in &used {
            d.repost_rx(id % QSIZE)?;
        }
        if !used.is_empty() {
            d.kick(RX)?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Publishes TX descriptor `head` (already written) and kicks.
fn send_head(d: &mut Driver, head: u16) -> Result<()> {
    d.push_avail(TX, head)?;
    d.kick(TX)
}

fn attack(d: &mut Driver, o: &Opts) -> Result<()> {
    let good = frame(&o.mac, 0);
    let len = (12 + good.len()) as u32;
    match o.mode.as_str() {
        // A descriptor past the end of the memory table, and one at the
        // top of the address space.
        "outside" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            d.write_desc(TX, 0, MEM_SIZE + 0x10_0000, len, 0, 0)?;
            d.write_desc(TX, 1, u64::MAX - 8, len, 0, 0)?;
            d.push_avail(TX, 0)?;
            send_head(d, 1)?;
        }
        // 0 → 1 → 0 …: the chain never ends (large buffers).
        "loop" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            d.write_desc(TX, 0, TX_BUFS, BUF as u32, F_NEXT, 1)?;
            d.write_desc(TX, 1, TX_BUFS + BUF, BUF as u32, F_NEXT, 0)?;
            send_head(d, 0)?;
        }
        // The same loop with 16-byte buffers.
        "loop-short" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            d.write_desc(TX, 0, TX_BUFS, 16, F_NEXT, 1)?;
            d.write_desc(TX, 1, TX_BUFS + BUF, 16, F_NEXT, 0)?;
            send_head(d, 0)?;
        }
        // Every descriptor in one chain, the last pointing past the table.
        "long" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            for i in 0..QSIZE {
                d.write_desc(TX, i, TX_BUFS + u64::from(i) * BUF, 300, F_NEXT, i + 1)?;
            }
            send_head(d, 0)?;
        }
        // The avail index far ahead of anything posted.
        "avail-jump" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            d.queue_tx(0, &good)?;
            d.publish_avail(TX, 40_000)?;
            d.kick(TX)?;
        }
        "huge-len" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            d.write_desc(TX, 0, TX_BUFS, u32::MAX - 16, 0, 0)?;
            send_head(d, 0)?;
        }
        // A TX buffer the device would write.
        "tx-writable" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            d.queue_tx(0, &good)?;
            d.write_desc(TX, 1, TX_BUFS, len, F_WRITE, 0)?;
            send_head(d, 1)?;
        }
        // RX buffers the device may not write: hit by whatever the switch
        // floods to this port.
        "rx-readonly" => d.post_rx(0, RX_BUFS)?,
        "rx-outside" => d.post_rx(F_WRITE, MEM_SIZE + 0x10_0000)?,
        // A new memory table, smaller, with the rings in it pointing past
        // its end.
        "remap" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            let (file, mem) = shared_memory(0x1_0000, o.sealable)?;
            d.set_mem_table(&file, 0x1_0000)?;
            d.mem = mem;
            d.memfd = file;
            d.write_desc(TX, 0, TX_BUFS, len, 0, 0)?;
            send_head(d, 0)?;
        }
        // The shared file cut short under the device's mapping (`--no-seal`
        // makes a memfd that cannot be sealed).
        "shrink" => {
            d.post_rx(F_WRITE, RX_BUFS)?;
            // The switch seals memfds that allow it: then this is refused.
            if let Err(e) = d.memfd.set_len(0x1_0000) {
                println!("shrink=refused ({e})");
            }
            d.write_desc(TX, 0, TX_BUFS, len, 0, 0)?;
            send_head(d, 0)?;
        }
        // Half a message header, then gone.
        "disconnect" => {
            use std::os::fd::AsRawFd;
            let fd = d.fe.as_raw_fd();
            // SAFETY: `fd` is the frontend's open socket for the duration
            // of this call; borrowing it does not close it.
            let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::unistd::write(sock, &[2, 0, 0, 0, 1, 0]).context("partial header")?;
            std::process::exit(0);
        }
        other => bail!("mode {other} is not an attack"),
    }
    Ok(())
}
