//! Parsers for the values flags and the YAML file share: durations,
//! permission modes, groups and on/off switches. A leaf module: it imports
//! nothing of the crate, so every other module may use it.

use std::time::Duration;

/// Parses `300` (seconds), `300s`, `5m`, `1h`, `500ms`, `20us` (`µs` too).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 300s, 5m, 1h, 500ms, 20us)"))?;
    let times = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long a duration"))
    };
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "us" | "µs" => Ok(Duration::from_micros(n)),
        "m" => times(60),
        "h" => times(3600),
        u => Err(format!(
            "unknown unit {u:?} in {s:?}; use us, ms, s, m or h"
        )),
    }
}

/// Parses a busy-poll time (`--busy-poll`, `switch.busy_poll`): a
/// duration such as `20us`, `0` for off. More than
/// [`switchyard_switch::MAX_BUSY_POLL`] is refused rather than capped, so
/// that what was asked for is what runs.
pub fn parse_busy_poll(s: &str) -> Result<Duration, String> {
    check_busy_poll(parse_duration(s)?)
}

/// Refuses a busy poll longer than [`switchyard_switch::MAX_BUSY_POLL`].
pub fn check_busy_poll(d: Duration) -> Result<Duration, String> {
    let max = switchyard_switch::MAX_BUSY_POLL;
    if d > max {
        return Err(format!(
            "a busy poll of {d:?} is too long: the maximum is {max:?} \
             (e.g. 20us; 0 turns it off; a plain number is seconds)"
        ));
    }
    Ok(d)
}

/// A busy-poll time for people: `20 µs`, or `off`.
pub fn show_busy_poll(d: Duration) -> String {
    if d.is_zero() {
        "off".into()
    } else {
        format!("{} µs", d.as_micros())
    }
}

/// Parses an octal permission mode such as `660` or `0o2770`.
pub fn parse_octal(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal permission mode (e.g. 660)"))
}

/// Resolves a group name or number to a gid.
pub fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("group {s:?} does not exist")),
        Err(e) => Err(format!("cannot look up group {s:?}: {e}")),
    }
}

/// Parses a switch: `on`, `yes`, `true`, `1` or `off`, `no`, `false`, `0`.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal("660"), Ok(0o660));
        assert_eq!(parse_octal("0660"), Ok(0o660));
        assert_eq!(parse_octal("0o2770"), Ok(0o2770));
        assert!(parse_octal("999").is_err());
        assert!(parse_octal("77777").is_err());
    }

    #[test]
    fn groups() {
        assert_eq!(parse_group("0"), Ok(0));
        assert_eq!(parse_group("root"), Ok(0));
        assert!(parse_group("no-such-group-switchyard").is_err());
    }

    #[test]
    fn on_off() {
        assert_eq!(parse_on_off("yes"), Ok(true));
        assert_eq!(parse_on_off("0"), Ok(false));
        assert!(parse_on_off("maybe").is_err());
    }

    #[test]
    fn busy_poll_values() {
        assert_eq!(parse_busy_poll("0"), Ok(Duration::ZERO));
        assert_eq!(parse_busy_poll("20us"), Ok(Duration::from_micros(20)));
        assert_eq!(parse_busy_poll("1000us"), Ok(Duration::from_millis(1)));
        let e = parse_busy_poll("2ms").expect_err("too long");
        assert!(e.contains("2ms") && e.contains("maximum is 1ms"), "{e}");
        assert!(parse_busy_poll("fast").is_err());
        assert_eq!(show_busy_poll(Duration::ZERO), "off");
        assert_eq!(show_busy_poll(Duration::from_micros(20)), "20 µs");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20us"), Ok(Duration::from_micros(20)));
        assert_eq!(parse_duration("20µs"), Ok(Duration::from_micros(20)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("five").is_err());
        let e = parse_duration("3 parsecs").expect_err("bad unit");
        assert!(e.contains("use us, ms, s, m or h"), "{e}");
        assert!(parse_duration(&format!("{}h", u64::MAX)).is_err());
    }
}
