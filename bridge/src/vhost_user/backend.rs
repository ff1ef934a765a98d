//! The virtio-net device the guest sees, as rust-vmm's
//! `vhost-user-backend` asks for it: features, config space, and the
//! events of its worker thread.

use super::config::VhostUserConfig;
use super::datapath::{control, FromGuest, Rings};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Backend;
use vhost_user_backend::{VhostUserBackend, VringMutex};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::EventFd;

/// Ring entries a guest may ask for per queue.
const QUEUE_SIZE: usize = 1024;

/// The event the port raises once after connecting, so that the worker
/// thread hands over the rings before the guest's first kick (ids up to
/// the queue count are the library's: this is past the most queues).
pub(super) const HELLO: u16 = 2 * super::MAX_QUEUES + 2;

/// One connection's device: cheap to clone (the library keeps a copy per
/// worker thread).
#[derive(Clone)]
pub(super) struct NetBackend {
    config: Arc<VhostUserConfig>,
    rings: Arc<Rings>,
    from_guest: Arc<FromGuest>,
    pub(super) hello: Arc<EventFd>,
    /// Exit events handed to the library, closed by [`ExitEvents`].
    exit_events: ExitEvents,
    /// The frontend's request channel (BACKEND_REQ): unused, but held open,
    /// since UML's virtio_uml takes its closing for a broken device.
    backend_req: Arc<Mutex<Option<Backend>>>,
}

/// The read sides of the exit events the library was given: it keeps them
/// only as raw numbers and never closes them (vhost-user-backend 0.24.0).
#[derive(Clone, Default)]
struct ExitEvents(Arc<Mutex<Vec<RawFd>>>);

/// Closes a connection's leaked exit events when dropped. Hold it longer
/// than the connection's `VhostUserDaemon`, whose drop joins the threads
/// that watch them.
pub(super) struct CloseExitEvents(ExitEvents);

impl Drop for CloseExitEvents {
    fn drop(&mut self) {
        if let Ok(mut fds) = self.0 .0.lock() {
            for fd in fds.drain(..) {
                crate::sys::close_leaked_eventfd(fd);
            }
        }
    }
}

impl NetBackend {
    /// What closes this connection's leaked exit events.
    pub(super) fn exit_events(&self) -> CloseExitEvents {
        CloseExitEvents(self.exit_events.clone())
    }

    /// A device for `config` over `rings`, feeding the switch through
    /// `from_guest`.
    pub(super) fn new(
        config: Arc<VhostUserConfig>,
        rings: Arc<Rings>,
        from_guest: Arc<FromGuest>,
    ) -> io::Result<NetBackend> {
        Ok(NetBackend {
            config,
            rings,
            from_guest,
            hello: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?),
            exit_events: ExitEvents::default(),
            backend_req: Arc::new(Mutex::new(None)),
        })
    }

    /// The virtio features offered: checksum offload and TCP
    /// segmentation both ways (frames pass whole between guests and to
    /// taps, and are cut by the switch for the other ports), merged
    /// receive buffers, indirect descriptors (a super-frame's many pieces
    /// take one ring slot), EVENT_IDX; with more than one queue pair MQ
    /// and the control queue the guest picks its pairs on (answered in
    /// `datapath::control`). No ECN variants of TSO (the guest then cuts
    /// the rare CWR super-frame itself).
    pub(super) fn offered(config: &VhostUserConfig) -> u64 {
        let bits = [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_RING_F_INDIRECT_DESC,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_MRG_RXBUF,
        ];
        let mut f = bits.iter().fold(0u64, |f, b| f | 1 << b)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if config.mac.is_some() {
            f |= 1 << VIRTIO_NET_F_MAC;
        }
        if config.mtu.is_some() {
            f |= 1 << VIRTIO_NET_F_MTU;
        }
        if config.queues > 1 {
            f |= 1 << VIRTIO_NET_F_MQ | 1 << VIRTIO_NET_F_CTRL_VQ;
        }
        f
    }

    /// The control queue's index, when there is one.
    fn control_queue(&self) -> Option<usize> {
        let pairs = usize::from(self.config.queues);
        (pairs > 1).then_some(2 * pairs)
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = VringMutex;

    fn num_queues(&self) -> usize {
        2 * usize::from(self.config.queues.max(1)) + usize::from(self.control_queue().is_some())
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        NetBackend::offered(&self.config)
    }

    /// CONFIG for the MAC and MTU; BACKEND_REQ because UML's virtio_uml
    /// attaches only to a backend that offers it; MQ so that a frontend
    /// may ask how many queues there are.
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::BACKEND_REQ
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn acked_features(&self, features: u64) {
        self.rings.accept(features);
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The library switches the rings themselves; the data path asks
        // the rings whether to notify.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space = self.config.config_space();
        let mut out = vec![0u8; size as usize];
        for (i, b) in out.iter_mut().enumerate() {
            if let Some(v) = space.get(offset as usize + i) {
                *b = *v;
            }
        }
        out
    }

    fn set_backend_req_fd(&self, backend: Backend) {
        if let Ok(mut b) = self.backend_req.lock() {
            *b = Some(backend);
        }
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        // The rings share the library's GuestMemoryAtomic, updated in
        // place; the new regions go under the SIGBUS guard.
        self.rings.guard.watch(mem.memory().into_inner());
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // The worker thread ends when the connection's handler goes.
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        if let Ok(mut fds) = self.exit_events.0.lock() {
            fds.push(consumer.as_raw_fd());
        }
        Some((consumer, notifier))
    }

    /// Never fails for what the guest did: an error here would end the
    /// worker thread.
    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringMutex],
        _thread_id: usize,
    ) -> io::Result<()> {
        self.rings.adopt(vrings);
        let index = usize::from(device_event);
        match self.control_queue() {
            _ if device_event == HELLO => {
                let _ = self.hello.read();
            }
            Some(c) if index == c => {
                if let Some(vring) = vrings.get(c) {
                    for _ in 0..control::answer(&self.rings, vring, self.config.queues) {
                        self.from_guest
                            .bad("a control queue chain with no room for the answer");
                    }
                }
            }
            // Odd queues are the guest's transmit queues. On an even one
            // the guest posted receive buffers: frames are copied in as the
            // switch sends them, nothing waits here.
            _ if index % 2 == 1 && index < 2 * usize::from(self.config.queues) => {
                self.from_guest.drain(index)
            }
            _ => {}
        }
        Ok(())
    }
}
