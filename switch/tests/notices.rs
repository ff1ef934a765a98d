//! FDB notices leave the engine with each frame's decision: every notice
//! of a batch reaches the switch's log, as a line or as a count of
//! suppressed ones, not only the batch's last.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_switch::port::{Port, PortId, SendError, Transmit};
use switchyard_switch::{EngineConfig, FdbConfig, Frames, Mode, Overflow, Switch};

struct Accept;

impl Transmit for Accept {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        (frames.len(), None)
    }
}

/// The log output, shared with the subscriber's writer.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn broadcast_from(src: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, src, 0x08, 0x00]);
    f.resize(60, 0);
    f
}

#[test]
fn every_notice_of_a_batch_is_logged_or_counted() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let sw = Switch::new(EngineConfig::new(Mode::Switch, FdbConfig::default()));
        let ports: Vec<Arc<Port>> = (0..2)
            .map(|i| {
                let p = Arc::new(Port::new(
                    sw.allocate_id(),
                    format!("p{i}"),
                    "memory",
                    "test",
                    Box::new(Accept),
                ));
                sw.add_port(p.clone());
                p
            })
            .collect();
        let (a, b) = (broadcast_from(9), broadcast_from(7));
        sw.forward(
            &ports[0],
            Frames::Plain(&[&a, &b]),
            Overflow::Drop,
            Duration::from_secs(0),
        );
        // Both addresses move in one batch: two notices.
        sw.forward(
            &ports[1],
            Frames::Plain(&[&a, &b]),
            Overflow::Drop,
            Duration::from_secs(1),
        );
        // A minute later the next move logs, counting the one held back.
        sw.forward(
            &ports[0],
            Frames::Plain(&[&a]),
            Overflow::Drop,
            Duration::from_secs(100),
        );
    });
    let text = String::from_utf8(log.0.lock().expect("log lock").clone()).expect("utf-8");
    let moved: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("address moved to another port"))
        .collect();
    assert_eq!(moved.len(), 2, "{text}");
    assert!(
        moved[0].contains("mac=02:00:00:00:00:09") && moved[0].contains("suppressed=0"),
        "the batch's first notice is logged: {text}"
    );
    assert!(
        moved[1].contains("from=p1") && moved[1].contains("suppressed=1"),
        "the batch's second notice was counted: {text}"
    );
}
