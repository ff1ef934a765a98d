//! Copying the daemon's pcap stream to a file or stdout in whole records:
//! however the copy stops (Ctrl-C, SIGTERM, the daemon or the port going
//! away), the output ends at a record boundary, so tcpdump never reports a
//! truncated dump file.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io::{Read, Write};
use std::time::Duration;

/// The pcap file header's length.
const FILE_HEADER: usize = 24;
/// A record header's length.
const RECORD_HEADER: usize = 16;
/// The largest record body accepted: the header's snap length; a longer
/// one means the stream is not what the daemon writes.
const MAX_RECORD: usize = switchyard_switch::capture::SNAPLEN as usize;
/// How often a copy waiting for frames looks for a stop signal.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// How long the whole units (the file header, then records) at the start
/// of `buf` are; what follows is an incomplete record. `header_done`: the
/// file header was taken already. Err: a record longer than any frame.
pub(super) fn whole_prefix(buf: &[u8], mut header_done: bool) -> Result<usize, String> {
    let mut at = 0;
    if !header_done {
        if buf.len() < FILE_HEADER {
            return Ok(0);
        }
        at = FILE_HEADER;
        header_done = true;
    }
    debug_assert!(header_done);
    while let Some(h) = buf.get(at..at + RECORD_HEADER) {
        let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        if len > MAX_RECORD {
            return Err(format!(
                "bad capture stream: a record of {len} bytes (at most {MAX_RECORD})"
            ));
        }
        if buf.len() < at + RECORD_HEADER + len {
            break;
        }
        at += RECORD_HEADER + len;
    }
    Ok(at)
}

/// Raises an older daemon's snap length (65535) to [`MAX_RECORD`] in a
/// little-endian pcap file header, so readers accept its largest frames.
fn widen_snaplen(header: &mut [u8]) {
    if header.len() >= FILE_HEADER && header[0..4] == 0xa1b2_c3d4u32.to_le_bytes() {
        let snap = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        if (snap as usize) < MAX_RECORD {
            header[16..20].copy_from_slice(&(MAX_RECORD as u32).to_le_bytes());
        }
    }
}

/// Why a copy ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The daemon closed the stream (the port went away).
    Closed,
    /// A stop signal (SIGINT, SIGTERM, SIGHUP) arrived.
    Signal,
    /// The output would not take more (a reader that went away).
    OutputGone,
}

/// Copies the pcap stream from `input` to `out` in whole records until
/// the stream ends, `stop()` says so, or the output fails. `input` reads
/// with a timeout, so `stop` is asked at least every read timeout.
pub(super) fn copy_records(
    input: &mut impl Read,
    out: &mut impl Write,
    mut stop: impl FnMut() -> bool,
) -> Result<End, String> {
    let mut buf: Vec<u8> = Vec::with_capacity(2 * (RECORD_HEADER + MAX_RECORD));
    let mut chunk = vec![0u8; 65_536];
    let mut header_done = false;
    loop {
        if stop() {
            return Ok(End::Signal);
        }
        let n = match input.read(&mut chunk) {
            Ok(0) => return Ok(End::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.to_string()),
        };
        buf.extend_from_slice(&chunk[..n]);
        let whole = whole_prefix(&buf, header_done)?;
        if whole == 0 {
            continue;
        }
        if !header_done {
            widen_snaplen(&mut buf[..FILE_HEADER]);
            header_done = true;
        }
        // One write of whole records, flushed at once so tcpdump and
        // tshark read it live.
        if out
            .write_all(&buf[..whole])
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(End::OutputGone);
        }
        buf.drain(..whole);
    }
}

/// Holds SIGINT, SIGTERM and SIGHUP for the copy: they no longer kill the
/// process mid-write but are read from a descriptor between records.
pub(super) struct StopSignals {
    fd: SignalFd,
}

impl StopSignals {
    /// Blocks the stop signals (this thread; `ctl` runs one) and opens a
    /// descriptor that reports them.
    pub(super) fn hold() -> std::io::Result<StopSignals> {
        let mut set = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(s);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(StopSignals { fd })
    }

    /// Whether a stop signal arrived.
    pub(super) fn arrived(&self) -> bool {
        matches!(self.fd.read_signal(), Ok(Some(_)))
    }

    /// How long a read may block before the signals are looked at again.
    pub(super) fn check_every() -> Duration {
        SIGNAL_CHECK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize, fill: u8) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_HEADER];
        r[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        r[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        r.extend(std::iter::repeat_n(fill, len));
        r
    }

    fn stream(lens: &[usize]) -> Vec<u8> {
        let mut s = switchyard_switch::capture::pcap_header().to_vec();
        for (i, l) in lens.iter().enumerate() {
            s.extend(record(*l, i as u8));
        }
        s
    }

    /// Gives its bytes a few at a time, then says "stop" or ends.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn whole_units_only() {
        let s = stream(&[60, 65_558, 1]);
        assert_eq!(whole_prefix(&s[..10], false), Ok(0));
        assert_eq!(whole_prefix(&s[..FILE_HEADER + 5], false), Ok(FILE_HEADER));
        assert_eq!(whole_prefix(&s, false), Ok(s.len()));
        let cut = s.len() - 1;
        assert_eq!(
            whole_prefix(&s[..cut], false),
            Ok(FILE_HEADER + 2 * RECORD_HEADER + 60 + 65_558)
        );
        let bad = record(MAX_RECORD + 1, 0);
        assert!(whole_prefix(&bad, true).is_err());
    }

    #[test]
    fn a_copy_cut_anywhere_ends_on_a_record_boundary() -> Result<(), String> {
        let s = stream(&[60, 1514, 65_558, 9000, 42]);
        for cut in [0, 3, 24, 30, 100, 1600, 70_000, s.len() - 1, s.len()] {
            let mut input = Trickle {
                data: s[..cut].to_vec(),
                at: 0,
                step: 777,
            };
            let mut out = Vec::new();
            let end = copy_records(&mut input, &mut out, || false)?;
            assert_eq!(end, End::Closed);
            assert_eq!(out.len(), whole_prefix(&s[..cut], false)?, "cut at {cut}");
            assert_eq!(whole_prefix(&out, false)?, out.len());
        }
        // Stopped after some reads: still whole.
        let mut input = Trickle {
            data: s.clone(),
            at: 0,
            step: 1000,
        };
        let mut reads = 0;
        let mut out = Vec::new();
        let end = copy_records(&mut input, &mut out, || {
            reads += 1;
            reads > 5
        })?;
        assert_eq!(end, End::Signal);
        assert_eq!(whole_prefix(&out, false)?, out.len());
        assert!(out.len() > FILE_HEADER);
        Ok(())
    }

    #[test]
    fn an_old_daemons_snaplen_is_widened() {
        let mut h = switchyard_switch::capture::pcap_header();
        h[16..20].copy_from_slice(&65_535u32.to_le_bytes());
        widen_snaplen(&mut h);
        assert_eq!(h[16..20], (MAX_RECORD as u32).to_le_bytes());
    }
}
