//! Captured frames on their way into the switch: checksum completion,
//! MAC-NAT, and a batch. The frames one drain of the capture yields go to
//! the switch together, so a guest gets them with one `sendmmsg` instead
//! of a `send` each (the same batching the socket ports get from
//! `recvmmsg`).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_mac_nat::{Inbound, MacNat};
use switchyard_switch::port::Port;
use switchyard_switch::{DropReason, Frames, Overflow, Switch};

/// Frames forwarded together at most. A drain of the capture reads up to
/// 256 frames; 32 keep the batch's buffers in cache and still make the
/// per-call cost of a send small next to its frames.
pub(super) const BATCH: usize = 32;

/// `BATCH` reusable frame buffers (a captured or rewritten frame is
/// copied into one, not allocated).
pub(super) fn buffers() -> Vec<Vec<u8>> {
    (0..BATCH).map(|_| Vec::with_capacity(2048)).collect()
}

/// The first frames of `slots` as the slice of frames the switch and
/// `sendmmsg` take, in `out` (no allocation).
pub(super) fn refs<'a>(slots: &'a [Vec<u8>], out: &'a mut [&'a [u8]; BATCH]) -> &'a [&'a [u8]] {
    let n = slots.len().min(BATCH);
    for (r, s) in out.iter_mut().zip(&slots[..n]) {
        *r = s;
    }
    &out[..n]
}

/// Captured frames that passed MAC-NAT, waiting to be forwarded together.
/// Its buffers are reused: the capture copies a frame straight into the
/// next free one.
pub(super) struct Batch {
    slots: Vec<Vec<u8>>,
    len: usize,
}

impl Batch {
    pub(super) fn new() -> Batch {
        Batch {
            slots: buffers(),
            len: 0,
        }
    }

    /// The next free buffer, emptied.
    pub(super) fn slot(&mut self) -> &mut Vec<u8> {
        let s = &mut self.slots[self.len];
        s.clear();
        s
    }

    /// Keeps what [`Batch::slot`] holds for the next flush; true when the
    /// batch is full and must be flushed before the next slot.
    pub(super) fn commit(&mut self) -> bool {
        self.len += 1;
        self.len == BATCH
    }

    /// Copies `frame` into the batch; true when the batch is now full.
    pub(super) fn push(&mut self, frame: &[u8]) -> bool {
        self.slot().extend_from_slice(frame);
        self.commit()
    }

    /// Forwards the frames held, in capture order, and empties the batch.
    pub(super) fn flush(&mut self, port: &Port, switch: &Switch, now: Duration) {
        if self.len == 0 {
            return;
        }
        let mut out: [&[u8]; BATCH] = [&[]; BATCH];
        let frames = refs(&self.slots[..self.len], &mut out);
        switch.forward(port, Frames::Plain(frames), Overflow::Drop, now);
        self.len = 0;
    }
}

/// What a captured frame passes before the switch: MAC-NAT, when on.
pub(super) struct Ingress<'a> {
    pub(super) nat: Option<&'a Mutex<MacNat>>,
    pub(super) port: &'a Arc<Port>,
    pub(super) now: Duration,
}

impl Ingress<'_> {
    /// Completes the L4 checksum (locally offloaded checksums arrive
    /// unfinished) and applies MAC-NAT; true when the frame goes on to the
    /// switch.
    pub(super) fn admit(&self, frame: &mut [u8]) -> bool {
        crate::checksum::complete_l4_checksum(frame);
        self.admit_complete(frame)
    }

    /// [`Ingress::admit`] for a frame whose checksums are already right.
    pub(super) fn admit_complete(&self, frame: &mut [u8]) -> bool {
        let Some(nat) = self.nat else {
            return true;
        };
        let verdict = nat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .inbound(frame, self.now);
        match verdict {
            Inbound::ToGuest(_) | Inbound::Flood => true,
            Inbound::HostOnly => false,
            Inbound::Drop(_) => {
                self.port.drop_frame(DropReason::MacNat, self.now, None);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_switch::port::{PortId, SendError, Transmit};

    /// Records every batch the port is sent.
    struct Record(Arc<Mutex<Vec<Vec<Vec<u8>>>>>);

    impl Transmit for Record {
        fn transmit(&self, _: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
            let mut got = self.0.lock().unwrap_or_else(|p| p.into_inner());
            got.push(frames.iter().map(|f| f.to_vec()).collect());
            (frames.len(), None)
        }
    }

    fn frame(dst: u8, src: u8, n: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f[14] = n;
        f
    }

    #[test]
    fn a_batch_reaches_the_guest_whole_and_in_order_and_a_full_one_says_so() {
        let switch = Switch::new(switchyard_switch::EngineConfig::default());
        let got = Arc::new(Mutex::new(Vec::new()));
        let nic = Arc::new(Port::new(
            switch.allocate_id(),
            "nic",
            "pcap",
            "test",
            Box::new(Record(Arc::new(Mutex::new(Vec::new())))),
        ));
        let guest = Arc::new(Port::new(
            switch.allocate_id(),
            "guest",
            "test",
            "test",
            Box::new(Record(got.clone())),
        ));
        switch.add_port(nic.clone());
        switch.add_port(guest.clone());
        let now = switch.now();
        // The guest's MAC is learned on its port, so the NIC's frames to it
        // are unicast.
        switch.forward(
            &guest,
            Frames::Plain(&[&frame(9, 7, 0)]),
            Overflow::Drop,
            now,
        );
        let mut batch = Batch::new();
        for n in 0..BATCH as u8 - 1 {
            assert!(!batch.push(&frame(7, 9, n)));
        }
        assert!(
            batch.push(&frame(7, 9, BATCH as u8 - 1)),
            "the 32nd frame fills it"
        );
        assert!(
            got.lock().unwrap().is_empty(),
            "nothing goes before the flush"
        );
        batch.flush(&nic, &switch, now);
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "one batch, one send: {got:?}");
        let order: Vec<u8> = got[0].iter().map(|f| f[14]).collect();
        assert_eq!(order, (0..BATCH as u8).collect::<Vec<_>>());
        batch.flush(&nic, &switch, now);
        assert_eq!(got.len(), 1, "an empty batch sends nothing");
    }
}
