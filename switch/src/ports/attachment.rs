//! A port's membership of the switch as a guard: made, it adds the port
//! and logs `port attached`; dropped, it removes the port and logs `port
//! detached` with why and what the port carried. Every transport attaches
//! through it, so the two lines read the same whatever the port type, and
//! a port whose task ends by any path (an error, a cancelled task, a panic
//! unwinding) still leaves the switch.

use crate::port::Port;
use crate::switch::Switch;
use crate::Stop;
use std::borrow::Cow;
use std::sync::Arc;

/// The process on the other end of a port, from the kernel's credentials
/// of its socket (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Its process id.
    pub pid: i32,
    /// Its user id.
    pub uid: u32,
}

/// A port attached to a switch; dropping it detaches the port.
#[must_use = "dropping the attachment detaches the port at once"]
pub struct Attachment {
    switch: Arc<Switch>,
    port: Arc<Port>,
    client: Option<Client>,
    reason: Cow<'static, str>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("port", &self.port.name())
            .field("reason", &self.reason)
            .finish()
    }
}

impl Attachment {
    /// Adds `port` to `switch` (it receives floods from now on), ties it to
    /// `stop` and logs `port attached`, naming `client` when known.
    pub fn new(switch: &Arc<Switch>, stop: &Stop, port: Arc<Port>, client: Option<Client>) -> Self {
        // Before the port is visible: a control request never sees it
        // without its client.
        if let Some(c) = client {
            port.set_client(c);
        }
        switch.add_port(port.clone());
        stop.adopt(&port);
        let (name, kind, peer) = (port.name(), port.kind(), port.peer());
        match client {
            Some(Client { pid, uid }) => {
                tracing::info!(port = %name, kind, %peer, pid, uid, "port attached")
            }
            None => tracing::info!(port = %name, kind, %peer, "port attached"),
        }
        Attachment {
            switch: switch.clone(),
            port,
            client,
            reason: Cow::Borrowed("port task ended"),
        }
    }

    /// The attached port.
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }

    /// Detaches now, logging `reason` as why.
    pub fn detach(mut self, reason: impl Into<Cow<'static, str>>) {
        self.reason = reason.into();
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.switch.remove_port(self.port.id());
        let c = self.port.counters().snapshot();
        let (name, kind, peer) = (self.port.name(), self.port.kind(), self.port.peer());
        let reason = &self.reason;
        let (rx_frames, tx_frames) = (c.rx_frames, c.tx_frames);
        match self.client {
            Some(Client { pid, uid }) => tracing::info!(
                port = %name, kind, %peer, pid, uid, %reason, rx_frames, tx_frames,
                "port detached"
            ),
            None => tracing::info!(
                port = %name, kind, %peer, %reason, rx_frames, tx_frames,
                "port detached"
            ),
        }
    }
}
