use backstop_common::deploy::{RestoreSummary, RollbackReport};
use backstop_common::features::feature;

use super::*;

fn row(state: DeployState) -> DeployRow {
    DeployRow {
        id: "d1".into(),
        host: "web-1".into(),
        name: "hello".into(),
        package: Some("hello".into()),
        version: None,
        dry_run: false,
        state,
        reason: Some("step install exited 1".into()),
        created_ms: 1_000,
        ended_ms: Some(9_000),
    }
}

fn step(index: usize, name: &str, code: i32, ms: f64, out: &str) -> StepResult {
    StepResult {
        index,
        name: name.into(),
        exit_code: Some(code),
        duration_ms: ms,
        timed_out: false,
        output_tail: out.into(),
    }
}

fn ev(seq: u64, at_ms: i64, event: DeployEvent) -> DeployEventRow {
    DeployEventRow { seq, at_ms, event }
}

fn window(stream: Stream, seq: u64, f: &[(usize, f64)]) -> Window {
    let mut w = Window::new(stream, seq, seq * 10, seq * 10 + 10);
    for (i, v) in f {
        w.features[*i] = *v;
    }
    w
}

fn failing() -> Stored {
    let out = "unpacking\nsetting up hello\ndpkg: error processing package hello (--configure)\npostinst failed";
    let report = RollbackReport {
        reason: "step install exited 1".into(),
        restore: Some(RestoreSummary {
            snapshot: "s1".into(),
            full_walk_reason: None,
            duration_ms: 4.0,
        }),
        ..RollbackReport::default()
    };
    Stored {
        row: row(DeployState::RolledBack),
        events: vec![
            ev(
                0,
                1_100,
                DeployEvent::Started {
                    snapshot: "s1".into(),
                },
            ),
            ev(
                1,
                2_000,
                DeployEvent::Step {
                    stream: Stream::Live,
                    step: step(0, "unpack", 0, 500.0, "ok"),
                },
            ),
            ev(
                2,
                5_000,
                DeployEvent::Step {
                    stream: Stream::Shadow,
                    step: step(1, "configure", 1, 2_000.0, out),
                },
            ),
            ev(
                3,
                6_000,
                DeployEvent::Step {
                    stream: Stream::Live,
                    step: step(1, "configure", 1, 3_000.0, out),
                },
            ),
            ev(
                4,
                8_000,
                DeployEvent::RolledBack {
                    report,
                    local: false,
                },
            ),
        ],
        windows: vec![
            window(Stream::Live, 0, &[(feature::SYSCALLS_TOTAL, 100.0)]),
            window(
                Stream::Live,
                1,
                &[
                    (feature::SYSCALLS_TOTAL, 100.0),
                    (feature::SYSCALL_ERRORS_ENOENT, 3.0),
                ],
            ),
            window(
                Stream::Live,
                2,
                &[
                    (feature::SYSCALLS_TOTAL, 110.0),
                    (feature::SYSCALL_ERRORS_ENOSPC, 40.0),
                ],
            ),
            window(
                Stream::Shadow,
                0,
                &[
                    (feature::SYSCALLS_TOTAL, 100.0),
                    (feature::SYSCALL_ERRORS_ENOENT, 1.0),
                ],
            ),
        ],
        decisions: vec![DecisionRow {
            at_ms: 6_100,
            verdict: "rollback".into(),
            reasons: serde_json::json!(["live step `configure` exited 1"]),
            evidence: serde_json::json!({}),
            acted: true,
        }],
    }
}

#[test]
fn the_timeline_runs_from_start_to_restore_with_alarm_onset_and_decision() {
    let t = timeline(&failing());
    let whats: Vec<&str> = t.iter().map(|m| m.what).collect();
    assert_eq!(whats.first(), Some(&"started"));
    assert_eq!(whats.last(), Some(&"restored"), "{t:?}");
    let at = |w: &str| t.iter().find(|m| m.what == w).map(|m| m.at_ms);
    // The live step failed at 6000 after 3000 ms: it began at 3000. The
    // shadow's failure came first (5000) and is the first alarm.
    assert_eq!(at("onset"), Some(3_000));
    assert_eq!(at("first_alarm"), Some(5_000));
    assert_eq!(at("decision"), Some(6_100));
    assert_eq!(at("restored"), Some(8_000));
    assert!(
        t.windows(2).all(|p| p[0].at_ms <= p[1].at_ms),
        "sorted: {t:?}"
    );
    let restored = t.iter().find(|m| m.what == "restored").unwrap();
    assert!(
        restored.detail.contains("controller's order"),
        "{restored:?}"
    );
}

#[test]
fn a_decision_before_any_failure_is_the_first_alarm_in_the_timeline() {
    let mut s = failing();
    s.decisions[0].at_ms = 4_000;
    s.decisions[0].reasons = serde_json::json!([{"kind": "exhaustion"}]);
    let t = timeline(&s);
    let alarm = t.iter().find(|m| m.what == "first_alarm").unwrap();
    assert_eq!(alarm.at_ms, 4_000, "{t:?}");
    assert!(alarm.detail.contains("exhaustion"), "{alarm:?}");
    assert_eq!(
        Some(alarm.at_ms),
        crate::report::lead::lead(&s.events, &s.decisions).first_alarm_ms,
        "the timeline and the lead agree"
    );
}

#[test]
fn the_first_failing_step_is_the_live_one_with_its_error_lines() {
    let r = analyse(&failing(), &[]);
    let f = r.first_failure.expect("a failing step");
    assert_eq!(
        (f.stream, f.name.as_str(), f.exit_code),
        (Stream::Live, "configure", Some(1))
    );
    assert_eq!(
        f.errors,
        vec![
            "dpkg: error processing package hello (--configure)",
            "postinst failed"
        ]
    );
    assert_eq!(f.output_tail.len(), 4);
    let d = r.decision.expect("a decision");
    assert_eq!((d.verdict.as_str(), d.acted), ("rollback", true));
    // Only a shadow test failed: that is the first failure.
    let mut s = failing();
    s.events
        .retain(|e| !matches!(e.event, DeployEvent::Step { .. }));
    s.events.push(ev(
        9,
        7_000,
        DeployEvent::ShadowTest {
            step: step(0, "greets", 2, 10.0, ""),
        },
    ));
    let f = analyse(&s, &[]).first_failure.unwrap();
    assert_eq!((f.kind, f.name.as_str()), ("shadow test", "greets"));
}

#[test]
fn deviations_use_history_when_stored_else_own_first_windows_else_none() {
    let s = failing();
    // No history: the first of three live windows is the baseline.
    let r = analyse(&s, &[]);
    assert_eq!(
        (r.baseline.kind, r.baseline.windows),
        ("own first windows", 1)
    );
    assert_eq!(
        r.deviations[0].feature, "syscall_errors_enospc",
        "{:?}",
        r.deviations
    );
    // History of healthy windows with ENOENT noise: ENOSPC still leads,
    // and the baseline says it is history.
    let hist: Vec<Window> = (0..4)
        .map(|i| {
            window(
                Stream::Live,
                i,
                &[
                    (feature::SYSCALLS_TOTAL, 100.0 + i as f64),
                    (feature::SYSCALL_ERRORS_ENOENT, 1.0),
                ],
            )
        })
        .collect();
    let r = analyse(&s, &hist);
    assert_eq!((r.baseline.kind, r.baseline.windows), ("history", 4));
    assert_eq!(r.deviations[0].feature, "syscall_errors_enospc");
    assert!(r.deviations[0].score > 10.0, "{:?}", r.deviations[0]);
    // One live window and no history: nothing to compare, said so.
    let mut one = failing();
    one.windows.truncate(1);
    let r = analyse(&one, &[]);
    assert_eq!(r.baseline.kind, "none");
    assert!(r.deviations.is_empty());
    assert!(r.live_vs_shadow.is_none());
    assert!(
        r.live_vs_shadow_note.contains("0 shadow"),
        "{}",
        r.live_vs_shadow_note
    );
}

#[test]
fn live_against_shadow_and_errno_counts_read_the_windows() {
    let r = analyse(&failing(), &[]);
    let d = r.live_vs_shadow.clone().expect("both streams have windows");
    // ENOSPC: live only (relative 1) comes first.
    assert_eq!(d[0].feature, "syscall_errors_enospc");
    assert_eq!(d[0].relative, 1.0);
    assert_eq!(r.errors_by_errno["live"]["syscall_errors_enospc"], 40.0);
    assert_eq!(r.errors_by_errno["live"]["syscall_errors_enoent"], 3.0);
    assert_eq!(r.errors_by_errno["shadow"]["syscall_errors_enoent"], 1.0);
    assert!(
        r.errors_by_errno["shadow"]
            .get("syscall_errors_enospc")
            .is_none()
    );
    let text = render(&r);
    for want in [
        "timeline:",
        "first failing step: live 1 `configure`",
        "decision: rollback",
        "own first windows",
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
}

#[test]
fn a_bundle_is_written_private_whole_and_lists_its_parts() {
    use std::io::Read;
    let d = backstop_common::private::ScratchDir::new("bundle");
    let parts: Vec<(String, Vec<u8>)> = bundle::PARTS
        .iter()
        .map(|p| (p.to_string(), format!("part {p}").into_bytes()))
        .collect();
    let p = bundle::write_file(&d, "d1", &parts).unwrap();
    assert_eq!(p, bundle::path(&d, "d1"));
    let mode = |p: &std::path::Path| backstop_common::private::mode_of(p).unwrap();
    assert_eq!(mode(&p), 0o600);
    assert_eq!(mode(&d.join("bundles")), 0o700);
    let names: Vec<String> = std::fs::read_dir(d.join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["d1.tar.gz"], "nothing left aside");
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap());
    let mut tar = tar::Archive::new(gz);
    let mut seen = Vec::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut body = String::new();
        e.read_to_string(&mut body).unwrap();
        assert_eq!(body, format!("part {}", name.trim_start_matches("d1/")));
        seen.push(name);
    }
    let want: Vec<String> = bundle::PARTS.iter().map(|p| format!("d1/{p}")).collect();
    assert_eq!(seen, want);
    assert!(matches!(
        bundle::write_file(&d, "../x", &parts),
        Err(bundle::BundleError::BadId(_))
    ));
}

#[test]
fn a_flat_baseline_is_floored_by_unit_not_made_infinite() {
    // A history of one window where the tree had no open fds; the failing
    // deployment averages 30. Without a unit floor that was 30 million
    // deviations (seen in the demo's report).
    let hist = vec![window(Stream::Live, 0, &[(feature::SYSCALLS_TOTAL, 5.0)])];
    let live: Vec<Window> = (0..3)
        .map(|i| window(Stream::Live, i, &[(feature::TREE_OPEN_FDS, 30.0)]))
        .collect();
    let refs: Vec<&Window> = live.iter().collect();
    let (_, devs) = super::stats::deviations(&refs, &hist);
    let fds = devs
        .iter()
        .find(|d| d.feature == "tree_open_fds")
        .unwrap_or_else(|| panic!("{devs:?}"));
    assert!((fds.score - 30.0).abs() < 1e-9, "{fds:?}");
}
