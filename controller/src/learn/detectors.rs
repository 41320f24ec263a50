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

/// The model together with the disk trend (`decide::trend`, the rule a
/// live deployment is rolled back by when the scope's free space falls
/// steadily towards zero), whichever alarms first, as a rollback decision
/// would use both. Why measure them together: a log flood looks like any
/// steady writer to the model (an initramfs being written grows one file
/// as fast), and what tells it apart is the room it is eating, which no
/// model input holds (free space is a host level). The rule is not
/// fitted to anything, so it needs no fold. It reads the record's host
/// levels exactly as the daemon reads a live stream's windows, with no
/// deadline (the catalog's short step timeouts are a recording budget,
/// not a live install's), so on a record whose step timed out first it
/// may alarm where the daemon, knowing the timeout, would have waited.
pub struct ModelOrTrend<'a>(pub &'a dyn Detector);

impl Detector for ModelOrTrend<'_> {
    fn name(&self) -> String {
        "model or the disk trend, whichever alarms first".into()
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        let from = trend_window(d);
        (self.0.scores(d).into_iter().enumerate())
            .map(|(t, m)| {
                if from.is_some_and(|w| t >= w) {
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

/// A detector together with the room check (`backstop-agent room`, run
/// on every deployment's .debs before its snapshot): a deployment the
/// check refused alarms before its first window, since a live one would
/// not have started. Measured apart from the model because the check
/// reads the .debs, not the windows, and the catalog sizes a disk-full
/// shadow's layer below what its .debs hold: that the check refuses those
/// says what it is for, not how good the model is.
pub struct WithRoom<'a>(pub &'a dyn Detector);

impl Detector for WithRoom<'_> {
    fn name(&self) -> String {
        format!("{} (or the room check before it)", self.0.name())
    }
    fn scores(&self, d: &Record) -> Vec<f64> {
        let refused = self.refuses(d);
        (self.0.scores(d).into_iter())
            .map(|m| if refused { 1.0 + m } else { m })
            .collect()
    }
    fn threshold(&self) -> f64 {
        self.0.threshold()
    }
    fn refuses(&self, d: &Record) -> bool {
        self.0.refuses(d) || matches!(d.room, Some(super::corpus::Room::Refused { .. }))
    }
}

/// The first window at which the disk trend holds on a record: its host
/// levels as the daemon's live samples (`daemon::resources`), each at its
/// window's end.
pub fn trend_window(d: &Record) -> Option<usize> {
    use crate::decide::trend::{Level, Resources, disk};
    let disk_free = (d.host.iter().enumerate())
        .filter(|(_, h)| h.disk_total_bytes > 0.0)
        .map(|(i, h)| Level {
            index: i as u64,
            at_ms: (i as f64 + 1.0) * f64::from(d.window_ms),
            value: h.disk_free_bytes,
        })
        .collect();
    let r = Resources {
        disk_free,
        ..Resources::default()
    };
    disk(&r).map(|x| x.last as usize)
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
#[path = "detectors_tests.rs"]
mod tests;
