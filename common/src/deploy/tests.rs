//! The deployment wire types' own tests.

use super::*;
use crate::wire::{AgentMsg, ControllerMsg, decode, encode};

fn step(name: &str, code: Option<i32>) -> StepResult {
    StepResult {
        index: 1,
        name: name.into(),
        exit_code: code,
        duration_ms: 12.5,
        timed_out: code.is_none(),
        output_tail: "dpkg: error processing package".into(),
    }
}

fn rollback() -> RollbackReport {
    RollbackReport {
        reason: "shadow test `greets` exited 1".into(),
        killed_pids: vec![41, 42],
        restore: Some(RestoreSummary {
            snapshot: "s-1".into(),
            full_walk_reason: Some("change log lost events".into()),
            duration_ms: 3.25,
        }),
        hooks: vec![step("restart", Some(0))],
        probes: vec![ProbeResult {
            name: "http".into(),
            ok: true,
            latency_ms: 1.5,
            detail: "200".into(),
            window: 0,
        }],
        problems: Vec::new(),
    }
}

fn every_event() -> Vec<DeployEvent> {
    vec![
        DeployEvent::Started {
            snapshot: "s-1".into(),
        },
        DeployEvent::Step {
            stream: Stream::Shadow,
            step: step("install", Some(1)),
        },
        DeployEvent::ShadowTest {
            step: step("greets", None),
        },
        DeployEvent::Probe {
            probe: ProbeResult::default(),
        },
        DeployEvent::Shadow {
            report: ShadowSummary {
                steps: vec![step("install", Some(0))],
                tests: vec![step("greets", Some(1))],
                oom_kills: 2,
                changed_paths: 17,
                cleanup_problems: vec!["umount: busy".into()],
                ..ShadowSummary::default()
            },
        },
        DeployEvent::ShadowFailed {
            reason: "creating the shadow: EAGAIN".into(),
        },
        DeployEvent::Installed { ok: false },
        DeployEvent::RolledBack {
            report: rollback(),
            local: true,
        },
        DeployEvent::Committed { local: false },
        DeployEvent::Interrupted { report: rollback() },
        DeployEvent::Refused {
            reason: "shadow failed".into(),
        },
        DeployEvent::Failed {
            reason: "no room".into(),
        },
        DeployEvent::Baseline {
            probe: ProbeResult {
                name: "http".into(),
                ok: true,
                latency_ms: 2.5,
                detail: "status 200 (expected 200)".into(),
                window: 7,
            },
        },
        DeployEvent::ControllerLost,
        DeployEvent::ControllerBack,
        DeployEvent::LiveMemory {
            sample: MemorySample {
                index: 3,
                at_ms: 3000.5,
                current_bytes: 40 << 20,
                limit_bytes: 64 << 20,
                oom_kills: 1,
            },
        },
        DeployEvent::Service {
            sample: ServiceSample {
                baseline: true,
                at_ms: 12.25,
                cpu_usage_usec: 987_654,
                memory_bytes: Some(1 << 20),
            },
        },
    ]
}

#[test]
fn every_event_round_trips_in_postcard_and_json() {
    for (seq, event) in every_event().into_iter().enumerate() {
        let msg = AgentMsg::Deployment {
            deployment: "d-7".into(),
            seq: seq as u64,
            event: Box::new(event.clone()),
        };
        let frame = encode(&msg);
        assert_eq!(decode::<AgentMsg>(&frame[4..]).unwrap(), msg, "{event:?}");
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<DeployEvent>(&json).unwrap(), event);
    }
}

#[test]
fn deploy_and_decision_orders_round_trip() {
    let text = include_str!("../../../examples/hello.toml");
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let manifest = crate::manifest::Manifest::from_toml_in(text, Some(&base)).unwrap();
    let msgs = vec![
        ControllerMsg::Deploy {
            deployment: "d-7".into(),
            manifest: Box::new(manifest),
            window_ms: 250,
            dry_run: true,
        },
        ControllerMsg::Decision {
            deployment: "d-7".into(),
            order: Order::Rollback {
                reason: "P(failure) 0.93 over 0.5".into(),
            },
        },
        ControllerMsg::Decision {
            deployment: "d-7".into(),
            order: Order::Commit,
        },
    ];
    for msg in msgs {
        let frame = encode(&msg);
        assert_eq!(decode::<ControllerMsg>(&frame[4..]).unwrap(), msg);
    }
}

#[test]
fn verdict_helpers_read_the_reports() {
    assert!(rollback().clean());
    let mut r = rollback();
    r.restore = None;
    assert!(!r.clean(), "no restore is not clean");
    let mut r = rollback();
    r.hooks[0].exit_code = Some(3);
    assert!(!r.clean(), "a failed hook is not clean");
    let s = ShadowSummary {
        tests: vec![step("a", Some(0)), step("b", Some(2))],
        ..ShadowSummary::default()
    };
    assert!(!s.passed());
    assert_eq!(s.first_failed_test().unwrap().name, "b");
    assert!(ShadowSummary::default().passed());
    let finals: Vec<_> = every_event().iter().map(DeployEvent::is_final).collect();
    assert_eq!(finals.iter().filter(|f| **f).count(), 5);
}
