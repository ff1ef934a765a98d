//! Reusable traffic checks built on the protocol client.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::netns::Netns;
use crate::proto::{self, Client, BROADCAST};

const WAIT: Duration = Duration::from_secs(3);
/// How long to listen for a frame that must NOT arrive.
const QUIET: Duration = Duration::from_millis(500);

/// `from` sends a frame of `len` bytes to `dst`; `to` must receive it whole
/// and unchanged.
pub fn pass_frame(from: &Client, to: &Client, dst: [u8; 6], len: usize, seed: u8) -> Result<()> {
    let f = proto::frame(dst, from.mac(), len, seed);
    from.send(&f)?;
    let got = to.recv_matching(WAIT, |g| {
        proto::is_test_frame_from(g, from.mac()) && g.get(14) == f.get(14)
    })?;
    match got {
        None => bail!("a {len}-byte frame was not delivered"),
        Some(g) if g.len() != f.len() => {
            bail!("a {len}-byte frame arrived as {} bytes", g.len())
        }
        Some(g) => ensure!(g == f, "a {len}-byte frame arrived with different contents"),
    }
    Ok(())
}

/// True if `c` receives a test frame from `src` within [`QUIET`].
pub fn hears_from(c: &Client, src: [u8; 6]) -> Result<bool> {
    Ok(
        c.recv_matching(QUIET, |g| proto::is_test_frame_from(g, src))?
            .is_some(),
    )
}

/// Three clients on VDE directory `dir`. B announces itself (broadcast),
/// then A sends unicast to B. B must get it; C must get it only in hub
/// mode. Returns whether C heard the unicast.
pub fn unicast_reaches_third_port(dir: &Path, scratch: &Path) -> Result<bool> {
    let a = Client::attach(dir, 0, scratch, proto::mac(0xa1))?;
    let b = Client::attach(dir, 0, scratch, proto::mac(0xb1))?;
    let c = Client::attach(dir, 0, scratch, proto::mac(0xc1))?;
    // B's broadcast teaches the switch where B is; everyone else hears it.
    pass_frame(&b, &a, BROADCAST, 60, 1)?;
    ensure!(hears_from(&c, b.mac())?, "C did not receive B's broadcast");
    // A's unicast to B.
    pass_frame(&a, &b, b.mac(), 60, 2)?;
    hears_from(&c, a.mac())
}

/// Attaches a client to VDE directory `dir` (from inside `ns`) and asks by
/// ARP for 192.0.2.254, which the test put on a tap behind the switch.
/// Returns the MAC that answered. `n` varies the client's MAC and IP.
pub fn arp_via(ns: &Netns, dir: &Path, scratch: &Path, n: u8) -> Result<[u8; 6]> {
    let c = ns.run(|| Client::attach(dir, 0, scratch, proto::mac(0x90 + u16::from(n))))??;
    let ip = [192, 0, 2, 254];
    for _ in 0..5 {
        c.send(&proto::arp_request(c.mac(), [192, 0, 2, 10 + n], ip))?;
        let reply = c.recv_matching(Duration::from_secs(1), |f| {
            proto::arp_reply_for(f, c.mac(), ip).is_some()
        })?;
        if let Some(f) = reply {
            return proto::arp_reply_for(&f, c.mac(), ip).context("ARP reply");
        }
    }
    bail!("no ARP reply from 192.0.2.254 through the tap port")
}

/// The MAC of interface `dev` in `ns`, as `xx:xx:...`.
pub fn link_mac(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns.ip(["-o", "link", "show", "dev", dev])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .context("interface has no MAC")
}

pub fn mac_string(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
