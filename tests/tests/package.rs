//! The Debian package: built with cargo-deb, installed with dpkg, the
//! installed binary run under its own and its compatibility names, then
//! purged. Needs root (dpkg), cargo-deb and binutils (tests/run.sh
//! installs them). The installed binary is stripped; its debug symbols
//! are left beside the package.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package even when an assertion fails.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "switchyard"])
            .output();
    }
}

#[test]
fn deb_builds_installs_and_runs() {
    switchyard_tests::preflight().expect("preflight");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = run(Command::new("bash").arg(root.join("deploy/package.sh")));
    let deb = built
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(|l| root.join(l.trim()))
        .unwrap_or_else(|| panic!("package.sh printed no .deb path:\n{built}"));
    let _purge = Purge;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let version = run(Command::new("/usr/bin/switchyard").arg("--version"));
    // Stripped, with its debug symbols apart and linked by debuglink.
    let sections = run(Command::new("readelf").args(["-S", "-W", "/usr/bin/switchyard"]));
    assert!(
        !sections.contains(".debug_info") && !sections.contains(".symtab"),
        "the installed binary is not stripped:\n{sections}"
    );
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    let debug = root.join("target/debian/switchyard.debug");
    let symbols = run(Command::new("readelf").args(["-S", "-W"]).arg(&debug));
    assert!(symbols.contains(".debug_info"), "{symbols}");
    assert!(version.starts_with("switchyard "), "{version}");
    for f in [
        "/usr/share/man/man1/switchyard.1.gz",
        "/usr/share/bash-completion/completions/switchyard",
        "/usr/share/zsh/vendor-completions/_switchyard",
        "/usr/share/fish/vendor_completions.d/switchyard.fish",
        "/lib/systemd/system/switchyard.service",
        "/lib/systemd/system/switchyard@.service",
        "/etc/switchyard/switchyard.yaml",
        "/usr/share/doc/switchyard/examples/vxlan.yaml",
        "/usr/share/switchyard/grafana/switchyard.json",
        "/usr/share/switchyard/prometheus/switchyard-rules.yml",
    ] {
        assert!(Path::new(f).exists(), "{f} is not installed");
    }
    run(Command::new("/usr/bin/switchyard")
        .args(["check-config", "/etc/switchyard/switchyard.yaml"]));
    // The compatibility names sit apart from Debian's uml-utilities and
    // vde-switch, and behave as those programs.
    let uml = Command::new("/usr/lib/switchyard/compat/uml_switch")
        .arg("-bogus")
        .output()
        .expect("run compat uml_switch");
    assert_eq!(uml.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&uml.stderr).contains("uml_switch [ -unix"));
    let vde = run(Command::new("/usr/lib/switchyard/compat/vde_switch").arg("-v"));
    assert!(vde.contains("VDE 2.3.2 compatible"), "{vde}");
    if Path::new("/usr/bin/uml_switch").exists() {
        let theirs = std::fs::canonicalize("/usr/bin/uml_switch").expect("resolve uml_switch");
        assert_ne!(
            theirs,
            Path::new("/usr/bin/switchyard"),
            "Debian's uml_switch was replaced"
        );
    }
    run(Command::new("systemd-analyze").args([
        "verify",
        "--man=no",
        "/lib/systemd/system/switchyard.service",
    ]));
    run(Command::new("dpkg").args(["--purge", "switchyard"]));
    assert!(!Path::new("/usr/bin/switchyard").exists());
    assert!(!Path::new("/usr/lib/switchyard/compat/uml_switch").exists());
}
