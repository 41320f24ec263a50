//! One table per kind of evidence (the install's own steps, the shadow's,
//! the live model here; the other signals in `signals.rs`): each row a
//! deployment, the verdict it must get, and a phrase the decision's text
//! must hold.

use backstop_common::manifest::{Guards, Policy};

use super::*;

fn policy(threshold: Option<f32>, guards: Guards) -> Params {
    Params::from_policy(&Policy { threshold, guards })
}

#[test]
fn live_steps() {
    let p = Params::default;
    let m = || clean(Phase::Monitoring, 10);
    check(&[
        (
            "a step exits non-zero",
            fail_live(clean(Phase::Installing, 3), StepStatus::Exited { code: 1 }),
            p(),
            Verdict::Rollback,
            "live step `dpkg -i app.deb` failed (exit 1)",
        ),
        (
            "a step times out",
            fail_live(m(), StepStatus::TimedOut),
            p(),
            Verdict::Rollback,
            "live step `dpkg -i app.deb` timed out",
        ),
        (
            "a step is OOM-killed",
            fail_live(m(), StepStatus::OomKilled),
            p(),
            Verdict::Rollback,
            "killed by the OOM killer",
        ),
        (
            "a step dies by a signal",
            fail_live(m(), StepStatus::Killed { signal: Some(9) }),
            p(),
            Verdict::Rollback,
            "killed by signal 9",
        ),
        (
            "a step still runs",
            clean(Phase::Installing, 3),
            p(),
            Verdict::Continue,
            "continue",
        ),
        (
            "a step still runs when monitoring ends",
            fail_live(clean(Phase::Done, 10), StepStatus::Running),
            p(),
            Verdict::Inconclusive,
            "not finished when monitoring ended: live step `dpkg -i app.deb`",
        ),
        (
            "no step reported by the end",
            {
                let mut e = clean(Phase::Done, 10);
                e.live_steps.clear();
                e
            },
            p(),
            Verdict::Inconclusive,
            "no step reported",
        ),
        (
            "all exited 0 and monitored",
            clean(Phase::Done, 10),
            p(),
            Verdict::Commit,
            "10 live window(s) under threshold, 1 health probe(s) healthy at the end, shadow passed",
        ),
    ]);
}

#[test]
fn shadow_steps_and_tests() {
    let p = Params::default;
    let shadow = |f: fn(&mut ShadowEvidence)| {
        let mut e = clean(Phase::Monitoring, 10);
        f(e.shadow.as_mut().expect("a shadow"));
        e
    };
    check(&[
        (
            "a shadow test fails while live looks healthy",
            fail_test(clean(Phase::Monitoring, 10), StepStatus::Exited { code: 1 }),
            p(),
            Verdict::Rollback,
            "shadow test `http-200` failed (exit 1)",
        ),
        (
            "a shadow step fails while live still installs",
            shadow(|s| s.steps[0].status = StepStatus::Exited { code: 2 }),
            p(),
            Verdict::Rollback,
            "shadow step `dpkg -i app.deb` failed (exit 2)",
        ),
        (
            "the shadow's step times out",
            shadow(|s| s.steps[0].status = StepStatus::TimedOut),
            p(),
            Verdict::Rollback,
            "shadow step `dpkg -i app.deb` timed out",
        ),
        (
            "the OOM killer kills in the shadow",
            shadow(|s| s.oom_kills = 3),
            p(),
            Verdict::Rollback,
            "the OOM killer killed 3 process(es) in the shadow",
        ),
        (
            "a shadow test still runs",
            fail_test(clean(Phase::Monitoring, 10), StepStatus::Running),
            p(),
            Verdict::Continue,
            "continue",
        ),
        (
            "the shadow never reports",
            {
                let mut e = clean(Phase::Done, 10);
                e.shadow.as_mut().expect("a shadow").finished = false;
                e
            },
            p(),
            Verdict::Inconclusive,
            "the shadow (no final report)",
        ),
        (
            "no shadow asked for",
            {
                let mut e = clean(Phase::Done, 10);
                e.shadow = None;
                e.windows.iter_mut().for_each(|w| {
                    w.shadow_p = None;
                    w.divergence = None;
                });
                e
            },
            p(),
            Verdict::Commit,
            "no shadow",
        ),
    ]);
}

#[test]
fn the_live_model() {
    let p = Params::default;
    let i = || clean(Phase::Installing, 10);
    check(&[
        (
            "one window over: wait",
            live(i(), &[(4, 0.8)]),
            p(),
            Verdict::Continue,
            "live P(failure) 0.80 over threshold 0.50 for 1 window(s) from window 4",
        ),
        (
            "two windows in a row over",
            live(i(), &[(4, 0.8), (5, 0.9)]),
            p(),
            Verdict::Rollback,
            "live P(failure) 0.90 over threshold 0.50 for 2 window(s) from window 4",
        ),
        (
            "two windows over, apart",
            live(i(), &[(2, 0.8), (6, 0.9)]),
            p(),
            Verdict::Continue,
            "0.90",
        ),
        (
            "exactly at the threshold is not over",
            live(i(), &[(4, THR), (5, THR)]),
            p(),
            Verdict::Continue,
            "continue",
        ),
        (
            "one window over, and monitoring ended",
            live(clean(Phase::Done, 10), &[(4, 0.8)]),
            p(),
            Verdict::Inconclusive,
            "Look at: the features that drove the live score at window 4",
        ),
        (
            "the manifest's threshold wins over the model's",
            live(i(), &[(4, 0.3), (5, 0.3)]),
            policy(Some(0.25), Guards::default()),
            Verdict::Rollback,
            "over threshold 0.25",
        ),
        (
            "min_windows 3 waits for a third",
            live(i(), &[(4, 0.8), (5, 0.9)]),
            policy(
                None,
                Guards {
                    min_windows: 3,
                    ..Guards::default()
                },
            ),
            Verdict::Continue,
            "for 2 window(s)",
        ),
        (
            "a P(failure) that is not a number is never committed on",
            live(clean(Phase::Done, 10), &[(3, f64::NAN)]),
            p(),
            Verdict::Inconclusive,
            "unreadable evidence: live P(failure) NaN at window 3",
        ),
    ]);
}
