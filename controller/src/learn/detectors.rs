//! Detectors over training records: the model, scores computed once and
//! served again, and the model together with the install's own checks.

use super::baselines::{ChecksOnly, Detector};
use super::corpus::Record;
use crate::predict::model::Model;

/// The model as a [`Detector`]: the net and its healthy envelope, as the
/// daemon decides with both.
pub struct ModelDetector<'a>(pub &'a Model);

impl Detector for ModelDetector<'_> {
    fn name(&self) -> String {
        "backstop model".into()
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        self.0.score(&d.windows).unwrap_or_else(|e| {
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

/// A detector with the fleet's healthy history of each package as its
/// noise floor (issue 16, item 5; Diffy and Kayenta judge against a
/// baseline the same way): a deployment alarms only above the highest
/// score its package's other healthy installs reached, when that is above
/// the detector's own threshold. fc-cache's CPU burst scores high on
/// every healthy fontconfig install, so it stops being an alarm for
/// fontconfig, and only for it. A package with no healthy history, or
/// one whose history stays under the threshold, is judged as before.
///
/// A window's score is scaled so the detector's threshold stands for the
/// package's: `s * t / floor`, which alarms exactly when `s > floor`.
pub struct WithHistory<'a> {
    inner: &'a dyn Detector,
    /// Per record id: the package's floor, when above the threshold.
    floors: std::collections::HashMap<String, f64>,
}

impl<'a> WithHistory<'a> {
    /// `history`: the healthy installs the fleet knows (a record never
    /// counts as its own history).
    pub fn new(inner: &'a dyn Detector, ds: &[Record], history: &[Record]) -> WithHistory<'a> {
        let t = inner.threshold();
        let peak = |d: &Record| {
            inner
                .scores(d)
                .into_iter()
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let healthy: Vec<(&Record, f64)> = history
            .iter()
            .filter(|h| !h.failing())
            .map(|h| (h, peak(h)))
            .collect();
        let floors = ds
            .iter()
            .filter_map(|d| {
                let floor = healthy
                    .iter()
                    .filter(|(h, _)| h.package == d.package && h.id != d.id)
                    .map(|(_, p)| *p)
                    .fold(f64::NEG_INFINITY, f64::max);
                (floor > t).then(|| (d.id.clone(), floor))
            })
            .collect();
        WithHistory { inner, floors }
    }
}

impl Detector for WithHistory<'_> {
    fn name(&self) -> String {
        format!("{} with package history", self.inner.name())
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        let s = self.inner.scores(d);
        match self.floors.get(&d.id) {
            Some(floor) => {
                let k = self.inner.threshold() / floor;
                s.into_iter().map(|v| v * k).collect()
            }
            None => s,
        }
    }
    fn threshold(&self) -> f64 {
        self.inner.threshold()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::eval;

    #[test]
    fn a_packages_healthy_history_is_its_floor_and_only_its_own() {
        use crate::learn::baselines::tests::{Echo, dep};
        // Package f's healthy installs peak at 0.8 (over the 0.5
        // threshold); package g's stay low.
        let f_ok1 = dep("f1", "f", &[0.2, 0.8], false);
        let f_ok2 = dep("f2", "f", &[0.7, 0.3], false);
        let f_bad = dep("f3", "f", &[0.6, 0.95], true);
        let f_meek = dep("f4", "f", &[0.6, 0.75], true);
        let g_ok = dep("g1", "g", &[0.1, 0.2], false);
        let g_bad = dep("g2", "g", &[0.6, 0.6], true);
        let ds = [f_ok1, f_ok2, f_bad, f_meek, g_ok, g_bad];
        let h = WithHistory::new(&Echo, &ds, &ds);
        let first = |d: &Record| h.scores(d).iter().position(|&v| v > h.threshold());
        // f's healthy installs are judged against each other's peak.
        assert_eq!(first(&ds[0]), Some(1), "0.8 over f2's 0.7");
        assert_eq!(first(&ds[1]), None, "0.7 under f1's 0.8");
        // f's faults must beat 0.8; g is judged as before.
        assert_eq!(first(&ds[2]), Some(1));
        assert_eq!(first(&ds[3]), None);
        assert_eq!(first(&ds[5]), Some(0));
        let none = WithHistory::new(&Echo, &ds, &[]);
        assert_eq!(
            none.scores(&ds[1]),
            Echo.scores(&ds[1]),
            "no history: as before"
        );
        let m = eval::evaluate(&h, h.threshold(), &ds);
        assert_eq!(m.false_positive_rate, 1.0 / 3.0);
    }

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
