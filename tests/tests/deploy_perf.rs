//! A service whose latency regresses after an install, caught by the HTTP
//! probe's performance check (issue 15's Must-hold): the real controller
//! and agent over QUIC, real dpkg in a copy of the cached Debian rootfs,
//! and a real HTTP server on loopback that this test owns. The server
//! reads `/etc/slowpkg/delay_ms` inside the root on every request and
//! waits that long before it answers 200, so the package's version sets
//! the service's speed, as a config change would.
//!
//! Version 1.0 (20 ms) is on the host. Version 2.0 sets 100 ms: every
//! probe still answers 200 within its 450 ms budget (wide, so a loaded
//! machine's scheduling delay is not a failed probe), so only the
//! performance check (the agent's baseline before the install against the
//! monitoring period's probes, Mann-Whitney with the effect guard) can
//! see it; the deployment is rolled back while it is being monitored and
//! the root is exactly as before. The control installs a 2.0 that keeps
//! 20 ms, and is committed.
//!
//! The guard is `max_latency_increase = 1.0` (the median must double)
//! rather than the default 20%: six test suites share two CPU cores here,
//! and a 20 ms sleep can wake a few ms late when they all build at once.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::agents::{Fleet, Proc};
use support::deploys::{
    Deployed, Scratch, assert_replays, build_deb, deploy_until, differences, kind, root_walk,
};
use support::{ebpf_or_skip, rootfs};

const DELAY_FILE: &str = "/etc/slowpkg/delay_ms";
const BASE_MS: u64 = 20;
const SLOW_MS: u64 = 100;
const BASELINE: usize = 10;

/// A real HTTP/1.1 server on 127.0.0.1: each request waits the number of
/// milliseconds in `root`'s delay file (0 when it is missing), then gets
/// 200. Stopped on drop.
struct Service {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Service {
    fn start(root: &Path) -> Service {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (file, flag) = (root.join(DELAY_FILE.trim_start_matches('/')), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let file = file.clone();
                std::thread::spawn(move || answer(conn, &file));
            }
        });
        Service { port, stop }
    }
}

fn answer(mut conn: TcpStream, delay_file: &Path) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let ms: u64 = std::fs::read_to_string(delay_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(ms));
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn manifest(root: &Path, deb: &Path, port: u16) -> String {
    format!(
        r#"name = "slowpkg"
root = {root:?}
[package]
name = "slowpkg"
version = "2.0"
[artifact]
debs = [{deb:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "2m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}
[scope]
paths = ["/etc", "/usr/share/doc", "/var/lib/dpkg", "/var/log"]
[shadow]
enabled = false
[[probes]]
name = "web"
type = "http"
url = "http://127.0.0.1:{port}/"
interval = "500ms"
timeout = "500ms"
latency_budget = "450ms"
[monitor]
period = "10s"
baseline_samples = {BASELINE}
[policy.guards]
max_latency_increase = 1.0
"#,
        root = root.display().to_string(),
        deb = deb.display().to_string(),
    )
}

/// Deploy slowpkg 2.0 with `new_ms` in its delay file over 1.0 (20 ms),
/// with the service up; returns what `show` says once it ended, the
/// root's walk before and after.
fn deploy(cached: &Path, name: &str, new_ms: u64, want: &str) -> (Value, bool) {
    let s = Scratch::new(cached, name);
    let debs = s.base.join("debs");
    std::fs::create_dir_all(&debs).unwrap();
    let v1 = build_deb(
        &debs,
        "slowpkg",
        "1.0",
        &[(DELAY_FILE, &format!("{BASE_MS}\n"))],
        None,
    );
    // A second of postinst work, so the install spans live windows and
    // the probes after it have one to be stamped with.
    let v2 = build_deb(
        &debs,
        "slowpkg",
        "2.0",
        &[(DELAY_FILE, &format!("{new_ms}\n"))],
        Some("#!/bin/sh\nsleep 1\n"),
    );
    s.preinstall(&v1);
    let service = Service::start(&s.root);
    let path: PathBuf = s.base.join("slowpkg.toml");
    std::fs::write(&path, manifest(&s.root, &v2, service.port)).unwrap();
    let fleet = Fleet::new(&format!("deploy-perf-{name}"));
    let _serve = fleet.serve();
    let agent = Proc::spawn(&mut fleet.agent_cmd(&s.base.join("agent-data")));
    fleet.wait_connected(&agent);
    let before = root_walk(&s.root);
    let Deployed { out, id, mut shown } = deploy_until(&fleet, &agent, &path, want);
    assert_eq!(
        out.status.success(),
        want == "committed",
        "the CLI's exit: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    shown["replayed"] = Value::Array(assert_replays(&fleet, &id));
    let live = fleet
        .windows(&id)
        .into_iter()
        .filter(|w| w["stream"] == "live");
    shown["last_live_window"] = live.map(|w| w["seq"].as_u64().unwrap()).max().into();
    let unchanged = differences(&before, &root_walk(&s.root)).is_empty();
    let delay = std::fs::read_to_string(s.root.join(DELAY_FILE.trim_start_matches('/'))).unwrap();
    shown["delay_after"] = Value::String(delay.trim().to_string());
    (shown, unchanged)
}

/// The baseline the agent took: `BASELINE` passing runs of `web`, all
/// before the install's first step.
fn assert_baseline(shown: &Value) {
    let events = shown["events"].as_array().unwrap();
    let baseline: Vec<&Value> = events.iter().filter(|e| kind(e) == "baseline").collect();
    assert_eq!(baseline.len(), BASELINE, "{shown}");
    assert!(
        baseline
            .iter()
            .all(|e| e["event"]["baseline"]["probe"]["ok"] == true)
    );
    let last_baseline = baseline.last().unwrap()["seq"].as_u64().unwrap();
    let first_step = events.iter().find(|e| kind(e) == "step").unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert!(
        last_baseline < first_step,
        "the baseline comes before the install: {shown}"
    );
}

/// Every probe run after the install started is stamped with the last
/// live window sent before it (so the engine can relate it to a live
/// alarm); the baseline's, taken before any live window, with none.
fn assert_probe_windows(shown: &Value) {
    let events = shown["events"].as_array().unwrap();
    let stamp = |k: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| kind(e) == k)
            .map(|e| e["event"][k]["probe"]["window"].as_u64().unwrap())
            .collect()
    };
    assert!(stamp("baseline").iter().all(|w| *w == 0), "{shown}");
    let during = stamp("probe");
    let last = shown["last_live_window"].as_u64().unwrap();
    assert!(
        !during.is_empty() && during.iter().all(|w| (1..=last).contains(w)),
        "{during:?} vs last live window {last}"
    );
    assert!(during.is_sorted(), "{during:?}");
    let evidence = &shown["replayed"][0]["evidence"]["evidence"]["probes"][0]["results"];
    let judged: Vec<u64> = evidence
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["window"].as_u64().unwrap())
        .collect();
    // The decision may come before the last probe's event is stored.
    assert_eq!(
        judged,
        during[..judged.len()],
        "the engine's evidence carries the stamps"
    );
}

#[test]
fn a_latency_regression_is_rolled_back_during_monitoring() {
    let Some(_g) = ebpf_or_skip("a latency regression through the controller") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let (shown, unchanged) = deploy(&cached, "perf-slow", SLOW_MS, "rolled_back");
    assert_baseline(&shown);
    let d = &shown["replayed"][0];
    assert_eq!(
        (d["verdict"].as_str(), d["acted"].as_bool()),
        (Some("rollback"), Some(true)),
        "{d}"
    );
    assert_eq!(
        d["evidence"]["evidence"]["phase"], "monitoring",
        "rolled back during the monitoring period, not at its end: {d}"
    );
    let perf = d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "performance")
        .unwrap_or_else(|| panic!("no performance reason: {d}"));
    assert_eq!(perf["metric"], "probe `web` latency", "{perf}");
    let (b, m) = (
        perf["before_median"].as_f64().unwrap(),
        perf["during_median"].as_f64().unwrap(),
    );
    assert!(
        (BASE_MS as f64..SLOW_MS as f64).contains(&b),
        "before median {b}: {perf}"
    );
    assert!(m >= SLOW_MS as f64, "during median {m}: {perf}");
    assert!(perf["effect"].as_f64().unwrap() >= 1.0, "{perf}");
    let reason = shown["deployment"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("probe `web` latency regressed"), "{reason}");
    // Every probe answered 200 within its budget: only the check saw it.
    let events = shown["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .filter(|e| kind(e) == "probe")
            .all(|e| e["event"]["probe"]["probe"]["ok"] == true),
        "{shown}"
    );
    assert!(unchanged, "the root differs after the rollback");
    assert_eq!(
        shown["delay_after"],
        BASE_MS.to_string(),
        "1.0's delay is back"
    );
}

#[test]
fn the_same_package_without_a_slowdown_is_committed() {
    let Some(_g) = ebpf_or_skip("a deployment with no latency change") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let (shown, _) = deploy(&cached, "perf-same", BASE_MS, "committed");
    assert_baseline(&shown);
    assert_probe_windows(&shown);
    let d = &shown["replayed"][0];
    assert_eq!(d["verdict"], "commit", "{d}");
    let series = &d["evidence"]["evidence"]["performance"][0];
    assert_eq!(series["metric"], "probe `web` latency", "{d}");
    assert_eq!(
        series["before"].as_array().unwrap().len(),
        BASELINE,
        "{series}"
    );
    assert!(
        series["during"].as_array().unwrap().len() >= 5,
        "judged: {series}"
    );
    assert_eq!(shown["delay_after"], BASE_MS.to_string());
}
