//! `backstop deploy` over the wire, the controller's side: the real
//! `backstop` daemon and CLI over real QUIC with mutual TLS and a real
//! SQLite store. The agent is the common crate's QUIC client speaking the
//! real protocol (fleet.rs), because these tests drive exact event
//! sequences (a redelivered event, a local rollback) that a real install
//! would give only by chance; the real agent's executor is proven by
//! deploy_local.rs on the executor's branch. Needs no root or eBPF.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;
#[allow(dead_code, reason = "shared with alerts.rs, which uses all of it")]
mod alerts {
    pub mod receiver;
}

use std::process::{Command, Stdio};
use std::time::Duration;

use alerts::receiver::Receiver;
use backstop_common::deploy::{DeployEvent, Order, RestoreSummary, RollbackReport, StepResult};
use backstop_common::window::Stream;
use backstop_common::wire::{AgentMsg, ControllerMsg};
use support::fleet::{Ctl, Fake, connect, runtime};
use support::{bin_dir, eventually};

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

/// The next Deploy the agent receives: (id, manifest name, dry_run).
async fn next_deploy(agent: &mut Fake) -> (String, String, bool) {
    loop {
        if let ControllerMsg::Deploy {
            deployment,
            manifest,
            dry_run,
            ..
        } = agent.next().await
        {
            return (deployment, manifest.name, dry_run);
        }
    }
}

fn connected(ctl: &Ctl) -> bool {
    eventually(Duration::from_secs(15), || {
        ctl.host("web-1")["connected"] == true
    })
}

#[test]
fn an_invalid_manifest_is_refused_before_anything_runs() {
    // No daemon runs: the refusal must come before any connection.
    let ctl = Ctl::new("deploy-invalid");
    let bad = ctl.data.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[artifact]\ndebs = [\"/a.deb\"]\n[[steps]]\nname = \"i\"\nrun = [\"true\"]\ntimeout = \"forever\"\n",
    )
    .unwrap();
    let out = ctl.cli(&["deploy", bad.to_str().unwrap(), "--host", "web-1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("steps[0].timeout"), "names the field: {err}");
    assert!(
        !err.contains("connecting"),
        "never reached the daemon: {err}"
    );
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one deployment over the real wire, asserted step by step in the order it runs"
)]
fn a_deployment_goes_to_the_agent_and_its_events_come_back_once() {
    let mut ctl = Ctl::new("deploy-wire");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let bundle = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl), "the agent never showed as connected");

    let waiting = Command::new(bin_dir().join("backstop"))
        .arg("--data")
        .arg(&ctl.data)
        .args([
            "deploy",
            &hello_manifest(),
            "--host",
            "web-1",
            "--wait",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (id, name, dry_run) = rt.block_on(next_deploy(&mut agent));
    assert_eq!((name.as_str(), dry_run), ("hello", false));
    let failed = StepResult {
        index: 0,
        name: "install".into(),
        exit_code: Some(1),
        duration_ms: 40.0,
        timed_out: false,
        output_tail: "postinst failed".into(),
    };
    let report = RollbackReport {
        reason: "step install exited 1".into(),
        killed_pids: vec![77],
        restore: Some(RestoreSummary {
            snapshot: "s1".into(),
            full_walk_reason: None,
            duration_ms: 3.0,
        }),
        ..RollbackReport::default()
    };
    let step = DeployEvent::Step {
        stream: Stream::Live,
        step: failed,
    };
    rt.block_on(async {
        agent
            .send(&event(
                &id,
                0,
                DeployEvent::Started {
                    snapshot: "s1".into(),
                },
            ))
            .await;
        agent.send(&event(&id, 1, step.clone())).await;
        // The controller's engine sees the failed step and orders a rollback.
        let order = loop {
            if let ControllerMsg::Decision { deployment, order } = agent.next().await {
                assert_eq!(deployment, id);
                break order;
            }
        };
        assert!(
            matches!(&order, Order::Rollback { reason } if reason.contains("install")),
            "{order:?}"
        );
        // Redelivered after a reconnect, as the outbox does: stored once.
        agent.send(&event(&id, 1, step.clone())).await;
        let last = DeployEvent::RolledBack {
            report: report.clone(),
            local: true,
        };
        agent.send(&event(&id, 2, last)).await;
        // The final event is acknowledged, so the agent may forget it.
        loop {
            if let ControllerMsg::Ack {
                deployment,
                finished: true,
                ..
            } = agent.next().await
            {
                assert_eq!(deployment, id);
                break;
            }
        }
    });
    let out = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "not committed: {stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["deployment"], id.as_str());
    let kinds: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["started", "step", "rolled_back"], "{stdout}");

    let shown = ctl.json(&["show", &id, "--json"]);
    assert_eq!(shown["deployment"]["state"], "rolled_back");
    let reason = shown["deployment"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("local policy") && reason.contains("install"),
        "{reason}"
    );
    assert_eq!(shown["events"].as_array().unwrap().len(), 3);
    assert_eq!(shown["manifest"]["name"], "hello");
    assert_eq!(ctl.deployment(&id).0["state"], "rolled_back");
    let decisions = shown["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "exactly one decision: {decisions:?}");
    assert_eq!(decisions[0]["verdict"], "rollback");
    assert_eq!(decisions[0]["acted"], true);
    let replay = ctl.cli(&["replay", &id]);
    let text = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(0), "{text}");
    assert!(
        text.contains("1 decision(s), every one reproduced"),
        "{text}"
    );
    // An ended deployment cannot be cancelled.
    let again = ctl.cli(&["cancel", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended"));
}

#[test]
fn cancel_sends_a_rollback_order_and_dry_run_reaches_the_agent() {
    let mut ctl = Ctl::new("deploy-cancel");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let bundle = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl), "the agent never showed as connected");
    // Without --wait: the id, at once.
    let printed = ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1", "--dry-run"]);
    let (id, _, dry_run) = rt.block_on(next_deploy(&mut agent));
    assert_eq!(printed.trim(), id);
    assert!(dry_run, "--dry-run reaches the agent");
    ctl.ok(&["cancel", &id]);
    let order = rt.block_on(async {
        loop {
            if let ControllerMsg::Decision { deployment, order } = agent.next().await {
                assert_eq!(deployment, id);
                return order;
            }
        }
    });
    assert!(
        matches!(&order, Order::Rollback { reason } if reason.contains("cancel")),
        "{order:?}"
    );
    let shown = ctl.json(&["show", &id, "--json"]);
    assert_eq!(shown["deployment"]["state"], "rolling_back");
    assert_eq!(shown["deployment"]["dry_run"], true);
    // Nothing was decided by the engine here, and replay says so.
    let replay = ctl.cli(&["replay", &id]);
    assert_eq!(replay.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&replay.stdout).contains("0 decision(s)"));
    let unknown = ctl.cli(&["replay", "dnope"]);
    assert_ne!(unknown.status.code(), Some(0), "an unknown id is no pass");
}

#[test]
fn a_dry_run_records_the_would_be_decision_and_never_orders_it() {
    let mut ctl = Ctl::new("deploy-dry");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let bundle = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl), "the agent never showed as connected");
    let before = support::fleet::now_ns() / 1_000_000;
    ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1", "--dry-run"]);
    let (id, _, dry_run) = rt.block_on(next_deploy(&mut agent));
    assert!(dry_run);
    let failed = DeployEvent::Step {
        stream: Stream::Live,
        step: StepResult {
            name: "install".into(),
            exit_code: Some(1),
            ..StepResult::default()
        },
    };
    rt.block_on(async {
        agent.send(&event(&id, 0, failed)).await;
        // The agent is told to keep the install (it waits for an order
        // once its monitoring is over) ...
        loop {
            if let ControllerMsg::Decision { order, .. } = agent.next().await {
                assert_eq!(order, Order::Commit, "a dry run never rolls back");
                break;
            }
        }
        agent
            .send(&event(&id, 2, DeployEvent::Committed { local: false }))
            .await;
        // ... and nothing else is ordered until the controller has its end.
        loop {
            match agent.next().await {
                ControllerMsg::Decision { order, .. } => panic!("a dry run ordered {order:?}"),
                ControllerMsg::Ack { finished: true, .. } => break,
                _ => {}
            }
        }
    });
    let shown = ctl.json(&["show", &id, "--json"]);
    assert_eq!(
        shown["deployment"]["state"], "committed",
        "nothing was rolled back"
    );
    let d = &shown["decisions"][0];
    assert_eq!(d["verdict"], "rollback", "the would-be decision: {shown}");
    assert_eq!(d["acted"], false);
    let at = d["at_ms"].as_i64().unwrap() as u128;
    assert!(at >= before, "stored with the time it would have fired");
    let replay = ctl.cli(&["replay", &id, "--json"]);
    assert_eq!(replay.status.code(), Some(0));
    let line: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&replay.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["reproduced"], true);
}

#[test]
fn a_healthy_install_is_committed_after_its_monitoring_period() {
    let mut ctl = Ctl::new("deploy-commit");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let bundle = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl), "the agent never showed as connected");
    ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1"]);
    let (id, _, _) = rt.block_on(next_deploy(&mut agent));
    let passed = DeployEvent::Step {
        stream: Stream::Live,
        step: StepResult {
            name: "install".into(),
            exit_code: Some(0),
            ..StepResult::default()
        },
    };
    rt.block_on(async {
        agent.send(&event(&id, 0, passed)).await;
        agent
            .send(&event(&id, 1, support::fleet::passed_shadow()))
            .await;
        // hello.toml monitors for 5 s; the order comes after that.
        let order = loop {
            if let ControllerMsg::Decision { order, .. } = agent.next().await {
                break order;
            }
        };
        assert_eq!(order, Order::Commit);
        agent
            .send(&event(&id, 2, DeployEvent::Committed { local: false }))
            .await;
    });
    assert!(eventually(Duration::from_secs(10), || {
        ctl.json(&["show", &id, "--json"])["deployment"]["state"] == "committed"
    }));
    let shown = ctl.json(&["show", &id, "--json"]);
    let d = &shown["decisions"][0];
    assert_eq!(
        (d["verdict"].as_str(), d["acted"].as_bool()),
        (Some("commit"), Some(true))
    );
    assert_eq!(ctl.cli(&["replay", &id]).status.code(), Some(0));
}

/// The next order about `id`.
async fn next_order(agent: &mut Fake, id: &str) -> Order {
    loop {
        if let ControllerMsg::Decision { deployment, order } = agent.next().await {
            assert_eq!(deployment, id);
            return order;
        }
    }
}

/// Until the controller acknowledges `id`'s final event.
async fn finished(agent: &mut Fake, id: &str) {
    loop {
        match agent.next().await {
            ControllerMsg::Ack {
                deployment,
                finished: true,
                ..
            } if deployment == id => return,
            ControllerMsg::Decision { order, .. } => panic!("ordered {order:?} after the end"),
            _ => {}
        }
    }
}

fn live_step(exit_code: i32) -> DeployEvent {
    DeployEvent::Step {
        stream: Stream::Live,
        step: StepResult {
            name: "install".into(),
            exit_code: Some(exit_code),
            ..StepResult::default()
        },
    }
}

/// Files in DATA/alerts/`sub`.
fn queued(ctl: &Ctl, sub: &str) -> usize {
    std::fs::read_dir(ctl.data.join("alerts").join(sub)).map_or(0, std::iter::Iterator::count)
}

/// One Alertmanager request: its single alert's labels and endsAt.
fn am_alert(got: &alerts::receiver::Got) -> (serde_json::Value, String) {
    assert_eq!(got.path, "/api/v2/alerts");
    let body = got.json();
    let a = &body.as_array().expect("postableAlerts")[0];
    (
        a["labels"].clone(),
        a["endsAt"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_rollback_alerts_alertmanager_and_a_later_commit_resolves_it() {
    let rt = runtime();
    let rx = rt.block_on(Receiver::start(&[]));
    let mut ctl = Ctl::new("deploy-alert");
    let config = ctl.data.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\ninitial_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n\
             [[alerts.sink]]\ntype = \"alertmanager\"\nname = \"am\"\nurl = \"{}\"\n",
            rx.url()
        ),
    )
    .unwrap();
    ctl.serve_with(&["--config", config.to_str().unwrap()]);
    let ca = ctl.data.join("pki/ca.pem");
    let bundle = ctl.data.join("pki/agents/web-1.bundle");
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl), "the agent never showed as connected");

    // A dry run of a failing install fires nothing: by the final event's
    // ack every alert it could raise would be on disk.
    ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1", "--dry-run"]);
    let (dry, _, _) = rt.block_on(next_deploy(&mut agent));
    rt.block_on(async {
        agent.send(&event(&dry, 0, live_step(1))).await;
        assert_eq!(next_order(&mut agent, &dry).await, Order::Commit);
        let end = DeployEvent::Committed { local: false };
        agent.send(&event(&dry, 1, end)).await;
        finished(&mut agent, &dry).await;
    });
    assert_eq!(queued(&ctl, "queue/am") + queued(&ctl, "firing"), 0);
    assert!(rx.got().is_empty(), "a dry run alerted: {:?}", rx.got());

    // A failed step: the rollback order, then the alert.
    ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1"]);
    let (id, _, _) = rt.block_on(next_deploy(&mut agent));
    rt.block_on(async {
        agent.send(&event(&id, 0, live_step(1))).await;
        let order = next_order(&mut agent, &id).await;
        assert!(matches!(order, Order::Rollback { .. }), "{order:?}");
    });
    assert!(
        eventually(Duration::from_secs(30), || rx.got().len() == 1),
        "the receiver never got the alert"
    );
    let (labels, ends) = am_alert(&rx.got()[0]);
    let want = serde_json::json!({
        "alertname": "BackstopRollback", "host": "web-1", "deployment": id,
        "package": "hello", "decision": "rollback",
    });
    assert_eq!(labels, want);
    let now = time::OffsetDateTime::now_utc();
    let ends =
        time::OffsetDateTime::parse(&ends, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(ends > now, "firing: endsAt in the future ({ends})");
    // The agent's report of the ordered rollback raises no second alert.
    let report = RollbackReport {
        reason: "ordered".into(),
        ..RollbackReport::default()
    };
    rt.block_on(async {
        let end = DeployEvent::RolledBack {
            report,
            local: false,
        };
        agent.send(&event(&id, 1, end)).await;
        finished(&mut agent, &id).await;
    });
    assert_eq!(queued(&ctl, "firing"), 1, "one firing alert kept");

    // A later deployment of the same package commits: resolved, same labels.
    ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1"]);
    let (ok, _, _) = rt.block_on(next_deploy(&mut agent));
    rt.block_on(async {
        agent.send(&event(&ok, 0, live_step(0))).await;
        agent
            .send(&event(&ok, 1, support::fleet::passed_shadow()))
            .await;
        assert_eq!(next_order(&mut agent, &ok).await, Order::Commit);
        let end = DeployEvent::Committed { local: false };
        agent.send(&event(&ok, 2, end)).await;
        finished(&mut agent, &ok).await;
    });
    assert!(
        eventually(Duration::from_secs(30), || rx.got().len() == 2),
        "the receiver never got the resolve: {:?}",
        rx.got().len()
    );
    let (labels, ends) = am_alert(&rx.got()[1]);
    assert_eq!(labels, want, "resolved with the labels it fired with");
    let ends =
        time::OffsetDateTime::parse(&ends, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(
        ends <= time::OffsetDateTime::now_utc(),
        "resolved: endsAt not in the future"
    );
    assert_eq!(queued(&ctl, "firing"), 0);
}

#[test]
fn a_local_rollback_and_an_interrupted_deployment_alert_too() {
    let rt = runtime();
    let rx = rt.block_on(Receiver::start(&[]));
    let mut ctl = Ctl::new("deploy-alert-local");
    let config = ctl.data.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\ninitial_backoff = \"20ms\"\n[[alerts.sink]]\n\
             type = \"alertmanager\"\nname = \"am\"\nurl = \"{}\"\n",
            rx.url()
        ),
    )
    .unwrap();
    ctl.serve_with(&["--config", config.to_str().unwrap()]);
    let ca = ctl.data.join("pki/ca.pem");
    let bundle = ctl.data.join("pki/agents/web-1.bundle");
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl), "the agent never showed as connected");
    let mut ids = Vec::new();
    for (i, kind) in ["rollback", "interrupted"].into_iter().enumerate() {
        ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1"]);
        let (id, _, _) = rt.block_on(next_deploy(&mut agent));
        let report = RollbackReport {
            reason: format!("case {i}"),
            ..RollbackReport::default()
        };
        let (seq, end) = match kind {
            "rollback" => (
                0,
                DeployEvent::RolledBack {
                    report,
                    local: true,
                },
            ),
            // As a restarted agent reports it (agent/src/run_deploy.rs).
            _ => (
                backstop_common::deploy::INTERRUPTED_SEQ,
                DeployEvent::Interrupted { report },
            ),
        };
        rt.block_on(async {
            agent.send(&event(&id, seq, end.clone())).await;
            finished(&mut agent, &id).await;
            // Redelivered: stored once, no second alert.
            agent.send(&event(&id, seq, end)).await;
            finished(&mut agent, &id).await;
        });
        let shown = ctl.json(&["show", &id, "--json"]);
        let state = if kind == "rollback" {
            "rolled_back"
        } else {
            "interrupted"
        };
        assert_eq!(shown["deployment"]["state"], state);
        assert_eq!(shown["events"].as_array().unwrap().len(), 1);
        ids.push((id, kind));
    }
    assert!(
        eventually(Duration::from_secs(30), || rx.got().len() == 2),
        "two alerts, one per deployment: {}",
        rx.got().len()
    );
    for (got, (id, kind)) in rx.got().iter().zip(&ids) {
        let (labels, _) = am_alert(got);
        assert_eq!(labels["deployment"], id.as_str());
        assert_eq!(labels["decision"], *kind);
        assert_eq!(labels["package"], "hello");
    }
}
