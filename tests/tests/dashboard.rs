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
use std::time::Duration;

use backstop_common::deploy::{DeployEvent, RestoreSummary, RollbackReport, StepResult};
use backstop_common::features::feature;
use backstop_common::window::{Stream, Window};
use backstop_common::wire::{AgentMsg, ControllerMsg};
use serde_json::Value;
use support::eventually;
use support::fleet::{Ctl, Fake, connect, runtime};

/// A step name an agent could send: markup that would run if a page
/// parsed it as HTML.
const HOSTILE: &str =
    "install<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";

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
    let d = one.json();
    let shown = ctl.json(&["show", &id, "--json"]);
    for key in ["deployment", "events", "decisions", "lead"] {
        assert_eq!(d[key], shown[key], "{key} differs from show --json");
    }
    let mut report = ctl.json(&["report", &id, "--json"]);
    report.as_object_mut().unwrap().remove("bundle");
    assert_eq!(d["report"], report, "the report differs from report --json");
    assert_eq!(d["live"], false);
    assert_eq!(d["report"]["first_failure"]["name"], HOSTILE);
    let s = &d["series"];
    assert_eq!(s["live"].as_array().unwrap().len(), 4, "{s}");
    assert_eq!(s["shadow"].as_array().unwrap().len(), 4, "{s}");
    assert_eq!(s["features"][0], report["deviations"][0]["feature"], "{s}");
    let t: Vec<i64> = s["live"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["t_ms"].as_i64().unwrap())
        .collect();
    assert!(
        t.windows(2).all(|w| w[0] < w[1]),
        "window times ascend: {t:?}"
    );
    let marked = whats(s);
    for w in ["first_alarm", "onset", "decision", "restored"] {
        assert!(
            marked.contains(&w.to_string()),
            "{w} not marked: {marked:?}"
        );
    }
    let at = |what: &str| {
        s["markers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["what"] == what)
            .unwrap()["t_ms"]
            .as_i64()
            .unwrap()
    };
    assert!(at("decision") <= at("restored"), "{s}");
    assert_eq!(s["steps"][0]["name"], HOSTILE);
    assert_eq!(s["steps"][0]["passed"], false);
    if s["model"] == "no model" {
        assert!(s["p_failure"].as_array().unwrap().is_empty());
    } else {
        assert_eq!(s["p_failure"].as_array().unwrap().len(), 4, "{s}");
        assert!(s["threshold"].as_f64().is_some(), "{s}");
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
