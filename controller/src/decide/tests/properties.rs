//! Properties over every small deployment and over seeded random ones:
//! the same evidence gives the same decision, every phase gets only the
//! verdicts it may, and more alarming evidence never gives a milder
//! verdict (monotonic).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// How alarming a verdict is; the engine must never lower it when
/// evidence only gets worse.
fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Commit | Verdict::Continue => 0,
        Verdict::Inconclusive => 1,
        Verdict::Rollback => 2,
    }
}

/// Each way evidence can get worse, and whether it alone is a hard
/// failure (which must roll back whatever else is there).
type Worsen = (&'static str, bool, fn(Evidence) -> Evidence);

fn worsenings() -> Vec<Worsen> {
    vec![
        ("a live step fails", true, |e| {
            fail_live(e, StepStatus::Exited { code: 1 })
        }),
        ("a shadow test fails", true, |e| {
            fail_test(e, StepStatus::Exited { code: 1 })
        }),
        ("the shadow OOMs", true, |mut e| {
            if let Some(s) = e.shadow.as_mut() {
                s.oom_kills += 1;
            }
            e
        }),
        ("a probe fails twice more", true, |mut e| {
            let n = e.windows.len() as u64;
            e.probes[0]
                .results
                .extend([probe(n, false), probe(n, false)]);
            e
        }),
        ("latency regresses", true, |e| latency(e, 100.0, 200.0, 20)),
        ("two live windows over", true, |e| {
            live(e, &[(0, 0.99), (1, 0.99)])
        }),
        ("one live window over", false, |e| live(e, &[(1, 0.99)])),
        ("the shadow's model over", false, |e| {
            shadow_p(e, &[(2, 0.99)])
        }),
        ("live and shadow diverge", false, |e| diverge(e, 0, 0.9)),
        ("history turns against it", false, |mut e| {
            e.history.version_rolled_back += 5;
            e.history.package_recent_rollbacks += 5;
            e
        }),
    ]
}

/// Checks one deployment: determinism, JSON replay, the phase's verdicts,
/// and monotonicity under every worsening.
fn holds(e: &Evidence, p: &Params) {
    let d = decide(e, p);
    assert_eq!(decide(e, p), d, "not deterministic for {e:?}");
    let back: Evidence =
        serde_json::from_str(&serde_json::to_string(e).expect("serialises")).expect("reads back");
    assert_eq!(decide(&back, p), d, "replay differs for {e:?}");
    match e.phase {
        Phase::Done => assert_ne!(d.verdict, Verdict::Continue, "{d} for {e:?}"),
        _ => assert!(
            matches!(d.verdict, Verdict::Continue | Verdict::Rollback),
            "{d} while running for {e:?}"
        ),
    }
    assert!(
        !d.reasons.is_empty() || d.verdict == Verdict::Continue,
        "{d}"
    );
    for (what, hard, worsen) in worsenings() {
        let w = decide(&worsen(e.clone()), p);
        assert!(
            rank(w.verdict) >= rank(d.verdict),
            "{what} turned `{d}` into `{w}` for {e:?}"
        );
        if hard {
            assert_eq!(
                w.verdict,
                Verdict::Rollback,
                "{what} did not roll back: {w}"
            );
        }
    }
}

#[test]
fn every_small_deployment_is_deterministic_and_monotonic() {
    let patterns: &[&[bool]] = &[&[], &[true], &[false], &[false, true], &[true, false]];
    let p = Params::default();
    let mut n = 0;
    for phase in [Phase::Installing, Phase::Monitoring, Phase::Done] {
        for live_bits in 0..8u8 {
            for shadow_at in [None, Some(0), Some(2)] {
                for div in [false, true] {
                    for oks in patterns {
                        for history in [false, true] {
                            let mut e = clean(phase, 3);
                            for i in 0..3 {
                                if live_bits & (1 << i) != 0 {
                                    e.windows[i].live_p = 0.8;
                                }
                            }
                            if let Some(i) = shadow_at {
                                e = shadow_p(e, &[(i, 0.8)]);
                            }
                            if div {
                                e = diverge(e, 1, 0.5);
                            }
                            e = probes(e, oks);
                            if history {
                                e.history.version_rolled_back = 3;
                            }
                            holds(&e, &p);
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(n, 3 * 8 * 3 * 2 * 5 * 2);
}

/// A random deployment: any phase, up to 40 windows, a few over the
/// threshold, shadow windows and divergence here and there,
/// random probe results and history.
fn random(rng: &mut ChaCha8Rng) -> Evidence {
    let phase = [Phase::Installing, Phase::Monitoring, Phase::Done][rng.random_range(0..3)];
    let n = rng.random_range(3..40u64);
    let mut e = clean(phase, n);
    // Alarms rare enough that every verdict occurs.
    let p = |rng: &mut ChaCha8Rng, over: f64| {
        if rng.random_bool(over) {
            rng.random_range(THR..1.0)
        } else {
            rng.random_range(0.0..THR)
        }
    };
    for w in &mut e.windows {
        w.live_p = p(rng, 0.05);
        w.shadow_p = rng.random_bool(0.8).then(|| p(rng, 0.03));
        if let Some(d) = w.divergence.as_mut() {
            d.share = p(rng, 0.03) * 0.4;
        }
    }
    let oks: Vec<bool> = (0..rng.random_range(0..6))
        .map(|_| rng.random_bool(0.8))
        .collect();
    e = probes(e, &oks);
    e.history = History {
        version_committed: rng.random_range(0..4),
        version_rolled_back: rng.random_range(0..4),
        package_recent_rollbacks: rng.random_range(0..4),
    };
    e
}

#[test]
fn random_deployments_are_deterministic_and_monotonic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6465_6369_6465);
    let p = Params::default();
    let mut seen = [0usize; 4];
    for _ in 0..3000 {
        let e = random(&mut rng);
        holds(&e, &p);
        seen[rank(decide(&e, &p).verdict) as usize] += 1;
    }
    // The generator reaches every verdict rank, or the property says little.
    assert!(seen[..3].iter().all(|&c| c > 50), "verdicts seen {seen:?}");
}

#[test]
fn a_rollback_stays_a_rollback_as_windows_arrive() {
    // Everything but the performance check is counted over the whole
    // deployment, so a decision reached on a prefix holds on the rest (a
    // --dry-run's would-be decision is still the decision at the end).
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let p = Params::default();
    for _ in 0..1000 {
        let full = random(&mut rng);
        let mut prefix = full.clone();
        prefix.phase = Phase::Installing;
        let cut = rng.random_range(1..=full.windows.len());
        prefix.windows.truncate(cut);
        let last = prefix.windows[cut - 1].index;
        prefix.probes[0].results.retain(|r| r.window <= last);
        if decide(&prefix, &p).verdict == Verdict::Rollback {
            let d = decide(&full, &p);
            assert_eq!(
                d.verdict,
                Verdict::Rollback,
                "{d} after a rollback at {last}"
            );
        }
    }
}
