//! The model votes in a deployment: the real `backstop` daemon with a
//! model installed in its DATA (models/current: trained by the real
//! `backstop train` on `backstop corpus synth`, schema v3), real QUIC with
//! mutual TLS, and the scripted agent of fleet.rs sending windows whose
//! features the model scores. Needs no root or eBPF.
//!
//! Why a generated corpus: the windows are crafted against the trained
//! model (the shipped default's response to crafted windows is not
//! something to pin a test on): every
//! feature at its training mean scores low, and the generated fault
//! families' features growing fourfold per window score high.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use backstop_common::deploy::{DeployEvent, Order, RollbackReport, StepResult};
use backstop_common::features::feature;
use backstop_common::hostlevels::HostLevels;
use backstop_common::window::{Stream, Window};
use backstop_common::wire::{AgentMsg, ControllerMsg};
use support::fleet::{Ctl, Fake, connect, runtime};
use support::{bin_dir, eventually};

fn hello_manifest() -> String {
    format!("{}/../examples/hello.toml", env!("CARGO_MANIFEST_DIR"))
}

/// Train a model on a generated corpus with the real CLI and install it
/// as the fleet's current one.
fn install_model(ctl: &Ctl) {
    let corpus = ctl.data.join("corpus");
    let c = corpus.to_str().unwrap();
    ctl.ok(&[
        "corpus",
        "synth",
        "--packages",
        "12",
        "--per-package",
        "6",
        "--out",
        c,
    ]);
    let to = ctl.data.join("models/current");
    let to = to.to_str().unwrap();
    ctl.ok(&["train", "--epochs", "40", "--corpus", c, "--out", to]);
}

/// A model of feature schema v2 (the shipped default, relabelled as the
/// default before issue 16 was), installed as the fleet's current model.
fn install_v2_model(ctl: &Ctl) {
    let from = format!("{}/../models/default", env!("CARGO_MANIFEST_DIR"));
    let to = ctl.data.join("models/current");
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(
        format!("{from}/model.safetensors"),
        to.join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(format!("{from}/model.json")).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    meta["schema"] = "backstop.features.v2".into();
    std::fs::write(to.join("model.json"), meta.to_string()).unwrap();
}

/// The features the generated corpus's fault families build up through.
const FAULTY: [usize; 10] = [
    feature::MEM_ANON_PEAK_BYTES,
    feature::SYSCALLS_MEM,
    feature::PAGE_DIRTIED_BYTES,
    feature::SYSCALL_ERRORS_ENOSPC,
    feature::BLOCK_LATENCY_P99_US,
    feature::SYSCALL_LATENCY_P99_US,
    feature::SCHED_ON_CPU_NS,
    feature::SCHED_INVOLUNTARY_SWITCHES,
    feature::SYSCALL_ERRORS_TOTAL,
    feature::SYSCALL_ERRORS_OTHER,
];

/// A host far busier than any the generated corpus ran on: 50 runnable
/// tasks per CPU, every CPU busy.
fn overloaded_host() -> HostLevels {
    HostLevels {
        disk_free_bytes: 40e9,
        disk_total_bytes: 100e9,
        mem_available_bytes: 8e9,
        mem_total_bytes: 16e9,
        load1: 200.0,
        cpus: 4.0,
        cpu_util: 1.0,
    }
}

/// `n` windows of `stream` on an overloaded host: quiet (the first `n`
/// windows of the generated corpus's first healthy install), or failing
/// (every feature at the model's training mean, the fault families'
/// features building up).
fn windows(ctl: &Ctl, stream: Stream, n: u64, failing: bool) -> Vec<Window> {
    let meta = std::fs::read_to_string(ctl.data.join("models/current/model.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    let mean: Vec<f64> = meta["normalizer"]["mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap().exp_m1())
        .collect();
    let healthy = healthy_install(ctl);
    (1..=n)
        .map(|seq| {
            let mut w = Window::new(stream, seq, seq * 1_000_000_000, (seq + 1) * 1_000_000_000);
            w.features.clone_from(&healthy[seq as usize - 1]);
            w.host = overloaded_host();
            if failing {
                w.features.clone_from(&mean);
                for i in FAULTY {
                    w.features[i] = mean[i].max(10.0) * 4f64.powi(seq as i32);
                }
            }
            w
        })
        .collect()
}

/// The windows of the first healthy install of the generated corpus (or,
/// for a v2 model's test, which has no corpus, a window of 10s).
fn healthy_install(ctl: &Ctl) -> Vec<Vec<f64>> {
    let Ok(text) = std::fs::read_to_string(ctl.data.join("corpus/deployments.jsonl")) else {
        return vec![vec![10.0; backstop_common::features::FEATURES.len()]; 64];
    };
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["outcome"] == "ok")
        .map(|r| serde_json::from_value(r["windows"].clone()).unwrap())
        .unwrap()
}

async fn start(agent: &mut Fake) -> String {
    loop {
        if let ControllerMsg::Deploy { deployment, .. } = agent.next().await {
            return deployment;
        }
    }
}

fn served(name: &str) -> (Ctl, tokio::runtime::Runtime, Fake) {
    served_with(name, install_model)
}

fn served_with(name: &str, install: fn(&Ctl)) -> (Ctl, tokio::runtime::Runtime, Fake) {
    let mut ctl = Ctl::new(name);
    install(&ctl);
    ctl.serve_with_model();
    let ca = ctl.data.join("pki/ca.pem");
    let bundle = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let agent = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || ctl.host("web-1")["connected"]
            == true),
        "the agent never showed as connected"
    );
    (ctl, rt, agent)
}

#[test]
fn windows_over_the_threshold_roll_back_on_the_model_alone() {
    let (ctl, rt, mut agent) = served("model-high");
    let waiting = Command::new(bin_dir().join("backstop"))
        .arg("--data")
        .arg(&ctl.data)
        .args(["deploy", &hello_manifest(), "--host", "web-1"])
        .args(["--wait", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let order = rt.block_on(async {
        let id = start(&mut agent).await;
        let live = AgentMsg::Windows {
            deployment: id.clone(),
            windows: windows(&ctl, Stream::Live, 4, true),
        };
        agent.send(&live).await;
        loop {
            if let ControllerMsg::Decision { order, .. } = agent.next().await {
                break (id, order);
            }
        }
    });
    let (id, order) = order;
    let Order::Rollback { reason } = order else {
        panic!("windows over the threshold gave {order:?}")
    };
    assert!(reason.contains("live P(failure)"), "{reason}");
    let report = RollbackReport {
        reason: reason.clone(),
        ..RollbackReport::default()
    };
    let last = DeployEvent::RolledBack {
        report,
        local: false,
    };
    let end = AgentMsg::Deployment {
        deployment: id.clone(),
        seq: 0,
        event: Box::new(last),
    };
    rt.block_on(agent.send(&end));
    // `--wait` showed P(failure) against the threshold as windows came.
    let out = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let over = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["reply"] == "progress")
        .any(|l| {
            let (p, t) = (l["p_failure_live"].as_f64(), l["threshold"].as_f64());
            p.zip(t).is_some_and(|(p, t)| p > t)
        });
    assert!(
        over,
        "a progress line with live P over the threshold: {stdout}"
    );
    let shown = ctl.json(&["show", &id, "--json"]);
    let d = &shown["decisions"][0];
    assert_eq!(d["verdict"], "rollback", "{shown}");
    let r = &d["reasons"][0];
    assert_eq!(r["kind"], "live_model", "{shown}");
    let (p, t) = (r["p"].as_f64().unwrap(), r["threshold"].as_f64().unwrap());
    assert!(p > t, "p {p} over threshold {t}");
    let model = d["evidence"]["model"].as_str().unwrap_or("");
    assert!(
        model.ends_with("models/current"),
        "the installed model: {model}"
    );
    let ev = &d["evidence"]["evidence"]["windows"];
    assert!(ev.as_array().is_some_and(|w| w.len() >= 2), "{ev}");
    assert_replayed(&ctl, &id, &shown);
}

/// `backstop replay ID --json` gives every stored decision again, with
/// the same verdict and reasons.
fn assert_replayed(ctl: &Ctl, id: &str, shown: &serde_json::Value) {
    let out = ctl.cli(&["replay", id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let stored = shown["decisions"].as_array().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), stored.len(), "one replay per decision");
    for (r, d) in lines.iter().zip(stored) {
        assert_eq!(r["reproduced"], true, "{r}");
        assert_eq!(
            (&r["verdict"], &r["reasons"]),
            (&d["verdict"], &d["reasons"])
        );
    }
}

/// Deploy hello.toml to the scripted agent, send six quiet windows of
/// each stream, a passed install step and a passed shadow, and wait for
/// the controller's commit: the deployment's id.
fn quiet_commit(ctl: &Ctl, rt: &tokio::runtime::Runtime, agent: &mut Fake) -> String {
    ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1"]);
    rt.block_on(async {
        let id = start(agent).await;
        let msg = |stream| AgentMsg::Windows {
            deployment: id.clone(),
            windows: windows(ctl, stream, 6, false),
        };
        agent.send(&msg(Stream::Live)).await;
        agent.send(&msg(Stream::Shadow)).await;
        let step = DeployEvent::Step {
            stream: Stream::Live,
            step: StepResult {
                name: "install".into(),
                exit_code: Some(0),
                ..StepResult::default()
            },
        };
        let ev = AgentMsg::Deployment {
            deployment: id.clone(),
            seq: 0,
            event: Box::new(step),
        };
        agent.send(&ev).await;
        // hello.toml runs a concurrent shadow: the end of monitoring waits
        // for its report, as from a real agent.
        let shadow = AgentMsg::Deployment {
            deployment: id.clone(),
            seq: 1,
            event: Box::new(support::fleet::passed_shadow()),
        };
        agent.send(&shadow).await;
        loop {
            if let ControllerMsg::Decision { order, .. } = agent.next().await {
                assert_eq!(order, Order::Commit);
                break;
            }
        }
        id
    })
}

#[test]
fn quiet_windows_on_a_host_outside_the_models_range_commit_and_say_so() {
    let (ctl, rt, mut agent) = served("model-low");
    let id = quiet_commit(&ctl, &rt, &mut agent);
    let shown = ctl.json(&["show", &id, "--json"]);
    let d = &shown["decisions"][0];
    assert_eq!(d["verdict"], "commit", "{shown}");
    let model = d["evidence"]["model"].as_str().unwrap_or("");
    assert!(
        model.ends_with("models/current"),
        "the installed model: {model}"
    );
    let reasons = d["reasons"].to_string();
    assert!(!reasons.contains("live_model"), "no model alarm: {reasons}");
    // The host is busier than any the model was trained on: the decision
    // says so, and names the condition; the model's vote still counted.
    assert!(
        reasons.contains("host_outside_training") && reasons.contains("load1_per_cpu"),
        "the decision notes the host outside the training range: {reasons}"
    );
    assert!(
        !reasons.contains("model_out_of_range"),
        "v2's 8-SD rule is gone: {reasons}"
    );
    let ws = d["evidence"]["evidence"]["windows"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(ws.len(), 6, "every live window scored: {ws:?}");
    for w in &ws {
        let (p, t) = (
            w["live_p"].as_f64().unwrap(),
            w["threshold"].as_f64().unwrap(),
        );
        assert!(p < t, "quiet window over the threshold: {w}");
        assert!(w["shadow_p"].as_f64().is_some_and(|s| s < t), "{w}");
        assert!(w.get("outside").is_none(), "no 8-SD mark: {w}");
        assert_eq!(w["host_outside"]["condition"], "load1_per_cpu", "{w}");
    }
    assert_replayed(&ctl, &id, &shown);
}

#[test]
fn a_schema_v2_model_is_refused_and_every_decision_says_so() {
    let (ctl, rt, mut agent) = served_with("model-v2", install_v2_model);
    let id = quiet_commit(&ctl, &rt, &mut agent);
    let shown = ctl.json(&["show", &id, "--json"]);
    let d = &shown["decisions"][0];
    assert_eq!(d["verdict"], "commit", "decided on the rest: {shown}");
    assert_eq!(d["evidence"]["model"], "no model", "{shown}");
    let why = d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "no_model")
        .unwrap_or_else(|| panic!("no no_model reason: {shown}"));
    let why = why["why"].as_str().unwrap();
    assert!(
        why.contains("backstop.features.v2")
            && why.contains(backstop_common::features::SCHEMA_VERSION),
        "the reason names both schemas: {why}"
    );
    assert_replayed(&ctl, &id, &shown);
    // `backstop model` refuses it the same way.
    let out = ctl.cli(&["model"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("backstop.features.v2") && err.contains("retrain"),
        "{err}"
    );
}

/// With nothing in DATA/models, the model in use is the built-in default,
/// of this build's schema, trained on the shipped recorded corpus (its digest is the
/// shipped corpus's: `train_default.rs` checks the bytes).
#[test]
fn the_built_in_default_is_this_schemas_model_of_the_shipped_corpus() {
    let ctl = Ctl::new("model-builtin");
    let v = ctl.json(&["model", "--json"]);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/default/model.json");
    let shipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(v["source"], "built-in default (models/default)", "{v}");
    assert_eq!(
        v["meta"]["schema"],
        backstop_common::features::SCHEMA_VERSION,
        "{v}"
    );
    assert_eq!(v["meta"]["corpus_digest"], shipped["corpus_digest"], "{v}");
    // The net is blind to TCP (no healthy install of the corpus has a
    // network), and `backstop model` says so.
    assert_eq!(v["meta"]["masked"], shipped["masked"], "{v}");
    let masked = v["meta"]["masked"].as_array().unwrap();
    assert!(masked.iter().any(|m| m == "net_connect_attempts"), "{v}");
    let out = ctl.cli(&["model"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = (text.lines())
        .find(|l| l.starts_with("the net is given as zero"))
        .unwrap_or_else(|| panic!("no masked line: {text}"));
    assert!(line.contains("net_connect_attempts"), "{line}");
}
