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
    fn send(&self, frame: &[u8]) -> Result<(), SendError> {
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
            q.bytes.extend(frame);
            return Ok(());
        }
        let written = match self
            .conn
            .try_write_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame)])
        {
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
        let rest = hdr.iter().chain(frame.iter()).skip(written).copied();
        q.bytes.extend(rest);
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
        transmit_each(frames, |frame| self.0.send(frame))
    }
}
