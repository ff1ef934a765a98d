//! The switch: the engine behind a lock, the port table as an immutable
//! snapshot swapped on change, and the one forwarding routine every port's
//! receive loop calls.

use crate::arrived::{decide, Arrived};
use crate::egress::{Frames, Outgoing, Overflow};
use crate::engine::{Decided, Decision, Engine, EngineConfig, FdbEvents};
use crate::fdb::FdbEntry;
use crate::forms::{Forms, VLAN_FORMS};
use crate::gso::VnetHdr;
use crate::port::{Port, PortId};
use crate::ratelimit::LogLimiter;
use crate::vlan::{Classified, VlanRules};
use arc_swap::ArcSwap;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest busy poll [`Switch::set_busy_poll`] accepts.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// An immutable set of ports, sorted by id.
#[derive(Debug, Default)]
pub struct PortTable {
    ports: Vec<Arc<Port>>,
}

impl PortTable {
    /// The port with this id.
    pub fn get(&self, id: PortId) -> Option<&Arc<Port>> {
        self.ports
            .binary_search_by_key(&id, |p| p.id())
            .ok()
            .map(|i| &self.ports[i])
    }

    /// Every port, by ascending id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Port>> {
        self.ports.iter()
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// True when there are no ports.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

/// One switch: ports, engine, clock.
#[derive(Debug)]
pub struct Switch {
    engine: Mutex<Engine>,
    ports: ArcSwap<PortTable>,
    /// Serialises port table changes (the data path never takes it).
    table_lock: Mutex<()>,
    next_id: AtomicU32,
    /// What ports that are gone counted, so switch-wide totals never
    /// shrink when a guest leaves.
    retired: crate::PortCounters,
    epoch: Instant,
    notice_log: LogLimiter,
    /// Static MAC entries by port name, pinned whenever such a port exists.
    static_macs: Mutex<Vec<(crate::MacAddr, String)>>,
    /// VLAN membership by port name; empty: VLAN-transparent.
    vlan_rules: Mutex<VlanRules>,
    /// Full unicast peers pause their senders instead of dropping.
    backpressure: AtomicBool,
    /// How long (µs) a drained port keeps polling before it sleeps.
    busy_poll_us: AtomicU64,
    /// What port types keep per switch, one value per type: see
    /// [`Switch::shared`].
    shared: Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
}

/// Calls `f` for every port a forwarding decision sends to (none for a
/// drop), with the overflow policy for it: `overflow` for the one port of
/// a unicast, [`Overflow::Drop`] for each copy of a flood. A flood skips
/// the ports loop protection blocks, counting the `frames` they miss.
#[inline]
fn for_each_target(
    ingress: &Port,
    table: &PortTable,
    (decision, frames, now): (Decision, usize, Duration),
    overflow: Overflow<'_>,
    mut f: impl FnMut(&Arc<Port>, Overflow<'_>),
) {
    match decision {
        Decision::Forward(p) => {
            if let Some(port) = table.get(p) {
                f(port, overflow);
            }
        }
        Decision::Flood => {
            for port in table.iter().filter(|p| p.id() != ingress.id()) {
                if port.counters().loop_blocked_for(now).is_some() {
                    port.counters()
                        .dropped_many(crate::DropReason::LoopBlocked, frames);
                    continue;
                }
                f(port, Overflow::Drop);
            }
        }
        Decision::Drop(_) => {}
    }
}

/// A random key for the FDB's hash, from the key std draws from the
/// operating system for its own hash maps.
fn random_seed() -> crate::fdb::HashSeed {
    use std::hash::{BuildHasher, RandomState};
    let s = RandomState::new();
    crate::fdb::HashSeed([s.hash_one(0x5eed_u64), s.hash_one(!0x5eed_u64)])
}

impl Switch {
    /// A switch with no ports.
    pub fn new(config: EngineConfig) -> Arc<Switch> {
        Arc::new(Switch {
            engine: Mutex::new(Engine::with_seed(config, random_seed())),
            ports: ArcSwap::from_pointee(PortTable::default()),
            table_lock: Mutex::new(()),
            next_id: AtomicU32::new(1),
            retired: crate::PortCounters::default(),
            epoch: Instant::now(),
            notice_log: LogLimiter::default(),
            static_macs: Mutex::new(Vec::new()),
            vlan_rules: Mutex::new(VlanRules::default()),
            backpressure: AtomicBool::new(true),
            busy_poll_us: AtomicU64::new(0),
            shared: Mutex::new(Vec::new()),
        })
    }

    /// This switch's one `T`, made on first use: state a port type keeps
    /// per switch rather than per process or per listener (counters that
    /// must outlive a listener a reload replaces, a registry of its
    /// tables), without the switch knowing the type. Not for the data
    /// path: it takes a lock.
    pub fn shared<T: std::any::Any + Default + Send + Sync>(&self) -> Arc<T> {
        let mut all = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = all.iter().find_map(|a| Arc::clone(a).downcast::<T>().ok()) {
            return t;
        }
        let t = Arc::new(T::default());
        all.push(t.clone());
        t
    }

    /// Monotonic time since the switch started: the engine's clock.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The instant the switch's clock counts from; `epoch.elapsed()` is
    /// [`Switch::now`]. Lets a port read the clock without holding the switch.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// A fresh port id.
    pub fn allocate_id(&self) -> PortId {
        PortId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock cannot leave the engine half-updated
        // in a way that matters more than stopping the switch would.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a port: it receives floods from now on.
    pub fn add_port(&self, port: Arc<Port>) {
        let _g = self.table_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut ports: Vec<Arc<Port>> = self.ports.load().ports.clone();
        ports.push(port.clone());
        ports.sort_by_key(|p| p.id());
        let vlans = self
            .vlan_rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resolve(port.name());
        port.set_vlans(vlans.clone());
        {
            let mut engine = self.engine();
            engine.add_port(port.id());
            if let Some(v) = vlans {
                engine.set_port_vlans(port.id(), v);
            }
            let statics = self.static_macs.lock().unwrap_or_else(|p| p.into_inner());
            for (mac, _) in statics.iter().filter(|(_, name)| name == port.name()) {
                engine.pin(*mac, port.id());
            }
        }
        self.ports.store(Arc::new(PortTable { ports }));
    }

    /// Sets the static MAC entries (MAC, port name); ports that exist now
    /// and ports added later with those names get them.
    pub fn set_static_macs(&self, entries: Vec<(crate::MacAddr, String)>) {
        let _g = self.table_lock.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.ports.load();
        let mut engine = self.engine();
        let old: Vec<crate::MacAddr> = engine.pinned().map(|(m, _)| m).collect();
        for m in old {
            engine.unpin(m);
        }
        for (mac, name) in &entries {
            if let Some(p) = table.iter().find(|p| p.name() == name) {
                engine.pin(*mac, p.id());
            }
        }
        *self.static_macs.lock().unwrap_or_else(|p| p.into_inner()) = entries;
    }

    /// Sets the VLAN rules: ports that exist now and ports added later get
    /// the membership of the first rule matching their name. No rules: the
    /// switch is VLAN-transparent.
    pub fn set_vlan_rules(&self, rules: VlanRules) {
        let _g = self.table_lock.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.ports.load();
        let mut engine = self.engine();
        engine.set_vlan_aware(!rules.is_empty());
        for port in table.iter() {
            let vlans = rules.resolve(port.name());
            if let Some(v) = &vlans {
                engine.set_port_vlans(port.id(), v.clone());
            }
            port.set_vlans(vlans);
        }
        *self.vlan_rules.lock().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// The VLAN rules in force.
    pub fn vlan_rules(&self) -> VlanRules {
        self.vlan_rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Removes a port and purges its FDB entries; returns it if it was there.
    pub fn remove_port(&self, id: PortId) -> Option<Arc<Port>> {
        let _g = self.table_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.ports.load_full();
        let removed = current.get(id).cloned();
        let ports: Vec<Arc<Port>> = current
            .ports
            .iter()
            .filter(|p| p.id() != id)
            .cloned()
            .collect();
        self.ports.store(Arc::new(PortTable { ports }));
        self.engine().remove_port(id);
        for p in self.ports.load().iter() {
            p.tx().forget_port(id);
        }
        if let Some(p) = &removed {
            self.retired.absorb(&p.counters().snapshot());
        }
        removed
    }

    /// The current port table.
    pub fn ports(&self) -> Arc<PortTable> {
        self.ports.load_full()
    }

    /// Forwards frames that arrived together on `ingress` at `now`: asks
    /// the engine (one lock for the batch), then sends to the destination
    /// ports directly, a run of frames for the same port with one send.
    /// An offloaded frame goes whole to ports that take offloaded frames
    /// and cut into plain frames to the others. Unicast a full peer
    /// refuses goes as `overflow` says while backpressure is on
    /// ([`Switch::set_backpressure`]) and is dropped while it is off; a
    /// flood copy a full peer refuses is always dropped, so one slow guest
    /// never slows every broadcast.
    pub fn forward(
        &self,
        ingress: &Port,
        frames: Frames<'_>,
        overflow: Overflow<'_>,
        now: Duration,
    ) {
        let overflow = match overflow {
            Overflow::Hold(h) if self.backpressure.load(Ordering::Relaxed) => Overflow::Hold(h),
            _ => Overflow::Drop,
        };
        match frames {
            // A lone frame (guests that wait for each other send one at a
            // time) takes the single-frame path: no runs to gather.
            Frames::Plain([frame]) => self.forward_one(ingress, None, *frame, now, overflow),
            Frames::Plain(batch) => self.forward_batch_in(ingress, batch, now, overflow),
            Frames::Offloaded(hdr, frame) => {
                self.forward_one(ingress, Some(hdr), frame, now, overflow)
            }
            Frames::Gathered([frame]) => self.forward_one(ingress, None, *frame, now, overflow),
            Frames::Gathered(batch) => self.forward_batch_in(ingress, batch, now, overflow),
            Frames::OffloadedGathered(hdr, frame) => {
                self.forward_one(ingress, Some(hdr), *frame, now, overflow)
            }
        }
    }

    fn forward_one<'f, F: Arrived<'f>>(
        &self,
        ingress: &Port,
        offload: Option<&VnetHdr>,
        frame: F,
        now: Duration,
        overflow: Overflow<'_>,
    ) {
        frame.count_on(ingress);
        let offload = offload.filter(|h| !h.is_plain());
        if offload.is_some() && frame.length() > crate::gso::MAX_GSO_FRAME {
            return ingress.drop_frame(crate::DropReason::TooLong, now, None);
        }
        let table = self.ports.load();
        // The engine reads only the headers; a super-frame may be a few
        // bytes over the plain-frame limit it enforces on the others.
        let decided = if offload.is_some() {
            let headers = frame.headers();
            let headers = &headers[..headers.len().min(crate::MAX_FRAME)];
            self.engine().decide(ingress.id(), headers, now)
        } else {
            decide(&mut self.engine(), ingress, frame, now)
        };
        if let Some(n) = decided.notice {
            crate::notice::note(n, ingress, &table, &self.notice_log, now);
        }
        let forms = (frame, decided.class, offload);
        self.deliver(ingress, &table, decided.decision, forms, now, overflow);
    }

    /// Carries out one decision for a frame (its bytes, VLAN class and
    /// offload header); unicast a full peer refuses goes as `overflow` says.
    fn deliver<'f, F: Arrived<'f>>(
        &self,
        ingress: &Port,
        table: &PortTable,
        decision: Decision,
        (frame, class, offload): (F, Classified, Option<&VnetHdr>),
        now: Duration,
        overflow: Overflow<'_>,
    ) {
        if let Decision::Drop(reason) = decision {
            return ingress.drop_frame(reason, now, None);
        }
        let id = ingress.id();
        if class.vid == 0 {
            // VLAN-transparent: every port gets the frame's own bytes.
            let one = [frame];
            let out = Outgoing {
                ingress: id,
                frames: F::frames(offload, &one),
            };
            return for_each_target(ingress, table, (decision, 1, now), overflow, |port, o| {
                port.send(out, o, now)
            });
        }
        VLAN_FORMS.with_borrow_mut(|bufs| {
            let mut forms = Forms::new(frame.source(), class, bufs, offload);
            for_each_target(ingress, table, (decision, 1, now), overflow, |port, o| {
                forms.send(id, port, o, now)
            });
        });
    }

    /// Whether full unicast peers pause their senders (on by default)
    /// rather than have frames tail-dropped.
    pub fn set_backpressure(&self, on: bool) {
        self.backpressure.store(on, Ordering::Relaxed);
    }

    /// See [`Switch::set_backpressure`].
    pub fn backpressure(&self) -> bool {
        self.backpressure.load(Ordering::Relaxed)
    }

    /// How long a unix port whose queue ran empty keeps looking for the
    /// next frame before its thread sleeps (zero, the default: sleep at
    /// once). Waking a sleeping thread costs tens of microseconds on a
    /// virtual machine; polling trades a busy CPU for that latency.
    /// Capped at [`MAX_BUSY_POLL`].
    pub fn set_busy_poll(&self, busy: Duration) {
        let us = busy.min(MAX_BUSY_POLL).as_micros() as u64;
        self.busy_poll_us.store(us, Ordering::Relaxed);
    }

    /// See [`Switch::set_busy_poll`].
    pub fn busy_poll(&self) -> Duration {
        Duration::from_micros(self.busy_poll_us.load(Ordering::Relaxed))
    }

    fn forward_batch_in<'f, F: Arrived<'f>>(
        &self,
        ingress: &Port,
        frames: &'f [F],
        now: Duration,
        mut overflow: Overflow<'_>,
    ) {
        let mut slots = [MaybeUninit::<Decided>::uninit(); crate::sys::MMSG_BATCH];
        let table = self.ports.load();
        let decided: &[Decided] = {
            let mut engine = self.engine();
            crate::sys::fill_front(
                &mut slots,
                frames.iter().map(|f| decide(&mut engine, ingress, *f, now)),
            )
        };
        let n = decided.len();
        let frames = &frames[..n];
        // Every frame's notice, not just the batch's last: each one is
        // logged or counted as suppressed.
        for notice in decided.iter().filter_map(|d| d.notice) {
            crate::notice::note(notice, ingress, &table, &self.notice_log, now);
        }
        if decided.iter().any(|d| d.class.vid != 0) {
            // Each frame may need its own tagging per port: no run batching.
            for (f, d) in frames.iter().zip(decided) {
                f.count_on(ingress);
                let forms = (*f, d.class, None);
                self.deliver(ingress, &table, d.decision, forms, now, overflow.reborrow());
            }
            return;
        }
        let mut i = 0;
        while i < n {
            let decision = decided[i].decision;
            if let Decision::Drop(reason) = decision {
                frames[i].count_on(ingress);
                ingress.drop_frame(reason, now, None);
                i += 1;
                continue;
            }
            // The run of consecutive frames with the same decision (one
            // destination, or all flooded) is a slice of the batch: each
            // port gets it with one send.
            let mut j = i;
            while j < n && decided[j].decision == decision {
                frames[j].count_on(ingress);
                j += 1;
            }
            let out = Outgoing {
                ingress: ingress.id(),
                frames: F::frames(None, &frames[i..j]),
            };
            let targets = (decision, j - i, now);
            for_each_target(ingress, &table, targets, overflow.reborrow(), |port, o| {
                port.send(out, o, now)
            });
            i = j;
        }
    }

    /// Forgets idle FDB entries, ends loop blocks whose hold-down is over
    /// and sends loop probes; call about once a second.
    pub fn age(&self) -> usize {
        let now = self.now();
        let (aged, ended, probe_from) = {
            let mut engine = self.engine();
            let probe_from = engine.config().loops.enabled.then(|| engine.own_mac());
            (engine.age(now), engine.expire_loop_blocks(now), probe_from)
        };
        let table = self.ports.load();
        for b in ended {
            crate::notice::unblocked(&b, &table);
        }
        if let Some(own) = probe_from {
            send_loop_probes(&table, own, now);
        }
        aged
    }

    /// The ports loop protection blocks now, by port.
    pub fn loop_blocks(&self) -> Vec<crate::LoopBlock> {
        let now = self.now();
        self.engine().loop_blocks(now)
    }

    /// Totals over every port there ever was: the live ones plus what
    /// removed ports counted.
    pub fn totals(&self) -> crate::counters::CounterSnapshot {
        let total = crate::PortCounters::default();
        total.absorb(&self.retired.snapshot());
        for p in self.ports.load().iter() {
            total.absorb(&p.counters().snapshot());
        }
        total.snapshot()
    }

    /// The live FDB entries.
    pub fn fdb_entries(&self) -> Vec<FdbEntry> {
        let now = self.now();
        self.engine().fdb_entries(now)
    }

    /// Empties the FDB, or only one port's entries; returns how many.
    pub fn fdb_flush(&self, port: Option<PortId>) -> usize {
        self.engine().flush(port)
    }

    /// Number of FDB entries.
    pub fn fdb_len(&self) -> usize {
        self.engine().fdb().len()
    }

    /// Learning events so far.
    pub fn fdb_events(&self) -> FdbEvents {
        self.engine().events()
    }

    /// Applies new engine settings (reload) without touching ports or FDB.
    pub fn set_config(&self, config: EngineConfig) {
        self.engine().set_config(config);
        if !config.loops.enabled {
            for p in self.ports.load().iter() {
                p.counters().loop_unblock();
            }
        }
    }

    /// The engine's settings.
    pub fn config(&self) -> EngineConfig {
        *self.engine().config()
    }
}
/// One loop probe from `own` out of every port that faces a kernel bridge
/// or a LAN (tap, pcap, vxlan), where loops form; guests' ports get none,
/// their loops show as flapping addresses. A blocked port gets none
/// either: its own block is what keeps the loop cut.
fn send_loop_probes(table: &PortTable, own: crate::MacAddr, now: Duration) {
    const FACING_BRIDGES: [&str; 3] = ["tap", "pcap", "vxlan"];
    let facing = table
        .iter()
        .filter(|p| FACING_BRIDGES.contains(&p.kind()))
        .filter(|p| p.counters().loop_blocked_for(now).is_none());
    for port in facing {
        let probe = crate::loops::probe(own, port.id());
        let frames: [&[u8]; 1] = [&probe];
        let out = Outgoing {
            // No port: the switch itself sends it.
            ingress: PortId(0),
            frames: Frames::Plain(&frames),
        };
        port.send(out, Overflow::Drop, now);
    }
}
