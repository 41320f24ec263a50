//! The signals that confirm or add to the live model, one table each:
//! the shadow's model, divergence, health probes, performance, history.

use backstop_common::manifest::{Guards, Policy};

use super::*;

fn policy(threshold: Option<f32>, guards: Guards) -> Params {
    Params::from_policy(&Policy { threshold, guards })
}

#[test]
fn the_shadow_model() {
    let p = Params::default;
    let i = || clean(Phase::Installing, 30);
    check(&[
        (
            "shadow alone over, while running",
            shadow_p(i(), &[(4, 0.9), (5, 0.9)]),
            p(),
            Verdict::Continue,
            "shadow P(failure) 0.90 over threshold 0.50 at window 4",
        ),
        (
            "shadow alone over at the end",
            shadow_p(clean(Phase::Done, 10), &[(4, 0.9)]),
            p(),
            Verdict::Inconclusive,
            "the shadow has no network",
        ),
        (
            "live and shadow agree in one window",
            shadow_p(live(i(), &[(4, 0.7)]), &[(4, 0.8)]),
            p(),
            Verdict::Rollback,
            "live P(failure) 0.70 over threshold 0.50 for 1 window(s) from window 4; shadow P(failure) 0.80",
        ),
        (
            "the shadow a few windows ahead still agrees",
            shadow_p(live(i(), &[(12, 0.7)]), &[(5, 0.8)]),
            p(),
            Verdict::Rollback,
            "at window 5",
        ),
        (
            "the shadow too far away does not",
            shadow_p(live(i(), &[(25, 0.7)]), &[(5, 0.8)]),
            p(),
            Verdict::Continue,
            "continue",
        ),
    ]);
}

#[test]
fn divergence() {
    let p = Params::default;
    let i = || clean(Phase::Installing, 10);
    check(&[
        (
            "divergence alone while running",
            diverge(i(), 5, 0.5),
            p(),
            Verdict::Continue,
            "live and shadow diverge at window 5: 50% of behaviour features apart (limit 20%), most `syscall_errors_enospc` (live higher)",
        ),
        (
            "divergence alone at the end",
            diverge(clean(Phase::Done, 10), 5, 0.5),
            p(),
            Verdict::Inconclusive,
            "Look at: `syscall_errors_enospc` in the live and the shadow stream",
        ),
        (
            "divergence and a live alarm",
            diverge(live(i(), &[(6, 0.7)]), 5, 0.5),
            p(),
            Verdict::Rollback,
            "diverge at window 5",
        ),
        (
            "at the limit is not over it",
            diverge(clean(Phase::Done, 10), 5, 0.2),
            p(),
            Verdict::Commit,
            "commit",
        ),
        (
            "the manifest's max_divergence",
            diverge(clean(Phase::Done, 10), 5, 0.5),
            policy(
                None,
                Guards {
                    max_divergence: Some(0.6),
                    ..Guards::default()
                },
            ),
            Verdict::Commit,
            "commit",
        ),
    ]);
}

#[test]
fn health_probes() {
    let p = Params::default;
    let m = || clean(Phase::Monitoring, 10);
    check(&[
        (
            "two failures in a row after the install",
            probes(m(), &[true, false, false]),
            p(),
            Verdict::Rollback,
            "health probe `http` failed 2 time(s) in a row to window 9 (last: status 503)",
        ),
        (
            "one failure, then it recovers",
            probes(clean(Phase::Done, 10), &[true, false, true, true]),
            p(),
            Verdict::Commit,
            "commit",
        ),
        (
            "failures that never run two in a row",
            probes(m(), &[false, true, false, true, false]),
            p(),
            Verdict::Continue,
            "health probe `http`",
        ),
        (
            "still failing when monitoring ends",
            probes(clean(Phase::Done, 10), &[true, true, false]),
            p(),
            Verdict::Inconclusive,
            "Look at: probe `http`'s last results",
        ),
        (
            "never ran",
            probes(clean(Phase::Done, 10), &[]),
            p(),
            Verdict::Inconclusive,
            "health probe `http` (never ran)",
        ),
    ]);
}

#[test]
fn performance() {
    let p = Params::default;
    let m = || clean(Phase::Monitoring, 10);
    check(&[
        (
            "latency up 50% during monitoring",
            latency(m(), 100.0, 150.0, 20),
            p(),
            Verdict::Rollback,
            "probe `http` latency regressed: median",
        ),
        (
            "a tiny but significant shift",
            latency(clean(Phase::Done, 10), 100.0, 103.0, 200),
            p(),
            Verdict::Commit,
            "commit",
        ),
        (
            "too few samples to judge",
            latency(clean(Phase::Done, 10), 100.0, 300.0, 4),
            p(),
            Verdict::Commit,
            "commit",
        ),
        (
            "the manifest's larger guard",
            latency(m(), 100.0, 150.0, 20),
            policy(
                None,
                Guards {
                    max_latency_increase: 0.8,
                    ..Guards::default()
                },
            ),
            Verdict::Continue,
            "continue",
        ),
    ]);
}

#[test]
fn history() {
    let p = Params::default;
    let with = |e: Evidence, rb: u32, ok: u32, recent: u32| {
        let mut e = e;
        e.history = History {
            version_committed: ok,
            version_rolled_back: rb,
            package_recent_rollbacks: recent,
        };
        e
    };
    let alarm = || live(clean(Phase::Done, 10), &[(4, 0.7)]);
    check(&[
        (
            "a live alarm, and this version rolled back elsewhere",
            with(alarm(), 3, 1, 0),
            p(),
            Verdict::Rollback,
            "history: this version was rolled back on 3 other host(s) and committed on 1",
        ),
        (
            "a live alarm, and the package rolled back often lately",
            with(alarm(), 0, 5, 3),
            p(),
            Verdict::Rollback,
            "rolled back 3 time(s) in the fleet recently",
        ),
        (
            "one rollback elsewhere is not enough",
            with(alarm(), 1, 0, 0),
            p(),
            Verdict::Inconclusive,
            "live P(failure) 0.70",
        ),
        (
            "more commits than rollbacks",
            with(alarm(), 2, 9, 0),
            p(),
            Verdict::Inconclusive,
            "live P(failure) 0.70",
        ),
        (
            "history alone never blocks a clean deployment",
            with(clean(Phase::Done, 10), 9, 0, 9),
            p(),
            Verdict::Commit,
            "commit",
        ),
        (
            "the manifest turns history off",
            with(alarm(), 9, 0, 9),
            policy(
                None,
                Guards {
                    history: false,
                    ..Guards::default()
                },
            ),
            Verdict::Inconclusive,
            "live P(failure) 0.70",
        ),
    ]);
}

/// Marks windows `from..to` as outside the model's host range.
fn outside(mut e: Evidence, from: usize, to: usize) -> Evidence {
    for w in &mut e.windows[from..to] {
        w.outside = Some(crate::decide::evidence::OutOfRange {
            feature: "host_disk_free_bytes".into(),
            z: 385.0,
        });
    }
    e
}

#[test]
fn the_model_outside_its_host_range() {
    let p = Params::default;
    let all_over = |e: Evidence| {
        let n = e.windows.len();
        live(e, &(0..n).map(|i| (i, 0.9)).collect::<Vec<_>>())
    };
    check(&[
        (
            "alarms everywhere, the host outside: committed, and said",
            outside(all_over(clean(Phase::Done, 10)), 0, 10),
            p(),
            Verdict::Commit,
            "model not counted at 10 window(s) from window 0: the host's host_disk_free_bytes lies +385",
        ),
        (
            "the same alarms inside the range roll back",
            all_over(clean(Phase::Done, 10)),
            p(),
            Verdict::Rollback,
            "live P(failure) 0.90 over threshold 0.50 for 10 window(s) from window 0",
        ),
        (
            "only the windows inside count: two of them roll back",
            outside(all_over(clean(Phase::Installing, 10)), 0, 8),
            p(),
            Verdict::Rollback,
            "for 2 window(s) from window 8",
        ),
        (
            "the shadow's vote outside the range does not block a commit",
            outside(shadow_p(clean(Phase::Done, 10), &[(4, 0.9)]), 0, 10),
            p(),
            Verdict::Commit,
            "model not counted",
        ),
        (
            "a failed step still rolls back outside the range",
            outside(
                {
                    let mut e = clean(Phase::Installing, 10);
                    e.live_steps[0].status = StepStatus::Exited { code: 1 };
                    e
                },
                0,
                10,
            ),
            p(),
            Verdict::Rollback,
            "failed (exit 1)",
        ),
    ]);
}

#[test]
fn windows_unlike_the_models_are_noted_and_change_no_verdict() {
    let p = Params::default;
    let longer = |mut e: Evidence| {
        e.window_length = Some(crate::decide::evidence::WindowLength {
            live_ms: 1000,
            model_ms: 250,
        });
        e
    };
    check(&[
        (
            "a clean deployment in 1000 ms windows under a 250 ms model commits, and says so",
            longer(clean(Phase::Done, 10)),
            p(),
            Verdict::Commit,
            "live windows of 1000 ms, the model was trained on 250 ms windows",
        ),
        (
            "two windows over the threshold still roll back",
            longer(live(clean(Phase::Installing, 10), &[(3, 0.9), (4, 0.9)])),
            p(),
            Verdict::Rollback,
            "--window-ms 250",
        ),
    ]);
}

/// The scope's filesystem: 64 MiB losing 2 MiB a second for 20 windows of
/// a second, the step still running (as a disk-filling postinst).
fn filling(mut e: Evidence) -> Evidence {
    const MIB: f64 = 1024.0 * 1024.0;
    e.resources.disk_free = (0..20u32)
        .map(|i| crate::decide::trend::Level {
            index: u64::from(i),
            at_ms: f64::from(i + 1) * 1000.0,
            value: (64.0 - 2.0 * f64::from(i)) * MIB,
        })
        .collect();
    e
}

#[test]
fn a_projected_exhaustion_and_the_guard_that_turns_it_off() {
    check(&[
        (
            "a steady fill past half the room rolls back while installing",
            filling(clean(Phase::Installing, 20)),
            Params::default(),
            Verdict::Rollback,
            "disk filling: the scope's filesystem loses 2.0 MiB/s",
        ),
        (
            "guards.exhaustion = false: only the step's own failure would act",
            filling(clean(Phase::Installing, 20)),
            policy(
                None,
                Guards {
                    exhaustion: false,
                    ..Guards::default()
                },
            ),
            Verdict::Continue,
            "continue",
        ),
    ]);
}
