//! What an SRE would use instead of the model, measured on the same
//! deployments: (a) exit codes and health probes (Helm --atomic, snapd),
//! (b) static per-metric thresholds (Argo Rollouts analysis), (c) a
//! Kayenta-style judge comparing the current windows with healthy history
//! of the same package (Mann-Whitney U).

use std::collections::HashMap;

use backstop_common::features::FEATURES;

use super::corpus::Record;
use crate::predict::calibrate::calibrate;
use crate::predict::model::{K, context};
use crate::predict::stats::{mann_whitney_p, median};

/// One kind of failure detector: a score per window, and the threshold
/// above which a window alarms.
pub trait Detector {
    fn name(&self) -> String;
    fn scores(&self, d: &Record) -> Vec<f64>;
    fn threshold(&self) -> f64;
    /// Whether it refuses `d` before its first window, as the room check
    /// does: an alarm no window holds.
    fn refuses(&self, _d: &Record) -> bool {
        false
    }
}

/// (a) Only what the install itself says: a failing step's exit code, a
/// timeout, an OOM kill or a failing health probe, at the moment it shows.
pub struct ChecksOnly;

impl Detector for ChecksOnly {
    fn name(&self) -> String {
        "exit codes and health probes".into()
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        (0..d.windows.len())
            .map(|t| {
                let shown = d.visible_to_checks && d.onset_window.is_some_and(|o| t >= o);
                if shown { 1.0 } else { 0.0 }
            })
            .collect()
    }
    fn threshold(&self) -> f64 {
        0.5
    }
}

/// (b) A limit per feature; a window alarms when any feature passes its
/// limit. Tuned on the training split: each limit starts at the 99th
/// percentile of healthy windows and all are raised by the smallest common
/// factor that keeps healthy training deployments under the target
/// false-positive rate.
pub struct StaticThresholds {
    pub limits: Vec<f64>,
}

impl StaticThresholds {
    pub fn tune(train: &[Record], target_fpr: f64) -> Self {
        let nf = FEATURES.len();
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); nf];
        for d in train.iter().filter(|d| !d.failing()) {
            for w in &d.windows {
                for (i, v) in w.iter().enumerate() {
                    per[i].push(*v);
                }
            }
        }
        let base: Vec<f64> = per
            .iter_mut()
            .map(|v| {
                v.sort_by(f64::total_cmp);
                let q = v.get(v.len() * 99 / 100).copied().unwrap_or(0.0);
                q.max(1.0)
            })
            .collect();
        let mut best = StaticThresholds {
            limits: base.clone(),
        };
        for factor in [1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0] {
            best.limits = base.iter().map(|b| b * factor).collect();
            let healthy_max: Vec<f64> = train
                .iter()
                .filter(|d| !d.failing())
                .map(|d| best.scores(d).into_iter().fold(0.0, f64::max))
                .collect();
            let alarmed = healthy_max.iter().filter(|&&s| s > 1.0).count();
            if alarmed as f64 <= target_fpr * healthy_max.len() as f64 {
                break;
            }
        }
        best
    }
}

impl Detector for StaticThresholds {
    fn name(&self) -> String {
        "static thresholds".into()
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        d.windows
            .iter()
            .map(|w| {
                w.iter()
                    .zip(&self.limits)
                    .map(|(v, l)| v / l)
                    .fold(0.0, f64::max)
            })
            .collect()
    }
    fn threshold(&self) -> f64 {
        1.0
    }
}

/// (c) Kayenta-style: for each feature, the last K windows against every
/// window of healthy deployments of the same package seen elsewhere
/// (Mann-Whitney U, two-sided, 98% interval), with an effect-size guard (a
/// median moved by at least a quarter). A window alarms when any feature
/// fails. With no healthy history for the package, it cannot judge.
pub struct MannWhitneyJudge {
    /// Healthy windows by package, with the deployment they came from (a
    /// deployment is never its own history).
    history: HashMap<String, Vec<(String, Vec<f64>)>>,
    pub alpha: f64,
    pub min_effect: f64,
}

impl MannWhitneyJudge {
    pub fn new(history: &[Record]) -> Self {
        let mut h: HashMap<String, Vec<(String, Vec<f64>)>> = HashMap::new();
        for d in history.iter().filter(|d| !d.failing()) {
            for w in &d.windows {
                h.entry(d.package.clone())
                    .or_default()
                    .push((d.id.clone(), w.clone()));
            }
        }
        MannWhitneyJudge {
            history: h,
            alpha: 0.02,
            min_effect: 0.25,
        }
    }
}

impl Detector for MannWhitneyJudge {
    fn name(&self) -> String {
        "Mann-Whitney judge vs healthy history".into()
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        let Some(hist) = self.history.get(&d.package) else {
            return vec![0.0; d.windows.len()];
        };
        let others: Vec<&Vec<f64>> = hist
            .iter()
            .filter(|(id, _)| *id != d.id)
            .map(|(_, w)| w)
            .collect();
        if others.len() < K {
            return vec![0.0; d.windows.len()];
        }
        (0..d.windows.len())
            .map(|t| {
                let cur: Vec<&Vec<f64>> = context(&d.windows, t).collect();
                (0..FEATURES.len())
                    .filter(|&i| {
                        let a: Vec<f64> = cur.iter().map(|w| w[i]).collect();
                        let b: Vec<f64> = others.iter().map(|w| w[i]).collect();
                        let (ma, mb) = (median(&a), median(&b));
                        let effect = (ma - mb).abs() / mb.abs().max(1.0);
                        effect >= self.min_effect && mann_whitney_p(&a, &b) < self.alpha
                    })
                    .count() as f64
            })
            .collect()
    }
    fn threshold(&self) -> f64 {
        0.5
    }
}

/// The empirical threshold rule ([`calibrate`]) applied to a baseline's
/// raw scores, to the model's false-positive target. Not the model's
/// log-odds fit: these scores are counts, not probabilities.
pub fn calibrated_threshold(det: &dyn Detector, validation: &[Record], target_fpr: f64) -> f64 {
    let healthy_max: Vec<f64> = validation
        .iter()
        .filter(|d| !d.failing())
        .map(|d| det.scores(d).into_iter().fold(0.0, f64::max))
        .collect();
    calibrate(&healthy_max, target_fpr).max(det.threshold())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::corpus::{HEALTHY, Outcome};
    use super::*;

    /// A deployment whose every feature takes `values`, window by window;
    /// a failing one shows at its last window.
    /// Scores fixed per deployment: window value = the deployment's first
    /// feature, as a probability.
    pub(crate) struct Echo;
    impl Detector for Echo {
        fn name(&self) -> String {
            "echo".into()
        }
        fn scores(&self, d: &Record) -> Vec<f64> {
            d.windows.iter().map(|w| w[0]).collect()
        }
        fn threshold(&self) -> f64 {
            0.5
        }
    }

    pub(crate) fn dep(id: &str, package: &str, values: &[f64], failing: bool) -> Record {
        Record {
            id: id.into(),
            package: package.into(),
            family: if failing { "f" } else { HEALTHY }.into(),
            variant: if failing { "f-1" } else { HEALTHY }.into(),
            outcome: if failing {
                Outcome::Failed
            } else {
                Outcome::Ok
            },
            onset_window: failing.then_some(values.len() - 1),
            visible_to_checks: failing,
            window_ms: 1000,
            schema: backstop_common::features::SCHEMA_VERSION.into(),
            windows: values.iter().map(|&v| vec![v; FEATURES.len()]).collect(),
            group: String::new(),
            held_out: false,
            host_condition: String::new(),
            cause: None,
            host: Vec::new(),
            room: None,
        }
    }

    #[test]
    fn checks_only_alarms_exactly_at_onset() {
        let d = dep("a", "p", &[1.0, 1.0, 1.0, 1.0], true);
        assert_eq!(ChecksOnly.scores(&d), vec![0.0, 0.0, 0.0, 1.0]);
        let h = dep("b", "p", &[1.0, 1.0], false);
        assert_eq!(ChecksOnly.scores(&h), vec![0.0, 0.0]);
    }

    #[test]
    fn static_thresholds_sit_above_healthy_and_catch_a_spike() {
        let train: Vec<_> = (0..50)
            .map(|i| dep(&format!("h{i}"), "p", &[10.0 + f64::from(i % 5); 6], false))
            .collect();
        let b = StaticThresholds::tune(&train, 0.01);
        assert!(train.iter().all(|d| b.scores(d).iter().all(|&s| s <= 1.0)));
        let spike = dep("s", "p", &[10.0, 10.0, 100.0], true);
        assert!(b.scores(&spike)[2] > 1.0 && b.scores(&spike)[0] <= 1.0);
    }

    #[test]
    fn the_judge_needs_history_of_the_same_package_and_an_effect() {
        let hist: Vec<_> = (0..5)
            .map(|i| {
                dep(
                    &format!("h{i}"),
                    "p",
                    &[10.0, 11.0, 12.0, 10.0, 11.0, 12.0],
                    false,
                )
            })
            .collect();
        let j = MannWhitneyJudge::new(&hist);
        let bad = dep(
            "x",
            "p",
            &[10.0, 11.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0],
            true,
        );
        let s = j.scores(&bad);
        assert_eq!(s[0], 0.0);
        assert!(*s.last().unwrap() > 0.0, "{s:?}");
        // Another package: no history, no judgement.
        let other = dep(
            "y",
            "q",
            &[10.0, 99.0, 99.0, 99.0, 99.0, 99.0, 99.0, 99.0],
            true,
        );
        assert!(j.scores(&other).iter().all(|&v| v == 0.0));
        // A deployment is not its own history.
        let own = &hist[0];
        assert!(j.scores(own).iter().all(|&v| v == 0.0));
    }
}
