//! Frames to the NIC: through MAC-NAT when it is on, injected with the
//! second libpcap handle.

use super::*;

pub(super) struct PcapTx {
    pub(super) handle: Option<Mutex<pcap::Capture<pcap::Active>>>,
    pub(super) nat: Option<Arc<Mutex<MacNat>>>,
    /// Reused for MAC-NAT's edits (it may grow a frame): one buffer per
    /// frame of an injected batch.
    pub(super) scratch: Mutex<Vec<Vec<u8>>>,
    pub(super) epoch: std::time::Instant,
}

impl PcapTx {
    /// Buffers for one injected batch (MAC-NAT rewrites and injects
    /// `ingress::BATCH` frames with one call, at most).
    pub(super) fn scratch() -> Mutex<Vec<Vec<u8>>> {
        Mutex::new(super::ingress::buffers())
    }
}

impl Transmit for PcapTx {
    fn transmit(&self, ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        let Some(handle) = &self.handle else {
            // Monitor only: frames to the NIC go nowhere, by request.
            return (frames.len(), None);
        };
        let handle = handle.lock().unwrap_or_else(|p| p.into_inner());
        let Some(nat) = &self.nat else {
            return inject(&*handle, frames);
        };
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.epoch.elapsed();
        let mut done = 0;
        while done < frames.len() {
            // The table is held for one batch's rewrites, not across the
            // injection: the capture side needs it meanwhile.
            let mut n = 0;
            let mut refused = false;
            {
                let mut table = nat.lock().unwrap_or_else(|p| p.into_inner());
                for (frame, out) in frames[done..].iter().zip(scratch.iter_mut()) {
                    out.clear();
                    out.extend_from_slice(frame);
                    match table.outbound(out, ingress.0, now) {
                        Outbound::Send => n += 1,
                        // The table counts why (`ctl macnat`); the port
                        // counts it as `mac_nat`.
                        Outbound::Drop(_) => {
                            refused = true;
                            break;
                        }
                    }
                }
            }
            let mut out: [&[u8]; super::ingress::BATCH] = [&[]; super::ingress::BATCH];
            let (sent, err) = inject(&*handle, super::ingress::refs(&scratch[..n], &mut out));
            done += sent;
            if err.is_some() {
                return (done, err);
            }
            if refused {
                return (done, Some(SendError::Refused(DropReason::MacNat)));
            }
        }
        (done, None)
    }

    /// From a guest's buffers to the NIC in one copy, the kernel's; with
    /// MAC-NAT on, joined for it to rewrite.
    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[switchyard_switch::gather::Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        if self.nat.is_some() {
            return None;
        }
        let Some(handle) = &self.handle else {
            return Some((frames.len(), None));
        };
        let handle = handle.lock().unwrap_or_else(|p| p.into_inner());
        Some(inject_with(frames.len(), |done| {
            switchyard_switch::sys::send_gathered_with(&*handle, &frames[done..], 0)
        }))
    }

    fn forget_port(&self, port: PortId) {
        // The guest behind that port is gone: its bindings must not answer
        // for a newcomer who takes its address.
        if let Some(nat) = &self.nat {
            nat.lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove_port(port.0);
        }
    }
}

/// Injects `frames` on the handle's packet socket, as many per call as the
/// kernel takes: `pcap_inject` on Linux is a plain `send(2)` on this
/// socket, so `sendmmsg` there is the same injection, one call per batch.
fn inject(handle: &impl std::os::fd::AsRawFd, frames: &[&[u8]]) -> (usize, Option<SendError>) {
    inject_with(frames.len(), |done| {
        switchyard_switch::sys::send_frames(handle, &frames[done..], 0)
    })
}

/// Sends `count` frames with `send` (given how many went so far; it says
/// how many more went), as libpcap would: blocking while the NIC's queue
/// is full (a vhost-user guest's TX queue stays locked meanwhile; its
/// frontend's messages wait that long).
fn inject_with(
    count: usize,
    mut send: impl FnMut(usize) -> std::io::Result<usize>,
) -> (usize, Option<SendError>) {
    let mut done = 0;
    while done < count {
        match send(done) {
            Ok(0) => return (done, Some(SendError::Full)),
            Ok(n) => done += n,
            // As through libpcap: a downed NIC is `Down`, anything else
            // is counted and the next frame tried.
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                return (done, Some(SendError::Down))
            }
            Err(e) => return (done, Some(SendError::Other(e))),
        }
    }
    (done, None)
}
