//! What every port offers the switch: an id, a name, counters, and a
//! non-blocking, thread-safe send.

use crate::counters::{DropReason, PortCounters};
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

pub use switchyard_engine::PortId;

/// Why a non-blocking send did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The destination queue is full (EAGAIN): drop this frame, keep the port.
    #[error("destination queue is full")]
    Full,
    /// The peer is gone (ECONNREFUSED, ENOTCONN, ENOENT, EPIPE, a removed
    /// device): the port should be removed.
    #[error("peer is gone: {0}")]
    Gone(io::Error),
    /// The destination's link is down (a tap not yet `ip link set up`):
    /// drop and count, keep the port.
    #[error("link is down")]
    Down,
    /// Any other failure: drop and count.
    #[error("send failed: {0}")]
    Other(io::Error),
    /// The transport refused this frame by policy (e.g. an uplink's MAC-NAT
    /// cannot translate it): drop and count under this reason, keep the
    /// port. The transport keeps its own finer counters.
    #[error("refused: {}", .0.as_str())]
    Refused(DropReason),
}

impl SendError {
    /// Sorts an OS error from a send into the three outcomes.
    pub fn from_io(e: io::Error) -> SendError {
        if e.kind() == io::ErrorKind::WouldBlock {
            return SendError::Full;
        }
        match e.raw_os_error() {
            Some(libc::ENOBUFS) => SendError::Full,
            // A tap answers EIO while its interface is down.
            Some(libc::EIO | libc::ENETDOWN) => SendError::Down,
            Some(
                libc::ECONNREFUSED
                | libc::ENOTCONN
                | libc::ENOENT
                | libc::EPIPE
                | libc::ECONNRESET
                | libc::EBADFD
                | libc::ENODEV
                | libc::ENXIO,
            ) => SendError::Gone(e),
            _ => SendError::Other(e),
        }
    }
}

/// The drop reason a send failure counts as.
fn err_reason(err: &SendError) -> DropReason {
    match err {
        SendError::Full => DropReason::EgressFull,
        SendError::Down => DropReason::EgressDown,
        SendError::Gone(_) => DropReason::EgressGone,
        SendError::Other(_) => DropReason::EgressError,
        SendError::Refused(r) => *r,
    }
}

/// The transport half of a port: frames out, never blocking.
///
/// Every method is told which port the frames came in on (`ingress`):
/// a transport that rewrites frames per source (the MAC-NAT uplink) needs
/// it, the others ignore it.
pub trait Transmit: Send + Sync {
    /// Sends plain frames in order without blocking; returns how many went
    /// before the first failure, and that failure. Transports without a
    /// batched system call implement it with [`transmit_each`].
    fn transmit(&self, ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>);

    /// Sends one offloaded frame (a TSO/GSO super-frame or a frame with a
    /// partial checksum, described by `hdr`) whole, without blocking.
    /// `None`: this transport cannot take offloaded frames, and the port
    /// segments them in software for it (the default).
    fn transmit_offloaded(
        &self,
        ingress: PortId,
        hdr: &crate::gso::VnetHdr,
        frame: &[u8],
    ) -> Option<Result<(), SendError>> {
        let _ = (ingress, hdr, frame);
        None
    }

    /// Sends plain frames in two parts (see [`crate::gather`]) without
    /// blocking and without joining them first: the head, then each
    /// foreign piece, copied once into the peer (an iovec per piece for a
    /// socket). Answers as [`Transmit::transmit`] does. `None`: this
    /// transport takes frames only whole, and the port joins them for it
    /// (the default).
    fn transmit_gathered(
        &self,
        ingress: PortId,
        frames: &[crate::gather::Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        let _ = (ingress, frames);
        None
    }

    /// [`Transmit::transmit_offloaded`] for a frame in two parts. `None`
    /// (the default): this transport does not take it whole, and the port
    /// cuts it in software, each segment in two parts. A transport that
    /// takes offloaded frames whole implements this too: the port does not
    /// join a frame to offer it to `transmit_offloaded`.
    fn transmit_offloaded_gathered(
        &self,
        ingress: PortId,
        hdr: &crate::gso::VnetHdr,
        frame: &crate::gather::Gathered<'_>,
    ) -> Option<Result<(), SendError>> {
        let _ = (ingress, hdr, frame);
        None
    }

    /// A descriptor that polls writable once a full peer can take frames
    /// again. Transports that have one get unicast frames held for them
    /// (their sender paused) instead of dropped; see [`crate::hold`].
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    /// Another port left the switch: forget whatever this transport keeps
    /// about it (the MAC-NAT uplink's address bindings). The default keeps
    /// nothing.
    fn forget_port(&self, port: PortId) {
        let _ = port;
    }
}

/// [`Transmit::transmit`] (or [`Transmit::transmit_gathered`]) for a
/// transport that sends one frame per call: `send` each frame in order
/// until one fails.
pub fn transmit_each<F: Copy>(
    frames: &[F],
    mut send: impl FnMut(F) -> Result<(), SendError>,
) -> (usize, Option<SendError>) {
    for (i, f) in frames.iter().enumerate() {
        if let Err(e) = send(*f) {
            return (i, Some(e));
        }
    }
    (frames.len(), None)
}

/// A port as the switch sees it.
pub struct Port {
    id: PortId,
    name: String,
    kind: &'static str,
    peer: String,
    counters: PortCounters,
    capturing: AtomicBool,
    capture: arc_swap::ArcSwapOption<crate::capture::CaptureSink>,
    log_limits: [LogLimiter; DropReason::ALL.len()],
    closing: AtomicBool,
    close_notify: Notify,
    /// VLAN membership, set by the switch; empty while VLAN-transparent.
    vlans: arc_swap::ArcSwapOption<crate::vlan::PortVlans>,
    /// Switch time (ms) before which frames for this peer are dropped, not
    /// held: it kept a sender waiting too long (see [`crate::hold`]).
    hold_again_at: AtomicU64,
    /// Stall warnings have their own allowance: frequent egress_full drops
    /// must not hide them.
    stall_log: LogLimiter,
    /// The process on the other end, once known (unix ports learn it from
    /// the handshake's credentials): who may capture or remove the port
    /// without being an admin.
    client: std::sync::OnceLock<crate::ports::attachment::Client>,
    tx: Box<dyn Transmit>,
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("peer", &self.peer)
            .finish()
    }
}

impl Port {
    /// A port named `name` of type `kind` (e.g. "unix", "tap"), whose peer
    /// is described by `peer`, sending through `tx`.
    pub fn new(
        id: PortId,
        name: impl Into<String>,
        kind: &'static str,
        peer: impl Into<String>,
        tx: Box<dyn Transmit>,
    ) -> Port {
        Port {
            id,
            name: name.into(),
            kind,
            peer: peer.into(),
            counters: PortCounters::default(),
            capturing: AtomicBool::new(false),
            capture: arc_swap::ArcSwapOption::empty(),
            log_limits: Default::default(),
            closing: AtomicBool::new(false),
            close_notify: Notify::new(),
            vlans: arc_swap::ArcSwapOption::empty(),
            hold_again_at: AtomicU64::new(0),
            stall_log: LogLimiter::default(),
            client: std::sync::OnceLock::new(),
            tx,
        }
    }

    /// The process on the other end, if the transport knows it.
    pub fn client(&self) -> Option<crate::ports::attachment::Client> {
        self.client.get().copied()
    }

    /// Records the process on the other end; the first record stays.
    pub(crate) fn set_client(&self, client: crate::ports::attachment::Client) {
        let _ = self.client.set(client);
    }

    /// The port's id.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// The port's name, unique within the switch.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The transport type.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Who is on the other end, in words.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The port's counters.
    pub fn counters(&self) -> &PortCounters {
        &self.counters
    }

    /// The port's VLAN membership; `None` while the switch is
    /// VLAN-transparent.
    pub fn vlans(&self) -> Option<std::sync::Arc<crate::vlan::PortVlans>> {
        self.vlans.load_full()
    }

    /// Sets the VLAN membership (the switch does this as rules change).
    pub fn set_vlans(&self, vlans: Option<crate::vlan::PortVlans>) {
        self.vlans.store(vlans.map(std::sync::Arc::new));
    }

    /// How a frame of `vid` leaves this port; `None` when it must not.
    #[inline]
    pub(crate) fn egress(&self, vid: u16) -> Option<crate::vlan::Egress> {
        self.vlans.load().as_ref().and_then(|v| v.egress(vid))
    }

    /// Counts one failed send (closing the port when its peer is gone) and
    /// says whether the frames queued behind it would fail the same way.
    pub(crate) fn count_failure(&self, err: SendError, now: Duration) -> bool {
        let reason = err_reason(&err);
        match err {
            SendError::Gone(e) => {
                self.close();
                self.drop_frame(reason, now, Some(&e));
                true
            }
            SendError::Other(e) => {
                self.drop_frame(reason, now, Some(&e));
                false
            }
            SendError::Refused(_) => {
                self.drop_frame(reason, now, None);
                false
            }
            SendError::Full | SendError::Down => {
                self.drop_frame(reason, now, None);
                true
            }
        }
    }

    /// Counts (and, while captured, copies) a frame from the peer.
    #[inline]
    pub fn note_received(&self, frame: &[u8]) {
        self.counters.received(frame.len());
        if self.capturing.load(Ordering::Relaxed) {
            self.copy_to_capture(frame);
        }
    }

    #[inline]
    pub(crate) fn note_sent(&self, frame: &[u8]) {
        self.counters.sent(frame.len());
        if self.capturing.load(Ordering::Relaxed) {
            self.copy_to_capture(frame);
        }
    }

    /// [`Port::note_received`] for a frame in two parts.
    #[inline]
    pub fn note_received_gathered(&self, frame: &crate::gather::Gathered<'_>) {
        self.counters.received(frame.len());
        if self.capturing.load(Ordering::Relaxed) {
            self.copy_gathered_to_capture(frame);
        }
    }

    #[inline]
    pub(crate) fn note_sent_gathered(&self, frame: &crate::gather::Gathered<'_>) {
        self.counters.sent(frame.len());
        if self.capturing.load(Ordering::Relaxed) {
            self.copy_gathered_to_capture(frame);
        }
    }

    #[cold]
    fn copy_gathered_to_capture(&self, frame: &crate::gather::Gathered<'_>) {
        crate::gather::with_joined(std::slice::from_ref(frame), |joined| {
            for f in joined {
                self.copy_to_capture(f);
            }
        });
    }

    #[cold]
    fn copy_to_capture(&self, frame: &[u8]) {
        if let Some(sink) = self.capture.load().as_ref() {
            if sink.is_closed() {
                self.stop_capture();
            } else {
                sink.offer(frame);
            }
        }
    }

    /// Copies every frame in and out to `sink` until [`Port::stop_capture`]
    /// or the sink's reader goes away; replaces an earlier capture.
    pub fn start_capture(&self, sink: std::sync::Arc<crate::capture::CaptureSink>) {
        self.capture.store(Some(sink));
        self.capturing.store(true, Ordering::Relaxed);
    }

    /// Ends a capture.
    pub fn stop_capture(&self) {
        self.capturing.store(false, Ordering::Relaxed);
        self.capture.store(None);
    }

    /// Sends `frames` in order until the peer's queue is full; returns how
    /// many are done. Those are counted (sent, or dropped for a failure
    /// other than a full queue: a peer gone or down takes none of the
    /// rest); `frames[done..]` are untouched and uncounted.
    pub(crate) fn send_until_full(
        &self,
        ingress: PortId,
        frames: &[&[u8]],
        now: Duration,
    ) -> usize {
        let transmit = |f: &[&[u8]]| Some(self.tx.transmit(ingress, f));
        self.send_until_full_with(frames, transmit, |f| self.note_sent(f), now)
            .unwrap_or(0)
    }

    /// [`Port::send_until_full`] for frames of any kind, sent by
    /// `transmit` and counted by `note`; `None` when the transport takes
    /// no frames of this kind (nothing was sent).
    pub(crate) fn send_until_full_with<F: Copy>(
        &self,
        frames: &[F],
        mut transmit: impl FnMut(&[F]) -> Option<(usize, Option<SendError>)>,
        note: impl Fn(F),
        now: Duration,
    ) -> Option<usize> {
        let mut done = 0;
        while done < frames.len() {
            let (sent, err) = match transmit(&frames[done..]) {
                Some(r) => r,
                None if done == 0 => return None,
                None => break,
            };
            let sent = sent.min(frames.len() - done);
            for f in &frames[done..done + sent] {
                note(*f);
            }
            done += sent;
            let Some(err) = err else { break };
            if matches!(err, SendError::Full) {
                return Some(done);
            }
            let reason_for_rest = err_reason(&err);
            let rest_too = self.count_failure(err, now);
            // The failure was the frame at `done`; a transport that says
            // it sent them all and failed too is held to its count.
            done = (done + 1).min(frames.len());
            if rest_too {
                for _ in &frames[done..] {
                    self.drop_frame(reason_for_rest, now, None);
                }
                return Some(frames.len());
            }
        }
        Some(done)
    }

    /// The transport, for the egress path (offloaded sends, capabilities).
    pub(crate) fn tx(&self) -> &dyn Transmit {
        &*self.tx
    }

    /// Switch time (ms) before which frames this peer refuses are dropped
    /// rather than held (see [`crate::hold`]).
    pub(crate) fn hold_again_at(&self) -> u64 {
        self.hold_again_at.load(Ordering::Relaxed)
    }

    /// Sets [`Port::hold_again_at`]; says whether a stall warning may be
    /// logged now (and how many were suppressed since the last).
    pub(crate) fn set_hold_again_at(&self, ms: u64, now: Duration) -> Option<u64> {
        self.hold_again_at.store(ms, Ordering::Relaxed);
        self.stall_log.allow(now, LOG_INTERVAL)
    }

    /// Counts a dropped frame and logs it at most once a minute per reason.
    pub fn drop_frame(&self, reason: DropReason, now: Duration, err: Option<&io::Error>) {
        self.counters.dropped(reason);
        if let Some(suppressed) = self.log_limits[reason.index()].allow(now, LOG_INTERVAL) {
            self.log_drop(reason, suppressed, err);
        }
    }

    /// [`Port::drop_frame`] with an explanation built only when it is
    /// logged (at most once a minute), not for every frame dropped.
    pub fn drop_frame_because(
        &self,
        reason: DropReason,
        now: Duration,
        why: impl FnOnce() -> io::Error,
    ) {
        self.counters.dropped(reason);
        if let Some(suppressed) = self.log_limits[reason.index()].allow(now, LOG_INTERVAL) {
            self.log_drop(reason, suppressed, Some(&why()));
        }
    }

    #[cold]
    fn log_drop(&self, reason: DropReason, suppressed: u64, err: Option<&io::Error>) {
        match err {
            // A peer that went away is normal life: its owner logs the
            // detach.
            Some(e) if reason == DropReason::EgressGone => tracing::debug!(
                port = %self.name, reason = reason.as_str(), suppressed,
                "dropping frames: {e}"
            ),
            Some(e) => tracing::warn!(
                port = %self.name, reason = reason.as_str(), suppressed,
                "dropping frames: {e}"
            ),
            None if reason.is_bad_input() => tracing::warn!(
                port = %self.name, reason = reason.as_str(), suppressed,
                "dropping bad frames from this port's peer"
            ),
            None => tracing::debug!(
                port = %self.name, reason = reason.as_str(), suppressed,
                "dropping frames"
            ),
        }
    }

    /// Asks the port's owner to tear it down (idempotent).
    pub fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.close_notify.notify_waiters();
            self.close_notify.notify_one();
        }
    }

    /// True once [`Port::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves when [`Port::close`] is called.
    pub async fn closed(&self) {
        loop {
            let notified = self.close_notify.notified();
            if self.is_closing() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(errno: i32) -> &'static str {
        match SendError::from_io(io::Error::from_raw_os_error(errno)) {
            SendError::Full => "full",
            SendError::Down => "down",
            SendError::Gone(_) => "gone",
            SendError::Other(_) => "other",
            SendError::Refused(_) => "refused",
        }
    }

    #[test]
    fn send_errors_are_sorted_by_what_they_mean() {
        assert_eq!(classify(libc::EAGAIN), "full");
        assert_eq!(classify(libc::ENOBUFS), "full");
        assert_eq!(
            classify(libc::EIO),
            "down",
            "a tap that is down is not gone"
        );
        assert_eq!(classify(libc::ECONNREFUSED), "gone");
        assert_eq!(classify(libc::ENOENT), "gone");
        assert_eq!(classify(libc::EBADFD), "gone");
        assert_eq!(classify(libc::EMSGSIZE), "other");
    }

    /// A transport that claims more than it was given, and a failure
    /// besides.
    struct Overclaims;

    impl Transmit for Overclaims {
        fn transmit(&self, _: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
            let gone = io::Error::new(io::ErrorKind::BrokenPipe, "gone");
            (frames.len() + 3, Some(SendError::Gone(gone)))
        }
    }

    #[test]
    fn a_transport_that_miscounts_cannot_make_the_port_panic() {
        let port = Port::new(PortId(1), "p", "test", "test", Box::new(Overclaims));
        let frame = [0u8; 60];
        let frames: [&[u8]; 4] = [&frame; 4];
        assert_eq!(port.send_until_full(PortId(2), &frames, Duration::ZERO), 4);
    }
}
