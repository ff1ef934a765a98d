//! Stream framing: QEMU's `-netdev stream` / `socket` records (a 4-byte
//! big-endian length, then the frame) decoded with
//! `switchyard_switch::ports::stream::prefix` through the same receive
//! buffer discipline as the stream port's `read_frames` (a buffer of
//! `READ_BUFFER` bytes to start with, frames taken from the front, then the
//! port's own `make_room`: the partial record moved to the front, the
//! buffer grown for a long record), with the bytes arriving in reads of
//! varying sizes. Seeds: bytes QEMU wrote.
//!
//! Input: a byte that picks the read sizes (0: as much as fits, else a
//! pseudo-random size from 1 to 2^(1 + b % 17) bytes per read), then the
//! stream.
//!
//! Checks, besides "never panics": a read always has room (a zero-byte
//! read would look like the peer closing); the frames and the verdict
//! (clean end, or a bad length that closes the connection) are the same
//! whatever the read sizes, i.e. the same as decoding the whole stream at
//! once; every frame is 1 to `MAX_FRAME` bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::ops::Range;
use switchyard_switch::ports::stream::{make_room, prefix, Prefix, READ_BUFFER};

/// How a decode ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The input ran out (possibly inside a record).
    Clean,
    /// A bad length prefix: the port closes the connection.
    Bad(usize),
}

/// Decodes the whole stream at once: the reference.
fn whole(stream: &[u8]) -> (Vec<Range<usize>>, End) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        match prefix(&stream[at..]) {
            Prefix::Incomplete => return (frames, End::Clean),
            Prefix::Frame(len) => {
                frames.push(at + 4..at + 4 + len);
                at += 4 + len;
            }
            Prefix::Bad(len) => return (frames, End::Bad(len)),
        }
    }
}

/// A xorshift generator for the read sizes.
struct Sizes(u32, u32);

impl Sizes {
    fn next(&mut self, room: usize) -> usize {
        if self.1 == 0 {
            return room;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        let most = 1usize << (1 + self.1 % 17);
        1 + (self.0 as usize) % most.min(room)
    }
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; READ_BUFFER]);
}

/// Decodes as `read_frames` does, with reads sized by `sizes`; returns
/// each frame's range in the stream.
fn chunked(stream: &[u8], mut sizes: Sizes) -> (Vec<Range<usize>>, End) {
    BUF.with_borrow_mut(|buf| {
        let mut frames = Vec::new();
        let (mut start, mut end) = (0usize, 0usize);
        // Where buf[0] is in the stream, and how much has been read.
        let (mut base, mut read) = (0usize, 0usize);
        while read < stream.len() {
            let room = buf.len() - end;
            assert!(room > 0, "a read with no room: it would look like EOF");
            let n = sizes.next(room).min(stream.len() - read);
            buf[end..end + n].copy_from_slice(&stream[read..read + n]);
            end += n;
            read += n;
            loop {
                match prefix(&buf[start..end]) {
                    Prefix::Incomplete => break,
                    Prefix::Frame(len) => {
                        assert_eq!(
                            &buf[start + 4..start + 4 + len],
                            &stream[base + start + 4..base + start + 4 + len]
                        );
                        frames.push(base + start + 4..base + start + 4 + len);
                        start += 4 + len;
                    }
                    Prefix::Bad(len) => return (frames, End::Bad(len)),
                }
            }
            // The port's own step: move the partial record to the front
            // and/or grow the buffer.
            base += make_room(buf, &mut start, &mut end);
        }
        (frames, End::Clean)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((pick, stream)) = data.split_first() else {
        return;
    };
    let seed = u32::from_le_bytes([*pick, 0x5a, 0xa5, 0x3c]) | 1;
    let (want, want_end) = whole(stream);
    for f in &want {
        assert!((1..=switchyard_switch::MAX_FRAME).contains(&f.len()));
    }
    let (got, got_end) = chunked(stream, Sizes(seed, u32::from(*pick)));
    assert_eq!(got, want, "frames depend on the read sizes");
    assert_eq!(got_end, want_end, "the verdict depends on the read sizes");
});
