//! `/metrics` on both binaries: the real controller (`serve --http`) and
//! the real agent (`run --metrics`) with real probes, a real deployment of
//! a failing package through them into a copy of the cached Debian rootfs,
//! both endpoints scraped over HTTP on loopback, and each body checked by
//! Prometheus's own `promtool check metrics`.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;
#[allow(dead_code, reason = "shared with alerts.rs, which uses all of it")]
mod alerts {
    pub mod receiver;
}

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::agents::{Fleet, Proc};
use support::{ebpf_or_skip, eventually, failing_hello, rootfs};

/// GET `path` on `addr` (HTTP/1.0, so the body ends at close): the status
/// and the body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n{auth}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// `name{labels} value` lines of a body, keyed by everything before the value.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of family `name` (whatever its labels).
fn family_sum(s: &BTreeMap<String, f64>, name: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// The address a process logged after `prefix` (e.g. "backstop: http on ").
fn logged_addr(p: &Proc, prefix: &str) -> SocketAddr {
    assert!(
        eventually(Duration::from_secs(20), || p.log().contains(prefix)),
        "no {prefix:?} line: {}",
        p.log()
    );
    let log = p.log();
    let line = log.lines().find(|l| l.contains(prefix)).unwrap();
    line.split(prefix).nth(1).unwrap().trim().parse().unwrap()
}

/// `promtool check metrics` on `body`: the format Prometheus itself reads,
/// and its naming lints (units, `_total` on counters).
fn promtool(body: &str, what: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the {what}'s body: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// None (skipping loudly) without promtool, except under CI, where its
/// absence fails.
fn promtool_or_skip() -> Option<()> {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return Some(());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "promtool is missing under CI: cargo xtask setup installs the prometheus package"
    );
    eprintln!("SKIPPED: promtool not installed (apt-get install prometheus, or cargo xtask setup)");
    None
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one deployment between two scrapes, checked in the order it runs"
)]
fn both_endpoints_count_a_rolled_back_deployment_and_pass_promtool() {
    let Some(_g) = ebpf_or_skip("metrics of a deployment") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let Some(()) = promtool_or_skip() else { return };
    let fleet = Fleet::new("metrics-e2e");
    let base = PathBuf::from("/var/tmp").join(format!("backstop-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let root = base.join("root");
    let copied = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the rootfs");
    let bad = failing_hello(&base);
    let manifest = support::deploys::hello_manifest(&base, &root, &bad);
    // An Alertmanager on loopback, so an alert delivery is counted by sink.
    let rt = support::fleet::runtime();
    let rx = rt.block_on(alerts::receiver::Receiver::start(&[]));
    let config = base.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\ninitial_backoff = \"20ms\"\n[[alerts.sink]]\ntype = \"alertmanager\"\nname = \"am-metrics\"\nurl = \"{}\"\n",
            rx.url()
        ),
    )
    .unwrap();
    let serve = fleet.serve_with(&[
        "--config",
        config.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ]);
    let http = logged_addr(&serve, "backstop: http on ");
    let agent = Proc::spawn(
        fleet
            .agent_cmd(&base.join("agent-data"))
            .args(["--metrics", "127.0.0.1:0"]),
    );
    let metrics = logged_addr(&agent, "backstop-agent: metrics on ");
    fleet.wait_connected(&agent);

    let (code, body) = get(metrics, "/metrics", None);
    assert_eq!(code, 200, "{body}");
    let agent_before = samples(&body);
    let (code, body) = get(http, "/metrics", None);
    assert_eq!(code, 200, "{body}");
    let ctl_before = samples(&body);
    assert_eq!(ctl_before["backstop_agents_connected"], 1.0, "{body}");
    assert_eq!(get(http, "/nothing", None).0, 404);

    let (out, id) = support::deploys::deploy_json(&fleet, &agent, &manifest, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "rolled back: {}\nagent: {}",
        String::from_utf8_lossy(&out.stdout),
        agent.log()
    );
    assert!(eventually(Duration::from_secs(20), || {
        fleet.json(&["show", &id, "--json"])["deployment"]["state"] == "rolled_back"
    }));
    assert!(
        eventually(Duration::from_secs(30), || !rx.got().is_empty()),
        "the receiver never got the rollback's alert"
    );
    let stored = fleet.windows(&id).len() as f64;
    assert!(stored > 0.0, "the deployment stored windows");

    // The controller: what this deployment did, under its own labels.
    let body = eventually_body(http, |s| {
        s.get("backstop_alert_deliveries_total{sink=\"am-metrics\"}")
            .copied()
            >= Some(1.0)
    });
    promtool(&body, "controller");
    let ctl = samples(&body);
    let moved =
        |k: &str| ctl.get(k).copied().unwrap_or(0.0) - ctl_before.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        moved("backstop_deployments_total{state=\"rolled_back\",decision=\"rollback\"}"),
        1.0,
        "{body}"
    );
    assert_eq!(
        moved("backstop_decisions_total{verdict=\"rollback\"}"),
        1.0,
        "{body}"
    );
    assert_eq!(
        moved("backstop_decision_latency_seconds_count"),
        1.0,
        "{body}"
    );
    assert_eq!(
        moved("backstop_decision_latency_seconds_bucket{le=\"+Inf\"}"),
        1.0,
        "{body}"
    );
    let ingested = moved("backstop_windows_ingested_total{host=\"web-1\",stream=\"live\"}");
    assert!(
        ingested >= stored,
        "the controller counted {ingested} live windows of web-1, and stored {stored}: {body}"
    );
    assert!(
        ctl.contains_key("backstop_lost_events_total{host=\"web-1\"}"),
        "{body}"
    );
    assert_eq!(ctl["backstop_agents_connected"], 1.0, "{body}");

    // The agent: its probes ran (the kernel counted them while --metrics
    // serves), and it queued this deployment's windows.
    let (code, body) = get(metrics, "/metrics", None);
    assert_eq!(code, 200, "{body}");
    promtool(&body, "agent");
    let after = samples(&body);
    let grew = |name: &str| family_sum(&after, name) - family_sum(&agent_before, name);
    assert!(grew("backstop_agent_probe_runs_total") > 0.0, "{body}");
    assert!(
        grew("backstop_agent_probe_run_time_seconds_total") > 0.0,
        "{body}"
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("backstop_agent_probe_runs_total{program=\"")),
        "one series per program: {body}"
    );
    let queued = grew("backstop_agent_windows_queued_total");
    assert!(
        queued >= stored,
        "the agent queued {queued} windows, the controller stored {stored}: {body}"
    );
    assert!(
        after["backstop_agent_resident_memory_bytes"] > 1e6,
        "{body}"
    );
    assert_eq!(after["backstop_agent_deployments_running"], 0.0, "{body}");
    assert!(
        after.contains_key("backstop_agent_outbox_messages"),
        "{body}"
    );

    // Every end-to-end deployment test: the replay gives the stored verdict.
    let replay = fleet.cli(&["replay", &id, "--json"]);
    assert_eq!(replay.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&replay.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let shown = fleet.json(&["show", &id, "--json"]);
    assert_eq!(r["verdict"], shown["decisions"][0]["verdict"], "{r}");
    assert_eq!(r["reasons"], shown["decisions"][0]["reasons"], "{r}");
    assert_eq!(r["reproduced"], true, "{r}");
    drop(agent);
    drop(serve);
    let _ = std::fs::remove_dir_all(&base);
}

/// Scrape until `ready` holds (an alert's delivery trails the rollback).
fn eventually_body(addr: SocketAddr, ready: impl Fn(&BTreeMap<String, f64>) -> bool) -> String {
    let mut body = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        body = get(addr, "/metrics", None).1;
        ready(&samples(&body))
    });
    assert!(ok, "never ready: {body}");
    body
}

#[test]
fn a_non_loopback_address_needs_a_token_and_a_request_without_it_gets_401() {
    let fleet = Fleet::new("metrics-token");
    let refused = fleet
        .backstop()
        .args([
            "serve",
            "--listen",
            &fleet.addr.to_string(),
            "--http",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--http 0.0.0.0:0") && err.contains("--http-token-file"),
        "the error names the flags: {err}"
    );
    let agent = Command::new(support::agent())
        .args([
            "run",
            "--controller",
            &fleet.addr.to_string(),
            "--bundle",
            "/nonexistent",
        ])
        .args(["--data", "/nonexistent", "--metrics", "0.0.0.0:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&agent.stderr);
    assert_eq!(agent.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--metrics 0.0.0.0:0") && err.contains("--metrics-token-file"),
        "the error names the flags: {err}"
    );

    let token = fleet.data.join("http.token");
    std::fs::write(&token, "s3cret-metrics\n").unwrap();
    let serve = fleet.serve_with(&[
        "--http",
        "0.0.0.0:0",
        "--http-token-file",
        token.to_str().unwrap(),
    ]);
    let bound = logged_addr(&serve, "backstop: http on ");
    let addr: SocketAddr = format!("127.0.0.1:{}", bound.port()).parse().unwrap();
    assert_eq!(get(addr, "/metrics", None).0, 401);
    assert_eq!(get(addr, "/metrics", Some("s3cret-metric")).0, 401);
    assert_eq!(get(addr, "/metrics", Some("s3cret-metrics-")).0, 401);
    let (code, body) = get(addr, "/metrics", Some("s3cret-metrics"));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("# TYPE backstop_agents_connected gauge"),
        "{body}"
    );
}
