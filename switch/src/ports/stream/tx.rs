//! A stream connection's sending side: written at once when the socket
//! takes it, else queued whole for a writer task, dropped when the queue
//! is full.

use super::*;

#[derive(Debug, Default)]
struct TxQueue {
    bytes: VecDeque<u8>,
    closed: bool,
}

pub(super) struct StreamTx {
    conn: Arc<Conn>,
    queue: Mutex<TxQueue>,
    wake: Notify,
}

impl StreamTx {
    /// The sending side of `conn`, with an empty queue.
    pub(super) fn new(conn: Arc<Conn>) -> StreamTx {
        StreamTx {
            conn,
            queue: Mutex::new(TxQueue::default()),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TxQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.bytes.clear();
    }

    /// Sends one record, or queues what the socket did not take.
    fn send(&self, frame: Record<'_>) -> Result<(), SendError> {
        let hdr = (frame.len() as u32).to_be_bytes();
        let total = hdr.len() + frame.len();
        let mut q = self.lock();
        if q.closed {
            return Err(SendError::Gone(io::Error::from(
                io::ErrorKind::NotConnected,
            )));
        }
        if !q.bytes.is_empty() {
            if q.bytes.len() + total > TX_QUEUE_BYTES {
                return Err(SendError::Full);
            }
            q.bytes.extend(hdr);
            frame.append_from(0, &mut q.bytes);
            return Ok(());
        }
        let written = match frame.write_behind(&self.conn, &hdr) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(SendError::from_io(e)),
        };
        if written == total {
            return Ok(());
        }
        if written == 0 && total > TX_QUEUE_BYTES {
            return Err(SendError::Full);
        }
        // The rest of this record must follow, or the stream is broken.
        q.bytes.extend(hdr.iter().skip(written));
        frame.append_from(written.saturating_sub(hdr.len()), &mut q.bytes);
        drop(q);
        self.wake.notify_one();
        Ok(())
    }

    /// Drains the queue whenever the socket can take more.
    pub(super) async fn writer(&self) -> String {
        loop {
            self.wake.notified().await;
            loop {
                let result = {
                    let mut q = self.lock();
                    if q.bytes.is_empty() {
                        break;
                    }
                    let (a, b) = q.bytes.as_slices();
                    match self
                        .conn
                        .try_write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                    {
                        Ok(n) => {
                            q.bytes.drain(..n);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                };
                match result {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = self.conn.writable().await {
                            return format!("write failed: {e}");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return format!("write failed: {e}"),
                }
            }
        }
    }
}

pub(super) struct TxHandle(pub(super) Arc<StreamTx>);

impl Transmit for TxHandle {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| self.0.send(Record::Whole(frame)))
    }

    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[crate::gather::Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        Some(transmit_each(frames, |frame| {
            self.0.send(Record::Gathered(frame))
        }))
    }
}

/// A record's frame: whole, or in two parts (see [`crate::gather`]).
#[derive(Clone, Copy)]
enum Record<'a> {
    Whole(&'a [u8]),
    Gathered(crate::gather::Gathered<'a>),
}

impl Record<'_> {
    fn len(&self) -> usize {
        match self {
            Record::Whole(f) => f.len(),
            Record::Gathered(g) => g.len(),
        }
    }

    /// Writes `hdr` and the frame with one system call.
    fn write_behind(&self, conn: &Conn, hdr: &[u8]) -> io::Result<usize> {
        match self {
            Record::Whole(f) => conn.try_write_vectored(&[IoSlice::new(hdr), IoSlice::new(f)]),
            Record::Gathered(g) => conn.try_write_gathered(hdr, g),
        }
    }

    /// Queues the frame's bytes from `from` on.
    fn append_from(&self, from: usize, queue: &mut VecDeque<u8>) {
        match self {
            Record::Whole(f) => queue.extend(&f[from.min(f.len())..]),
            Record::Gathered(g) => {
                let mut buf = [0u8; 4096];
                let mut at = from;
                while at < g.len() {
                    let n = (g.len() - at).min(buf.len());
                    g.copy_range(at, &mut buf[..n]);
                    queue.extend(&buf[..n]);
                    at += n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gather::split;
    use tokio::io::AsyncReadExt;

    /// Frames in two parts go out as records in order, also when the
    /// socket takes part of one and the writer task sends the rest.
    #[tokio::test]
    async fn gathered_frames_become_whole_records_in_order() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().expect("pair");
        let tx = Arc::new(StreamTx::new(Arc::new(Conn::Unix(ours))));
        let writer = tokio::spawn({
            let tx = tx.clone();
            async move { tx.writer().await }
        });
        let frames: Vec<Vec<u8>> = (0..40u32)
            .map(|n| {
                (0..60_000u32)
                    .map(|i| (i.wrapping_mul(n + 1) % 251) as u8)
                    .collect()
            })
            .collect();
        let mut sent = 0;
        for f in &frames {
            let mut slots = Vec::new();
            let g = split(f, 9, &mut slots);
            match TxHandle(tx.clone()).transmit_gathered(PortId(1), &[g]) {
                Some((1, None)) => sent += 1,
                // Full: the queue holds its limit; the reader catches up.
                Some((0, Some(SendError::Full))) => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(sent > 2, "only {sent} records taken");
        assert!(
            !tx.lock().bytes.is_empty(),
            "the socket took every record whole: the queued path never ran"
        );
        for f in &frames[..sent] {
            let mut len = [0u8; 4];
            theirs.read_exact(&mut len).await.expect("length");
            assert_eq!(u32::from_be_bytes(len) as usize, f.len());
            let mut got = vec![0u8; f.len()];
            theirs.read_exact(&mut got).await.expect("frame");
            assert!(got == *f, "record differs");
        }
        tx.close();
        writer.abort();
    }
}
