//! Helpers for the robustness tests (`tests/tests/bad_input_battery.rs`,
//! `tests/tests/faults.rs`) and the soak (`switchyard-soak`): the daemon's
//! resident memory and open descriptors from /proc, a reference pair of
//! protocol clients that exchanges counted bursts (so loss shows as a
//! number), many handshakes at once, random MAC addresses, and the
//! switch-wide counters of `switchyard ctl -j stats`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::unistd::Pid;

use crate::netns::Netns;
use crate::proto::{self, Client};
use crate::switch::{Switch, SwitchCmd};
use crate::transports::{json::Json, Ctl};
use crate::util::{unique_name, TempDir};

/// What the daemon holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident memory (VmRSS), KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {} KiB, {} fds", self.rss_kib, self.fds)
    }
}

/// Resident memory and open descriptors of process `pid`.
pub fn usage(pid: Pid) -> Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (has the daemon died?)"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count();
    Ok(Usage { rss_kib, fds })
}

/// Waits (at most `timeout`) until the daemon holds at most `max_fds`
/// descriptors; fails with the last count.
pub fn wait_fds_at_most(pid: Pid, max_fds: usize, timeout: Duration, what: &str) -> Result<Usage> {
    let deadline = Instant::now() + timeout;
    loop {
        let u = usage(pid)?;
        if u.fds <= max_fds {
            return Ok(u);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: the daemon still holds {} descriptors after {timeout:?} \
                 (expected at most {max_fds}); it does not free what died",
                u.fds
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Frames in flight in one direction of a burst: below the kernel's
/// default queue of 10 datagrams per unix socket
/// (`net.unix.max_dgram_qlen`), so a well-behaved switch never has to
/// drop one of them.
pub const WINDOW: usize = 8;
/// How long a burst waits for the frames of one window.
const WINDOW_TIMEOUT: Duration = Duration::from_secs(3);
/// The EtherType of the test frames (local experimental).
const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// A frame of `len` bytes from `src` to `dst` carrying `tag` and `seq`.
pub fn numbered_frame(dst: [u8; 6], src: [u8; 6], len: usize, tag: u8, seq: u32) -> Vec<u8> {
    let mut f = proto::frame(dst, src, len.max(19), tag);
    f[14] = tag;
    f[15..19].copy_from_slice(&seq.to_be_bytes());
    f
}

/// The (tag, seq) of a numbered frame from `src`.
fn numbered(f: &[u8], src: [u8; 6]) -> Option<(u8, u32)> {
    if f.len() < 19 || f[6..12] != src || f[12..14] != TEST_ETHERTYPE {
        return None;
    }
    Some((f[14], u32::from_be_bytes([f[15], f[16], f[17], f[18]])))
}

/// What a burst delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Frames sent.
    pub sent: u32,
    /// Distinct frames received.
    pub received: u32,
}

impl Burst {
    /// Frames that never arrived.
    pub fn lost(&self) -> u32 {
        self.sent - self.received
    }
}

/// Sends `n` numbered frames from `from` to `dst`, at most [`WINDOW`] in
/// flight: each window is received by `to` before the next is sent, so the
/// rate adapts to the switch and a healthy switch loses nothing. Frames
/// that are not this burst's (floods, other tests' noise) are skipped.
pub fn burst(
    from: &Client,
    to: &Client,
    dst: [u8; 6],
    n: u32,
    len: usize,
    tag: u8,
) -> Result<Burst> {
    let mut seen = vec![false; n as usize];
    let mut received = 0u32;
    let mut next = 0u32;
    while next < n {
        let end = (next + WINDOW as u32).min(n);
        for seq in next..end {
            from.send(&numbered_frame(dst, from.mac(), len, tag, seq))?;
        }
        let deadline = Instant::now() + WINDOW_TIMEOUT;
        let mut window_left = end - next;
        while window_left > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(f) = to.recv(left)? else { break };
            if let Some((t, seq)) = numbered(&f, from.mac()) {
                if t == tag && seq < n && !seen[seq as usize] {
                    seen[seq as usize] = true;
                    received += 1;
                    if seq >= next && seq < end {
                        window_left -= 1;
                    }
                }
            }
        }
        next = end;
    }
    Ok(Burst { sent: n, received })
}

/// Two well-behaved clients on the switch: the yardstick every robustness
/// case is measured with.
#[derive(Debug)]
pub struct RefPair {
    /// The first client.
    pub a: Client,
    /// The second client.
    pub b: Client,
    tag: u8,
}

impl RefPair {
    /// Attaches two clients to the VDE directory `dir` (data sockets in
    /// `scratch`) and lets the switch learn both addresses.
    pub fn attach(dir: &Path, scratch: &Path, mac_a: u16, mac_b: u16) -> Result<RefPair> {
        let a = Client::attach(dir, 0, scratch, proto::mac(mac_a)).context("reference client A")?;
        let b = Client::attach(dir, 0, scratch, proto::mac(mac_b)).context("reference client B")?;
        let mut pair = RefPair { a, b, tag: 0 };
        pair.exchange(WINDOW as u32, 60)
            .context("the reference pair's first exchange")?;
        Ok(pair)
    }

    /// Reads and discards whatever is queued for either client (floods
    /// from other clients), so a burst starts with empty queues.
    pub fn drain(&self) -> Result<()> {
        for c in [&self.a, &self.b] {
            while c.recv(Duration::from_millis(5))?.is_some() {}
        }
        Ok(())
    }

    /// A counted burst of `n` unicast frames of `len` bytes each way; fails
    /// on any loss.
    pub fn exchange(&mut self, n: u32, len: usize) -> Result<()> {
        self.tag = self.tag.wrapping_add(1);
        let ab = burst(&self.a, &self.b, self.b.mac(), n, len, self.tag)?;
        let ba = burst(&self.b, &self.a, self.a.mac(), n, len, self.tag)?;
        ensure!(
            ab.lost() == 0 && ba.lost() == 0,
            "the reference pair lost frames: A->B {} of {}, B->A {} of {}",
            ab.lost(),
            ab.sent,
            ba.lost(),
            ba.sent
        );
        Ok(())
    }
}

/// Frames each way in the reference pair's burst of [`Rig::check`].
pub const BURST: u32 = 400;
/// Descriptors beyond the start value that may linger for a moment.
pub const FD_SLACK: usize = 8;

/// A switch in its own namespace with a VDE directory (`tmp/sw`), a
/// control socket for `switchyard ctl`, the reference pair attached, and
/// the daemon's usage with only the pair attached. Fields drop in
/// declaration order: clients, switch, namespace, temp dir.
#[derive(Debug)]
pub struct Rig {
    /// The reference pair.
    pub pair: RefPair,
    /// `switchyard ctl` for this switch.
    pub ctl: Ctl,
    /// The VDE directory.
    pub dir: PathBuf,
    /// The daemon's usage with only the pair attached.
    pub base: Usage,
    /// How far above `base` resident memory may go in [`Rig::check`].
    pub rss_bound_kib: u64,
    /// The daemon.
    pub sw: Switch,
    /// Its namespace.
    pub ns: Netns,
    /// Sockets, logs and the clients' sockets.
    pub tmp: TempDir,
}

impl Rig {
    /// Native switchyard with `--vde tmp/sw --control tmp/control.sock`
    /// and `extra` arguments.
    pub fn start(tag: &str, extra: &[&str]) -> Result<Rig> {
        Rig::start_with(tag, |dir, ctl| {
            Ok(SwitchCmd::native()?.vde(dir).args(ctl.args()).args(extra))
        })
    }

    /// A switch from the command `make` builds for the VDE directory and
    /// the control socket (which it must pass on).
    pub fn start_with(
        tag: &str,
        make: impl FnOnce(&Path, &Ctl) -> Result<SwitchCmd>,
    ) -> Result<Rig> {
        let tmp = TempDir::new(tag)?;
        let ns = Netns::new()?;
        let dir = tmp.join("sw");
        let ctl = Ctl::new(&tmp.join("control.sock"));
        let sw = make(&dir, &ctl)?.start(Some(&ns))?;
        let pair = RefPair::attach(&dir, tmp.path(), 0xa1, 0xb1)?;
        let base = usage(sw.proc.pid())?;
        eprintln!("{tag}: start: {base}");
        Ok(Rig {
            pair,
            ctl,
            dir,
            base,
            rss_bound_kib: 64 * 1024,
            sw,
            ns,
            tmp,
        })
    }

    /// The VDE control socket.
    pub fn ctl_path(&self) -> PathBuf {
        self.dir.join("ctl")
    }

    /// The yardstick after (or during) a case: the daemon runs, the pair
    /// loses nothing in a counted burst each way, memory is within the
    /// bound. Prints and returns the usage.
    pub fn check(&mut self, case: &str) -> Result<Usage> {
        let u = self.measure(case)?;
        eprintln!("{case}: {u}");
        Ok(u)
    }

    /// [`Rig::check`] without the line on stderr.
    pub fn measure(&mut self, case: &str) -> Result<Usage> {
        self.sw
            .assert_running()
            .with_context(|| format!("after {case}"))?;
        self.pair
            .exchange(BURST, 200)
            .with_context(|| format!("after {case}"))?;
        let u = usage(self.sw.proc.pid())?;
        ensure!(
            u.rss_kib <= self.base.rss_kib + self.rss_bound_kib,
            "after {case} the daemon's resident memory is {} KiB, more than {} KiB above \
             the {} KiB it started with",
            u.rss_kib,
            self.rss_bound_kib,
            self.base.rss_kib
        );
        Ok(u)
    }

    /// Waits until the daemon holds no more descriptors than at the start
    /// plus `extra` (clients still attached) and [`FD_SLACK`].
    pub fn fds_back(&self, extra: usize, case: &str) -> Result<Usage> {
        wait_fds_at_most(
            self.sw.proc.pid(),
            self.base.fds + extra + FD_SLACK,
            Duration::from_secs(10),
            case,
        )
    }

    /// The names of the switch's ports.
    pub fn port_names(&self) -> Result<Vec<String>> {
        Ok(self
            .ctl
            .ports()?
            .iter()
            .filter_map(|p| p.get("name").and_then(Json::as_str).map(str::to_string))
            .collect())
    }

    /// Runs `attach` (which attaches one client) and returns its result
    /// with the name of the port that appeared.
    pub fn attach_tracked<T>(&self, attach: impl FnOnce() -> Result<T>) -> Result<(T, String)> {
        let before = self.port_names()?;
        let t = attach()?;
        let after = self.port_names()?;
        let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
        match new[..] {
            [one] => Ok((t, one.clone())),
            _ => bail!("expected one new port, found {new:?} (before: {before:?})"),
        }
    }

    /// The number of ports `ctl ports` lists.
    pub fn ports(&self) -> Result<usize> {
        Ok(self.ctl.ports()?.len())
    }

    /// Polls `ctl ports` until port `name` satisfies `ok`; returns its
    /// entry.
    pub fn wait_port(&self, name: &str, ok: impl Fn(&Json) -> bool) -> Result<Json> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = self.ctl.port(name)?;
            if ok(&p) {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                bail!("port {name} did not get there: {p}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A small fast pseudo-random generator (xorshift64*), seeded: the tests
/// are repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a nonzero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random 48-bit address; about half have the multicast bit set.
    pub fn mac(&mut self) -> [u8; 6] {
        let b = self.next_u64().to_be_bytes();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    /// Random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// True if `mac` has the group (multicast) bit set.
pub fn is_multicast(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 1
}

/// The switch-wide counters: `switchyard ctl -j stats`.
pub fn stats(ctl: &Ctl) -> Result<Json> {
    ctl.json(&["stats"])
}

/// A number from `ctl -j stats` (0 when absent).
pub fn stat(stats: &Json, key: &str) -> u64 {
    stats.get(key).and_then(Json::as_u64).unwrap_or(0)
}

/// Clients the control sockets refused, by reason (`ctl -j stats`).
pub fn handshake_refusals(ctl: &Ctl) -> Result<BTreeMap<String, u64>> {
    let s = stats(ctl)?;
    let map = s
        .get("handshakes_refused")
        .and_then(Json::as_object)
        .with_context(|| format!("`ctl -j stats` has no handshakes_refused: {s}"))?;
    Ok(map
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect())
}

/// Waits until the refusals counted for `reason` reach `at_least`.
pub fn wait_refusals(ctl: &Ctl, reason: &str, at_least: u64, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = handshake_refusals(ctl)?.get(reason).copied().unwrap_or(0);
        if n >= at_least {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            bail!(
                "`ctl stats` counts {n} handshakes refused as {reason}, expected at least {at_least} \
                 (after {timeout:?}): {}",
                stats(ctl)?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens `n` connections to the control socket `ctl` and sends nothing.
pub fn silent_connections(ctl: &Path, n: usize) -> Result<Vec<UnixStream>> {
    (0..n)
        .map(|i| {
            UnixStream::connect(ctl)
                .with_context(|| format!("silent connection {} of {n} to {}", i + 1, ctl.display()))
        })
        .collect()
}

/// Many clients attaching at the same moment: every connection is made and
/// every request written before the first reply is read.
#[derive(Debug)]
pub struct Crowd {
    /// The control connections (closing one detaches its port).
    pub conns: Vec<UnixStream>,
    /// The clients' datagram sockets.
    pub socks: Vec<UnixDatagram>,
    /// Their paths (removed on drop).
    pub paths: Vec<PathBuf>,
}

impl Crowd {
    /// `n` clients of the control socket `ctl`, data sockets in `scratch`.
    /// Returns how many got a reply (a port).
    pub fn attach(ctl: &Path, scratch: &Path, n: usize) -> Result<(Crowd, usize)> {
        let mut crowd = Crowd {
            conns: Vec::with_capacity(n),
            socks: Vec::with_capacity(n),
            paths: Vec::with_capacity(n),
        };
        for i in 0..n {
            let path = scratch.join(format!(".{}", unique_name("k")));
            let sock =
                UnixDatagram::bind(&path).with_context(|| format!("binding {}", path.display()))?;
            crowd.paths.push(path.clone());
            crowd.socks.push(sock);
            let req = proto::request(
                3,
                0,
                0,
                &proto::sockaddr_path(&path)?,
                format!("crowd {i}").as_bytes(),
            );
            let mut c = UnixStream::connect(ctl)
                .with_context(|| format!("crowd connection {} of {n}", i + 1))?;
            c.write_all(&req).context("writing a crowd request")?;
            crowd.conns.push(c);
        }
        let mut ok = 0;
        for c in &mut crowd.conns {
            if read_reply(c, Duration::from_secs(10))? {
                ok += 1;
            }
        }
        Ok((crowd, ok))
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Attaches a client by hand to the control socket `ctl` (data socket in
/// `scratch`, unlinked once connected) and returns its control connection
/// and its connected datagram socket, on which any bytes may be sent.
pub fn attach_raw(ctl: &Path, scratch: &Path, descr: &str) -> Result<(UnixStream, UnixDatagram)> {
    let path = scratch.join(format!(".{}", unique_name("r")));
    let sock = UnixDatagram::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let req = proto::request(3, 0, 0, &proto::sockaddr_path(&path)?, descr.as_bytes());
    let mut c =
        UnixStream::connect(ctl).with_context(|| format!("connecting to {}", ctl.display()))?;
    c.write_all(&req).context("writing the request")?;
    let mut reply = [0u8; proto::SOCKADDR_LEN];
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let got = std::io::Read::read_exact(&mut c, &mut reply);
    let _ = std::fs::remove_file(&path);
    got.with_context(|| format!("attaching to {}: no reply", ctl.display()))?;
    let addr = proto::parse_reply(&reply)?;
    sock.connect_addr(&addr)
        .with_context(|| format!("connecting the data socket to {addr:?}"))?;
    Ok((c, sock))
}

/// Reads a 110-byte handshake reply from `c`: true when it came, false on
/// EOF (refused). Unlike [`proto::read_outcome`] it does not wait to see
/// whether more follows, so a thousand replies take no time.
pub fn read_reply(c: &mut UnixStream, timeout: Duration) -> Result<bool> {
    use std::io::Read;
    c.set_read_timeout(Some(timeout))?;
    let mut reply = [0u8; proto::SOCKADDR_LEN];
    match c.read_exact(&mut reply) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e).context("reading a handshake reply"),
    }
}

/// Raises the send buffer of `sock` to `bytes` (datagrams above the
/// default 208 KiB limit need it).
pub fn set_send_buffer(sock: &UnixDatagram, bytes: usize) -> Result<()> {
    use std::os::fd::AsRawFd;
    let v = bytes as libc::c_int;
    // SAFETY: a valid socket and a pointer to an int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "SO_SNDBUFFORCE: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_frames_round_trip() {
        let f = numbered_frame(proto::BROADCAST, proto::mac(7), 60, 3, 0x0102_0304);
        assert_eq!(f.len(), 60);
        assert_eq!(numbered(&f, proto::mac(7)), Some((3, 0x0102_0304)));
        assert_eq!(numbered(&f, proto::mac(8)), None);
        assert_eq!(
            numbered_frame(proto::BROADCAST, proto::mac(7), 14, 1, 1).len(),
            19
        );
    }

    #[test]
    fn random_macs_cover_both_kinds() {
        let mut r = Rng::new(42);
        let macs: Vec<[u8; 6]> = (0..1000).map(|_| r.mac()).collect();
        let multicast = macs.iter().filter(|m| is_multicast(**m)).count();
        assert!((400..600).contains(&multicast), "{multicast} of 1000");
        let mut again = Rng::new(42);
        assert_eq!(again.mac(), macs[0], "seeded: repeatable");
    }

    #[test]
    fn own_usage_is_readable() {
        let u = usage(nix::unistd::getpid()).expect("own /proc entry");
        assert!(u.rss_kib > 0 && u.fds > 0);
    }
}
