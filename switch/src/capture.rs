//! Copies of a port's frames for `switchyard ctl capture`, as pcap. Off by
//! default; while a capture runs each frame is copied into a bounded queue
//! and dropped (and counted) when the reader falls behind, so a slow
//! capture never slows the data path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// One captured frame.
#[derive(Debug)]
pub struct CapturedFrame {
    /// Wall-clock time it passed.
    pub at: SystemTime,
    /// The whole frame.
    pub data: Vec<u8>,
}

/// Where a port's frames go while captured.
#[derive(Debug)]
pub struct CaptureSink {
    tx: mpsc::Sender<CapturedFrame>,
    /// Frames the reader was too slow for.
    pub dropped: AtomicU64,
}

impl CaptureSink {
    /// A sink and the receiving end, holding up to `depth` frames.
    pub fn new(depth: usize) -> (CaptureSink, mpsc::Receiver<CapturedFrame>) {
        let (tx, rx) = mpsc::channel(depth);
        (
            CaptureSink {
                tx,
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Queues a copy of `frame`, or counts it as dropped.
    pub fn offer(&self, frame: &[u8]) {
        let f = CapturedFrame {
            at: SystemTime::now(),
            data: frame.to_vec(),
        };
        if self.tx.try_send(f).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True once the reader has gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The snap length in [`pcap_header`]: larger than any frame a port
/// passes (a tap's TSO/GSO super-frame reaches 65,558 bytes, above
/// [`crate::MAX_FRAME`]), and tcpdump's own default, so readers never take
/// a record for truncated or corrupt.
pub const SNAPLEN: u32 = 262_144;

/// The pcap file header: microsecond timestamps, Ethernet, [`SNAPLEN`].
pub fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// One pcap record header for `frame`.
pub fn pcap_record(frame: &CapturedFrame) -> [u8; 16] {
    let t = frame
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let len = frame.data.len() as u32;
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h[12..16].copy_from_slice(&len.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_little_endian_pcap() {
        let h = pcap_header();
        assert_eq!(&h[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(h[20], 1, "LINKTYPE_ETHERNET");
        let snaplen = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        assert!(snaplen >= 65_558, "a tap's super-frames fit: {snaplen}");
        let r = pcap_record(&CapturedFrame {
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_500_000),
            data: vec![0; 60],
        });
        assert_eq!(&r[0..4], &1u32.to_le_bytes());
        assert_eq!(&r[4..8], &500_000u32.to_le_bytes());
        assert_eq!(&r[8..12], &60u32.to_le_bytes());
    }

    #[test]
    fn a_slow_reader_costs_frames_not_time() {
        let (sink, mut rx) = CaptureSink::new(2);
        for _ in 0..5 {
            sink.offer(&[0u8; 60]);
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 3);
        assert!(rx.try_recv().is_ok());
        drop(rx);
        assert!(sink.is_closed());
    }
}
