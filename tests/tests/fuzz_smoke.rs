//! A bounded run of every cargo-fuzz target in fuzz/ (the control
//! handshake, the engine's frame path, MAC-NAT outbound and both ways,
//! stream framing, the VXLAN header, the YAML loader, software
//! segmentation, the pcap port's checksum completion and segmentation
//! plan, the tap's virtio-net header, VLAN tagging, `--port` specs,
//! control-socket requests and the vhost-user port's rings): each starts from its
//! seed corpus in fuzz/corpus/ and runs for [`SECONDS_PER_TARGET`]; any
//! crash, failed check, timeout or out-of-memory fails the test, which
//! prints the executions per target. New inputs go to a temp dir, so the
//! committed corpus is left as it is; a crash's input is kept in
//! fuzz/artifacts/TARGET/.
//!
//! Needs cargo-fuzz and the nightly toolchain (tests/run.sh installs
//! both) and fails without them. The sanitizer build goes to fuzz/target,
//! apart from the workspace's target dir, so it neither clobbers nor
//! locks the workspace build.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use switchyard_tests::TempDir;

/// The targets, as named in fuzz/Cargo.toml.
const TARGETS: [&str; 14] = [
    "handshake",
    "engine",
    "macnat_outbound",
    "macnat_inbound",
    "stream_framing",
    "vxlan",
    "yaml",
    "gso",
    "pcap",
    "tap_vnet",
    "vlan",
    "port_spec",
    "control_request",
    "vhost_rings",
];
/// How long each target runs.
const SECONDS_PER_TARGET: u32 = 15;
/// One input taking longer than this is reported as a hang.
const INPUT_TIMEOUT_SECONDS: u32 = 25;
/// Fewer executions than this means the target did not really run.
const MIN_EXECS: u64 = 500;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `rustup run nightly cargo fuzz ARGS` in the repository root, with the
/// environment of this test's own cargo run removed: the fuzz build must
/// use nightly's cargo and fuzz/target, not this build's cargo, target dir
/// or flags.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"])
        .args(args)
        .current_dir(repo_root());
    for var in [
        "CARGO",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn output(cmd: &mut Command, what: &str) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot run {what} ({cmd:?})"))
}

/// Fails with what to install when cargo-fuzz or nightly is missing.
fn preflight() -> Result<()> {
    let rustup = output(
        Command::new("rustup").args(["run", "nightly", "rustc", "--version"]),
        "rustup (install Rust with rustup)",
    )?;
    ensure!(
        rustup.status.success(),
        "the nightly toolchain is missing: `rustup toolchain install nightly --profile minimal` \
         (tests/run.sh does it): {}",
        String::from_utf8_lossy(&rustup.stderr).trim()
    );
    let fuzz = output(&mut cargo_fuzz(&["--version"]), "cargo fuzz")?;
    ensure!(
        fuzz.status.success(),
        "cargo-fuzz is missing: `cargo install cargo-fuzz --locked` (tests/run.sh does it): {}",
        String::from_utf8_lossy(&fuzz.stderr).trim()
    );
    Ok(())
}

/// What one bounded run reported.
#[derive(Debug)]
struct Run {
    execs: u64,
    seconds: f64,
    peak_rss_mb: u64,
}

/// The value of libFuzzer's final `stat::NAME: VALUE` line.
fn stat(log: &str, name: &str) -> Option<u64> {
    let key = format!("stat::{name}:");
    log.lines()
        .find_map(|l| l.trim().strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

fn run_target(target: &str, scratch: &Path) -> Result<Run> {
    let root = repo_root();
    let seeds = root.join("fuzz/corpus").join(target);
    let n_seeds = std::fs::read_dir(&seeds)
        .with_context(|| format!("reading the seed corpus {}", seeds.display()))?
        .count();
    ensure!(n_seeds > 0, "the seed corpus {} is empty", seeds.display());
    let fresh = scratch.join(target);
    std::fs::create_dir_all(&fresh)?;
    let artifacts = root.join("fuzz/artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let (fresh_s, seeds_s) = (fresh.display().to_string(), seeds.display().to_string());
    let flags = [
        format!("-max_total_time={SECONDS_PER_TARGET}"),
        format!("-timeout={INPUT_TIMEOUT_SECONDS}"),
        "-rss_limit_mb=2048".to_string(),
        "-print_final_stats=1".to_string(),
        format!("-artifact_prefix={}/", artifacts.display()),
    ];
    let mut args = vec!["run", target, &fresh_s, &seeds_s, "--"];
    args.extend(flags.iter().map(String::as_str));
    let t0 = Instant::now();
    let out = output(&mut cargo_fuzz(&args), &format!("cargo fuzz run {target}"))?;
    let seconds = t0.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || log.contains("Test unit written to") {
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}); the input is in {}; reproduce with \
             `cargo +nightly fuzz run {target} ARTIFACT`:\n{}",
            out.status,
            artifacts.display(),
            tail.join("\n")
        );
    }
    let execs = stat(&log, "number_of_executed_units")
        .with_context(|| format!("{target}: no final stats in the output:\n{log}"))?;
    ensure!(
        execs >= MIN_EXECS,
        "{target} ran only {execs} inputs in {seconds:.0} s: it is not really fuzzing"
    );
    Ok(Run {
        execs,
        seconds,
        peak_rss_mb: stat(&log, "peak_rss_mb").unwrap_or(0),
    })
}

#[test]
fn every_fuzz_target_runs_clean() -> Result<()> {
    preflight()?;
    let t0 = Instant::now();
    let build = output(&mut cargo_fuzz(&["build"]), "cargo fuzz build")?;
    ensure!(
        build.status.success(),
        "cargo fuzz build failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let build_time = t0.elapsed();
    let list = output(&mut cargo_fuzz(&["list"]), "cargo fuzz list")?;
    let mut listed: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    listed.sort();
    let mut ours: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    ours.sort();
    ensure!(
        listed == ours,
        "fuzz/Cargo.toml has targets {listed:?}, this test runs {ours:?}: add the new ones here"
    );
    let scratch = TempDir::new("fuzz")?;
    let mut report = vec![format!(
        "fuzz smoke: build {:.0} s; {SECONDS_PER_TARGET} s per target",
        build_time.as_secs_f64()
    )];
    for target in TARGETS {
        let r = run_target(target, scratch.path())?;
        report.push(format!(
            "  {target:<16} {:>9} execs in {:>4.1} s ({:>6.0}/s, peak RSS {} MB)",
            r.execs,
            r.seconds,
            r.execs as f64 / r.seconds.max(0.001),
            r.peak_rss_mb
        ));
    }
    report.push(format!("total {:.0} s", t0.elapsed().as_secs_f64()));
    println!("{}", report.join("\n"));
    Ok(())
}
