//! One stream connection as one port: reading length-prefixed records
//! into frames, and the port's life until either side ends it.

use super::tx::{StreamTx, TxHandle};
use super::*;
use crate::ports::attachment::Attachment;

/// A connected stream socket of either family.
#[derive(Debug)]
pub(super) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    async fn readable(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.readable().await,
            Conn::Unix(s) => s.readable().await,
        }
    }
    pub(super) async fn writable(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.writable().await,
            Conn::Unix(s) => s.writable().await,
        }
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.try_read(buf),
            Conn::Unix(s) => s.try_read(buf),
        }
    }
    pub(super) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.try_write_vectored(bufs),
            Conn::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    /// Writes `prefix` and then `frame`'s pieces with one `writev`, as
    /// [`Conn::try_write_vectored`] does for whole buffers (tokio learns
    /// of a full socket).
    pub(super) fn try_write_gathered(
        &self,
        prefix: &[u8],
        frame: &crate::gather::Gathered<'_>,
    ) -> io::Result<usize> {
        let interest = tokio::io::Interest::WRITABLE;
        match self {
            Conn::Tcp(s) => s.try_io(interest, || crate::sys::write_gathered(s, prefix, frame)),
            Conn::Unix(s) => s.try_io(interest, || crate::sys::write_gathered(s, prefix, frame)),
        }
    }
}

/// One connection as one port, until either side ends it.
pub(super) async fn run_connection(
    switch: Arc<Switch>,
    name: String,
    peer: String,
    conn: Arc<Conn>,
    stop: Stop,
) {
    let id = switch.allocate_id();
    let tx = Arc::new(StreamTx::new(conn.clone()));
    let port = Arc::new(Port::new(
        id,
        &name,
        "stream",
        &peer,
        Box::new(TxHandle(tx.clone())),
    ));
    let attached = Attachment::new(&switch, &stop, port.clone(), None);
    let why = tokio::select! {
        r = read_frames(&switch, &port, &conn) => r,
        r = tx.writer() => r,
        _ = port.closed() => "peer gone".to_string(),
    };
    attached.detach(why);
    tx.close();
}

/// What the length prefix says.
#[doc(hidden)] // public for the fuzz target fuzz/fuzz_targets/stream_framing.rs
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// Need more bytes.
    Incomplete,
    /// A whole frame of this length follows the 4 bytes.
    Frame(usize),
    /// A length of 0 or above the limit: the stream is out of step.
    Bad(usize),
}

/// Reads the 4-byte big-endian length prefix at the start of `bytes`.
#[doc(hidden)] // public for the fuzz target fuzz/fuzz_targets/stream_framing.rs
pub fn prefix(bytes: &[u8]) -> Prefix {
    let Some(hdr) = bytes.get(..4) else {
        return Prefix::Incomplete;
    };
    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    if len == 0 || len > crate::MAX_FRAME {
        return Prefix::Bad(len);
    }
    if bytes.len() < 4 + len {
        Prefix::Incomplete
    } else {
        Prefix::Frame(len)
    }
}

async fn read_frames(switch: &Switch, port: &Port, conn: &Conn) -> String {
    let mut buf = vec![0u8; READ_BUFFER];
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        if let Err(e) = conn.readable().await {
            return format!("read failed: {e}");
        }
        match conn.try_read(&mut buf[end..]) {
            Ok(0) => return "connection closed by peer".into(),
            Ok(n) => end += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return format!("read failed: {e}"),
        }
        let now = switch.now();
        loop {
            match prefix(&buf[start..end]) {
                Prefix::Incomplete => break,
                Prefix::Frame(len) => {
                    let frame = &buf[start + 4..start + 4 + len];
                    switch.forward(port, Frames::Plain(&[frame]), Overflow::Drop, now);
                    start += 4 + len;
                }
                Prefix::Bad(len) => {
                    let reason = if len == 0 {
                        DropReason::TooShort
                    } else {
                        DropReason::TooLong
                    };
                    port.drop_frame(reason, now, None);
                    return format!("bad frame length {len}: closing the connection");
                }
            }
        }
        make_room(&mut buf, &mut start, &mut end);
    }
}

/// After the whole records in `buf[start..end]` were forwarded: makes sure
/// the (partial) record at `start` will fit and that there is room to read
/// into, by moving it to the front of the buffer or growing the buffer.
/// Returns how far the contents moved towards the front.
#[doc(hidden)] // public for the fuzz target fuzz/fuzz_targets/stream_framing.rs
pub fn make_room(buf: &mut Vec<u8>, start: &mut usize, end: &mut usize) -> usize {
    let moved = *start;
    if *start == *end {
        *start = 0;
        *end = 0;
        return moved;
    }
    let want = match buf[*start..*end].get(..4) {
        Some(h) => 4 + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize,
        None => 4,
    };
    let mut shift = 0;
    if *start + want > buf.len() || buf.len() - *end < MIN_READ_ROOM {
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
        shift = moved;
    }
    if want > buf.len() {
        // `want` is at most the largest record (4 + MAX_FRAME): a bad
        // length closed the connection before we got here.
        buf.resize(READ_BUFFER_MAX, 0);
    }
    shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix() {
        assert_eq!(prefix(&[0, 0, 0]), Prefix::Incomplete);
        let mut rec = vec![0, 0, 0, 42];
        rec.extend([0u8; 41]);
        assert_eq!(prefix(&rec), Prefix::Incomplete);
        rec.push(0);
        assert_eq!(prefix(&rec), Prefix::Frame(42));
        assert_eq!(prefix(&[0, 0, 0, 0]), Prefix::Bad(0));
        assert_eq!(prefix(&[0, 1, 0, 0]), Prefix::Bad(65_536));
        assert_eq!(prefix(&[0, 0, 0xff, 0xff]), Prefix::Incomplete);
    }

    proptest::proptest! {
        /// Whatever is left after forwarding, the record at the front will
        /// fit and there is room to read more.
        #[test]
        fn make_room_leaves_room_for_the_record(
            len in 1usize..=crate::MAX_FRAME,
            have in 0usize..70_000,
            start in 0usize..READ_BUFFER_MAX,
            big in proptest::bool::ANY,
        ) {
            let mut buf = vec![0u8; if big { READ_BUFFER_MAX } else { READ_BUFFER }];
            let have = have.min(3 + len).min(buf.len());
            let start = start.min(buf.len() - have);
            let end = start + have;
            if have >= 4 {
                buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
            }
            let kept = buf[start..end].to_vec();
            let (mut s, mut e) = (start, end);
            let shift = make_room(&mut buf, &mut s, &mut e);
            proptest::prop_assert_eq!(&buf[s..e], &kept[..]);
            proptest::prop_assert_eq!(s + shift, start);
            proptest::prop_assert!(e < buf.len(), "no room to read");
            if have >= 4 {
                proptest::prop_assert!(s + 4 + len <= buf.len(), "the record does not fit");
            }
            proptest::prop_assert!(buf.len() <= READ_BUFFER_MAX);
        }

        #[test]
        fn prefix_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = prefix(&bytes);
        }
    }
}
