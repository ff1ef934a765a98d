//! What ships for monitoring (deploy/grafana/switchyard.json and
//! deploy/prometheus/switchyard-rules.yml): the alerting rules pass
//! `promtool check rules` and their unit tests, and every query of the
//! dashboard and the rules names only metrics a running daemon exports
//! and parses as PromQL.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_tests::ops::{deploy_dir, http_get, parse_json, require_program, Json};
use switchyard_tests::proto::{self, Client, BROADCAST};
use switchyard_tests::scenarios::pass_frame;
use switchyard_tests::util::output;
use switchyard_tests::{preflight, unique_name, Netns, SwitchCmd, TempDir};

const METRICS: &str = "127.0.0.1:9590";

/// `promtool ARGS` in `dir`: its exit code and everything it printed.
fn promtool(dir: &Path, args: &[&str]) -> Result<(Option<i32>, String)> {
    let bin = require_program("promtool", "prometheus")?;
    let o = output(Command::new(bin).current_dir(dir).args(args))?;
    Ok((
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    ))
}

/// The rules file is valid and its unit tests
/// (deploy/prometheus/switchyard-rules.test.yml) pass. A missing promtool
/// fails the test.
#[test]
fn alerting_rules_pass_promtool_and_their_unit_tests() -> Result<()> {
    let dir = deploy_dir().join("prometheus");
    let (code, out) = promtool(&dir, &["check", "rules", "switchyard-rules.yml"])?;
    ensure!(code == Some(0), "promtool check rules: {out}");
    let (code, out) = promtool(&dir, &["test", "rules", "switchyard-rules.test.yml"])?;
    ensure!(
        code == Some(0) && out.contains("SUCCESS"),
        "promtool test rules: {out}"
    );
    Ok(())
}

/// The metric family names a scrape shows: every sample's name and every
/// `# HELP` line's (so a family without samples counts too).
fn exported_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|l| match l.strip_prefix("# HELP ") {
            Some(rest) => rest.split_whitespace().next(),
            None if l.starts_with('#') || l.trim().is_empty() => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(String::from)
        .collect()
}

/// Scrapes a daemon with ports of several kinds (unix clients passing
/// frames, udp, pcap with MAC-NAT on a veth pair) so its labelled families
/// have samples.
fn scrape_a_busy_switch() -> Result<String> {
    let tmp = TempDir::new("mon")?;
    let ns = Netns::new()?;
    let (nic, lan) = (unique_name("mn"), unique_name("ml"));
    ns.ip(["link", "add", &nic, "type", "veth", "peer", "name", &lan])?;
    ns.ip(["link", "set", &nic, "up"])?;
    ns.ip(["link", "set", &lan, "up"])?;
    let dir = tmp.join("vde");
    let _sw = SwitchCmd::native()?
        .arg("--vde")
        .arg(&dir)
        .arg("--control")
        .arg(tmp.join("control.sock"))
        .args(["--metrics", METRICS])
        .args(["--port", &format!("pcap,device={nic},mac_nat=on")])
        .args(["--port", "udp,local=127.0.0.1:40101,remote=127.0.0.1:40102"])
        .expect_socket(&dir.join("ctl"))
        .start(Some(&ns))?;
    let scratch = tmp.path().to_path_buf();
    let (a, b) = ns.run(|| -> Result<(Client, Client)> {
        Ok((
            Client::attach(&dir, 0, &scratch, proto::mac(0xa7))?,
            Client::attach(&dir, 0, &scratch, proto::mac(0xb7))?,
        ))
    })??;
    pass_frame(&a, &b, BROADCAST, 60, 1)?;
    pass_frame(&b, &a, a.mac(), 300, 2)?;
    std::thread::sleep(Duration::from_millis(300));
    let addr: SocketAddr = METRICS.parse()?;
    let r = ns.run(|| http_get(addr, "/metrics"))??;
    ensure!(r.status == 200, "GET /metrics: HTTP {}", r.status);
    Ok(r.body)
}

/// Every string under `key` anywhere in `v`.
fn strings_under(v: &Json, key: &str, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                match x {
                    Json::String(s) if k == key => out.push(s.clone()),
                    _ => strings_under(x, key, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|x| strings_under(x, key, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, strings, ranges and `by (…)`-style label lists that are
/// neither functions nor keywords.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
    ];
    // Blank out what is not an expression: strings, {…}, […], and the
    // label lists after by/without/on/ignoring.
    let mut plain = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => depth_brace += 1,
            (None, '}') => depth_brace -= 1,
            (None, '[') => depth_bracket += 1,
            (None, ']') => depth_bracket -= 1,
            (None, c) if depth_brace == 0 && depth_bracket == 0 => {
                plain.push(c);
                continue;
            }
            _ => {}
        }
        plain.push(' ');
    }
    let mut names = Vec::new();
    let mut rest = plain.as_str();
    let mut skip_list = false;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':') {
        let word_len = rest[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        let after = rest[start + word_len..].trim_start();
        let before = &rest[..start];
        rest = &rest[start + word_len..];
        if skip_list {
            // Inside a label list until its closing parenthesis.
            if before.contains(')') {
                skip_list = false;
            } else {
                continue;
            }
        }
        let number = before.ends_with(|c: char| c.is_ascii_digit() || c == '.');
        if KEYWORDS.contains(&word) {
            skip_list = matches!(word, "by" | "without" | "on" | "ignoring")
                || (word.starts_with("group_") && after.starts_with('('));
            continue;
        }
        // A function, or an aggregation with its label list first.
        let aggregation =
            after.starts_with("by ") || after.starts_with("by(") || after.starts_with("without");
        if after.starts_with('(') || aggregation || number {
            continue;
        }
        names.push(word.to_string());
    }
    names
}

/// Every PromQL expression of the dashboard: panel targets, and the
/// variables' `label_values(METRIC, label)` queries reduced to METRIC.
fn dashboard_queries(dashboard: &Json) -> Vec<String> {
    let mut exprs = Vec::new();
    strings_under(&dashboard["panels"], "expr", &mut exprs);
    let mut vars = Vec::new();
    strings_under(&dashboard["templating"], "definition", &mut vars);
    for v in vars {
        if let Some(args) = v
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        {
            if let Some((metric, _label)) = args.rsplit_once(',') {
                exprs.push(metric.trim().to_string());
            }
        }
    }
    exprs
}

/// The expressions with Grafana's variables given values Prometheus
/// accepts.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$port", ".*")
}

/// Every rule expression of the rules file (`expr: |` blocks and one-line
/// `expr:`).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(v) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        if v.trim() == "|" {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            exprs.push(block.trim().to_string());
        } else {
            exprs.push(v.trim().to_string());
        }
    }
    exprs
}

#[test]
fn the_query_reader_finds_metric_names() {
    for (expr, want) in [
        (
            r#"sum by (port, reason) (rate(switchyard_port_drops_total{job=~"$job", port=~"a|b"}[$__rate_interval])) > 0"#,
            &["switchyard_port_drops_total"][..],
        ),
        (
            "switchyard_fdb_entries{a=\"x\"} / switchyard_fdb_max_entries > 0.9",
            &["switchyard_fdb_entries", "switchyard_fdb_max_entries"],
        ),
        (
            "count_over_time((increase(x_total[1m]) > 0)[15m:1m]) >= 3",
            &["x_total"],
        ),
        ("8 * rate(up[5m]) and on (instance) y", &["up", "y"]),
        ("1e3 * z", &["z"]),
    ] {
        assert_eq!(metric_names(expr), want, "{expr}");
    }
}

/// The dashboard is JSON with `job` and `instance` variables; every query
/// in it and in the rules names at least one metric, only metrics a
/// running daemon exports (read from its scrape, samples and `# HELP`
/// lines), and parses as PromQL (promtool checks them as recording
/// rules).
#[test]
fn dashboard_and_rules_query_only_exported_metrics() -> Result<()> {
    preflight()?;
    let exported = exported_names(&scrape_a_busy_switch()?);
    ensure!(
        exported.contains("switchyard_port_drops_total")
            && exported.contains("switchyard_macnat_entries"),
        "the scrape lacks families: {exported:?}"
    );
    let dash_path = deploy_dir().join("grafana/switchyard.json");
    let dashboard = parse_json(&std::fs::read_to_string(&dash_path)?)
        .with_context(|| format!("{} is not JSON", dash_path.display()))?;
    let mut vars = Vec::new();
    strings_under(&dashboard["templating"], "name", &mut vars);
    for v in ["job", "instance"] {
        ensure!(vars.iter().any(|n| n == v), "no ${v} variable: {vars:?}");
    }
    let queries = dashboard_queries(&dashboard);
    ensure!(queries.len() >= 20, "few queries: {queries:#?}");
    let rules = rule_exprs(&std::fs::read_to_string(
        deploy_dir().join("prometheus/switchyard-rules.yml"),
    )?);
    ensure!(rules.len() >= 5, "few rules: {rules:#?}");
    let mut checked = String::from("groups:\n  - name: queries\n    rules:\n");
    for (i, q) in queries.iter().chain(&rules).enumerate() {
        let names = metric_names(q);
        ensure!(!names.is_empty(), "{q:?} names no metric");
        for n in names {
            ensure!(
                exported.contains(&n),
                "{q:?} reads {n}, which the daemon does not export"
            );
        }
        checked.push_str(&format!(
            "      - record: query_{i}\n        expr: {}\n",
            Json::String(as_promql(q))
        ));
    }
    let tmp = TempDir::new("monq")?;
    std::fs::write(tmp.join("queries.yml"), checked)?;
    let (code, out) = promtool(tmp.path(), &["check", "rules", "queries.yml"])?;
    ensure!(code == Some(0), "the queries do not parse: {out}");
    Ok(())
}
