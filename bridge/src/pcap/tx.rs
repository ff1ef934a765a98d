//! Frames to the NIC: through MAC-NAT when it is on, injected with the
//! second libpcap handle.

use super::*;

pub(super) struct PcapTx {
    pub(super) handle: Option<Mutex<pcap::Capture<pcap::Active>>>,
    pub(super) nat: Option<Arc<Mutex<MacNat>>>,
    /// Reused for MAC-NAT's in-place edits (it may grow a frame).
    pub(super) scratch: Mutex<Vec<u8>>,
    pub(super) epoch: std::time::Instant,
}

impl Transmit for PcapTx {
    fn transmit(&self, ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        let Some(handle) = &self.handle else {
            // Monitor only: frames to the NIC go nowhere, by request.
            return (frames.len(), None);
        };
        // Once per batch; the MAC-NAT table is taken per frame, since the
        // capture side needs it between this batch's injections.
        let mut handle = handle.lock().unwrap_or_else(|p| p.into_inner());
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.epoch.elapsed();
        transmit_each(frames, |frame| {
            let out: &[u8] = match &self.nat {
                Some(nat) => {
                    scratch.clear();
                    scratch.extend_from_slice(frame);
                    let verdict = nat.lock().unwrap_or_else(|p| p.into_inner()).outbound(
                        &mut scratch,
                        ingress.0,
                        now,
                    );
                    match verdict {
                        Outbound::Send => &scratch,
                        // The table counts why (`ctl macnat`); the port counts it
                        // as `mac_nat`.
                        Outbound::Drop(_) => return Err(SendError::Refused(DropReason::MacNat)),
                    }
                }
                None => frame,
            };
            handle.sendpacket(out).map_err(|e| match e {
                pcap::Error::IoError(k) => SendError::from_io(io::Error::from(k)),
                // libpcap reports a downed NIC only as text ("send: Network
                // is down").
                other if other.to_string().contains("Network is down") => SendError::Down,
                other => SendError::Other(io::Error::other(other.to_string())),
            })
        })
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
