//! Scoring a deployment's windows, and the turns decisions take.

use backstop_common::window::Window;

use super::*;
use crate::learn::corpus::synthetic;
use crate::learn::train::{TrainConfig, train};

fn windows(s: Stream, rows: &[Vec<f64>]) -> Vec<Window> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let mut w = Window::new(s, i as u64 + 1, 0, 1);
            w.features = r.clone();
            w
        })
        .collect()
}

/// A generated corpus and a model trained on it in two epochs.
fn tiny() -> (Vec<crate::learn::corpus::Record>, Model) {
    let all = synthetic(5, 4, 4);
    let cfg = TrainConfig {
        epochs: 2,
        ..Default::default()
    };
    let model = train(&all, &all, &cfg, "x".into()).expect("a tiny model trains");
    (all, model)
}

#[test]
fn scoring_gives_each_live_window_both_streams_p_and_the_threshold() {
    let (all, model) = tiny();
    let failing = all.iter().find(|r| r.failing()).expect("a failing record");
    let healthy = all.iter().find(|r| !r.failing()).expect("a healthy record");
    // Live: the failing install; shadow: a healthy one, shorter.
    let shadow_rows = &healthy.windows[..healthy.windows.len().min(5)];
    let mut stored = windows(Stream::Shadow, shadow_rows);
    // Out of order and once redelivered: scoring must not care.
    let mut live = windows(Stream::Live, &failing.windows);
    live.reverse();
    live.push(live[0].clone());
    stored.extend(live);
    let ev = score(&model, &stored).expect("scores");
    assert_eq!(ev.len(), failing.windows.len(), "one entry per live window");
    let want = model.predict(&failing.windows).expect("predicts");
    let want_shadow = model.predict(shadow_rows).expect("predicts");
    for (t, w) in ev.iter().enumerate() {
        assert_eq!(w.index, t as u64 + 1);
        assert_eq!(w.live_p, want[t], "window {t}");
        assert_eq!(w.shadow_p, want_shadow.get(t).copied(), "window {t}");
        assert_eq!(w.threshold, model.meta.threshold);
        assert_eq!(w.divergence.is_some(), t < shadow_rows.len());
    }
    assert!(score(&model, &[]).expect("no windows").is_empty());
}

/// Every window that alarms against the threshold in force carries
/// what drove it; no other window does.
#[test]
fn alarming_windows_are_explained_against_the_threshold_in_force() {
    let (all, model) = tiny();
    let failing = all.iter().find(|r| r.failing()).expect("a failing record");
    let stored = windows(Stream::Live, &failing.windows);
    // A threshold in the middle of this install's scores: some windows
    // alarm, some do not.
    let mut ps = model.predict(&failing.windows).expect("predicts");
    ps.sort_by(f64::total_cmp);
    let thr = ps[ps.len() / 2];
    let ev = score_explained(&model, &stored, thr).expect("scores");
    let mut explained = 0;
    for w in &ev {
        let alarms = w.live_p > thr || w.beyond.is_some();
        assert_eq!(!w.drivers.is_empty(), alarms, "window {}: {w:?}", w.index);
        explained += usize::from(alarms);
    }
    assert!(
        explained > 0 && explained < ev.len(),
        "{explained} of {}",
        ev.len()
    );
}
/// The shipped model's envelope, through the daemon's own scoring: a
/// tree that computes with syscalls is inside it; the same tree
/// stuck in a loop that never enters the kernel is beyond it from a
/// few windows on, named as a spin.
#[test]
fn the_shipped_model_names_a_loop_without_syscalls_a_spin() {
    use crate::predict::envelope::SPIN_NAME;
    use backstop_common::features::{FEATURES, feature};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = Model::load(&root.join("models/default")).expect("the shipped model loads");
    let computing = |syscalls: f64| {
        let mut w = vec![0.0; FEATURES.len()];
        w[feature::SCHED_ON_CPU_NS] = 240e6;
        w[feature::SYSCALLS_TOTAL] = syscalls;
        w[feature::SYSCALLS_FILE] = syscalls;
        w[feature::TREE_PROCESSES] = 3.0;
        w[feature::TREE_OPEN_FDS] = 12.0;
        w
    };
    let busy = vec![computing(400.0); 40];
    let ev = score(&model, &windows(Stream::Live, &busy)).expect("scores");
    assert!(ev.iter().all(|w| w.beyond.is_none()), "{ev:?}");
    let mut stuck = vec![computing(400.0); 4];
    stuck.extend(vec![computing(0.0); 36]);
    let ev = score(&model, &windows(Stream::Live, &stuck)).expect("scores");
    let first = ev
        .iter()
        .position(|w| w.beyond.is_some())
        .expect("a spin alarms");
    // Past the floor's second times the factor, well before the end.
    assert!((8..20).contains(&first), "first beyond at window {first}");
    for w in &ev[first..] {
        let b = w.beyond.as_ref().expect("stays beyond while it spins");
        assert_eq!(b.feature, SPIN_NAME, "{b:?}");
    }
}

#[test]
fn a_window_length_unlike_the_models_is_noted_and_a_partial_last_window_is_not() {
    let at = |stream, ms: &[u64]| -> Vec<Window> {
        let mut start = 0;
        (ms.iter().enumerate())
            .map(|(i, ms)| {
                let w = Window::new(stream, i as u64, start, start + ms * 1_000_000);
                start = w.end_ns;
                w
            })
            .collect()
    };
    let note = |m, w: &[Window]| window_length(m, w).map(|w| (w.live_ms, w.model_ms));
    // 1000 ms windows under a 250 ms model, however short the last one,
    // and one late by a timer's 21 ms (the demo's deployment showed 1021).
    assert_eq!(
        note(Some(250), &at(Stream::Live, &[1000, 1021, 1000, 310])),
        Some((1000, 250))
    );
    // The model's own length, with a short last window and a few ms of
    // timer jitter: nothing to say.
    assert_eq!(note(Some(250), &at(Stream::Live, &[252, 249, 40])), None);
    // One partial window is a lower bound: 40 ms says nothing, 900 ms does.
    assert_eq!(note(Some(250), &at(Stream::Live, &[40])), None);
    assert_eq!(note(Some(250), &at(Stream::Live, &[900])), Some((900, 250)));
    // Shorter full windows are noted too; two windows are one full one.
    assert_eq!(
        note(Some(1000), &at(Stream::Live, &[250, 250, 250])),
        Some((250, 1000))
    );
    assert_eq!(
        note(Some(1000), &at(Stream::Live, &[250, 100])),
        Some((250, 1000))
    );
    // Only live windows count, and a model that recorded no length (or no
    // live window at all) says nothing.
    assert_eq!(note(Some(250), &at(Stream::Shadow, &[1000, 1000])), None);
    assert_eq!(note(None, &at(Stream::Live, &[1000, 1000])), None);
}

/// A deployment's decisions score through its cache: whatever order the
/// windows arrive in (a late one included, a shadow that ends first),
/// every decision's evidence is what scoring afresh gives, and the net
/// sees only the windows past the unchanged prefix.
#[test]
fn kept_scores_give_the_evidence_of_scoring_afresh() {
    let (all, model) = tiny();
    let failing = all.iter().find(|r| r.failing()).expect("a failing record");
    let healthy = all.iter().find(|r| !r.failing()).expect("a healthy record");
    let live = windows(Stream::Live, &failing.windows);
    let shadow = windows(Stream::Shadow, &healthy.windows[..3]);
    // Arrival order: live and shadow interleaved, live window 2 late.
    let mut arrivals: Vec<Window> = Vec::new();
    for (i, w) in live.iter().enumerate().filter(|(i, _)| *i != 2) {
        arrivals.push(w.clone());
        if let Some(s) = shadow.get(i) {
            arrivals.push(s.clone());
        }
        if i == 5 {
            arrivals.push(live[2].clone());
        }
    }
    let mut ps = model.predict(&failing.windows).expect("predicts");
    ps.sort_by(f64::total_cmp);
    let thr = ps[ps.len() / 2];
    let mut cache = Scores::default();
    for n in 1..=arrivals.len() {
        let stored = &arrivals[..n];
        let cached = score_cached(&model, stored, thr, &mut cache).expect("scores");
        let fresh = score_explained(&model, stored, thr).expect("scores");
        assert_eq!(cached.len(), fresh.len(), "after {n} arrivals");
        for (c, f) in cached.iter().zip(&fresh) {
            assert!((c.live_p - f.live_p).abs() < 1e-6, "window {}", c.index);
            let (cs, fs) = (c.shadow_p.unwrap_or(-1.0), f.shadow_p.unwrap_or(-1.0));
            assert!((cs - fs).abs() < 1e-6, "shadow at {}", c.index);
            assert_eq!((&c.drivers, &c.beyond), (&f.drivers, &f.beyond));
            assert_eq!(c.divergence.is_some(), f.divergence.is_some());
        }
    }
    // Live window 2 arrived after window 6: its arrival kept only 0..2.
    let late = (arrivals.iter())
        .position(|w| w.stream == Stream::Live && w.seq == 3)
        .expect("window 2 arrives");
    let kept = |upto: usize, c: &mut Scores| {
        let ws = ordered(&arrivals[..upto], Stream::Live);
        c.live.update(&model, &ws, &rows(&ws)).expect("scores")
    };
    let mut c = Scores::default();
    assert_eq!(kept(late, &mut c), 0, "nothing kept the first time");
    assert_eq!(
        kept(late + 1, &mut c),
        2,
        "scored again from the late window"
    );
    // The next live arrival keeps every live window scored before it.
    let next = late
        + 1
        + arrivals[late + 1..]
            .iter()
            .position(|w| w.stream == Stream::Live)
            .expect("a live window after the late one");
    let before = ordered(&arrivals[..next], Stream::Live).len();
    assert_eq!(kept(next + 1, &mut c), before);
}
