//! How far the live and the shadow install behaved apart: the same
//! install in two universes, so a large difference is itself a signal.
//!
//! Definition, at window t: each stream's mean over the model's context
//! (windows t-K+1..=t), log1p, divided by the model's normaliser's standard
//! deviation for that feature; the divergence is the share of the
//! behaviour features whose two values lie more than [`DIFFERS`] apart.
//!
//! Why this and not the difference of the two P(failure): both P's are
//! evidence already, so their difference adds nothing the engine does not
//! see; a distance between the feature vectors sees what the model may not
//! weigh (live hits ENOSPC, the shadow does not). Why the normaliser: it is
//! the scale on which the model finds a value unusual, the same for every
//! package. Why a share and not a norm: one noisy feature cannot carry it
//! (it is 1/18 of the share), and the result lies in [0, 1], the range of
//! the manifest's `guards.max_divergence`. Why the context mean: one stream
//! a second ahead of the other (the shadow's overlay is slower) would make
//! single windows differ although the installs do the same.
//!
//! Why only these features: the rest differ between the two universes by
//! construction. The shadow has loopback only (network syscalls, errors,
//! bytes), an upper layer on tmpfs (block I/O, page cache), and shares
//! the host's CPUs (scheduling, latencies, waits); host counters are the
//! same host for both.

use backstop_common::features::{FEATURES, feature};

use super::evidence::Divergence;
use crate::predict::model::{K, Normalizer};

/// Training standard deviations (of log1p values) apart for a feature to
/// count as differing: beyond the spread of most windows of any package.
pub const DIFFERS: f64 = 2.0;

/// The features that describe what the install did, not where it ran.
pub const BEHAVIOUR: &[usize] = &[
    feature::SYSCALLS_FILE,
    feature::SYSCALLS_PROC,
    feature::SYSCALLS_MEM,
    feature::SYSCALLS_OTHER,
    feature::SYSCALL_ERRORS_ENOENT,
    feature::SYSCALL_ERRORS_EACCES,
    feature::SYSCALL_ERRORS_ENOSPC,
    feature::SYSCALL_ERRORS_ENOMEM,
    feature::SYSCALL_ERRORS_EIO,
    feature::SYSCALL_ERRORS_OTHER,
    feature::PROC_FORKS,
    feature::PROC_THREADS,
    feature::PROC_EXECS,
    feature::PROC_EXITS,
    feature::PROC_EXITS_NONZERO,
    feature::PROC_SIGNAL_DEATHS,
    feature::PROC_OOM_KILLS,
    feature::MEM_ANON_PEAK_BYTES,
];

fn context_mean(windows: &[Vec<f64>], t: usize, i: usize) -> f64 {
    let from = (t + 1).saturating_sub(K);
    let span = &windows[from..=t];
    span.iter()
        .map(|w| w.get(i).copied().unwrap_or(0.0).max(0.0))
        .sum::<f64>()
        / span.len() as f64
}

/// The divergence at window `t` of two streams (one row of feature values
/// per window, in schema order), or `None` when either stream has no
/// window `t` or the normaliser does not fit the schema.
pub fn divergence(
    norm: &Normalizer,
    live: &[Vec<f64>],
    shadow: &[Vec<f64>],
    t: usize,
) -> Option<Divergence> {
    if t >= live.len() || t >= shadow.len() || norm.std.len() < FEATURES.len() {
        return None;
    }
    let mut apart = 0usize;
    let mut top: Option<(usize, f64)> = None;
    for &i in BEHAVIOUR {
        let l = context_mean(live, t, i).ln_1p();
        let s = context_mean(shadow, t, i).ln_1p();
        let z = (l - s) / norm.std[i];
        if !z.is_finite() {
            continue;
        }
        if z.abs() > DIFFERS {
            apart += 1;
        }
        if top.is_none_or(|(_, best)| z.abs() > best.abs()) {
            top = Some((i, z));
        }
    }
    let (i, z) = top?;
    Some(Divergence {
        share: apart as f64 / BEHAVIOUR.len() as f64,
        feature: FEATURES[i].name.to_string(),
        live_minus_shadow: z,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(std: f64) -> Normalizer {
        Normalizer {
            mean: vec![0.0; FEATURES.len()],
            std: vec![std; FEATURES.len()],
        }
    }

    fn stream(n: usize, set: &[(usize, f64)]) -> Vec<Vec<f64>> {
        let mut w = vec![10.0; FEATURES.len()];
        for &(i, v) in set {
            w[i] = v;
        }
        vec![w; n]
    }

    #[test]
    fn the_same_install_twice_does_not_diverge() {
        let a = stream(5, &[]);
        let d = divergence(&norm(0.5), &a, &a, 4).expect("both have window 4");
        assert_eq!(d.share, 0.0);
        assert_eq!(d.live_minus_shadow, 0.0);
    }

    #[test]
    fn live_errors_the_shadow_lacks_diverge_and_name_the_feature() {
        let errs = [
            (feature::SYSCALL_ERRORS_ENOSPC, 500.0),
            (feature::PROC_EXITS_NONZERO, 300.0),
            (feature::SYSCALL_ERRORS_OTHER, 400.0),
            (feature::PROC_SIGNAL_DEATHS, 200.0),
        ];
        let live = stream(8, &errs);
        let shadow = stream(8, &[]);
        let d = divergence(&norm(0.5), &live, &shadow, 7).expect("window 7");
        assert_eq!(d.share, 4.0 / BEHAVIOUR.len() as f64);
        assert_eq!(d.feature, "syscall_errors_enospc");
        assert!(d.live_minus_shadow > DIFFERS, "{d:?}");
        // The other way round, the sign says the shadow did more.
        let d = divergence(&norm(0.5), &shadow, &live, 7).expect("window 7");
        assert!(d.live_minus_shadow < -DIFFERS, "{d:?}");
    }

    #[test]
    fn what_differs_by_construction_is_not_counted() {
        // No network in the shadow, tmpfs upper: not divergence.
        let live = stream(
            3,
            &[
                (feature::NET_TX_BYTES, 1e9),
                (feature::BLOCK_WRITE_BYTES, 1e9),
                (feature::SYSCALL_ERRORS_NET, 1e4),
            ],
        );
        let d = divergence(&norm(0.5), &live, &stream(3, &[]), 2).expect("window 2");
        assert_eq!(d.share, 0.0, "{d:?}");
    }

    #[test]
    fn a_stream_a_window_ahead_is_smoothed_by_the_context() {
        // One burst of 8000 execs, a window later in the shadow.
        let mut live = stream(8, &[]);
        let mut shadow = stream(8, &[]);
        live[3][feature::PROC_EXECS] = 8000.0;
        shadow[4][feature::PROC_EXECS] = 8000.0;
        let d = divergence(&norm(0.5), &live, &shadow, 7).expect("window 7");
        assert_eq!(d.share, 0.0, "{d:?}");
    }

    #[test]
    fn a_missing_window_or_a_foreign_normaliser_gives_none() {
        let a = stream(3, &[]);
        assert!(divergence(&norm(0.5), &a, &a[..2], 2).is_none());
        let short = Normalizer {
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
        };
        assert!(divergence(&short, &a, &a, 2).is_none());
    }
}
