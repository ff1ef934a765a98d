use super::*;

fn p(args: &[&str]) -> Result<Settings, Usage> {
    parse(args.iter().map(OsString::from).collect())
}

#[test]
fn single_dash_uml_flags_work_natively() {
    let s = p(&["switchyard", "-unix", "/tmp/a.ctl", "-hub", "-tap", "tap0"]).expect("parses");
    assert_eq!(s.controls.len(), 1);
    assert_eq!(s.controls[0].layout, Layout::Socket("/tmp/a.ctl".into()));
    assert_eq!(s.engine.mode, Mode::Hub);
    assert_eq!(s.taps, vec![TapSpec::device("tap0")]);
    assert_eq!(s.stdin, StdinPolicy::Ignore);
}

#[test]
fn defaults_and_group_mode() {
    let s = p(&["switchyard", "--vde", "/tmp/d", "--group", "0"]).expect("parses");
    assert_eq!(s.controls[0].mode, Some(0o660));
    assert_eq!(s.controls[0].group, Some(0));
    assert_eq!(s.engine.fdb.aging, Duration::from_secs(300));
    assert_eq!(s.engine.fdb.max_entries, 65_536);
    assert_eq!(s.engine.fdb.max_entries_per_port, Some(2048));
    assert_eq!(s.engine.loops, LoopGuard::default());
    let d = p(&["switchyard"]).expect("parses");
    assert!(!d.controls.is_empty());
}

#[test]
fn port_limit_and_loop_protection_flags() {
    let s = p(&[
        "switchyard",
        "--fdb-port-max-entries",
        "0",
        "--loop-protection",
        "off",
        "--loop-threshold",
        "4",
        "--loop-hold-down",
        "5",
    ])
    .expect("parses");
    assert_eq!(s.engine.fdb.max_entries_per_port, None, "0: no limit");
    assert_eq!(
        s.engine.loops,
        LoopGuard::new(false, 4, Duration::from_secs(5))
    );
    let s = p(&["switchyard", "--fdb-port-max-entries", "10"]).expect("parses");
    assert_eq!(s.engine.fdb.max_entries_per_port, Some(10));
    assert!(p(&["switchyard", "--loop-threshold", "0"]).is_err());
}

#[test]
fn vlan_flags_come_before_the_files_rules() {
    let s = p(&[
        "switchyard",
        "--vlan",
        "unix:1=10",
        "--vlan",
        "tap:*=/10,20",
    ])
    .expect("parses");
    let rules: Vec<String> = s
        .vlans
        .iter()
        .map(|(p, v)| format!("{}={v}", p.as_str()))
        .collect();
    assert_eq!(rules, ["unix:1=10", "tap:*=/10,20"]);
    for bad in ["unix:1", "unix:1=0", "unix:1=none", "x=/5-1"] {
        assert!(p(&["switchyard", "--vlan", bad]).is_err(), "{bad}");
    }
}

#[test]
fn backpressure_flag() {
    assert!(
        p(&["switchyard"]).expect("parses").backpressure,
        "on by default"
    );
    let s = p(&["switchyard", "--backpressure", "off"]).expect("parses");
    assert!(!s.backpressure);
    let s = p(&["switchyard", "--backpressure=on"]).expect("parses");
    assert!(s.backpressure);
    for bad in [
        &["switchyard", "--backpressure"][..],
        &["switchyard", "--backpressure", "no"],
    ] {
        assert_eq!(p(bad).expect_err("rejected").code, 2, "{bad:?}");
    }
}

#[test]
fn backpressure_flag_overrides_the_file_only_when_given() -> std::io::Result<()> {
    let dir = std::env::temp_dir().join(format!("switchyard-bp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bp.yaml");
    std::fs::write(&file, "switch:\n  backpressure: false\n")?;
    let cfg = file.to_string_lossy().into_owned();
    let from_file = p(&["switchyard", "--config", &cfg]);
    let overridden = p(&["switchyard", "--config", &cfg, "--backpressure", "on"]);
    std::fs::remove_dir_all(&dir)?;
    assert!(!from_file.expect("parses").backpressure, "the file's off");
    assert!(overridden.expect("parses").backpressure, "the flag's on");
    Ok(())
}

#[test]
fn busy_poll_flag() {
    let s = p(&["switchyard"]).expect("parses");
    assert_eq!(s.busy_poll, Duration::ZERO, "off by default");
    let s = p(&["switchyard", "--busy-poll", "20us"]).expect("parses");
    assert_eq!(s.busy_poll, Duration::from_micros(20));
    let s = p(&["switchyard", "--busy-poll=1ms"]).expect("parses");
    assert_eq!(s.busy_poll, Duration::from_millis(1));
    let s = p(&["switchyard", "--busy-poll", "0"]).expect("parses");
    assert_eq!(s.busy_poll, Duration::ZERO);
    for bad in ["2ms", "20", "fast", "20ns"] {
        let e = p(&["switchyard", "--busy-poll", bad]).expect_err(bad);
        assert_eq!(e.code, 2, "{bad}");
    }
    let e = p(&["switchyard", "--busy-poll", "5ms"]).expect_err("too long");
    assert!(e.message.contains("maximum is 1ms"), "{}", e.message);
}

#[test]
fn busy_poll_flag_overrides_the_file_only_when_given() -> std::io::Result<()> {
    let dir = std::env::temp_dir().join(format!("switchyard-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("busy.yaml");
    std::fs::write(&file, "switch:\n  busy_poll: 50us\n")?;
    let cfg = file.to_string_lossy().into_owned();
    let from_file = p(&["switchyard", "--config", &cfg]);
    let overridden = p(&["switchyard", "--config", &cfg, "--busy-poll", "0"]);
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(
        from_file.expect("parses").busy_poll,
        Duration::from_micros(50)
    );
    assert_eq!(overridden.expect("parses").busy_poll, Duration::ZERO);
    Ok(())
}

#[test]
fn group_and_admin_group_reach_the_files_sockets() -> std::io::Result<()> {
    let dir = std::env::temp_dir().join(format!("switchyard-grp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("grp.yaml");
    std::fs::write(
        &file,
        "ports:\n  - { type: unix, path: /tmp/a.ctl }\n  - { type: unix, directory: /tmp/d, mode: \"0640\" }\n\
         control: { path: /tmp/c.sock, admin_group: \"0\" }\n",
    )?;
    let cfg = file.to_string_lossy().into_owned();
    let plain = p(&["switchyard", "--config", &cfg]);
    let grouped = p(&["switchyard", "--config", &cfg, "--group", "65534"]);
    let flagged = p(&["switchyard", "--config", &cfg, "--admin-group", "65534"]);
    std::fs::remove_dir_all(&dir)?;
    let plain = plain.expect("parses");
    assert_eq!(plain.controls[0].group, None);
    assert_eq!(plain.extras.admin_group, Some(0));
    let grouped = grouped.expect("parses");
    let perms: Vec<_> = grouped.controls.iter().map(|c| (c.mode, c.group)).collect();
    assert_eq!(
        perms,
        [(Some(0o660), Some(65534)), (Some(0o640), Some(65534))]
    );
    assert_eq!(
        grouped.extras.control,
        Some(("/tmp/c.sock".into(), Some(0o660), Some(65534)))
    );
    assert_eq!(grouped.extras.admin_group, Some(0), "--group is not admin");
    assert_eq!(flagged.expect("parses").extras.admin_group, Some(65534));
    Ok(())
}

#[test]
fn bad_flags_exit_2() {
    let e = p(&["switchyard", "--bogus"]).expect_err("rejected");
    assert_eq!(e.code, 2);
    let e = p(&["switchyard", "--mode", "999"]).expect_err("rejected");
    assert_eq!(e.code, 2);
    let h = p(&["switchyard", "--help"]).expect_err("help");
    assert_eq!(h.code, 0);
    assert!(h.message.contains("--unix"));
}
