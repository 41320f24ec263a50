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

    #[test]
    fn model_or_trend_alarms_where_the_disk_would_run_out_and_only_there() {
        use crate::learn::baselines::tests::{Echo, dep};
        use backstop_common::hostlevels::HostLevels;
        const MIB: f64 = 1024.0 * 1024.0;
        let with_free = |mut d: Record, free: &[f64]| {
            d.host = (free.iter())
                .map(|&f| HostLevels {
                    disk_free_bytes: f * MIB,
                    disk_total_bytes: 64.0 * MIB,
                    ..HostLevels::default()
                })
                .collect();
            d
        };
        let fill: Vec<f64> = (0..10).map(|i| 10.0 - f64::from(i)).collect();
        // A quiet model, and the scope losing 1 MiB a second from 10 MiB:
        // at window 5 (1000 ms windows) 5 MiB are left and it has been
        // falling for 5 s, so it runs out within the time it fell.
        let flood = with_free(dep("a", "p", &[0.1; 10], true), &fill);
        // The same fall that stops at a quarter of the room, and a flat one.
        let stops = [10.0, 9.5, 9.0, 8.5, 8.0, 7.5, 7.5, 7.5, 7.5, 7.5];
        let writer = with_free(dep("b", "p", &[0.1; 10], false), &stops);
        let flat = with_free(dep("c", "p", &[0.1; 10], false), &[10.0; 10]);
        // No host levels (a corpus from before schema v3): the model alone.
        let bare = dep("d", "p", &[0.1, 0.9, 0.1], true);
        let ds = [flood, writer, flat, bare];
        let both = ModelOrTrend(&Echo);
        let first = |d: &Record| both.scores(d).iter().position(|&v| v > both.threshold());
        assert_eq!(trend_window(&ds[0]), Some(5));
        assert_eq!(first(&ds[0]), Some(5));
        assert_eq!(first(&ds[1]), None, "a fill that stops is never projected");
        assert_eq!(first(&ds[2]), None);
        assert_eq!(trend_window(&ds[3]), None);
        assert_eq!(first(&ds[3]), Some(1), "the model's own alarm");
        let m = eval::evaluate(&both, both.threshold(), &ds);
        assert_eq!((m.recall, m.false_positive_rate), (1.0, 0.0));
        assert_eq!(m.caught_before_onset, 2, "window 5 of 9, window 1 of 2");
    }

    /// README, "Stop 32's figures first": on the shipped corpora the disk
    /// trend alone alarms on 23 of the 30 log floods, 20 of them before
    /// onset, and on no healthy install (1212 in the corpus, 14 big ones)
    /// nor any real failure (which fill nothing).
    #[test]
    fn the_disk_trend_on_the_shipped_corpora_finds_floods_and_nothing_healthy() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/recorded");
        let read = |name: &str| {
            let path = root.join(name);
            crate::learn::corpus::read(&[path.as_path()]).expect("a shipped corpus")
        };
        let corpus = read("deployments.jsonl.gz");
        let mut healthy = 0;
        for name in ["big-healthy.jsonl.gz", "real-failures.jsonl.gz"] {
            for d in read(name) {
                assert_eq!(trend_window(&d), None, "{}", d.id);
            }
        }
        let (mut floods, mut caught, mut early) = (0, 0, 0);
        for d in &corpus {
            let at = trend_window(d);
            if !d.failing() {
                healthy += 1;
                assert_eq!(at, None, "{}: a healthy install projected full", d.id);
            } else if d.family == "log-flood" {
                floods += 1;
                caught += usize::from(at.is_some());
                early += usize::from(at.zip(d.onset_window).is_some_and(|(a, o)| a < o));
            }
        }
        assert_eq!((healthy, floods), (1212, 30));
        assert_eq!((caught, early), (23, 20), "the README's figures");
    }
}
