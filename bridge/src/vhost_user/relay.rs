//! A relay between the frontend's connection and rust-vmm's backend, on
//! the vhost-user message stream only (the rings and kicks never pass
//! here). It forwards every message with its descriptors unchanged except
//! for two frontend quirks:
//!
//! * UML's `virtio_uml` sends SET_MEM_TABLE with room for two regions
//!   whatever it fills in, which `vhost` rejects as a bad size, so the
//!   unused tail is cut off.
//! * QEMU (7.2 at least) sends SET_VRING_ENABLE before SET_FEATURES has
//!   acknowledged PROTOCOL_FEATURES (when the NIC is realized, and again
//!   when the driver starts it), which `vhost` rejects, ending the
//!   connection. Such a message is held back (and acknowledged if QEMU
//!   asked for a reply), and the last state of each ring is passed on
//!   right after the SET_FEATURES that acknowledges PROTOCOL_FEATURES.
//!
//! One more thing happens on the way: guest memory is sealed against
//! shrinking where its file allows it, and a table whose regions reach
//! past the end of their files is refused (see [`guard_guest_memory`]).

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The vhost-user header: request, flags, payload size.
const HEADER: usize = 12;
/// The largest payload we pass on (vhost's own limit is 4 KiB plus
/// headers; SET_MEM_TABLE with 8 regions is 264 bytes).
const MAX_PAYLOAD: usize = 0x1000 + 64;
/// Descriptors one message may carry (SET_MEM_TABLE: one per region).
const MAX_FDS: usize = 32;
/// VHOST_USER_SET_MEM_TABLE.
const SET_MEM_TABLE: u32 = 5;
/// VHOST_USER_ADD_MEM_REG (one region, one descriptor).
const ADD_MEM_REG: u32 = 37;
/// VHOST_USER_SET_FEATURES.
const SET_FEATURES: u32 = 2;
/// VHOST_USER_SET_VRING_ENABLE.
const SET_VRING_ENABLE: u32 = 18;
/// VHOST_USER_F_PROTOCOL_FEATURES, in SET_FEATURES.
const PROTOCOL_FEATURES: u64 = 1 << 30;
/// Header flags: protocol version 1, a reply, a reply wanted.
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
/// Bytes before the regions of SET_MEM_TABLE, and per region.
const MEM_HEADER: usize = 8;
const MEM_REGION: usize = 32;

/// One message with its descriptors.
struct Message {
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Copies messages from `from` to `to` until either side closes; then
/// shuts both down so the other direction ends too. `fix` is set for the
/// frontend-to-backend direction, where the quirks are mended.
pub(super) fn pump(from: &UnixStream, to: &UnixStream, fix: bool) -> io::Result<()> {
    let mut buf = vec![0u8; HEADER + MAX_PAYLOAD];
    let mut early = EarlyEnables::default();
    let result = loop {
        match read_message(from, &mut buf) {
            Ok(Some(mut m)) => {
                if fix {
                    fix_mem_table(&mut m);
                    if let Err(e) = guard_guest_memory(&m) {
                        break Err(e);
                    }
                }
                let step = if fix {
                    early.pass(m, from, to)
                } else {
                    write_message(to, &m)
                };
                if let Err(e) = step {
                    break Err(e);
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
    result
}

/// Reads one message; `None` at a clean end of stream.
fn read_message(sock: &UnixStream, buf: &mut [u8]) -> io::Result<Option<Message>> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut got = 0;
    let mut fds = Vec::new();
    // The descriptors come with the header's first bytes.
    while got < HEADER {
        let mut iov = [IoSliceMut::new(&mut buf[got..HEADER])];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(crate::sys::received_fds(&raw));
            }
        }
        if msg.bytes == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += msg.bytes;
    }
    let size = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a vhost-user message of {size} bytes"),
        ));
    }
    let mut s = sock;
    s.read_exact(&mut buf[HEADER..HEADER + size])?;
    Ok(Some(Message {
        buf: buf[..HEADER + size].to_vec(),
        fds,
    }))
}

fn write_message(sock: &UnixStream, m: &Message) -> io::Result<()> {
    let raw: Vec<RawFd> = m.fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    let mut sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&m.buf)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    while sent < m.buf.len() {
        let n = sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&m.buf[sent..])],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)?;
        sent += n;
    }
    Ok(())
}

/// Ring states QEMU set before PROTOCOL_FEATURES was acknowledged.
#[derive(Default)]
struct EarlyEnables {
    /// SET_FEATURES has acknowledged PROTOCOL_FEATURES.
    acked: bool,
    /// (ring, enable) held back, the latest per ring.
    held: Vec<(u32, u32)>,
}

impl EarlyEnables {
    /// Passes `m` from the frontend (`from`) to the backend (`to`), or
    /// holds it back if it is an early SET_VRING_ENABLE.
    fn pass(&mut self, m: Message, from: &UnixStream, to: &UnixStream) -> io::Result<()> {
        let request = word(&m.buf, 0);
        let flags = word(&m.buf, 4);
        if request == SET_VRING_ENABLE && !self.acked && m.buf.len() >= HEADER + 8 {
            let (ring, num) = (word(&m.buf, HEADER), word(&m.buf, HEADER + 4));
            self.held.retain(|(r, _)| *r != ring);
            self.held.push((ring, num));
            if flags & FLAG_NEED_REPLY != 0 {
                // The other pump writes to the frontend only replies to
                // requests, and a frontend waits for each reply before its
                // next request: the two writers cannot interleave.
                write_message(from, &reply(SET_VRING_ENABLE, 0))?;
            }
            return Ok(());
        }
        if request == SET_FEATURES && m.buf.len() >= HEADER + 8 {
            let low = u64::from(word(&m.buf, HEADER));
            let high = u64::from(word(&m.buf, HEADER + 4));
            self.acked = (low | high << 32) & PROTOCOL_FEATURES != 0;
            write_message(to, &m)?;
            if self.acked {
                for (ring, num) in std::mem::take(&mut self.held) {
                    write_message(to, &vring_enable(ring, num))?;
                }
            }
            return Ok(());
        }
        write_message(to, &m)
    }
}

/// The little-endian u32 at `at` (the caller checked the length).
fn word(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// A reply to `request` carrying the u64 `value` (0: success).
fn reply(request: u32, value: u64) -> Message {
    let mut buf = Vec::with_capacity(HEADER + 8);
    buf.extend_from_slice(&request.to_le_bytes());
    buf.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
    buf.extend_from_slice(&8u32.to_le_bytes());
    buf.extend_from_slice(&value.to_le_bytes());
    Message {
        buf,
        fds: Vec::new(),
    }
}

/// SET_VRING_ENABLE for `ring`, no reply wanted.
fn vring_enable(ring: u32, num: u32) -> Message {
    let mut buf = Vec::with_capacity(HEADER + 8);
    buf.extend_from_slice(&SET_VRING_ENABLE.to_le_bytes());
    buf.extend_from_slice(&FLAG_VERSION.to_le_bytes());
    buf.extend_from_slice(&8u32.to_le_bytes());
    buf.extend_from_slice(&ring.to_le_bytes());
    buf.extend_from_slice(&num.to_le_bytes());
    Message {
        buf,
        fds: Vec::new(),
    }
}

/// The switch maps the guest's RAM files; a page of a mapping beyond the
/// end of its file faults (SIGBUS) when touched, which would take the
/// whole daemon down. So, before the backend maps them, every file of a
/// SET_MEM_TABLE or ADD_MEM_REG is sealed against shrinking where it
/// allows that (a memfd made with MFD_ALLOW_SEALING; QEMU's
/// `memory-backend-memfd` seals by default), and a region that reaches
/// past the end of its file is refused, which ends the connection. A file
/// that cannot be sealed (tmpfs or hugetlbfs files as UML and
/// `memory-backend-file` use, memfds made without sealing) is checked
/// only now: docs/transports.md says what a guest can still do with it.
fn guard_guest_memory(m: &Message) -> io::Result<()> {
    let request = u32::from_le_bytes([m.buf[0], m.buf[1], m.buf[2], m.buf[3]]);
    let regions = match request {
        SET_MEM_TABLE => HEADER + MEM_HEADER,
        // ADD_MEM_REG: 8 bytes of padding, then one region.
        ADD_MEM_REG => HEADER + 8,
        _ => return Ok(()),
    };
    for (i, fd) in m.fds.iter().enumerate() {
        if let Err(e) = fcntl(fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)) {
            tracing::debug!("vhost-user: guest memory not sealed against shrinking: {e}");
        }
        let at = regions + i * MEM_REGION;
        // A malformed table is the backend's to refuse.
        let Some(r) = m.buf.get(at..at + MEM_REGION) else {
            break;
        };
        let word = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let (size, offset) = (word(8), word(24));
        let file = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
        let have = u64::try_from(file.st_size).unwrap_or(0);
        if size.checked_add(offset).is_none_or(|end| end > have) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "guest memory region {i} ({size} bytes at offset {offset}) reaches past \
                     the end of its {have}-byte file"
                ),
            ));
        }
    }
    Ok(())
}

/// Cuts a SET_MEM_TABLE payload down to the regions it says it has.
fn fix_mem_table(m: &mut Message) {
    let request = u32::from_le_bytes([m.buf[0], m.buf[1], m.buf[2], m.buf[3]]);
    if request != SET_MEM_TABLE || m.buf.len() < HEADER + MEM_HEADER {
        return;
    }
    let regions = u32::from_le_bytes([
        m.buf[HEADER],
        m.buf[HEADER + 1],
        m.buf[HEADER + 2],
        m.buf[HEADER + 3],
    ]) as usize;
    let want = MEM_HEADER + regions.saturating_mul(MEM_REGION);
    if HEADER + want < m.buf.len() {
        m.buf.truncate(HEADER + want);
        m.buf[8..12].copy_from_slice(&(want as u32).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mem_table_with_room_for_two_regions_is_cut_to_one() {
        let mut buf = vec![0u8; HEADER + MEM_HEADER + 2 * MEM_REGION];
        buf[0] = SET_MEM_TABLE as u8;
        buf[8] = (MEM_HEADER + 2 * MEM_REGION) as u8;
        buf[HEADER] = 1;
        let mut m = Message {
            buf,
            fds: Vec::new(),
        };
        fix_mem_table(&mut m);
        assert_eq!(m.buf.len(), HEADER + MEM_HEADER + MEM_REGION);
        assert_eq!(m.buf[8] as usize, MEM_HEADER + MEM_REGION);
    }

    /// A SET_VRING_ENABLE message as QEMU sends it.
    fn enable(ring: u32, num: u32, flags: u32) -> Message {
        let mut m = vring_enable(ring, num);
        m.buf[4..8].copy_from_slice(&flags.to_le_bytes());
        m
    }

    fn set_features(value: u64) -> Message {
        let mut buf = Vec::new();
        buf.extend_from_slice(&SET_FEATURES.to_le_bytes());
        buf.extend_from_slice(&FLAG_VERSION.to_le_bytes());
        buf.extend_from_slice(&8u32.to_le_bytes());
        buf.extend_from_slice(&value.to_le_bytes());
        Message {
            buf,
            fds: Vec::new(),
        }
    }

    #[test]
    fn early_ring_enables_wait_for_the_protocol_features() {
        let (frontend, relay_front) = UnixStream::pair().expect("pair");
        let (relay_back, backend) = UnixStream::pair().expect("pair");
        let mut early = EarlyEnables::default();
        early
            .pass(enable(0, 1, FLAG_VERSION), &relay_front, &relay_back)
            .expect("held");
        early
            .pass(
                enable(1, 0, FLAG_VERSION | FLAG_NEED_REPLY),
                &relay_front,
                &relay_back,
            )
            .expect("held");
        early
            .pass(enable(1, 1, FLAG_VERSION), &relay_front, &relay_back)
            .expect("held");
        let mut buf = vec![0u8; HEADER + MAX_PAYLOAD];
        let ack = read_message(&frontend, &mut buf)
            .expect("read")
            .expect("an ack");
        assert_eq!(ack.buf, reply(SET_VRING_ENABLE, 0).buf);
        early
            .pass(
                set_features(PROTOCOL_FEATURES | 1 << 32),
                &relay_front,
                &relay_back,
            )
            .expect("passed");
        let got: Vec<Vec<u8>> = (0..3)
            .map(|_| {
                read_message(&backend, &mut buf)
                    .expect("read")
                    .expect("a message")
                    .buf
            })
            .collect();
        assert_eq!(got[0], set_features(PROTOCOL_FEATURES | 1 << 32).buf);
        assert_eq!(got[1], vring_enable(0, 1).buf);
        assert_eq!(got[2], vring_enable(1, 1).buf);
        // From now on enables pass as they come.
        early
            .pass(enable(0, 0, FLAG_VERSION), &relay_front, &relay_back)
            .expect("passed");
        let later = read_message(&backend, &mut buf)
            .expect("read")
            .expect("a message");
        assert_eq!(later.buf, vring_enable(0, 0).buf);
    }

    #[test]
    fn a_sealable_memory_table_can_no_longer_shrink() {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"t", MFdFlags::MFD_ALLOW_SEALING).expect("memfd");
        let file = std::fs::File::from(fd);
        file.set_len(8192).expect("size");
        let mut buf = vec![0u8; HEADER + MEM_HEADER + MEM_REGION];
        buf[0] = SET_MEM_TABLE as u8;
        let m = Message {
            buf,
            fds: vec![OwnedFd::from(file.try_clone().expect("dup"))],
        };
        guard_guest_memory(&m).expect("a region of 0 bytes fits");
        assert!(file.set_len(4096).is_err(), "shrinking is refused");
        assert!(file.set_len(16384).is_ok(), "growing is not");
    }

    #[test]
    fn a_region_past_the_end_of_its_file_is_refused() {
        let file = std::fs::File::open("/dev/null").expect("null");
        let mut buf = vec![0u8; HEADER + MEM_HEADER + MEM_REGION];
        buf[0] = SET_MEM_TABLE as u8;
        buf[HEADER] = 1;
        // memory_size: 1 MiB, in a file of 0 bytes.
        buf[HEADER + MEM_HEADER + 8 + 2] = 0x10;
        let m = Message {
            buf,
            fds: vec![OwnedFd::from(file)],
        };
        let e = guard_guest_memory(&m).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn messages_and_descriptors_pass_whole() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (c, d) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || pump(&b, &c, true));
        let mut msg = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
        msg.extend_from_slice(&[9, 8, 7, 6]);
        let m = Message {
            buf: msg.clone(),
            fds: vec![OwnedFd::from(
                std::fs::File::open("/dev/null").expect("null"),
            )],
        };
        write_message(&a, &m).expect("send");
        let mut buf = vec![0u8; HEADER + MAX_PAYLOAD];
        let got = read_message(&d, &mut buf)
            .expect("read")
            .expect("a message");
        assert_eq!(got.buf, msg);
        assert_eq!(got.fds.len(), 1);
        drop(a);
        t.join().expect("joins").expect("clean end");
    }
}
