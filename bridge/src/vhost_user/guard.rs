//! The guest's memory mappings under the SIGBUS guard (`crate::sys`): a
//! frontend whose memory file cannot be sealed against shrinking (tmpfs
//! or hugetlbfs files, as UML and QEMU's `memory-backend-file` use) may
//! cut it short under the switch's mapping. The guard turns the pages past
//! the new end into private zero pages instead of letting the daemon die,
//! and the port notices and hangs up on that frontend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

/// One connection's watched mappings.
#[derive(Default)]
pub(super) struct MemoryGuard {
    /// Slots of the guard's table this connection holds.
    slots: Mutex<Vec<usize>>,
    /// The same slots, one bit each, for the data path to test.
    mask: AtomicU64,
}

impl MemoryGuard {
    /// Watches the regions of `mem` (the frontend's table as of now) in
    /// place of what was watched before.
    pub(super) fn watch(&self, mem: &GuestMemoryMmap) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        self.mask.store(0, Ordering::Release);
        for slot in slots.drain(..) {
            crate::sys::unwatch_guest_memory(slot);
        }
        let mut mask = 0u64;
        for region in mem.iter() {
            let (start, len) = (region.as_ptr() as usize, region.size());
            match crate::sys::watch_guest_memory(start, len) {
                Some(slot) => {
                    slots.push(slot);
                    mask |= 1 << slot;
                }
                None => tracing::warn!(
                    "vhost-user: more than {} guest memory regions mapped at once; this \
                     one is not guarded against its file being cut short",
                    crate::sys::GUEST_SLOTS
                ),
            }
        }
        self.mask.store(mask, Ordering::Release);
    }

    /// Whether the frontend cut a memory file short under the mapping.
    pub(super) fn faulted(&self) -> bool {
        crate::sys::guest_memory_faulted(self.mask.load(Ordering::Acquire)) != 0
    }
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.slots.lock() {
            for slot in slots.drain(..) {
                crate::sys::unwatch_guest_memory(slot);
            }
        }
    }
}
