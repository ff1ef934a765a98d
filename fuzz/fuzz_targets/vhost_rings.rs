//! The vhost-user port's ring parsing: a fake guest whose memory (rings,
//! descriptors, buffers, accepted features) is the input, its TX queue
//! drained into a switch and its RX queue offered a plain frame and a TCP
//! super-frame (`switchyard_bridge::vhost_user::fuzzing` has the layout).
//! Seeds: well-formed rings with one chain each way, merged buffers,
//! and a chain that loops.
//!
//! Checks, besides "never panics" and "never hangs" (a chain that loops,
//! a jumping avail index):
//! - no more used entries than the guest made chains available, per queue;
//! - no more frames forwarded than TX chains returned, none longer than
//!   the largest super-frame;
//! - at most the two frames offered go into the RX queue.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_bridge::vhost_user::fuzzing::{run, MAX_FORWARDED};

fuzz_target!(|data: &[u8]| {
    let out = run(data);
    // An avail index more than the queue's 16 entries ahead is refused
    // whole; otherwise each used entry answers one available chain.
    for (avail, used) in [(out.tx_avail, out.tx_used), (out.rx_avail, out.rx_used)] {
        let most = if avail > 16 { 0 } else { avail };
        assert!(used <= most, "{out:?}");
    }
    assert!(out.forwarded.len() <= usize::from(out.tx_used), "{out:?}");
    assert!(out.forwarded.iter().all(|(_, len)| *len <= MAX_FORWARDED));
    assert!(out.rx_sent <= 2);
});
