//! Evidence of several kinds at once: which wins, and what is reported.

use super::*;

#[test]
fn combinations() {
    let p = Params::default;
    check(&[
        (
            "live and shadow both fail: both reported, live first",
            fail_test(
                fail_live(clean(Phase::Monitoring, 10), StepStatus::Exited { code: 1 }),
                StepStatus::Exited { code: 7 },
            ),
            p(),
            Verdict::Rollback,
            "rollback: live step `dpkg -i app.deb` failed (exit 1); shadow test `http-200` failed (exit 7)",
        ),
        (
            "a hard failure lists the soft evidence beside it",
            diverge(
                fail_live(clean(Phase::Installing, 10), StepStatus::TimedOut),
                3,
                0.9,
            ),
            p(),
            Verdict::Rollback,
            "timed out; live and shadow diverge at window 3",
        ),
        (
            "a live alarm confirmed by a single failed probe",
            probes(
                live(clean(Phase::Monitoring, 10), &[(8, 0.7)]),
                &[true, false, true],
            ),
            p(),
            Verdict::Rollback,
            "live P(failure) 0.70 over threshold 0.50 for 1 window(s) from window 8; health probe `http` failed 1 time(s)",
        ),
        (
            "divergence and the shadow's model, without the live model",
            shadow_p(diverge(clean(Phase::Done, 10), 4, 0.5), &[(4, 0.9)]),
            p(),
            Verdict::Inconclusive,
            "shadow P(failure) 0.90 over threshold 0.50 at window 4; live and shadow diverge at window 4",
        ),
        (
            "a hard failure at the end still rolls back",
            latency(clean(Phase::Done, 10), 100.0, 200.0, 30),
            p(),
            Verdict::Rollback,
            "(+100%",
        ),
        (
            "many one-window alarms report the worst",
            live(
                clean(Phase::Done, 30),
                &[(2, 0.6), (5, 0.95), (9, 0.7), (20, 0.8)],
            ),
            p(),
            Verdict::Inconclusive,
            "inconclusive: live P(failure) 0.95 over threshold 0.50 for 1 window(s) from window 5. Look at",
        ),
    ]);
}

#[test]
fn the_first_confirmed_alarm_is_the_one_reported() {
    // Two live alarms, each with a shadow window near it: the earlier
    // pair, the nearest witness.
    let e = shadow_p(
        live(clean(Phase::Installing, 40), &[(10, 0.6), (30, 0.9)]),
        &[(14, 0.7), (11, 0.8), (31, 0.99)],
    );
    let d = decide(&e, &Params::default());
    assert_eq!(d.verdict, Verdict::Rollback);
    assert_eq!(
        d.reasons,
        vec![
            Reason::LiveModel {
                window: 10,
                windows: 1,
                p: 0.6,
                threshold: THR,
                beyond: None,
                drivers: Vec::new(),
            },
            Reason::ShadowModel {
                window: 11,
                p: 0.8,
                threshold: THR
            },
        ],
        "{d}"
    );
}

#[test]
fn a_report_converts_into_shadow_evidence() {
    // The fields a ShadowReport's step results carry.
    assert_eq!(
        StepStatus::finished(Some(0), false, false),
        StepStatus::Exited { code: 0 }
    );
    assert_eq!(
        StepStatus::finished(Some(1), false, true),
        StepStatus::Exited { code: 1 }
    );
    assert_eq!(StepStatus::finished(None, true, true), StepStatus::TimedOut);
    assert_eq!(
        StepStatus::finished(None, false, true),
        StepStatus::OomKilled
    );
    assert_eq!(
        StepStatus::finished(None, false, false),
        StepStatus::Killed { signal: None }
    );
    // An OOM kill in the shadow fails it even when every step exited 0,
    // as ShadowReport::passed says.
    let mut e = clean(Phase::Monitoring, 5);
    e.shadow.as_mut().expect("a shadow").oom_kills = 1;
    assert_eq!(decide(&e, &Params::default()).verdict, Verdict::Rollback);
}

/// A window beyond the healthy envelope alarms as a P over the threshold
/// does, whatever its P, and the reason names the feature and its limit.
#[test]
fn a_run_beyond_the_healthy_envelope_rolls_back_naming_the_feature() {
    let beyond = |mut e: Evidence, at: &[usize]| {
        for &i in at {
            e.windows[i].beyond = Some(crate::predict::envelope::Beyond {
                feature: "sched_blocked_longest_ms".into(),
                value: 9000.0 + i as f64,
                limit: 1200.0,
                ratio: (9000.0 + i as f64) / 1200.0,
            });
        }
        e
    };
    let p = Params::default();
    let run: Vec<usize> = (4..4 + p.min_windows as usize).collect();
    let d = decide(&beyond(clean(Phase::Monitoring, 20), &run), &p);
    assert_eq!(d.verdict, Verdict::Rollback, "{d:?}");
    let Reason::LiveModel {
        window, beyond: b, ..
    } = &d.reasons[0]
    else {
        panic!("{d:?}");
    };
    assert_eq!(*window, 4);
    // The run's furthest window is the one named.
    assert_eq!(
        b.as_ref().unwrap().value,
        9000.0 + *run.last().unwrap() as f64
    );
    let text = d.reasons[0].to_string();
    assert!(
        text.starts_with("live sched_blocked_longest_ms 90")
            && text.contains("beyond the healthy envelope")
            && text.contains("its limit 1200"),
        "{text}"
    );
    // A single window beyond is a live alarm, not a rollback by itself.
    let one = decide(&beyond(clean(Phase::Monitoring, 20), &[4]), &p);
    assert_ne!(one.verdict, Verdict::Rollback, "{one:?}");
    // A run over the threshold names what drove its highest window.
    let mut e = live(clean(Phase::Monitoring, 20), &[(6, 0.8), (7, 0.9)]);
    e.windows[7].drivers = vec!["syscall_errors_eio".into(), "block_errors".into()];
    let text = decide(&e, &p).reasons[0].to_string();
    assert!(
        text.ends_with("from window 6 (driven by syscall_errors_eio, block_errors)"),
        "{text}"
    );
    // Inside the envelope, the same P commits.
    let none = decide(&clean(Phase::Done, 20), &p);
    assert_eq!(none.verdict, Verdict::Commit, "{none:?}");
}
