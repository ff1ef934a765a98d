//! The `switch:` section: mode, FDB, guards, loop protection,
//! backpressure, busy poll, static MACs and VLAN rules.

use super::error::{Blame, ConfigError};
use super::raw::{LoopSection, ModeName, Sp, SwitchSection, VlanId, VlanList};
use crate::settings::Settings;
use crate::values::check_busy_poll;
use serde_saphyr::Location;
use switchyard_switch::vlan::PortPattern;
use switchyard_switch::{FdbConfig, LoopGuard, Mode, PortVlans};

/// Applies `sw` over `base`; returns the VLAN rules of `switch.vlans`, in
/// order, for the caller to put before the ports' own.
pub(super) fn apply(
    sw: &SwitchSection,
    base: &mut Settings,
    blame: &Blame,
) -> Result<Vec<(PortPattern, PortVlans)>, ConfigError> {
    if let Some(m) = sw.mode {
        base.engine.mode = match m {
            ModeName::Switch => Mode::Switch,
            ModeName::Hub => Mode::Hub,
        };
    }
    let fdb = &sw.fdb;
    let aging = match &fdb.aging {
        Some(a) if a.value.0.is_zero() => {
            return Err(blame.at(
                a.referenced,
                "switch.fdb.aging".into(),
                "must be at least 1s".into(),
            ))
        }
        Some(a) => a.value.0,
        None => base.engine.fdb.aging,
    };
    base.engine.fdb = FdbConfig::new(
        aging,
        fdb.max_entries.unwrap_or(base.engine.fdb.max_entries),
        match fdb.max_entries_per_port {
            // 0: no per-port limit.
            Some(0) => None,
            Some(n) => Some(n),
            None => base.engine.fdb.max_entries_per_port,
        },
    );
    base.engine.loops = loop_guard(&sw.loop_protection, base.engine.loops, blame)?;
    if let Some(n) = &sw.numports {
        if n.value == 0 || n.value > 65_535 {
            return Err(blame.at(
                n.referenced,
                "switch.numports".into(),
                "must be 1 to 65535".into(),
            ));
        }
        base.numports = n.value;
    }
    let storm = &sw.storm_control;
    base.engine.guards = switchyard_switch::engine::Guards::new(
        sw.bpdu_guard,
        storm.broadcast,
        storm.multicast,
        storm.unknown_unicast,
    );
    if let Some(on) = sw.backpressure {
        base.backpressure = on;
    }
    if let Some(b) = &sw.busy_poll {
        base.busy_poll = check_busy_poll(b.value.0)
            .map_err(|e| blame.at(b.referenced, "switch.busy_poll".into(), e))?;
    }
    for (i, m) in sw.static_macs.iter().enumerate() {
        let mac =
            m.mac.value.parse().map_err(|e| {
                blame.at(m.mac.referenced, format!("switch.static_macs[{i}].mac"), e)
            })?;
        base.static_macs.push((mac, m.port.clone()));
    }
    let mut vlan_rules = Vec::new();
    for (i, r) in sw.vlans.iter().enumerate() {
        let field = format!("switch.vlans[{i}]");
        if r.port.value.is_empty() {
            return Err(blame.at(
                r.port.referenced,
                format!("{field}.port"),
                "is empty".into(),
            ));
        }
        let vlans = port_vlans(r.untagged.as_ref(), r.tagged.as_ref())
            .map_err(|(at, e)| blame.at(at.unwrap_or(r.port.referenced), field.clone(), e))?;
        vlan_rules.push((PortPattern::new(r.port.value.clone()), vlans));
    }
    Ok(vlan_rules)
}

/// `switch.loop_protection` over `base`.
fn loop_guard(l: &LoopSection, base: LoopGuard, blame: &Blame) -> Result<LoopGuard, ConfigError> {
    let threshold = match &l.threshold {
        Some(t) if t.value == 0 => {
            return Err(blame.at(
                t.referenced,
                "switch.loop_protection.threshold".into(),
                "must be at least 1 (flaps a second)".into(),
            ))
        }
        Some(t) => t.value,
        None => base.threshold,
    };
    let hold_down = match &l.hold_down {
        Some(h) if h.value.0.is_zero() => {
            return Err(blame.at(
                h.referenced,
                "switch.loop_protection.hold_down".into(),
                "must be at least 1s".into(),
            ))
        }
        Some(h) => h.value.0,
        None => base.hold_down,
    };
    Ok(LoopGuard::new(
        l.enabled.unwrap_or(base.enabled),
        threshold,
        hold_down,
    ))
}

/// A port's membership from its `untagged`/`vlan` and `tagged` values.
pub(super) fn port_vlans(
    untagged: Option<&Sp<VlanId>>,
    tagged: Option<&Sp<VlanList>>,
) -> Result<PortVlans, (Option<Location>, String)> {
    use switchyard_switch::vlan::{parse_vid, VlanSet};
    let untagged_vid = match untagged {
        None => None,
        Some(u) => match &u.value {
            VlanId::Text(t) if t == "none" => None,
            VlanId::Text(t) => Some(parse_vid(t).map_err(|e| (Some(u.referenced), e))?),
            VlanId::Number(n) => {
                Some(parse_vid(&n.to_string()).map_err(|e| (Some(u.referenced), e))?)
            }
        },
    };
    let mut set = VlanSet::default();
    if let Some(t) = tagged {
        let at = |e| (Some(t.referenced), e);
        match &t.value {
            VlanList::Numbers(ns) => {
                for n in ns {
                    set.insert(parse_vid(&n.to_string()).map_err(at)?);
                }
            }
            VlanList::Number(n) => set.insert(parse_vid(&n.to_string()).map_err(at)?),
            VlanList::Text(text) => set = text.parse().map_err(at)?,
        }
    }
    if untagged_vid.is_none() && set.is_empty() {
        return Err((
            untagged
                .map(|u| u.referenced)
                .or(tagged.map(|t| t.referenced)),
            "names no VLAN: give an untagged VLAN, tagged VLANs, or both".into(),
        ));
    }
    Ok(PortVlans {
        untagged: untagged_vid,
        tagged: set,
    })
}
