//! A vhost-user *frontend* for tests, on rust-vmm's `vhost` crate
//! (`vhost::vhost_user::Frontend`): guest memory in a memfd it shares
//! (SET_MEM_TABLE), two split queues it lays out itself (RX = 0, TX = 1),
//! kick and call eventfds. What it puts in the rings is up to the caller,
//! so `sy-vhost-frontend` can be a well-behaved guest or a hostile one.
//!
//! The layout, in guest-physical addresses (one region from 0):
//! queue q's descriptor table at `q * 0x4000`, its avail ring 0x1000 and
//! its used ring 0x2000 above that; RX buffers from [`RX_BUFS`], TX buffers
//! from [`TX_BUFS`], [`BUF`] bytes each.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{fence, Ordering};

use anyhow::{Context, Result};
use nix::sys::memfd::{memfd_create, MFdFlags};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Entries per queue.
pub const QSIZE: u16 = 256;
/// Guest memory: one region of 2 MiB at guest-physical 0.
pub const MEM_SIZE: u64 = 2 << 20;
/// Where the frontend says its memory is mapped (vring addresses are
/// given in this address space; the backend translates them back).
pub const USER_BASE: u64 = 0x7f00_0000_0000;
/// The RX buffers (one per descriptor).
pub const RX_BUFS: u64 = 0x1_0000;
/// The TX buffers (one per descriptor).
pub const TX_BUFS: u64 = 0x9_0000;
/// Bytes per buffer: a virtio-net header and a full-size frame.
pub const BUF: u64 = 2048;
/// The virtio-net header (VERSION_1).
pub const HDR_LEN: usize = 12;
/// The guest's receive queue.
pub const RX: usize = 0;
/// The guest's transmit queue.
pub const TX: usize = 1;
/// Descriptor flags.
pub const F_NEXT: u16 = 1;
/// The device writes into this descriptor.
pub const F_WRITE: u16 = 2;

const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// One split queue as the driver sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    /// Guest-physical address of the descriptor table.
    pub base: u64,
    /// The next avail index the driver publishes.
    pub avail_idx: u16,
    /// Used entries consumed so far.
    pub used_seen: u16,
}

impl Ring {
    fn new(q: usize) -> Ring {
        Ring {
            base: q as u64 * 0x4000,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// The avail ring.
    pub fn avail(&self) -> u64 {
        self.base + 0x1000
    }

    /// The used ring.
    pub fn used(&self) -> u64 {
        self.base + 0x2000
    }
}

/// A connected frontend with its memory, rings and eventfds.
pub struct Driver {
    /// The protocol endpoint.
    pub fe: Frontend,
    /// The guest memory as this process maps it.
    pub mem: GuestMemoryMmap,
    /// The memfd behind `mem`.
    pub memfd: File,
    /// Kick (driver → device) per queue.
    pub kick: [EventFd; 2],
    /// Call (device → driver) per queue.
    pub call: [EventFd; 2],
    /// The two rings.
    pub rings: [Ring; 2],
}

/// Connects to `path` (the switch listens), or listens on it and takes
/// one connection (the switch's `mode=client`).
pub fn open_socket(path: &Path, listen: bool) -> Result<UnixStream> {
    if listen {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
        let (s, _) = l.accept().context("accept")?;
        Ok(s)
    } else {
        UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))
    }
}

/// Fresh shared memory: a memfd of `size` bytes (that the receiver may
/// seal, when `sealable`) and this process's mapping of it.
pub fn shared_memory(size: u64, sealable: bool) -> Result<(File, GuestMemoryMmap)> {
    let mut flags = MFdFlags::MFD_CLOEXEC;
    if sealable {
        flags |= MFdFlags::MFD_ALLOW_SEALING;
    }
    let fd = memfd_create(c"sy-vhost-frontend", flags).context("memfd_create")?;
    let file = File::from(fd);
    file.set_len(size).context("ftruncate")?;
    let len = usize::try_from(size).context("memory size")?;
    let mem = GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        len,
        Some(FileOffset::new(file.try_clone().context("dup memfd")?, 0)),
    )])
    .context("mapping the guest memory")?;
    Ok((file, mem))
}

impl Driver {
    /// Negotiates (VERSION_1 and PROTOCOL_FEATURES, no protocol features),
    /// shares the memory (sealable or not) and sets up both queues,
    /// enabled.
    pub fn start(sock: UnixStream, sealable: bool) -> Result<Driver> {
        let mut fe = Frontend::from_stream(sock, 2);
        fe.set_owner().context("SET_OWNER")?;
        let offered = fe.get_features().context("GET_FEATURES")?;
        let proto = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        fe.set_features(offered & (VIRTIO_F_VERSION_1 | proto))
            .context("SET_FEATURES")?;
        fe.get_protocol_features()
            .context("GET_PROTOCOL_FEATURES")?;
        fe.set_protocol_features(VhostUserProtocolFeatures::empty())
            .context("SET_PROTOCOL_FEATURES")?;
        let (memfd, mem) = shared_memory(MEM_SIZE, sealable)?;
        let mut d = Driver {
            fe,
            mem,
            memfd,
            kick: [new_eventfd()?, new_eventfd()?],
            call: [new_eventfd()?, new_eventfd()?],
            rings: [Ring::new(RX), Ring::new(TX)],
        };
        d.set_mem_table(&d.memfd, MEM_SIZE)?;
        for q in [RX, TX] {
            d.setup_queue(q)?;
        }
        // A round trip: the switch has taken every message above (the
        // memory table included) before the caller touches anything.
        d.fe.get_features().context("GET_FEATURES")?;
        Ok(d)
    }

    /// Sends SET_MEM_TABLE: one region of `size` bytes from `file`.
    pub fn set_mem_table(&self, file: &File, size: u64) -> Result<()> {
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: size,
            userspace_addr: USER_BASE,
            mmap_offset: 0,
            mmap_handle: file.as_raw_fd(),
        };
        self.fe.set_mem_table(&[region]).context("SET_MEM_TABLE")?;
        // No REPLY_ACK is negotiated: a request with a reply makes sure the
        // device took the table before the next kick (the kick travels on
        // an eventfd, past the message queue).
        self.fe
            .get_features()
            .context("GET_FEATURES after SET_MEM_TABLE")?;
        Ok(())
    }

    fn setup_queue(&mut self, q: usize) -> Result<()> {
        let r = self.rings[q];
        self.fe.set_vring_num(q, QSIZE).context("SET_VRING_NUM")?;
        let cfg = VringConfigData {
            queue_max_size: QSIZE,
            queue_size: QSIZE,
            flags: 0,
            desc_table_addr: USER_BASE + r.base,
            used_ring_addr: USER_BASE + r.used(),
            avail_ring_addr: USER_BASE + r.avail(),
            log_addr: None,
        };
        self.fe.set_vring_addr(q, &cfg).context("SET_VRING_ADDR")?;
        self.fe.set_vring_base(q, 0).context("SET_VRING_BASE")?;
        self.fe
            .set_vring_call(q, &self.call[q])
            .context("SET_VRING_CALL")?;
        self.fe
            .set_vring_kick(q, &self.kick[q])
            .context("SET_VRING_KICK")?;
        self.fe
            .set_vring_enable(q, true)
            .context("SET_VRING_ENABLE")?;
        Ok(())
    }

    /// Writes descriptor `idx` of queue `q`.
    pub fn write_desc(
        &self,
        q: usize,
        idx: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Result<()> {
        let at = GuestAddress(self.rings[q].base + u64::from(idx) * 16);
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&d, at).context("descriptor")?;
        Ok(())
    }

    /// Puts `head` in queue `q`'s avail ring and publishes it.
    pub fn push_avail(&mut self, q: usize, head: u16) -> Result<()> {
        let r = &mut self.rings[q];
        let slot = r.avail() + 4 + u64::from(r.avail_idx % QSIZE) * 2;
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .context("avail ring")?;
        r.avail_idx = r.avail_idx.wrapping_add(1);
        let idx = r.avail_idx;
        self.publish_avail(q, idx)
    }

    /// Writes queue `q`'s avail index as `idx` (whatever it should be).
    pub fn publish_avail(&self, q: usize, idx: u16) -> Result<()> {
        fence(Ordering::SeqCst);
        self.mem
            .store(
                idx.to_le(),
                GuestAddress(self.rings[q].avail() + 2),
                Ordering::Release,
            )
            .context("avail index")?;
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Tells the device queue `q` has work.
    pub fn kick(&self, q: usize) -> Result<()> {
        self.kick[q].write(1).context("kick")?;
        Ok(())
    }

    /// The used entries of queue `q` not seen yet: (descriptor id, length).
    pub fn take_used(&mut self, q: usize) -> Result<Vec<(u16, u32)>> {
        let r = &mut self.rings[q];
        let idx: u16 = self
            .mem
            .load(GuestAddress(r.used() + 2), Ordering::Acquire)
            .context("used index")?;
        let idx = u16::from_le(idx);
        let mut out = Vec::new();
        while r.used_seen != idx {
            let at = r.used() + 4 + u64::from(r.used_seen % QSIZE) * 8;
            let id: u32 = self.mem.read_obj(GuestAddress(at)).context("used ring")?;
            let len: u32 = self
                .mem
                .read_obj(GuestAddress(at + 4))
                .context("used ring")?;
            out.push((u32::from_le(id) as u16, u32::from_le(len)));
            r.used_seen = r.used_seen.wrapping_add(1);
        }
        Ok(out)
    }

    /// Posts every RX descriptor as a writable buffer, and kicks.
    pub fn post_rx(&mut self, flags: u16, base: u64) -> Result<()> {
        for i in 0..QSIZE {
            self.write_desc(RX, i, base + u64::from(i) * BUF, BUF as u32, flags, 0)?;
            self.push_avail(RX, i)?;
        }
        self.kick(RX)
    }

    /// Reposts RX descriptor `i` as it was.
    pub fn repost_rx(&mut self, i: u16) -> Result<()> {
        self.push_avail(RX, i)
    }

    /// Writes `frame` behind a zero virtio-net header into TX buffer `i`
    /// and publishes it (no kick).
    pub fn queue_tx(&mut self, i: u16, frame: &[u8]) -> Result<()> {
        let addr = TX_BUFS + u64::from(i) * BUF;
        self.mem
            .write_slice(&[0u8; HDR_LEN], GuestAddress(addr))
            .context("tx header")?;
        self.mem
            .write_slice(frame, GuestAddress(addr + HDR_LEN as u64))
            .context("tx frame")?;
        let len = u32::try_from(HDR_LEN + frame.len()).context("frame length")?;
        self.write_desc(TX, i, addr, len, 0, 0)?;
        self.push_avail(TX, i)
    }

    /// The frame in RX buffer `i` (after the header), `len` bytes written.
    pub fn rx_frame(&self, i: u16, len: u32) -> Result<Vec<u8>> {
        let len = (len as usize).min(BUF as usize);
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, GuestAddress(RX_BUFS + u64::from(i) * BUF))
            .context("rx buffer")?;
        Ok(buf.split_off(HDR_LEN.min(buf.len())))
    }
}

fn new_eventfd() -> Result<EventFd> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).context("eventfd")
}
