//! Diagnostics after a failed deployment, the controller's side: the real
//! `backstop` daemon and CLI over real QUIC and a real SQLite store, the
//! agent the scripted QUIC client of fleet.rs (as deploy_wire.rs). A
//! rolled-back deployment leaves DATA/bundles/<id>.tar.gz (0600) holding
//! every part, and `backstop report` names its failing step and decision;
//! a committed one leaves no bundle. Needs no root or eBPF.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use backstop_common::deploy::{DeployEvent, RestoreSummary, RollbackReport, StepResult};
use backstop_common::features::feature;
use backstop_common::window::{Stream, Window};
use backstop_common::wire::{AgentMsg, ControllerMsg};
use support::eventually;
use support::fleet::{Ctl, Fake, connect, runtime};

/// What the bundle must hold (controller/src/report/bundle.rs, PARTS).
const PARTS: [&str; 12] = [
    "manifest.json",
    "deployment.json",
    "steps.json",
    "events.jsonl",
    "windows/live.jsonl",
    "windows/shadow.jsonl",
    "process_tree.json",
    "errno.json",
    "shadow.json",
    "decision.json",
    "explanation.json",
    "report.json",
];

fn hello_manifest() -> String {
    format!("{}/../examples/hello.toml", env!("CARGO_MANIFEST_DIR"))
}

fn event(id: &str, seq: u64, event: DeployEvent) -> AgentMsg {
    AgentMsg::Deployment {
        deployment: id.into(),
        seq,
        event: Box::new(event),
    }
}

fn windows(id: &str, stream: Stream, enospc: f64) -> AgentMsg {
    AgentMsg::Windows {
        deployment: id.into(),
        windows: (0..4)
            .map(|s| {
                let mut w = Window::new(stream, s, s * 10, s * 10 + 10);
                w.features[feature::SYSCALLS_TOTAL] = 100.0;
                w.features[feature::SYSCALL_ERRORS_ENOSPC] = if s >= 2 { enospc } else { 0.0 };
                w
            })
            .collect(),
    }
}

fn step(code: i32, out: &str) -> StepResult {
    StepResult {
        index: 0,
        name: "install".into(),
        exit_code: Some(code),
        duration_ms: 40.0,
        timed_out: false,
        output_tail: out.into(),
    }
}

/// Start a deployment of hello.toml and return the id the agent got.
async fn deploy(ctl: &Ctl, agent: &mut Fake) -> String {
    let printed = ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1"]);
    loop {
        if let ControllerMsg::Deploy { deployment, .. } = agent.next().await {
            assert_eq!(printed.trim(), deployment);
            return deployment;
        }
    }
}

async fn finished(agent: &mut Fake, id: &str) {
    loop {
        if let ControllerMsg::Ack {
            deployment,
            finished: true,
            ..
        } = agent.next().await
        {
            assert_eq!(deployment, id);
            return;
        }
    }
}

fn tar_list(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("tar").arg("-tzf").arg(path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one failed and one committed deployment, checked in the order they run"
)]
fn a_failed_step_leaves_a_bundle_and_a_report_a_commit_leaves_none() {
    let mut ctl = Ctl::new("bundle");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let cert = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &cert)).unwrap();
    assert!(eventually(Duration::from_secs(15), || {
        ctl.host("web-1")["connected"] == true
    }));

    // A healthy deployment of the package, committed: the history.
    let good = rt.block_on(async {
        let id = deploy(&ctl, &mut agent).await;
        agent.send(&windows(&id, Stream::Live, 0.0)).await;
        let started = DeployEvent::Started {
            snapshot: "s0".into(),
        };
        agent.send(&event(&id, 0, started)).await;
        let done = DeployEvent::Committed { local: true };
        agent.send(&event(&id, 1, done)).await;
        finished(&mut agent, &id).await;
        id
    });

    // A failing one: the engine orders a rollback, the agent reports it.
    let bad = rt.block_on(async {
        let id = deploy(&ctl, &mut agent).await;
        agent.send(&windows(&id, Stream::Live, 50.0)).await;
        agent.send(&windows(&id, Stream::Shadow, 0.0)).await;
        let started = DeployEvent::Started {
            snapshot: "s1".into(),
        };
        agent.send(&event(&id, 0, started)).await;
        let out = "Unpacking hello\ndpkg: error processing package hello (--configure):\n installed hello package post-installation script subprocess returned error exit status 1";
        let failed = DeployEvent::Step {
            stream: Stream::Live,
            step: step(1, out),
        };
        agent.send(&event(&id, 1, failed)).await;
        loop {
            if let ControllerMsg::Decision { .. } = agent.next().await {
                break;
            }
        }
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
        finished(&mut agent, &id).await;
        id
    });

    let path = ctl.data.join(format!("bundles/{bad}.tar.gz"));
    assert!(
        eventually(Duration::from_secs(30), || path.exists()),
        "no bundle at {}: {}",
        path.display(),
        ctl.log()
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let dir_mode = std::fs::metadata(ctl.data.join("bundles"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(dir_mode, 0o700);
    let listed = tar_list(&path);
    for part in PARTS {
        let want = format!("{bad}/{part}");
        assert!(listed.contains(&want), "{want} missing: {listed:?}");
    }
    // Only the failed deployment has a bundle.
    let names: Vec<String> = std::fs::read_dir(ctl.data.join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![format!("{bad}.tar.gz")],
        "committed {good} has none"
    );

    let r = ctl.json(&["report", &bad, "--json"]);
    assert_eq!(r["first_failure"]["name"], "install", "{r:#}");
    assert_eq!(r["first_failure"]["exit_code"], 1);
    let errors = r["first_failure"]["errors"].to_string();
    assert!(
        errors.contains("error processing package hello"),
        "{errors}"
    );
    assert_eq!(r["decision"]["verdict"], "rollback");
    assert_eq!(r["decision"]["acted"], true);
    assert_eq!(r["state"], "rolled_back");
    assert_eq!(r["bundle"], path.display().to_string());
    // The committed deployment is the healthy history; ENOSPC stands out.
    assert_eq!(r["baseline"]["kind"], "history", "{r:#}");
    assert_eq!(r["deviations"][0]["feature"], "syscall_errors_enospc");
    assert_eq!(r["errors_by_errno"]["live"]["syscall_errors_enospc"], 100.0);
    assert_eq!(
        r["live_vs_shadow"][0]["feature"], "syscall_errors_enospc",
        "{r:#}"
    );
    let whats: Vec<&str> = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["what"].as_str())
        .collect();
    for w in ["started", "first_alarm", "onset", "decision", "restored"] {
        assert!(whats.contains(&w), "{w} not in the timeline {whats:?}");
    }
    let text = ctl.ok(&["report", &bad]);
    assert!(
        text.contains("first failing step: live 0 `install`"),
        "{text}"
    );

    let committed = ctl.json(&["report", &good, "--json"]);
    assert_eq!(committed["bundle"], serde_json::Value::Null);
    assert_eq!(committed["state"], "committed");

    let unknown = ctl.cli(&["report", "dnosuchdeployment"]);
    assert_eq!(unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("dnosuchdeployment"), "names the id: {err}");
}
