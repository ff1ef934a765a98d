//! Helpers for the operations tests (`tests/tests/ops_*.rs`): the config
//! file, `switchyard ctl`, the metrics endpoint scraped by a real
//! Prometheus, and the systemd units and readiness protocol.
//!
//! The tests crate has no JSON or HTTP dependency, so this module carries a
//! small JSON reader, a reader for the Prometheus text format and an
//! HTTP/1.0 GET: enough to check what the daemon and Prometheus say.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::netns::Netns;
use crate::process::{Proc, Stdin};
use crate::switch::{switchyard_bin, Switch, SwitchCmd};
use crate::tools::vde_plug_tap;
use crate::util::{output, unique_name, wait_for, TempDir};

/// The repository root (the tests crate's parent directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `deploy/` in the repository.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// Finds `name` on PATH (or in the sbin directories) or fails naming the
/// Debian package that provides it.
pub fn require_program(name: &str, package: &str) -> Result<PathBuf> {
    crate::util::require_tool(name)
        .map_err(|_| anyhow::anyhow!("required program `{name}` not found (Debian package: {package}; tests/run.sh installs it)"))
}

// ---------------------------------------------------------------------------
// Running the binary: check-config and ctl.

/// What a short command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// From a finished command's output.
    pub fn from_output(o: std::process::Output) -> Outcome {
        Outcome {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Fails unless the exit code is `code`, showing both outputs.
    pub fn expect_code(&self, code: i32, what: &str) -> Result<&Outcome> {
        ensure!(
            self.code == Some(code),
            "{what}: exit code {:?}, expected {code}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        );
        Ok(self)
    }
}

/// Runs the switchyard binary with `args` and waits for it.
pub fn switchyard<I, S>(args: I) -> Result<Outcome>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = switchyard_bin()?;
    Ok(Outcome::from_output(output(Command::new(bin).args(args))?))
}

/// `switchyard check-config FILE`.
pub fn check_config(file: &Path) -> Result<Outcome> {
    switchyard([OsStr::new("check-config"), file.as_os_str()])
}

/// `switchyard ctl -s SOCKET ARGS...` as root.
pub fn ctl(socket: &Path, args: &[&str]) -> Result<Outcome> {
    let mut all: Vec<&OsStr> = vec![OsStr::new("ctl"), OsStr::new("-s"), socket.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    switchyard(all)
}

/// `switchyard ctl -s SOCKET ARGS...`, which must exit 0; returns stdout.
pub fn ctl_ok(socket: &Path, args: &[&str]) -> Result<String> {
    let out = ctl(socket, args)?;
    out.expect_code(0, &format!("switchyard ctl {}", args.join(" ")))?;
    Ok(out.stdout)
}

/// `switchyard ctl -s SOCKET -j ARGS...`, parsed.
pub fn ctl_json(socket: &Path, args: &[&str]) -> Result<Json> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let text = ctl_ok(socket, &all)?;
    parse_json(text.trim()).with_context(|| format!("ctl -j {} printed {text:?}", args.join(" ")))
}

/// The switch's ports as `ctl -j ports` lists them.
pub fn ctl_ports(socket: &Path) -> Result<Vec<Json>> {
    let j = ctl_json(socket, &["ports"])?;
    Ok(j["ports"]
        .as_array()
        .context("ctl -j ports: no ports array")?
        .to_vec())
}

/// The names of the switch's ports.
pub fn port_names(socket: &Path) -> Result<Vec<String>> {
    Ok(ctl_ports(socket)?
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect())
}

/// One row of a human table: column name to cell.
pub type Row = BTreeMap<String, String>;

/// A human table as printed by `ctl ports` / `ctl fdb`: the header's
/// columns and each row's cells (split on runs of two or more spaces is
/// not safe for the PEER column, so cells are cut at the header's column
/// starts).
pub fn parse_table(text: &str) -> Result<(Vec<String>, Vec<Row>)> {
    let mut lines = text.lines();
    let header = lines.next().context("empty table")?;
    let mut starts = Vec::new();
    let mut names = Vec::new();
    let mut prev_space = true;
    for (i, c) in header.char_indices() {
        if !c.is_whitespace() && prev_space {
            starts.push(i);
        }
        prev_space = c.is_whitespace();
    }
    for (k, s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(header.len());
        names.push(header[*s..end].trim().to_string());
    }
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let chars: Vec<char> = line.chars().collect();
        let mut row = BTreeMap::new();
        for (k, s) in starts.iter().enumerate() {
            // Columns are padded by characters, and the header is ASCII.
            let end = if k + 1 < starts.len() {
                starts[k + 1]
            } else {
                usize::MAX
            };
            let cell: String = chars.iter().skip(*s).take(end.saturating_sub(*s)).collect();
            row.insert(names[k].clone(), cell.trim().to_string());
        }
        rows.push(row);
    }
    Ok((names, rows))
}

/// `key: value` lines (`ctl stats`, `ctl fdb flush`, ...).
pub fn parse_key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A command that runs as an unprivileged user: uid 65534 (nobody), gid
/// `gid`, no supplementary groups (`setpriv`).
pub fn as_unprivileged(gid: u32, program: &Path) -> Result<Command> {
    let setpriv = require_program("setpriv", "util-linux")?;
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--reuid=65534".to_string(),
        format!("--regid={gid}"),
        "--clear-groups".to_string(),
    ])
    .arg(program);
    Ok(cmd)
}

/// A command that runs as `uid` with primary group `gid` and exactly
/// `groups` as supplementary groups (`setpriv`). No user or group needs to
/// exist: the kernel takes the numbers as they are.
pub fn as_user(uid: u32, gid: u32, groups: &[u32], program: &Path) -> Result<Command> {
    let setpriv = require_program("setpriv", "util-linux")?;
    let mut cmd = Command::new(setpriv);
    cmd.args([format!("--reuid={uid}"), format!("--regid={gid}")]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg("--").arg(program);
    Ok(cmd)
}

/// One record of a pcap file: its captured length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapRecord {
    /// Bytes of the frame in the file.
    pub captured: u32,
    /// Bytes of the frame on the wire.
    pub original: u32,
}

/// A little-endian, microsecond pcap file read whole: the header's snap
/// length and every record. Fails on a torn record (a file cut inside a
/// record), on a record longer than the snap length, or another format.
pub fn parse_pcap(bytes: &[u8]) -> Result<(u32, Vec<PcapRecord>)> {
    let u32_at = |at: usize| -> Result<u32> {
        let b = bytes
            .get(at..at + 4)
            .with_context(|| format!("pcap: cut at byte {at} of {}", bytes.len()))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    ensure!(
        bytes.len() >= 24,
        "pcap: {} bytes, no file header",
        bytes.len()
    );
    ensure!(
        u32_at(0)? == 0xa1b2_c3d4,
        "pcap: magic {:#x}, not little-endian microsecond pcap",
        u32_at(0)?
    );
    let snaplen = u32_at(16)?;
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        ensure!(
            bytes.len() - at >= 16,
            "pcap: torn record header at byte {at}: {} of 16 bytes",
            bytes.len() - at
        );
        let (captured, original) = (u32_at(at + 8)?, u32_at(at + 12)?);
        ensure!(
            captured <= snaplen && captured <= original,
            "pcap: record at byte {at} has {captured} bytes (snap length {snaplen}, wire {original})"
        );
        let end = at + 16 + captured as usize;
        ensure!(
            end <= bytes.len(),
            "pcap: torn record at byte {at}: {} of {captured} bytes",
            bytes.len() - at - 16
        );
        records.push(PcapRecord { captured, original });
        at = end;
    }
    Ok((snaplen, records))
}

/// The daemon binary at a path an unprivileged user can execute: the
/// built one if nobody can run it, else a copy in `dir` (world-readable).
pub fn bin_for_unprivileged(dir: &Path) -> Result<PathBuf> {
    let bin = switchyard_bin()?;
    let probe = output(as_unprivileged(65534, &bin)?.arg("--version"))?;
    if probe.status.success() {
        return Ok(bin);
    }
    let copy = dir.join("switchyard");
    std::fs::copy(&bin, &copy)
        .with_context(|| format!("copying {} to {}", bin.display(), copy.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}

// ---------------------------------------------------------------------------
// A switch with two vde_plug taps in their own namespaces.

/// A native switch in its own namespace with a VDE directory and a control
/// socket, and two `vde_plug tap://` clients in two more namespaces with
/// addresses `10.N.0.1` and `10.N.0.2` (IPv4 only, so the clients are
/// silent unless a test makes traffic). Fields drop in declaration order:
/// clients, switch, namespaces, temp dir.
#[derive(Debug)]
pub struct PlugLan {
    pub plug_a: Proc,
    pub plug_b: Proc,
    pub sw: Switch,
    pub ns_a: Netns,
    pub ns_b: Netns,
    pub ns_sw: Netns,
    /// The VDE directory.
    pub dir: PathBuf,
    /// The control socket for `switchyard ctl`.
    pub ctl: PathBuf,
    pub tap_a: String,
    pub tap_b: String,
    pub ip_a: String,
    pub ip_b: String,
    pub tmp: TempDir,
}

impl PlugLan {
    /// Starts it all; `extra` goes on the switch's command line.
    pub fn start(tag: &str, net: u8, extra: &[&str]) -> Result<PlugLan> {
        let tmp = TempDir::new(tag)?;
        let ns_sw = Netns::new()?;
        let ns_a = Netns::new()?;
        let ns_b = Netns::new()?;
        // No IPv6 on the clients' taps: router solicitations and MLD
        // reports would re-teach the switch addresses at random moments.
        for ns in [&ns_a, &ns_b] {
            crate::util::run(ns.command("sysctl").args([
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]))?;
        }
        let dir = tmp.join("vde");
        let ctl = tmp.join("control.sock");
        let sw = SwitchCmd::native()?
            .vde(&dir)
            .arg("--control")
            .arg(&ctl)
            .args(extra)
            .start(Some(&ns_sw))?;
        let tap_a = unique_name("sya");
        let tap_b = unique_name("syb");
        let (ip_a, ip_b) = (format!("10.{net}.0.1"), format!("10.{net}.0.2"));
        let plug_a = vde_plug_tap(&ns_a, &dir, &tap_a, &format!("{ip_a}/24"))?;
        let plug_b = vde_plug_tap(&ns_b, &dir, &tap_b, &format!("{ip_b}/24"))?;
        Ok(PlugLan {
            plug_a,
            plug_b,
            sw,
            ns_a,
            ns_b,
            ns_sw,
            dir,
            ctl,
            tap_a,
            tap_b,
            ip_a,
            ip_b,
            tmp,
        })
    }

    /// A pings B (waiting for the path) and B pings A.
    pub fn ping_both_ways(&self) -> Result<()> {
        self.ns_a.ping_eventually(&self.ip_b, 10)?;
        self.ns_b.ping(&self.ip_a, 2)?;
        Ok(())
    }

    /// The `ctl -j ports` entry of the port serving `plug` (its peer names
    /// the client's pid).
    pub fn port_of(&self, plug: &Proc) -> Result<Json> {
        let pid = format!("pid {}", plug.pid());
        let ports = ctl_ports(&self.ctl)?;
        ports
            .iter()
            .find(|p| p["peer"].as_str().is_some_and(|s| s.contains(&pid)))
            .cloned()
            .with_context(|| format!("no port's peer mentions {pid}: {ports:?}"))
    }

    /// MAC addresses of the two taps.
    pub fn macs(&self) -> Result<(String, String)> {
        Ok((
            crate::scenarios::link_mac(&self.ns_a, &self.tap_a)?,
            crate::scenarios::link_mac(&self.ns_b, &self.tap_b)?,
        ))
    }
}

// ---------------------------------------------------------------------------
// A small JSON reader.

/// A JSON value (`switchyard ctl -j` output).
pub type Json = serde_json::Value;

/// Parses one JSON document.
pub fn parse_json(text: &str) -> Result<Json> {
    Ok(serde_json::from_str(text)?)
}

// ---------------------------------------------------------------------------
// HTTP and the Prometheus text format.

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Http {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD path` over HTTP/1.0 to `addr`, reading until the server closes.
/// Call it from inside the right namespace (e.g. [`Netns::run`]).
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> Result<Http> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: switchyard-tests\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the reply to {method} {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Http {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `GET path`.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<Http> {
    http_request(addr, "GET", path)
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A free TCP port on 127.0.0.1 inside `ns`.
pub fn free_port(ns: &Netns) -> Result<u16> {
    ns.run(|| -> Result<u16> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        Ok(l.local_addr()?.port())
    })?
}

/// One sample of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// The parsed exposition: samples plus the `# TYPE` of each family.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
}

impl Exposition {
    /// The samples of metric `name` whose labels include all of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .collect()
    }

    /// The value of the one sample of `name` with `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let found = self.find(name, labels);
        match found.as_slice() {
            [one] => Ok(one.value),
            [] => bail!("no sample {name}{labels:?}"),
            many => bail!("{} samples {name}{labels:?}: {many:?}", many.len()),
        }
    }
}

/// Parses the Prometheus text format (0.0.4).
pub fn parse_exposition(text: &str) -> Result<Exposition> {
    let mut e = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').context("bad TYPE line")?;
            e.types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            e.helps.insert(name.to_string(), help.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        e.samples
            .push(parse_sample(line).with_context(|| format!("line {}: {line:?}", n + 1))?);
    }
    Ok(e)
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line.find(['{', ' ']).context("no value")?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let chars: Vec<char> = r.chars().collect();
        let mut i = 0;
        loop {
            while i < chars.len() && (chars[i] == ',' || chars[i] == ' ') {
                i += 1;
            }
            if chars.get(i) == Some(&'}') {
                i += 1;
                break;
            }
            let start = i;
            while i < chars.len() && chars[i] != '=' {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            ensure!(
                chars.get(i + 1) == Some(&'"'),
                "label {key} has no quoted value"
            );
            i += 2;
            let mut val = String::new();
            loop {
                let c = *chars.get(i).context("unterminated label value")?;
                i += 1;
                match c {
                    '"' => break,
                    '\\' => {
                        let e = *chars.get(i).context("unterminated escape")?;
                        i += 1;
                        val.push(if e == 'n' { '\n' } else { e });
                    }
                    c => val.push(c),
                }
            }
            labels.push((key.trim().to_string(), val));
        }
        let consumed: usize = chars[..i].iter().map(|c| c.len_utf8()).sum();
        rest = &r[consumed..];
    }
    let mut words = rest.split_whitespace();
    let v = words.next().context("no value")?;
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// A Prometheus server started by a test in `ns`, scraping `targets` every
/// second, its data in `dir`. Killed on drop (through its [`Proc`]).
#[derive(Debug)]
pub struct Prometheus {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Prometheus {
    pub fn start(ns: &Netns, dir: &Path, targets: &[SocketAddr]) -> Result<Prometheus> {
        let bin = require_program("prometheus", "prometheus")?;
        std::fs::create_dir_all(dir)?;
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = free_port(ns)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = ns.command(bin);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(dir);
        let mut proc = Proc::spawn("prometheus", cmd, Stdin::Null)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = proc.try_status()? {
                bail!(
                    "prometheus exited ({}) while starting; output:\n{}",
                    crate::process::describe(st),
                    proc.output()
                );
            }
            let ready = ns
                .run(|| http_get(addr, "/-/ready"))?
                .map(|r| r.status == 200)
                .unwrap_or(false);
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "prometheus was not ready on {addr} within 30 s; output:\n{}",
                    proc.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Prometheus { proc, addr })
    }

    /// `GET /api/v1/PATH_AND_QUERY`, which must succeed; returns `data`.
    pub fn api(&self, ns: &Netns, path_and_query: &str) -> Result<Json> {
        let addr = self.addr;
        let path = format!("/api/v1/{path_and_query}");
        let r = ns.run(|| http_get(addr, &path))??;
        ensure!(
            r.status == 200,
            "prometheus {path}: HTTP {}: {}",
            r.status,
            r.body
        );
        let j = parse_json(r.body.trim()).with_context(|| format!("prometheus {path}"))?;
        ensure!(
            j["status"].as_str() == Some("success"),
            "prometheus {path}: {}",
            r.body
        );
        Ok(j["data"].clone())
    }

    /// An instant query: the `result` vector.
    pub fn query(&self, ns: &Netns, promql: &str) -> Result<Vec<Json>> {
        let data = self.api(ns, &format!("query?query={}", url_encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until `promql` returns a non-empty result for which `ok` holds.
    pub fn wait_query(
        &self,
        ns: &Netns,
        promql: &str,
        timeout: Duration,
        ok: impl Fn(&[Json]) -> bool,
    ) -> Result<Vec<Json>> {
        let mut last = Vec::new();
        let r = wait_for(timeout, &format!("prometheus query {promql}"), || {
            last = self.query(ns, promql)?;
            Ok((!last.is_empty() && ok(&last)).then(|| last.clone()))
        });
        r.with_context(|| {
            let targets = self
                .api(ns, "targets")
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|e| format!("{e:#}"));
            format!(
                "last result: {last:?}\ntargets: {targets}\nprometheus output:\n{}",
                self.proc.output()
            )
        })
    }
}

/// The numeric value of one instant-vector element (`"value": [ts, "v"]`).
pub fn sample_value(elem: &Json) -> Option<f64> {
    elem["value"][1].as_str().and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------
// systemd.

/// A unix datagram socket standing in for systemd's notify socket.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    pub path: PathBuf,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> Result<NotifySocket> {
        let sock =
            UnixDatagram::bind(path).with_context(|| format!("binding {}", path.display()))?;
        Ok(NotifySocket {
            sock,
            path: path.to_path_buf(),
        })
    }

    /// The next message, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Result<Option<String>> {
        let mut buf = vec![0u8; 4096];
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.sock.recv(&mut buf) {
            Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).context("receiving a notification"),
        }
    }
}

/// Copies unit file `src` into `dir` under the same name, with every
/// `/usr/bin/switchyard` replaced by `bin`; returns the copy's path.
pub fn unit_copy(src: &Path, dir: &Path, bin: &Path) -> Result<PathBuf> {
    let text =
        std::fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
    ensure!(
        text.contains("/usr/bin/switchyard"),
        "{} does not run /usr/bin/switchyard",
        src.display()
    );
    let text = text.replace("/usr/bin/switchyard", &bin.display().to_string());
    let name = src.file_name().context("unit without a name")?;
    let out = dir.join(name);
    std::fs::write(&out, text)?;
    Ok(out)
}

/// `systemd-analyze verify [--man=no] UNIT` in the unit's directory.
pub fn systemd_verify(unit: &Path, check_man: bool) -> Result<Outcome> {
    let sa = require_program("systemd-analyze", "systemd")?;
    let mut cmd = Command::new(sa);
    cmd.arg("verify");
    if !check_man {
        cmd.arg("--man=no");
    }
    cmd.arg(unit);
    if let Some(d) = unit.parent() {
        cmd.current_dir(d);
    }
    Ok(Outcome::from_output(output(&mut cmd)?))
}

/// Where `text` says `line L` and `column C` (or `:L:C`): the first
/// location found, as (line, column).
pub fn error_location(text: &str) -> Option<(u32, u32)> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        if w.eq_ignore_ascii_case("line") && i + 3 < words.len() {
            let l = words[i + 1].trim_end_matches(':').parse().ok();
            let is_col = words[i + 2].eq_ignore_ascii_case("column")
                || words[i + 2].eq_ignore_ascii_case("col");
            let c = words[i + 3].trim_end_matches(':').parse().ok();
            if let (Some(l), true, Some(c)) = (l, is_col, c) {
                return Some((l, c));
            }
        }
    }
    // FILE:L:C
    for w in &words {
        let parts: Vec<&str> = w.trim_end_matches(':').rsplitn(3, ':').collect();
        if parts.len() == 3 && !parts[2].is_empty() {
            if let (Ok(c), Ok(l)) = (parts[0].parse(), parts[1].parse()) {
                return Some((l, c));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_reader() {
        let e = parse_exposition(
            "# HELP m_total Things.\n# TYPE m_total counter\n\
             m_total{port=\"a,b\",type=\"unix\"} 7\nm_total{port=\"q\\\"\"} 1.5\nup 1\n",
        )
        .expect("parses");
        assert_eq!(e.types["m_total"], "counter");
        assert_eq!(e.value("m_total", &[("port", "a,b")]).expect("one"), 7.0);
        assert_eq!(e.value("m_total", &[("port", "q\"")]).expect("one"), 1.5);
        assert_eq!(e.value("up", &[]).expect("one"), 1.0);
        assert!(e.value("m_total", &[]).is_err());
    }

    #[test]
    fn tables_and_locations() {
        let (h, rows) = parse_table(
            "NAME    TYPE  PEER\nunix:1  unix  vdeplug: user=root pid=3\nlan     mcast group ↔ x\n",
        )
        .expect("table");
        assert_eq!(h, vec!["NAME", "TYPE", "PEER"]);
        assert_eq!(rows[0]["PEER"], "vdeplug: user=root pid=3");
        assert_eq!(rows[1]["NAME"], "lan");
        assert_eq!(
            error_location("config file a.yaml: error: line 3 column 12: bad"),
            Some((3, 12))
        );
        assert_eq!(error_location("/tmp/a.yaml:4:7: bad"), Some((4, 7)));
        assert_eq!(
            error_location("config file a.yaml: ports[1].name: twice"),
            None
        );
    }
}
