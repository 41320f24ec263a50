//! History as evidence, through the real daemon: the real `backstop`
//! daemon and CLI over real QUIC with mutual TLS and a real SQLite store,
//! three hosts whose agents are the common crate's QUIC client speaking
//! the real protocol (support/fleet.rs), because the test needs exact
//! outcomes on several hosts, which three real agents on one machine
//! would give only as slowly as three real installs (the real agent's
//! executor is proven by deploy.rs and deploy_fleet.rs). Needs no root.
//!
//! hello 2.10-3 rolls back on web-1 and then on web-3; the same
//! deployment on web-2 carries that history in its stored evidence, its
//! reasons and `backstop show`, and replays to the same decision; with
//! `guards.history = false` it carries none.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use backstop_common::deploy::{DeployEvent, Order, RollbackReport, StepResult};
use backstop_common::window::Stream;
use backstop_common::wire::{AgentMsg, ControllerMsg};
use serde_json::{Value, json};
use support::eventually;
use support::fleet::{Ctl, Fake, connect, runtime};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn event(id: &str, seq: u64, event: DeployEvent) -> AgentMsg {
    AgentMsg::Deployment {
        deployment: id.into(),
        seq,
        event: Box::new(event),
    }
}

/// Deploy `manifest` to `host`, whose agent is `agent`: its install step
/// exits 1, the controller orders the rollback, the agent reports it.
/// Returns the deployment's `show --json`.
fn failing(
    ctl: &Ctl,
    rt: &tokio::runtime::Runtime,
    agent: &mut Fake,
    host: &str,
    manifest: &str,
) -> Value {
    let printed = ctl.ok(&["deploy", manifest, "--host", host]);
    let id = printed.trim().to_string();
    rt.block_on(async {
        loop {
            if let ControllerMsg::Deploy { deployment, .. } = agent.next().await {
                assert_eq!(deployment, id);
                break;
            }
        }
        let step = DeployEvent::Step {
            stream: Stream::Live,
            step: StepResult {
                name: "install".into(),
                exit_code: Some(1),
                ..StepResult::default()
            },
        };
        agent.send(&event(&id, 0, step)).await;
        loop {
            if let ControllerMsg::Decision { deployment, order } = agent.next().await {
                assert_eq!(deployment, id);
                assert!(matches!(order, Order::Rollback { .. }), "{order:?}");
                break;
            }
        }
        let done = DeployEvent::RolledBack {
            report: RollbackReport {
                reason: "step install exited 1".into(),
                ..RollbackReport::default()
            },
            local: false,
        };
        agent.send(&event(&id, 1, done)).await;
    });
    assert!(
        eventually(Duration::from_secs(10), || {
            ctl.json(&["show", &id, "--json"])["deployment"]["state"] == "rolled_back"
        }),
        "{id} never rolled back: {}",
        ctl.log()
    );
    ctl.json(&["show", &id, "--json"])
}

/// The one decision's stored history, and its reasons' history entry
/// (`Value::Null` when none).
fn decided(shown: &Value) -> (Value, Value) {
    let decisions = shown["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "exactly one decision: {shown}");
    let d = &decisions[0];
    (
        d["evidence"]["evidence"]["history"].clone(),
        d["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "history")
            .cloned()
            .unwrap_or(Value::Null),
    )
}

/// `replay --json` gives the stored verdict and reasons again.
fn replays(ctl: &Ctl, shown: &Value) {
    let id = shown["deployment"]["id"].as_str().unwrap();
    let out = ctl.cli(&["replay", id, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let stored = &shown["decisions"][0];
    assert_eq!(line["reproduced"], true, "{text}");
    assert_eq!(
        (&line["verdict"], &line["reasons"]),
        (&stored["verdict"], &stored["reasons"]),
        "{text}"
    );
}

#[test]
fn a_version_rolled_back_on_other_hosts_weighs_in_on_the_next_and_not_when_turned_off() {
    let mut ctl = Ctl::new("deploy-history");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let rt = runtime();
    let mut agents = Vec::new();
    for host in ["web-1", "web-2", "web-3"] {
        let bundle = if host == "web-1" {
            ctl.data.join("pki/agents/web-1.bundle")
        } else {
            ctl.enroll(host)
        };
        agents.push(rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap());
        assert!(
            eventually(Duration::from_secs(15), || ctl.host(host)["connected"]
                == true),
            "{host} never connected"
        );
    }
    let hello = examples().join("hello.toml");
    let hello = hello.to_str().unwrap();
    let zero =
        json!({"version_committed": 0, "version_rolled_back": 0, "package_recent_rollbacks": 0});

    let first = failing(&ctl, &rt, &mut agents[0], "web-1", hello);
    let (h, reasons) = decided(&first);
    assert_eq!(h, zero, "nothing known yet: {first}");
    assert_eq!(reasons, Value::Null, "history does not speak: {reasons}");

    // One other host is not enough for history to speak (it may be that
    // host's disk), but it is in the evidence.
    let second = failing(&ctl, &rt, &mut agents[2], "web-3", hello);
    let (h, reasons) = decided(&second);
    assert_eq!(
        h,
        json!({"version_committed": 0, "version_rolled_back": 1, "package_recent_rollbacks": 1}),
        "{second}"
    );
    assert_eq!(reasons, Value::Null, "history does not speak: {reasons}");

    // Two other hosts rolled this version back: history weighs in.
    let third = failing(&ctl, &rt, &mut agents[1], "web-2", hello);
    let (h, reasons) = decided(&third);
    assert_eq!(
        h,
        json!({"version_committed": 0, "version_rolled_back": 2, "package_recent_rollbacks": 2}),
        "{third}"
    );
    assert_eq!(
        reasons,
        json!({"kind": "history", "version_committed": 0, "version_rolled_back": 2, "package_recent_rollbacks": 2}),
        "the reasons name the history: {third}"
    );
    replays(&ctl, &third);
    let id = third["deployment"]["id"].as_str().unwrap();
    let text = ctl.ok(&["show", id]);
    assert!(
        text.contains("history: this version rolled back on 2 other host(s), committed on 0; the package rolled back 2 time(s)"),
        "show prints the history that weighed in: {text}"
    );

    // The same deployment with history turned off: none is read or weighed.
    let off = ctl.data.join("hello-no-history.toml");
    let text = std::fs::read_to_string(hello).unwrap().replace(
        "../target/",
        &format!("{}/../target/", examples().display()),
    ) + "\n[policy]\nguards = { history = false }\n";
    std::fs::write(&off, text).unwrap();
    let fourth = failing(&ctl, &rt, &mut agents[1], "web-2", off.to_str().unwrap());
    let (h, reasons) = decided(&fourth);
    assert_eq!(h, zero, "history = false: none in the evidence: {fourth}");
    assert_eq!(reasons, Value::Null, "history does not speak: {reasons}");
    assert_eq!(
        fourth["decisions"][0]["evidence"]["params"]["history"],
        false
    );
    replays(&ctl, &fourth);
    let id = fourth["deployment"]["id"].as_str().unwrap();
    assert!(!ctl.ok(&["show", id]).contains("history:"));
}
