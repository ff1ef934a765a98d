//! The guest's memory mappings under the SIGBUS guard (`crate::sys`): a
//! frontend whose memory file cannot be sealed against shrinking (tmpfs
//! or hugetlbfs files, as UML and QEMU's `memory-backend-file` use) may
//! cut it short under the switch's mapping. The guard turns the pages past
//! the new end into private zero pages instead of letting the daemon die,
//! and the port notices and hangs up on that frontend.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

/// One memory table's mappings and the guard slots watching them; the
/// slots are given back when it goes.
struct Watched {
    mem: Arc<GuestMemoryMmap>,
    slots: Vec<usize>,
}

impl Watched {
    fn mask(&self) -> u64 {
        self.slots.iter().fold(0, |m, s| m | 1 << s)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        for slot in self.slots.drain(..) {
            crate::sys::unwatch_guest_memory(slot);
        }
    }
}

/// One connection's watched mappings.
#[derive(Default)]
pub(super) struct MemoryGuard {
    /// The frontend's table as of now.
    current: Mutex<Option<Watched>>,
    /// Tables a newer one replaced, still watched while a batch in flight
    /// reads them (frames forwarded from where the guest wrote them);
    /// unwatched once the guard holds the last reference.
    retired: Mutex<Vec<Watched>>,
    has_retired: AtomicBool,
    /// A retired table faulted before it was unwatched: the port still
    /// hangs up.
    retired_faulted: AtomicBool,
    /// Every watched slot, one bit each, for the data path to test.
    mask: AtomicU64,
}

impl MemoryGuard {
    /// Watches the regions of `mem` (the frontend's new table); what was
    /// watched before stays watched until no one reads it any more.
    pub(super) fn watch(&self, mem: Arc<GuestMemoryMmap>) {
        // The old table retires (and goes, when no batch holds it) before
        // the new one takes slots: a table change needs no room for two
        // unless a batch is in flight.
        let old = match self.current.lock() {
            Ok(mut current) => current.take(),
            Err(_) => return,
        };
        if let Some(old) = old {
            if let Ok(mut retired) = self.retired.lock() {
                retired.push(old);
                self.has_retired.store(true, Ordering::Release);
            }
        }
        self.reap();
        let mut slots = Vec::new();
        for region in mem.iter() {
            let (start, len) = (region.as_ptr() as usize, region.size());
            match crate::sys::watch_guest_memory(start, len) {
                Some(slot) => slots.push(slot),
                None => tracing::warn!(
                    "vhost-user: more than {} guest memory regions mapped at once; this \
                     one is not guarded against its file being cut short",
                    crate::sys::GUEST_SLOTS
                ),
            }
        }
        let new = Watched { mem, slots };
        self.mask.fetch_or(new.mask(), Ordering::AcqRel);
        if let Ok(mut current) = self.current.lock() {
            *current = Some(new);
        }
    }

    /// Unwatches the retired tables only the guard still holds (their
    /// mappings go with them), remembering whether one had faulted.
    fn reap(&self) {
        if !self.has_retired.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut retired) = self.retired.try_lock() else {
            return;
        };
        let mut i = 0;
        while i < retired.len() {
            if Arc::strong_count(&retired[i].mem) == 1 {
                let done = retired.swap_remove(i);
                let mask = done.mask();
                if crate::sys::guest_memory_faulted(mask) != 0 {
                    self.retired_faulted.store(true, Ordering::Release);
                }
                self.mask.fetch_and(!mask, Ordering::AcqRel);
                drop(done);
            } else {
                i += 1;
            }
        }
        self.has_retired
            .store(!retired.is_empty(), Ordering::Release);
    }

    /// Whether the frontend cut a memory file short under the mapping.
    pub(super) fn faulted(&self) -> bool {
        let now = crate::sys::guest_memory_faulted(self.mask.load(Ordering::Acquire)) != 0;
        self.reap();
        now || self.retired_faulted.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn memory() -> Arc<GuestMemoryMmap> {
        Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).expect("mmap"))
    }

    #[test]
    fn a_replaced_table_stays_watched_while_a_batch_reads_it() {
        let guard = MemoryGuard::default();
        let old = memory();
        guard.watch(old.clone());
        let old_mask = guard.mask.load(Ordering::Acquire);
        assert_ne!(old_mask, 0);
        // A batch in flight holds the old table when a new one comes.
        let in_flight = old.clone();
        drop(old);
        guard.watch(memory());
        assert!(!guard.faulted());
        let both = guard.mask.load(Ordering::Acquire);
        assert_eq!(both & old_mask, old_mask, "still watched");
        assert_ne!(both, old_mask, "and the new one too");
        drop(in_flight);
        assert!(!guard.faulted());
        let after = guard.mask.load(Ordering::Acquire);
        assert_eq!(after & old_mask, 0, "unwatched once no one reads it");
        assert_ne!(after, 0);
    }
}
