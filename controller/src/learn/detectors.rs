//! Detectors over training records: the model, scores computed once and
//! served again, and the model together with the install's own checks.

use super::baselines::{ChecksOnly, Detector};
use super::corpus::Record;
use crate::predict::model::Model;

/// The model as a [`Detector`].
pub struct ModelDetector<'a>(pub &'a Model);

impl Detector for ModelDetector<'_> {
    fn name(&self) -> String {
        "backstop model".into()
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        self.0.predict(&d.windows).unwrap_or_else(|e| {
            tracing::error!("predicting {}: {e}", d.id);
            vec![0.0; d.windows.len()]
        })
    }
    fn threshold(&self) -> f64 {
        self.0.meta.threshold
    }
}

/// Scores computed once per deployment (a model's forward passes are the
/// expensive part of an evaluation), served as a detector.
pub struct Scored {
    pub(crate) name: String,
    threshold: f64,
    scores: std::collections::HashMap<String, Vec<f64>>,
}

impl Scored {
    pub fn of(det: &dyn Detector, ds: &[Record]) -> Scored {
        Scored::at(det, det.threshold(), ds)
    }

    /// Scored, alarming above `threshold` rather than the detector's own.
    pub fn at(det: &dyn Detector, threshold: f64, ds: &[Record]) -> Scored {
        Scored {
            name: det.name(),
            threshold,
            scores: ds.iter().map(|d| (d.id.clone(), det.scores(d))).collect(),
        }
    }

    /// Scores less the threshold, alarming above 0: scores of detectors
    /// whose thresholds differ (one per fold) can then be pooled, and a
    /// pooled score says how far above or below its own threshold a
    /// deployment went.
    pub(crate) fn add_relative(&mut self, other: Scored) {
        let t = other.threshold;
        self.scores.extend(
            other
                .scores
                .into_iter()
                .map(|(id, s)| (id, s.into_iter().map(|v| v - t).collect())),
        );
    }

    pub(crate) fn pooled(name: String) -> Scored {
        Scored {
            name,
            threshold: 0.0,
            scores: std::collections::HashMap::new(),
        }
    }
}

impl Detector for Scored {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        self.scores.get(&d.id).cloned().unwrap_or_default()
    }
    fn threshold(&self) -> f64 {
        self.threshold
    }
}

/// The model together with (a): an alarm when the model alarms or when the
/// install says no by itself (a failing step, a timeout, an OOM kill, a
/// failing health probe), whichever comes first, as a rollback decision
/// would use both. A window's score is the model's, raised above the
/// threshold from the moment the checks fail.
pub struct ModelOrChecks<'a>(pub &'a dyn Detector);

impl Detector for ModelOrChecks<'_> {
    fn name(&self) -> String {
        "model or (a), whichever alarms first".into()
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        let checks = ChecksOnly.scores(d);
        self.0
            .scores(d)
            .into_iter()
            .zip(checks)
            .map(|(m, c)| {
                if c > ChecksOnly.threshold() {
                    1.0 + m
                } else {
                    m
                }
            })
            .collect()
    }
    fn threshold(&self) -> f64 {
        self.0.threshold()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::eval;

    #[test]
    fn model_or_checks_alarms_at_the_earlier_of_the_two() {
        use crate::learn::baselines::tests::{Echo, dep};
        let quiet_failure = dep("a", "p", &[0.1, 0.1, 0.1, 0.1], true);
        let predicted = dep("b", "p", &[0.1, 0.9, 0.9, 0.9], true);
        let healthy = dep("c", "p", &[0.1, 0.2], false);
        let false_alarm = dep("d", "p", &[0.7, 0.2], false);
        let ds = [quiet_failure, predicted, healthy, false_alarm];
        let echo = Scored::of(&Echo, &ds);
        let both = ModelOrChecks(&echo);
        let first = |d: &Record| both.scores(d).iter().position(|&v| v > both.threshold());
        // The checks see the quiet failure at its onset, the model the
        // other one a window in.
        assert_eq!(first(&ds[0]), Some(3));
        assert_eq!(first(&ds[1]), Some(1));
        // Healthy installs: the checks add nothing, the model's false
        // alarm stays one.
        assert_eq!(first(&ds[2]), None);
        assert_eq!(first(&ds[3]), Some(0));
        let m = eval::evaluate(&both, both.threshold(), &ds);
        assert_eq!((m.recall, m.false_positive_rate), (1.0, 0.5));
        assert_eq!(m.caught_before_onset, 1);
    }
}
