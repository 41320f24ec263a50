//! The dashboard of `backstop serve --http` (issue 17): its JSON under
//! `/api/v1/...`, its pages, the bind rule on the new routes, and the
//! browser Must-hold.
//!
//! - The API test runs the real daemon, CLI, QUIC and SQLite store with the
//!   scripted QUIC agent of fleet.rs (as bundle.rs), so it needs no root:
//!   a rolled-back deployment whose step name and output hold markup.
//! - The browser test runs the real controller and the real agent (root,
//!   eBPF, the cached Debian rootfs, a postinst that fails) and drives
//!   Debian's headless Chromium over the DevTools protocol
//!   (support/cdp.rs): the finished rollback's timeline has its points and
//!   markers, the markup in its names stays text, and a deployment held in
//!   a long step updates on the open page. It saves
//!   target/dashboard/rollback.png.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use backstop_common::deploy::{DeployEvent, RestoreSummary, RollbackReport, StepResult};
use backstop_common::features::feature;
use backstop_common::window::{Stream, Window};
use backstop_common::wire::{AgentMsg, ControllerMsg};
use serde_json::Value;
use support::agents::{Fleet, Proc};
use support::cdp::{Browser, chromium_or_skip};
use support::fleet::{Ctl, Fake, connect, runtime};
use support::{deb_file, ebpf_or_skip, eventually, rootfs};

/// Markup that would run if a page parsed it as HTML: a step name a
/// scripted agent sends, and what a real postinst prints.
const HOSTILE: &str = "i<script>__pwned=1</script><img src=x onerror=__pwned=2>";

struct Got {
    status: u16,
    head: String,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// GET `path` (HTTP/1.0, so the body ends at close).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Got {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
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
    Got {
        status,
        head: head.to_lowercase(),
        body: body.to_string(),
    }
}

/// The address `serve --http` logged.
fn http_addr(log: &dyn Fn() -> String) -> SocketAddr {
    const PREFIX: &str = "backstop: http on ";
    assert!(
        eventually(Duration::from_secs(20), || log().contains(PREFIX)),
        "no http line: {}",
        log()
    );
    let text = log();
    let line = text.lines().find(|l| l.contains(PREFIX)).unwrap();
    let bound: SocketAddr = line.split(PREFIX).nth(1).unwrap().trim().parse().unwrap();
    format!("127.0.0.1:{}", bound.port()).parse().unwrap()
}

fn event(id: &str, seq: u64, event: DeployEvent) -> AgentMsg {
    AgentMsg::Deployment {
        deployment: id.into(),
        seq,
        event: Box::new(event),
    }
}

fn windows(id: &str, stream: Stream) -> AgentMsg {
    AgentMsg::Windows {
        deployment: id.into(),
        windows: (0..4)
            .map(|s| {
                let mut w = Window::new(stream, s, s * 1_000_000_000, (s + 1) * 1_000_000_000);
                w.features[feature::SYSCALLS_TOTAL] = 100.0;
                w.features[feature::SYSCALL_ERRORS_ENOSPC] = if s >= 2 { 50.0 } else { 0.0 };
                w.lost_events = 2;
                w
            })
            .collect(),
    }
}

/// A deployment of hello.toml the scripted agent fails with `HOSTILE`'s
/// step, is ordered to roll back, and reports restored.
async fn scripted_rollback(ctl: &Ctl, agent: &mut Fake) -> String {
    let manifest = format!("{}/../examples/hello.toml", env!("CARGO_MANIFEST_DIR"));
    let printed = ctl.ok(&["deploy", &manifest, "--host", "web-1"]);
    let id = loop {
        if let ControllerMsg::Deploy { deployment, .. } = agent.next().await {
            assert_eq!(printed.trim(), deployment);
            break deployment;
        }
    };
    agent.send(&windows(&id, Stream::Live)).await;
    agent.send(&windows(&id, Stream::Shadow)).await;
    let started = DeployEvent::Started {
        snapshot: "s1".into(),
    };
    agent.send(&event(&id, 0, started)).await;
    let step = StepResult {
        index: 0,
        name: HOSTILE.into(),
        exit_code: Some(1),
        duration_ms: 40.0,
        timed_out: false,
        output_tail: "dpkg: error processing package <script>alert(1)</script>".into(),
    };
    let failed = DeployEvent::Step {
        stream: Stream::Live,
        step,
    };
    agent.send(&event(&id, 1, failed)).await;
    while !matches!(agent.next().await, ControllerMsg::Decision { .. }) {}
    let report = RollbackReport {
        reason: "step install exited 1".into(),
        restore: Some(RestoreSummary {
            snapshot: "s1".into(),
            full_walk_reason: None,
            duration_ms: 3.0,
        }),
        ..RollbackReport::default()
    };
    let last = DeployEvent::RolledBack {
        report,
        local: false,
    };
    agent.send(&event(&id, 2, last)).await;
    loop {
        if let ControllerMsg::Ack {
            finished: true,
            deployment,
            ..
        } = agent.next().await
        {
            assert_eq!(deployment, id);
            return id;
        }
    }
}

/// `backstop replay ID --json` gives the stored decisions' verdicts and
/// reasons.
fn assert_replays(cli: &dyn Fn(&[&str]) -> std::process::Output, id: &str) {
    let shown = cli(&["show", id, "--json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let stored = shown["decisions"].as_array().unwrap().clone();
    assert!(!stored.is_empty(), "no decision stored: {shown}");
    let out = cli(&["replay", id, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "replay of {id}: {text}");
    let replayed: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed.len(), stored.len(), "{text}");
    for (r, d) in replayed.iter().zip(&stored) {
        assert_eq!(r["verdict"], d["verdict"], "replayed verdict: {text}");
        assert_eq!(r["reasons"], d["reasons"], "replayed reasons: {text}");
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

fn whats(series: &Value) -> Vec<String> {
    series["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["what"].as_str().unwrap().to_string())
        .collect()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one rolled-back deployment read through every route, in order"
)]
fn the_api_shows_a_finished_rollback_and_names_what_it_refuses() {
    let mut ctl = Ctl::new("dash-api");
    ctl.serve_with(&["--http", "127.0.0.1:0"]);
    let addr = http_addr(&|| ctl.log());
    let ca = ctl.data.join("pki/ca.pem");
    let cert = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &cert)).unwrap();
    assert!(eventually(Duration::from_secs(15), || {
        ctl.host("web-1")["connected"] == true
    }));
    let id = rt.block_on(scripted_rollback(&ctl, &mut agent));
    assert_replays(&|a| ctl.cli(a), &id);

    // The list, and its filters.
    let list = get(addr, "/api/v1/deployments", None);
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(
        list.head.contains("content-type: application/json"),
        "{}",
        list.head
    );
    let rows = list.json();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id.as_str())
        .unwrap();
    assert_eq!(row["state"], "rolled_back", "{row}");
    assert_eq!(row["decision"], "rollback", "{row}");
    assert_eq!(row["host"], "web-1");
    assert_eq!(row["package"], "hello");
    assert_eq!(row["version"], "2.10-3");
    let ended = row["ended_ms"].as_i64().unwrap();
    assert_eq!(
        row["duration_ms"].as_i64().unwrap(),
        ended - row["created_ms"].as_i64().unwrap()
    );
    for (query, kept) in [
        ("?state=rolled_back", true),
        ("?state=committed", false),
        ("?decision=rollback&host=web-1&package=hello", true),
        ("?decision=none", false),
        ("?host=web-2", false),
        ("?package=hello%2Dnot", false),
    ] {
        let got = get(addr, &format!("/api/v1/deployments{query}"), None);
        assert_eq!(got.status, 200, "{query}: {}", got.body);
        assert_eq!(
            ids(&got.json()).contains(&id),
            kept,
            "{query}: {}",
            got.body
        );
    }
    for (query, parameter) in [
        ("?state=sideways", "state"),
        ("?decision=maybe", "decision"),
        ("?colour=red", "colour"),
    ] {
        let got = get(addr, &format!("/api/v1/deployments{query}"), None);
        assert_eq!(got.status, 400, "{query}: {}", got.body);
        let e = got.json();
        assert_eq!(e["parameter"], parameter, "{query}: {e}");
        assert!(e["error"].as_str().unwrap().contains(parameter), "{e}");
    }

    // One deployment: `show --json`'s fields and `report --json`'s report,
    // from the same code, and the plot's series.
    let one = get(addr, &format!("/api/v1/deployments/{id}"), None);
    assert_eq!(one.status, 200, "{}", one.body);
    let detail = one.json();
    let shown = ctl.json(&["show", &id, "--json"]);
    for key in ["deployment", "events", "decisions", "lead"] {
        assert_eq!(detail[key], shown[key], "{key} differs from show --json");
    }
    let mut report = ctl.json(&["report", &id, "--json"]);
    report.as_object_mut().unwrap().remove("bundle");
    assert_eq!(
        detail["report"], report,
        "the report differs from report --json"
    );
    assert_eq!(detail["live"], false);
    assert_eq!(detail["report"]["first_failure"]["name"], HOSTILE);
    let series = &detail["series"];
    assert_eq!(series["live"].as_array().unwrap().len(), 4, "{series}");
    assert_eq!(series["shadow"].as_array().unwrap().len(), 4, "{series}");
    assert_eq!(
        series["features"][0], report["deviations"][0]["feature"],
        "{series}"
    );
    let times: Vec<i64> = series["live"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["t_ms"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "window times ascend: {times:?}"
    );
    let marked = whats(series);
    for w in ["first_alarm", "onset", "decision", "restored"] {
        assert!(
            marked.contains(&w.to_string()),
            "{w} not marked: {marked:?}"
        );
    }
    let at = |what: &str| {
        series["markers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["what"] == what)
            .unwrap()["t_ms"]
            .as_i64()
            .unwrap()
    };
    assert!(at("decision") <= at("restored"), "{series}");
    assert_eq!(series["steps"][0]["name"], HOSTILE);
    assert_eq!(series["steps"][0]["passed"], false);
    if series["model"] == "no model" {
        assert!(series["p_failure"].as_array().unwrap().is_empty());
    } else {
        assert_eq!(series["p_failure"].as_array().unwrap().len(), 4, "{series}");
        assert!(series["threshold"].as_f64().is_some(), "{series}");
    }

    let missing = get(addr, "/api/v1/deployments/dnosuchdeployment", None);
    assert_eq!(missing.status, 404, "{}", missing.body);
    let e = missing.json();
    assert_eq!(e["id"], "dnosuchdeployment");
    assert!(
        e["error"].as_str().unwrap().contains("dnosuchdeployment"),
        "{e}"
    );

    // Hosts: the events its windows lost (4 live + 4 shadow windows, 2 each).
    let hosts = get(addr, "/api/v1/hosts", None).json();
    let web1 = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "web-1")
        .unwrap();
    assert_eq!(web1["connected"], true, "{web1}");
    assert_eq!(web1["lost_events"], 16, "{web1}");
    assert_eq!(web1["agent_version"], "fake", "{web1}");
    assert!(web1.get("dropped_windows").is_some(), "{web1}");

    let models = get(addr, "/api/v1/models", None);
    assert_eq!(models.status, 200, "{}", models.body);
    let m = models.json();
    assert!(m["recent_alarms"].is_array(), "{m}");
    if !m["source"].is_null() {
        assert!(m["meta"]["threshold"].is_number(), "{m}");
    }

    // Pages: the shell, its assets, and the policy on every reply.
    for path in ["/", "/hosts", "/models", &format!("/deployments/{id}")] {
        let page = get(addr, path, None);
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.head.contains("content-type: text/html"),
            "{path}: {}",
            page.head
        );
        assert!(
            page.body.contains("<script src=\"/assets/app.js\""),
            "{path}"
        );
        assert!(
            !page.body.contains("web-1") && !page.body.contains("hello"),
            "{path}: the shell carries no data"
        );
    }
    for path in ["/", "/api/v1/deployments", "/assets/app.js"] {
        let got = get(addr, path, None);
        assert!(
            got.head
                .contains("content-security-policy: default-src 'self'; script-src 'self'"),
            "{path}: {}",
            got.head
        );
    }
    let js = get(addr, "/assets/app.js", None);
    assert!(
        js.head.contains("content-type: text/javascript"),
        "{}",
        js.head
    );
    assert_eq!(get(addr, "/assets/nothing.js", None).status, 404);
}

#[test]
fn a_non_loopback_dashboard_needs_a_token_and_the_api_refuses_requests_without_it() {
    let mut ctl = Ctl::new("dash-token");
    let refused = ctl.cli(&[
        "serve",
        "--listen",
        &ctl.addr.to_string(),
        "--http",
        "0.0.0.0:0",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--http 0.0.0.0:0") && err.contains("--http-token-file"),
        "{err}"
    );

    let token = ctl.data.join("dash.token");
    std::fs::write(&token, "dash-s3cret\n").unwrap();
    ctl.serve_with(&[
        "--http",
        "0.0.0.0:0",
        "--http-token-file",
        token.to_str().unwrap(),
    ]);
    let addr = http_addr(&|| ctl.log());
    for path in [
        "/",
        "/api/v1/deployments",
        "/api/v1/deployments/x",
        "/api/v1/hosts",
        "/api/v1/models",
        "/assets/app.js",
    ] {
        assert_eq!(get(addr, path, None).status, 401, "{path} without a token");
        assert_eq!(
            get(addr, path, Some("dash-s3cre")).status,
            401,
            "{path} with a wrong token"
        );
    }
    let ok = get(addr, "/api/v1/deployments", Some("dash-s3cret"));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json(), Value::Array(Vec::new()));
    assert_eq!(
        get(addr, "/api/v1/deployments/x", Some("dash-s3cret")).status,
        404
    );
}

/// hello with a postinst that prints `HOSTILE` and fails: what a real
/// install's output can hold.
fn hostile_hello(dir: &Path) -> PathBuf {
    let work = dir.join("repack");
    let ok = Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb_file("hello"))
        .arg(&work)
        .status()
        .unwrap();
    assert!(ok.success());
    // The preinst says it too, before the unpack: with a shadow beside
    // it, the shadow's failed postinst can roll back (and so end) the
    // live install before its own postinst runs (CI, once: killed at
    // 498 ms, while unpacking), and the markup must still be in the
    // output the page shows.
    for (script, exit) in [("preinst", 0), ("postinst", 1)] {
        let path = work.join("DEBIAN").join(script);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{HOSTILE} error' >&2\nexit {exit}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let deb = dir.join("hello-hostile.deb");
    let built = Command::new("dpkg-deb")
        .arg("-b")
        .arg(&work)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    deb
}

/// `js` evaluated until it gives a value other than null or false.
fn wait_for(b: &mut Browser, session: &str, js: &str) -> Value {
    let mut last = Value::Null;
    let ok = eventually(Duration::from_mins(1), || {
        last = b.eval(session, js);
        !last.is_null() && last != Value::Bool(false)
    });
    assert!(ok, "never true: {js} (last {last})");
    last
}

fn deploy(fleet: &Fleet, manifest: &Path, wait: bool) -> (Option<i32>, String) {
    // Windows of 200 ms: the failing install takes a few hundred.
    let mut args = vec![
        "deploy",
        manifest.to_str().unwrap(),
        "--host",
        "web-1",
        "--json",
        "--window-ms",
        "200",
    ];
    if wait {
        args.push("--wait");
    }
    let out = fleet.cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let first: Value = serde_json::from_str(stdout.lines().next().unwrap_or("null")).unwrap();
    let id = first["deployment"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
        .to_string();
    (out.status.code(), id)
}

/// What the page shows of the finished rollback, read from its DOM.
const SHOWN: &str = r#"(() => {
  const svg = document.getElementById('timeline');
  if (!svg || !document.getElementById('analysis')) return null;
  const marks = [...svg.querySelectorAll('.marker')].map((m) => m.dataset.what);
  return {
    points: svg.querySelectorAll('.point').length,
    live_points: svg.querySelectorAll('.point[data-stream="live"]').length,
    marks,
    first_failure: document.getElementById('first-failure')?.textContent ?? '',
    output: [...document.querySelectorAll('#analysis pre')].map((p) => p.textContent).join('\n'),
    verdict: document.getElementById('verdict')?.textContent ?? '',
    scripts: document.scripts.length,
    images: document.images.length,
    pwned: window.__pwned ?? null,
  };
})()"#;

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one rollback and one held deployment, seen by the browser in the order they run"
)]
fn a_browser_shows_a_finished_rollback_and_follows_a_running_deployment() {
    let Some(_g) = ebpf_or_skip("dashboard in a browser") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let Some(chromium) = chromium_or_skip("dashboard in a browser") else {
        return;
    };
    let fleet = Fleet::new("dashboard");
    let base = PathBuf::from("/var/tmp").join(format!("backstop-dash-{}", std::process::id()));
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
    let bad = hostile_hello(&base);
    let manifest = support::deploys::hello_manifest(&base, &root, &bad);
    let text = std::fs::read_to_string(&manifest).unwrap();
    // With a shadow, so the plot has both streams.
    let shadowed = text.replace("[shadow]\nenabled = false", "[shadow]\nenabled = true");
    assert_ne!(shadowed, text);
    std::fs::write(&manifest, shadowed).unwrap();

    let serve = fleet.serve_with(&["--http", "127.0.0.1:0"]);
    let addr = http_addr(&|| serve.log());
    let agent = Proc::spawn(&mut fleet.agent_cmd(&base.join("agent-data")));
    fleet.wait_connected(&agent);

    let (code, id) = deploy(&fleet, &manifest, true);
    assert_eq!(code, Some(1), "rolled back; agent: {}", agent.log());
    assert!(eventually(Duration::from_secs(20), || {
        fleet.json(&["show", &id, "--json"])["deployment"]["state"] == "rolled_back"
    }));
    support::deploys::assert_replays(&fleet, &id);

    let mut b = Browser::start(&chromium, base.join("chromium"));
    let page = b.page(&format!("http://{addr}/deployments/{id}"));
    let shown = wait_for(&mut b, &page, SHOWN);
    let stored = fleet
        .windows(&id)
        .iter()
        .filter(|w| w["stream"] == "live")
        .count();
    assert!(stored > 0, "the deployment stored live windows");
    let api = get(addr, &format!("/api/v1/deployments/{id}"), None).json();
    let features = api["series"]["features"].as_array().unwrap().len();
    let p_points = api["series"]["p_failure"].as_array().unwrap().len();
    assert_eq!(
        shown["live_points"].as_u64().unwrap() as usize,
        stored * features + p_points,
        "a point per live window and feature, and per P(failure): {shown}"
    );
    let marks: Vec<&str> = shown["marks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for what in ["first_alarm", "onset", "decision", "restored"] {
        assert!(marks.contains(&what), "no {what} marker: {shown}");
    }
    assert!(
        shown["verdict"].as_str().unwrap().starts_with("rollback"),
        "{shown}"
    );
    assert!(
        shown["first_failure"].as_str().unwrap().contains("install"),
        "{shown}"
    );
    assert!(
        shown["output"].as_str().unwrap().contains(HOSTILE),
        "the postinst's markup shown as text: {shown}; decided: {}",
        fleet.json(&["show", &id, "--json"])["decisions"]
    );
    assert_eq!(shown["scripts"], 2, "only plot.js and app.js: {shown}");
    assert_eq!(shown["images"], 0, "the step name's <img> is text: {shown}");
    assert_eq!(
        shown["pwned"],
        Value::Null,
        "the step name's script ran: {shown}"
    );
    let png = b.screenshot(&page);
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let dir = support::bin_dir().join("../dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rollback.png"), &png).unwrap();
    eprintln!("screenshot: {}", dir.join("rollback.png").display());

    // The list shows it, filtered by state.
    b.navigate(&page, &format!("http://{addr}/?state=rolled_back"));
    let listed = wait_for(
        &mut b,
        &page,
        "document.getElementById('deployments') && [...document.querySelectorAll('#deployments a')].map((a) => a.textContent)",
    );
    assert_eq!(listed, serde_json::json!([id]), "{listed}");
    // Hosts and models: the rows the API gives, drawn.
    b.navigate(&page, &format!("http://{addr}/hosts"));
    let row = wait_for(
        &mut b,
        &page,
        "document.getElementById('hosts') && [...document.querySelectorAll('#hosts tr')].map((r) => [...r.cells].map((c) => c.textContent)).find((c) => c[0] === 'web-1')",
    );
    assert_eq!(row[1], "connected", "{row}");
    let lost = get(addr, "/api/v1/hosts", None).json()[0]["lost_events"].to_string();
    assert_eq!(row[5].as_str(), Some(lost.as_str()), "{row}");
    b.navigate(&page, &format!("http://{addr}/models"));
    let model = wait_for(
        &mut b,
        &page,
        "document.getElementById('model')?.textContent",
    );
    let source = get(addr, "/api/v1/models", None).json()["source"].clone();
    match source.as_str() {
        Some(s) => assert!(model.as_str().unwrap().contains(s), "{model}"),
        None => assert!(model.as_str().unwrap().starts_with("no model"), "{model}"),
    }

    // A deployment held in a long step: the open page follows it.
    let hold = base.join("hold.toml");
    let long_step = text
        .replace("name = \"install\"", "name = \"hold\"")
        .replace(
            "run = [\"dpkg\", \"-i\", \"{artifact}\"]",
            "run = [\"sleep\", \"60\"]",
        );
    assert_ne!(long_step, text);
    std::fs::write(&hold, long_step).unwrap();
    let (_, running) = deploy(&fleet, &hold, false);
    b.navigate(&page, &format!("http://{addr}/deployments/{running}"));
    let count = "(() => { const s = document.getElementById('timeline'); const e = document.getElementById('elapsed'); return s && e && s.querySelectorAll('.point[data-stream=\"live\"]').length > 0 ? [s.querySelectorAll('.point').length, Number(e.dataset.ms), Number(document.body.dataset.updates)] : null; })()";
    let first = wait_for(&mut b, &page, count);
    let grew = eventually(Duration::from_mins(1), || {
        let now = b.eval(&page, count);
        now[0].as_u64() > first[0].as_u64()
            && now[1].as_u64() > first[1].as_u64()
            && now[2].as_u64() > first[2].as_u64()
    });
    assert!(
        grew,
        "the page did not update while {running} ran: {first} then {}",
        b.eval(&page, count)
    );
    assert_eq!(
        b.eval(&page, "document.getElementById('state').textContent"),
        "running"
    );
    fleet.json(&["show", &running, "--json"]);
    let out = fleet.cli(&["cancel", &running]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = wait_for(
        &mut b,
        &page,
        "document.getElementById('state')?.textContent === 'rolled_back'",
    );
    assert_eq!(ended, true);
    drop(b);
    drop(agent);
    drop(serve);
    let _ = std::fs::remove_dir_all(&base);
}
