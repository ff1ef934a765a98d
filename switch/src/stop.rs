//! Stopping a configured port and everything it spawned (the clients of a
//! control socket, the connections of a stream listener), for reload and
//! `switchyard ctl port del`.

use crate::port::Port;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    notify: Notify,
    ports: Mutex<Vec<Weak<Port>>>,
}

/// A stop switch shared by a port's tasks. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<Inner>);

impl Stop {
    /// A switch that has not been thrown.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Stops: wakes every waiter and closes every adopted port, whose owners
    /// then tear them down as if their peers had gone.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
        let ports: Vec<Weak<Port>> = std::mem::take(&mut *self.lock());
        for p in ports.iter().filter_map(Weak::upgrade) {
            p.close();
        }
    }

    /// True once [`Stop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }

    /// Resolves when [`Stop::stop`] is called.
    pub async fn stopped(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Ties `port` to this switch: stopping closes it.
    pub fn adopt(&self, port: &Arc<Port>) {
        let mut ports = self.lock();
        ports.retain(|w| w.strong_count() > 0);
        ports.push(Arc::downgrade(port));
        drop(ports);
        if self.is_stopped() {
            port.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Port>>> {
        self.0.ports.lock().unwrap_or_else(|p| p.into_inner())
    }
}
