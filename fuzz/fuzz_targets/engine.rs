//! The engine's frame path: a sequence of operations on
//! `switchyard_switch::Engine` — frames arriving on ports, ports joining
//! and leaving, time passing and aging, static entries, flushes and mode
//! changes — with real captured frames as seeds.
//!
//! Input: 4 config bytes, then records (`switchyard_fuzz::records`):
//! - config: byte 0 bit 0 hub mode, bit 1 BPDU guard; byte 1 the FDB size
//!   (0: the default, n: n entries); byte 2 the per-port limit (0: none);
//!   byte 3 the storm-control rate for all three classes (0: off);
//! - op % 8 in 0..=3: the payload arrives on port `arg % 8`; 4: port
//!   `arg % 8` joins; 5: it leaves; 6: `arg` × 100 ms pass, then aging;
//!   7: by `arg % 4`, pin the payload's first 6 bytes (as a MAC) to the
//!   member port `arg / 4 % 8`, unpin them, flush one port or all, or
//!   toggle switch/hub mode.
//!
//! Checks, besides "never panics": a frame is never forwarded to its
//! ingress port or to a port that is not a member; a non-member's frames
//! are dropped; a hub never forwards to one port; the FDB stays within its
//! limits; a flood reaches exactly the members but the ingress port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use switchyard_fuzz::records;
use switchyard_switch::engine::Guards;
use switchyard_switch::{
    Decision, DropReason, Engine, EngineConfig, FdbConfig, MacAddr, Mode, PortId,
};

const PORTS: u8 = 8;

fn config(c: &[u8; 4]) -> EngineConfig {
    let mode = if c[0] & 1 != 0 {
        Mode::Hub
    } else {
        Mode::Switch
    };
    let mut fdb = FdbConfig::default();
    if c[1] != 0 {
        fdb.max_entries = usize::from(c[1]);
    }
    if c[2] != 0 {
        fdb.max_entries_per_port = Some(usize::from(c[2]));
    }
    let rate = u32::from(c[3]);
    EngineConfig::new(mode, fdb).with_guards(Guards::new(c[0] & 2 != 0, rate, rate, rate))
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let cfg = config(head);
    let mut engine = Engine::new(cfg);
    let mut now = Duration::from_secs(1000);
    for r in records(rest) {
        let port = PortId(u32::from(r.arg % PORTS));
        match r.op % 8 {
            0..=3 => {
                let member = engine.has_port(port);
                let d = engine.decide(port, r.payload, now).decision;
                check(&engine, port, member, r.payload, d);
            }
            4 => engine.add_port(port),
            5 => {
                engine.remove_port(port);
            }
            6 => {
                now += Duration::from_millis(100) * u32::from(r.arg);
                engine.age(now);
            }
            _ => misc(&mut engine, r.arg, r.payload),
        }
        let fdb = engine.fdb();
        let limits = *fdb.config();
        assert!(fdb.len() <= limits.max_entries, "FDB over its size");
        if let Some(per_port) = limits.max_entries_per_port {
            for p in 0..u32::from(PORTS) {
                assert!(
                    fdb.port_len(PortId(p)) <= per_port,
                    "port {p} over its limit"
                );
            }
        }
    }
});

fn misc(engine: &mut Engine, arg: u8, payload: &[u8]) {
    let target = PortId(u32::from(arg / 4 % PORTS));
    match arg % 4 {
        0 => {
            // The daemon pins only to attached ports (Switch::add_port).
            if let (Some(mac), true) = (payload.first_chunk::<6>(), engine.has_port(target)) {
                engine.pin(MacAddr(*mac), target);
            }
        }
        1 => {
            if let Some(mac) = payload.first_chunk::<6>() {
                engine.unpin(MacAddr(*mac));
            }
        }
        2 => {
            let which = (arg & 0x80 != 0).then_some(target);
            engine.flush(which);
        }
        _ => {
            let mode = match engine.config().mode {
                Mode::Switch => Mode::Hub,
                Mode::Hub => Mode::Switch,
            };
            engine.set_mode(mode);
        }
    }
}

fn check(engine: &Engine, ingress: PortId, member: bool, frame: &[u8], d: Decision) {
    if frame.len() < switchyard_switch::MIN_FRAME {
        assert_eq!(d, Decision::Drop(DropReason::TooShort));
        return;
    }
    if !member {
        assert_eq!(
            d,
            Decision::Drop(DropReason::IngressDown),
            "non-member's frame not dropped"
        );
        return;
    }
    match d {
        Decision::Forward(p) => {
            assert_ne!(p, ingress, "forwarded back to the ingress port");
            assert!(engine.has_port(p), "forwarded to non-member {p:?}");
            assert_eq!(
                engine.config().mode,
                Mode::Switch,
                "a hub forwarded to one port"
            );
        }
        Decision::Flood => {
            let set: Vec<PortId> = engine.flood_set(ingress).collect();
            let members: Vec<PortId> = engine.ports().filter(|p| *p != ingress).collect();
            assert_eq!(set, members, "flood set is not members minus ingress");
        }
        Decision::Drop(_) => {}
    }
}
