//! The engine's knobs: the manifest's `[policy]` (threshold and guards)
//! and the few the manifest does not expose, with the reason for each
//! default.

use backstop_common::manifest::Policy;
use serde::{Deserialize, Serialize};

use crate::predict::model::K;

/// Everything [`super::decide`] weighs evidence with. Stored beside the
/// evidence, so a replay uses the same knobs even after a manifest or a
/// default changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// The manifest's threshold on P(failure); `None`: each window's own
    /// (the calibrated threshold of the model that scored it).
    pub threshold: Option<f64>,
    /// Consecutive live windows over the threshold before the model alone
    /// rolls back (manifest `guards.min_windows`).
    pub min_windows: u32,
    /// How many windows apart a live alarm and the evidence confirming it
    /// may be. Default: the model's context (K windows), because a live
    /// score at window t is made of windows t-K+1..=t, so evidence in that
    /// span is about the same behaviour.
    pub confirm_within: u32,
    /// The divergence share above which live and shadow disagree
    /// (manifest `guards.max_divergence`).
    pub max_divergence: f64,
    /// Consecutive failed results of one health probe that roll back.
    pub probe_failures: u32,
    /// The performance check's significance level (two-sided Mann-Whitney).
    pub perf_alpha: f64,
    /// The performance check's effect-size guard: the relative rise of a
    /// measure's median that a significant shift must also reach
    /// (manifest `guards.max_latency_increase`, applied to every measure).
    pub perf_min_effect: f64,
    /// Samples needed on each side before the performance check judges.
    pub perf_min_samples: usize,
    /// Whether history weighs in at all (manifest `guards.history`).
    pub history: bool,
    /// Rollbacks of this version on other hosts (and more than its
    /// commits) for history to confirm a live alarm.
    pub history_min_rollbacks: u32,
    /// Or: recent rollbacks of this package, any version, in the fleet.
    pub history_recent_rollbacks: u32,
    /// Whether a projected exhaustion rolls back (manifest
    /// `guards.exhaustion`). Absent in decisions stored before it existed,
    /// when the rule always ran.
    #[serde(default = "yes")]
    pub exhaustion: bool,
}

fn yes() -> bool {
    true
}

/// The engine's divergence guard when the manifest sets none: a fifth of
/// the behaviour features apart. Not calibrated (no stored deployment has
/// both streams of one install yet); divergence alone never rolls back, so
/// a guard set too low costs an "inconclusive", never a host.
pub const DEFAULT_MAX_DIVERGENCE: f64 = 0.2;

impl Default for Params {
    fn default() -> Self {
        Params::from_policy(&Policy {
            threshold: None,
            guards: backstop_common::manifest::Guards::default(),
        })
    }
}

impl Params {
    /// The manifest's policy, and the engine's own choices for what it does
    /// not set:
    /// - `probe_failures` 2: one failed probe is a blip (a restart, a slow
    ///   GC), two in a row a pattern; Kubernetes' readiness default (3 at
    ///   10 s) is slower than a one-second window needs.
    /// - `perf_alpha` 0.05 and at least 5 samples a side: with 5 and 5,
    ///   complete separation gives p 0.012, so the test can pass at all;
    ///   the effect-size guard, not alpha, keeps small shifts from rolling
    ///   back.
    /// - history confirms with 2 rollbacks of this version elsewhere (more
    ///   than its commits) or 3 recent rollbacks of the package: one
    ///   rollback elsewhere may be that host's disk.
    pub fn from_policy(policy: &Policy) -> Params {
        let g = &policy.guards;
        Params {
            threshold: policy.threshold.map(f64::from),
            min_windows: g.min_windows.max(1),
            confirm_within: K as u32,
            max_divergence: g.max_divergence.map_or(DEFAULT_MAX_DIVERGENCE, f64::from),
            probe_failures: 2,
            perf_alpha: 0.05,
            perf_min_effect: f64::from(g.max_latency_increase),
            perf_min_samples: 5,
            history: g.history,
            history_min_rollbacks: 2,
            history_recent_rollbacks: 3,
            exhaustion: g.exhaustion,
        }
    }

    /// The threshold in force for a window scored against `model`'s.
    pub fn threshold_for(&self, model: f64) -> f64 {
        self.threshold.unwrap_or(model)
    }
}

#[cfg(test)]
mod tests {
    use backstop_common::manifest::Guards;

    use super::*;

    #[test]
    fn the_manifest_policy_sets_the_guards_it_names() {
        let p = Params::from_policy(&Policy {
            threshold: Some(0.75),
            guards: Guards {
                min_windows: 3,
                max_divergence: Some(0.5),
                history: false,
                max_latency_increase: 0.4,
                exhaustion: false,
            },
        });
        assert_eq!(p.threshold_for(0.3), 0.75);
        assert_eq!(p.min_windows, 3);
        assert_eq!(p.max_divergence, 0.5);
        assert!(!p.history);
        assert!((p.perf_min_effect - 0.4).abs() < 1e-6);
        assert!(!p.exhaustion);
        let d = Params::default();
        assert_eq!(d.threshold_for(0.3), 0.3, "no override: the model's own");
        assert_eq!(d.min_windows, 2);
        assert_eq!(d.max_divergence, DEFAULT_MAX_DIVERGENCE);
        assert!(d.exhaustion, "the trend rule runs unless turned off");
    }

    #[test]
    fn params_stored_before_the_exhaustion_guard_read_with_it_on() {
        let mut v = serde_json::to_value(Params::default()).unwrap();
        v.as_object_mut().unwrap().remove("exhaustion");
        let p: Params = serde_json::from_value(v).unwrap();
        assert!(p.exhaustion);
    }
}
