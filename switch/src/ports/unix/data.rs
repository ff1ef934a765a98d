//! A unix port's data path once attached: frames between the client's
//! datagram socket and the switch, on the data-plane thread or the
//! runtime, until the control connection ends.

use super::*;

/// Moves frames until the control connection ends or the port is closed;
/// returns why it stopped.
pub(super) async fn run_port(
    switch: &Switch,
    port: &Port,
    ctl: &mut UnixStream,
    data: &mut DataPath,
) -> &'static str {
    let mut scratch = [0u8; 256];
    let mut extra_logged = false;
    // Built once: the select below must not restart the receive loop.
    let receive = data.serve(switch, port);
    tokio::pin!(receive);
    loop {
        tokio::select! {
            // The data path first; no random branch order per wake-up.
            biased;
            r = &mut receive => {
                return match r {
                    Ok(()) => "peer socket gone",
                    Err(e) => {
                        tracing::warn!(port = %port.name(), "receive failed: {e}");
                        "data socket failed"
                    }
                };
            }
            r = ctl.read(&mut scratch) => match r {
                Ok(0) => return "control connection closed",
                Ok(n) => {
                    // uml_switch would tear the port down here; clients
                    // that send stray bytes keep their port with us.
                    if !extra_logged {
                        tracing::debug!(port = %port.name(), bytes = n, "ignoring bytes on control connection");
                        extra_logged = true;
                    }
                }
                Err(_) => return "control connection failed",
            },
        }
    }
}

/// Where a port's frames are received: on the data plane thread, or on the
/// runtime when that thread is not available.
pub(super) enum DataPath {
    Plane(Receiving),
    Runtime(AsyncFd<SharedFd<UnixDatagram>>),
}

impl DataPath {
    pub(super) fn start(
        switch: &Arc<Switch>,
        port: &Arc<Port>,
        sock: Arc<UnixDatagram>,
    ) -> io::Result<DataPath> {
        match plane::plane() {
            Some(p) => Ok(DataPath::Plane(p.attach(
                switch.clone(),
                port.clone(),
                sock,
            ))),
            None => watch_readable(sock).map(DataPath::Runtime),
        }
    }

    /// Receives (or serves the plane's held frames) until the port closes
    /// (`Ok`) or its socket fails.
    async fn serve(&mut self, switch: &Switch, port: &Port) -> io::Result<()> {
        match self {
            DataPath::Plane(r) => r.serve(switch, port).await,
            DataPath::Runtime(afd) => receive_batched(switch, port, afd).await,
        }
    }

    /// Stops receiving, so the port can leave the switch.
    pub(super) async fn stop(self) {
        match self {
            DataPath::Plane(r) => r.stop().await,
            DataPath::Runtime(afd) => drop(afd),
        }
    }
}

/// Non-blocking send on a connected datagram socket.
pub(super) struct DatagramTx(pub(super) Arc<UnixDatagram>);

impl Transmit for DatagramTx {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        let mut done = 0;
        while done < frames.len() {
            match crate::sys::send_batch(&*self.0, &frames[done..]) {
                Ok(0) => return (done, Some(SendError::Full)),
                Ok(n) => done += n,
                Err(e) => return (done, Some(SendError::from_io(e))),
            }
        }
        (done, None)
    }

    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[crate::gather::Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        let mut done = 0;
        while done < frames.len() {
            match crate::sys::send_gathered(&*self.0, &frames[done..]) {
                Ok(0) => return Some((done, Some(SendError::Full))),
                Ok(n) => done += n,
                Err(e) => return Some((done, Some(SendError::from_io(e)))),
            }
        }
        Some((done, None))
    }

    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        // Connected, so poll(2) reports it unwritable while the client's
        // queue is full and wakes it when the client reads (the kernel's
        // peer wake-up for unix datagram sockets).
        Some(std::os::fd::AsFd::as_fd(&*self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gather::split;

    #[test]
    fn gathered_frames_arrive_whole_in_order_more_than_one_call_holds() {
        let (ours, theirs) = UnixDatagram::pair().expect("pair");
        crate::sys::grow_send_buffer(&ours, 1 << 20);
        let tx = DatagramTx(Arc::new(ours));
        // 20 frames of 65 pieces each: more iovecs than one sendmmsg takes.
        let frames: Vec<Vec<u8>> = (0..20u8)
            .map(|n| (0..1400).map(|i| (i as u8).wrapping_mul(n)).collect())
            .collect();
        let mut slots: Vec<Vec<crate::gather::Foreign<'_>>> = vec![Vec::new(); frames.len()];
        let gathered: Vec<_> = frames
            .iter()
            .zip(slots.iter_mut())
            .map(|(f, s)| split(f, 64, s))
            .collect();
        assert_eq!(gathered[0].rest().len(), 64);
        let (sent, err) = tx.transmit_gathered(PortId(1), &gathered).expect("taken");
        assert!(err.is_none(), "{err:?}");
        assert_eq!(sent, frames.len());
        let mut buf = vec![0u8; 2048];
        for f in &frames {
            let n = theirs.recv(&mut buf).expect("recv");
            assert_eq!(&buf[..n], &f[..]);
        }
    }
}
