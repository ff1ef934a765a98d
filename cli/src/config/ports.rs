//! The `ports:` list: each entry checked and built by the port-type
//! registry (the same builders as `--port`), plus what only a file says:
//! unique names and per-port VLANs.

use super::error::{Blame, ConfigError};
use super::raw::RawPort;
use super::switch::port_vlans;
use crate::ports::{self, Configured};
use crate::settings::Settings;
use serde_saphyr::Location;
use std::collections::HashMap;
use switchyard_switch::ports::unix::UnixConfig;
use switchyard_switch::vlan::PortPattern;
use switchyard_switch::PortVlans;

/// What the list adds besides `base`'s taps and transports.
#[derive(Debug, Default)]
pub(super) struct Listed {
    /// Control sockets (`type: unix`), in order.
    pub(super) controls: Vec<UnixConfig>,
    /// VLAN rules from the ports' `vlan:`/`tagged:`.
    pub(super) vlan_rules: Vec<(PortPattern, PortVlans)>,
}

/// Builds every entry, adding taps and transports to `base`.
pub(super) fn apply(
    list: Vec<RawPort>,
    base: &mut Settings,
    blame: &Blame,
) -> Result<Listed, ConfigError> {
    let mut listed = Listed::default();
    let mut names: Vec<String> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (i, p) in list.into_iter().enumerate() {
        let at = |k: &str| format!("ports[{i}].{k}");
        let ty = ports::find(&p.kind.value);
        let n = counts.entry(p.kind.value.clone()).or_insert(0);
        *n += 1;
        let values = p.values(ty.is_some_and(|t| t.vlans));
        let built = ports::build(values, *n).map_err(|e| {
            let field = at(e.key());
            let loc = e.place().map(|pl| (pl.line, pl.column));
            blame.at_place(
                loc.or(Some(line_column(p.kind.referenced))),
                field,
                e.message(),
            )
        })?;
        let name_loc = p
            .name
            .as_ref()
            .map(|n| n.referenced)
            .unwrap_or(p.kind.referenced);
        let name = built.name;
        match built.port {
            Configured::Unix(c) => listed.controls.push(c),
            Configured::Tap(t) => base.taps.push(t),
            Configured::Port(s) => base.ports.push(s),
        }
        if names.contains(&name) {
            return Err(blame.at(
                name_loc,
                at("name"),
                format!("the name {name:?} is used twice"),
            ));
        }
        if p.vlan.is_some() || p.tagged.is_some() {
            let vlans = port_vlans(p.vlan.as_ref(), p.tagged.as_ref())
                .map_err(|(l, e)| blame.at(l.unwrap_or(name_loc), at("vlan"), e))?;
            // A stream listener's connections are ports named `NAME:N`.
            listed
                .vlan_rules
                .push((PortPattern::new(name.clone()), vlans.clone()));
            listed
                .vlan_rules
                .push((PortPattern::new(format!("{name}:*")), vlans));
        }
        names.push(name);
    }
    Ok(listed)
}

fn line_column(l: Location) -> (u64, u64) {
    (l.line(), l.column())
}
