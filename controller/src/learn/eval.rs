//! Scoring detectors on deployments, the way an SRE would judge them: per
//! deployment (did it alarm, and when, relative to the moment the failure
//! showed by itself), not per window.

use serde::Serialize;

use super::baselines::Detector;
use super::corpus::Record;

#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub detector: String,
    pub threshold: f64,
    pub failing: usize,
    pub healthy: usize,
    /// Over deployments, scored by their highest window.
    pub roc_auc: f64,
    /// Failing deployments alarmed at any window.
    pub recall: f64,
    /// Healthy deployments alarmed at any window.
    pub false_positive_rate: f64,
    pub precision: f64,
    /// Failing deployments alarmed strictly before their onset, not
    /// counting silent faults (see `tells`).
    pub caught_before_onset: usize,
    /// caught_before_onset over failing deployments that are not silent:
    /// recall as prediction, where exit codes and health probes score 0
    /// by construction.
    pub recall_before_onset: f64,
    /// Silent faults (nothing observable before their onset) alarmed
    /// before it: the detector keyed on something other than the fault,
    /// a tell of the corpus, not foresight.
    #[serde(default)]
    pub tells: usize,
    /// Onset minus first alarm, over those, in ms.
    pub lead_time_median_ms: Option<f64>,
    pub lead_time_p10_ms: Option<f64>,
}

/// Per deployment: (failing, highest score, first alarm window), where
/// the first alarm is -1 when the detector refused the deployment before
/// its first window ([`Detector::refuses`]).
pub fn outcomes(
    det: &dyn Detector,
    threshold: f64,
    ds: &[Record],
) -> Vec<(bool, f64, Option<i64>)> {
    ds.iter()
        .map(|d| {
            let s = det.scores(d);
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let first = if det.refuses(d) {
                Some(-1)
            } else {
                s.iter().position(|&v| v > threshold).map(|w| w as i64)
            };
            (d.failing(), max, first)
        })
        .collect()
}

pub fn evaluate(det: &dyn Detector, threshold: f64, ds: &[Record]) -> Metrics {
    let out = outcomes(det, threshold, ds);
    let failing = out.iter().filter(|o| o.0).count();
    let healthy = out.len() - failing;
    let tp = out.iter().filter(|o| o.0 && o.2.is_some()).count();
    let fp = out.iter().filter(|o| !o.0 && o.2.is_some()).count();
    let early = |d: &Record, o: &(bool, f64, Option<i64>)| {
        o.0 && matches!((d.onset_window, o.2), (Some(on), Some(a)) if a < on as i64)
    };
    let tells = ds
        .iter()
        .zip(&out)
        .filter(|(d, o)| d.silent() && early(d, o))
        .count();
    let predictable = ds.iter().filter(|d| d.failing() && !d.silent()).count();
    let mut leads: Vec<f64> = ds
        .iter()
        .zip(&out)
        .filter(|(d, _)| !d.silent())
        .filter_map(|(d, o)| {
            let (onset, alarm) = (d.onset_window? as i64, o.2?);
            (o.0 && alarm < onset).then(|| ((onset - alarm) * i64::from(d.window_ms)) as f64)
        })
        .collect();
    leads.sort_by(f64::total_cmp);
    let pick = |q: f64| -> Option<f64> {
        (!leads.is_empty()).then(|| leads[((leads.len() - 1) as f64 * q).round() as usize])
    };
    Metrics {
        detector: det.name(),
        threshold,
        failing,
        healthy,
        roc_auc: roc_auc(&out.iter().map(|o| (o.0, o.1)).collect::<Vec<_>>()),
        recall: ratio(tp, failing),
        false_positive_rate: ratio(fp, healthy),
        precision: ratio(tp, tp + fp),
        caught_before_onset: leads.len(),
        recall_before_onset: ratio(leads.len(), predictable),
        tells,
        lead_time_median_ms: pick(0.5),
        lead_time_p10_ms: pick(0.1),
    }
}

/// The detector at the threshold that suits it best on `ds` itself while
/// alarming on at most `fpr` of its healthy deployments: the highest recall
/// it can reach at that false-positive rate. Picked on the deployments it
/// is scored on, so it flatters every detector alike; it compares
/// detectors at equal false positives, and says what a perfect
/// calibration would give.
pub fn at_fpr(det: &dyn Detector, ds: &[Record], fpr: f64) -> Metrics {
    let mut healthy_max: Vec<f64> = outcomes(det, f64::INFINITY, ds)
        .into_iter()
        .filter(|o| !o.0)
        .map(|o| o.1)
        .collect();
    healthy_max.sort_by(|a, b| b.total_cmp(a));
    // An FPR computed as a ratio can land a hair below its count's share.
    let allowed = (fpr * healthy_max.len() as f64 + 1e-9).floor() as usize;
    // Alarm above the highest healthy score that must stay quiet.
    let threshold = healthy_max
        .get(allowed)
        .copied()
        .unwrap_or(f64::NEG_INFINITY);
    evaluate(det, threshold, ds)
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Area under the ROC curve: the chance a failing deployment scores above
/// a healthy one (ties count half).
pub fn roc_auc(scored: &[(bool, f64)]) -> f64 {
    let pos: Vec<f64> = scored.iter().filter(|s| s.0).map(|s| s.1).collect();
    let neg: Vec<f64> = scored.iter().filter(|s| !s.0).map(|s| s.1).collect();
    if pos.is_empty() || neg.is_empty() {
        return 0.5;
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_fpr_picks_the_threshold_that_keeps_enough_healthy_quiet() {
        use crate::learn::baselines::tests::{Echo, dep};
        let ds = [
            dep("f1", "p", &[0.1, 0.9], true),
            dep("f2", "p", &[0.1, 0.6], true),
            dep("f3", "p", &[0.1, 0.3], true),
            dep("h1", "p", &[0.7], false),
            dep("h2", "p", &[0.5], false),
            dep("h3", "p", &[0.2], false),
            dep("h4", "p", &[0.1], false),
        ];
        // No false alarm allowed: above the highest healthy score.
        let m = at_fpr(&Echo, &ds, 0.0);
        assert_eq!(
            (m.threshold, m.recall, m.false_positive_rate),
            (0.7, 1.0 / 3.0, 0.0)
        );
        // One in four allowed: above the second.
        let m = at_fpr(&Echo, &ds, 0.25);
        assert_eq!(
            (m.threshold, m.recall, m.false_positive_rate),
            (0.5, 2.0 / 3.0, 0.25)
        );
        // Two in four: above the third; and an FPR a hair below its
        // count's share, as a division leaves it (15 / 44 * 44 is
        // 14.999999999999998), still allows the count.
        let m = at_fpr(&Echo, &ds, 0.5);
        assert_eq!(
            (m.threshold, m.recall, m.false_positive_rate),
            (0.2, 1.0, 0.5)
        );
        assert_eq!(at_fpr(&Echo, &ds, 0.5 - 1e-12).threshold, 0.2);
        // Everything allowed: everything alarms.
        let m = at_fpr(&Echo, &ds, 1.0);
        assert_eq!((m.recall, m.false_positive_rate), (1.0, 1.0));
    }

    #[test]
    fn auc_of_perfect_random_and_inverted_scores() {
        assert_eq!(
            roc_auc(&[(true, 0.9), (true, 0.8), (false, 0.1), (false, 0.2)]),
            1.0
        );
        assert_eq!(roc_auc(&[(true, 0.5), (false, 0.5)]), 0.5);
        assert_eq!(roc_auc(&[(true, 0.1), (false, 0.9)]), 0.0);
    }
}
