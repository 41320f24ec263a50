//! Prediction: the corpus a model learns from, the model, the baselines it
//! must beat, and the evaluation that compares them on the same
//! deployments.
//!
//! The claim to be measured is that a failing install can be seen coming
//! before it says so itself. So everything is judged per deployment and
//! against the moment the failure would have shown without prediction
//! (its onset), on packages and fault variants the model never saw.

pub mod baselines;
pub mod catalog;
pub mod corpus;
pub mod eval;
pub mod model;

use serde::Serialize;

use baselines::{ChecksOnly, Detector, MannWhitneyJudge, StaticThresholds};
use corpus::{Deployment, Split};
use eval::Metrics;
use model::{Model, TrainConfig};

/// The model as a [`Detector`].
pub struct ModelDetector<'a>(pub &'a Model);

impl Detector for ModelDetector<'_> {
    fn name(&self) -> String {
        "backstop model".into()
    }
    fn scores(&self, d: &Deployment) -> Vec<f64> {
        self.0.predict(d).unwrap_or_else(|e| {
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
    name: String,
    threshold: f64,
    scores: std::collections::HashMap<String, Vec<f64>>,
}

impl Scored {
    pub fn of(det: &dyn Detector, ds: &[Deployment]) -> Scored {
        Scored {
            name: det.name(),
            threshold: det.threshold(),
            scores: ds.iter().map(|d| (d.id.clone(), det.scores(d))).collect(),
        }
    }
}

impl Detector for Scored {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn scores(&self, d: &Deployment) -> Vec<f64> {
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
    fn scores(&self, d: &Deployment) -> Vec<f64> {
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

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub deployments: usize,
    /// The split: train, validation and test deployments, and those left
    /// out because their package and their variant fell in different parts.
    pub split: SplitSizes,
    pub target_fpr: f64,
    /// The model first, then the three baselines, then the model together
    /// with (a), on the same deployments.
    pub detectors: Vec<Metrics>,
    /// Each test deployment the model alarmed on, with why.
    pub model_alarms: Vec<Alarm>,
    /// The model per fault family: how many of the family's failing test
    /// deployments it caught, how many before their onset, and the median
    /// lead time of those.
    pub model_by_family: Vec<FamilyLead>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SplitSizes {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub left_out: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FamilyLead {
    pub family: String,
    pub failing: usize,
    pub caught: usize,
    pub caught_before_onset: usize,
    pub lead_time_median_ms: Option<f64>,
}

/// Per fault family, from the model's first alarms.
pub fn by_family(alarms: &[Alarm], ds: &[Deployment]) -> Vec<FamilyLead> {
    let mut fams: std::collections::BTreeMap<&str, FamilyLead> = Default::default();
    for d in ds.iter().filter(|d| d.failing()) {
        let f = fams.entry(&d.family).or_insert_with(|| FamilyLead {
            family: d.family.clone(),
            failing: 0,
            caught: 0,
            caught_before_onset: 0,
            lead_time_median_ms: None,
        });
        f.failing += 1;
    }
    let mut leads: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for a in alarms {
        let Some(d) = ds.iter().find(|d| d.id == a.deployment && d.failing()) else {
            continue;
        };
        let Some(f) = fams.get_mut(d.family.as_str()) else {
            continue;
        };
        f.caught += 1;
        if let Some(o) = d.onset_window
            && a.window < o
        {
            f.caught_before_onset += 1;
            leads
                .entry(d.family.clone())
                .or_default()
                .push(((o - a.window) as u64 * d.window_ms) as f64);
        }
    }
    fams.into_values()
        .map(|mut f| {
            if let Some(v) = leads.get_mut(&f.family) {
                v.sort_by(f64::total_cmp);
                f.lead_time_median_ms = v.get(v.len() / 2).copied();
            }
            f
        })
        .collect()
}

impl Evaluation {
    fn with_families(mut self, test: &[Deployment]) -> Self {
        self.model_by_family = by_family(&self.model_alarms, test);
        self
    }
}

/// The model's first alarm on a deployment and the features that drove it.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    pub deployment: String,
    pub outcome: corpus::Outcome,
    pub window: usize,
    pub onset_window: Option<usize>,
    pub probability: f64,
    /// (feature, fall in the logit when the feature is made typical).
    pub drivers: Vec<(String, f64)>,
}

/// The model's first alarm on each deployment, explained.
pub fn alarms(model: &Model, ds: &[Deployment]) -> Vec<Alarm> {
    alarms_from(model, &Scored::of(&ModelDetector(model), ds), ds)
}

/// [`alarms`] from the model's scores, computed already.
fn alarms_from(model: &Model, scored: &Scored, ds: &[Deployment]) -> Vec<Alarm> {
    ds.iter()
        .filter_map(|d| {
            let p = scored.scores(d);
            let t = p.iter().position(|&v| v > model.meta.threshold)?;
            Some(Alarm {
                deployment: d.id.clone(),
                outcome: d.outcome,
                window: t,
                onset_window: d.onset_window,
                probability: p[t],
                drivers: model.explain(d, t, 3).unwrap_or_default(),
            })
        })
        .collect()
}

/// Evaluate the model and the baselines on `test`; (b) is tuned on
/// `train`, (c) judges each deployment against the healthy deployments of
/// the same package in `test` (other hosts' history), with its threshold
/// calibrated on `validation` to the model's false-positive target.
pub fn evaluate(model: &Model, split: &Split) -> Evaluation {
    let target = model.meta.target_fpr;
    let statics = StaticThresholds::tune(&split.train, target);
    let judge = MannWhitneyJudge::new(&split.test);
    let judge_val = MannWhitneyJudge::new(&split.validation);
    let judge_thr = baselines::calibrated_threshold(&judge_val, &split.validation, target);
    let md = Scored::of(&ModelDetector(model), &split.test);
    Evaluation {
        deployments: split.test.len(),
        split: SplitSizes {
            train: split.train.len(),
            validation: split.validation.len(),
            test: split.test.len(),
            left_out: split.left_out,
        },
        target_fpr: target,
        detectors: vec![
            eval::evaluate(&md, md.threshold(), &split.test),
            eval::evaluate(&ChecksOnly, ChecksOnly.threshold(), &split.test),
            eval::evaluate(&statics, statics.threshold(), &split.test),
            eval::evaluate(&judge, judge_thr, &split.test),
            eval::evaluate(&ModelOrChecks(&md), md.threshold(), &split.test),
        ],
        model_by_family: Vec::new(),
        model_alarms: alarms_from(model, &md, &split.test),
    }
    .with_families(&split.test)
}

/// Split, train, calibrate, evaluate on the test split; the evaluation is
/// stored in the model's metadata.
pub fn train_and_evaluate(
    all: &[Deployment],
    cfg: &TrainConfig,
) -> model::Result<(Model, Evaluation)> {
    let split = corpus::split(all, cfg.seed);
    if split.test.is_empty() || split.validation.is_empty() {
        return Err(model::ModelError::Data(format!(
            "{} deployments split into {} train, {} validation, {} test: too few packages or variants for a held-out test",
            all.len(),
            split.train.len(),
            split.validation.len(),
            split.test.len()
        )));
    }
    let mut m = model::train(&split.train, &split.validation, cfg, corpus::digest(all))?;
    let e = evaluate(&m, &split);
    m.meta.evaluation = Some(serde_json::to_value(&e).expect("plain data serializes"));
    Ok((m, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_common::features::FEATURES;

    /// Scores fixed per deployment: window value = the deployment's first
    /// feature, as a probability.
    struct Echo;
    impl Detector for Echo {
        fn name(&self) -> String {
            "echo".into()
        }
        fn scores(&self, d: &Deployment) -> Vec<f64> {
            d.windows.iter().map(|w| w[0]).collect()
        }
        fn threshold(&self) -> f64 {
            0.5
        }
    }

    #[test]
    fn model_or_checks_alarms_at_the_earlier_of_the_two() {
        use baselines::tests::dep;
        let quiet_failure = dep("a", "p", &[0.1, 0.1, 0.1, 0.1], true);
        let predicted = dep("b", "p", &[0.1, 0.9, 0.9, 0.9], true);
        let healthy = dep("c", "p", &[0.1, 0.2], false);
        let false_alarm = dep("d", "p", &[0.7, 0.2], false);
        let ds = [quiet_failure, predicted, healthy, false_alarm];
        let echo = Scored::of(&Echo, &ds);
        let both = ModelOrChecks(&echo);
        let first = |d: &Deployment| both.scores(d).iter().position(|&v| v > both.threshold());
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
    fn a_model_trained_on_a_generated_corpus_beats_static_thresholds_on_held_out_packages() {
        // Large enough that the held-out split has dozens of failing
        // deployments: with a handful, recall is a coin toss.
        let all = corpus::synthetic(5, 80, 16);
        let cfg = TrainConfig {
            seed: 1,
            ..Default::default()
        };
        let (_, e) = train_and_evaluate(&all, &cfg).unwrap();
        let by = |name: &str| {
            e.detectors
                .iter()
                .find(|m| m.detector.contains(name))
                .unwrap()
        };
        let (m, b) = (by("model"), by("static"));
        eprintln!("{}", serde_json::to_string_pretty(&e).unwrap());
        assert!(
            m.recall > b.recall,
            "model recall {} not above static thresholds' {}",
            m.recall,
            b.recall
        );
        assert!(m.roc_auc > b.roc_auc, "AUC {} vs {}", m.roc_auc, b.roc_auc);
        assert!(
            m.false_positive_rate <= 0.05,
            "model alarms {} of healthy test deployments",
            m.false_positive_rate
        );
        // The explanations name what the fault drove.
        let (mut named, mut explained) = (0, 0);
        for a in e
            .model_alarms
            .iter()
            .filter(|a| a.outcome != corpus::Outcome::Ok)
        {
            let family = all
                .iter()
                .find(|d| d.id == a.deployment)
                .map(|d| d.family.as_str());
            let Some((_, feats)) = corpus::SYNTHETIC_FAMILIES
                .iter()
                .find(|(f, _)| Some(*f) == family)
            else {
                continue;
            };
            explained += 1;
            let names: Vec<&str> = feats.iter().map(|&i| FEATURES[i].name).collect();
            if a.drivers.iter().any(|(f, _)| names.contains(&f.as_str())) {
                named += 1;
            }
        }
        // Three in four: a fault drives its features together with others
        // (a disk filling also writes), and a held-out variant's alarm may
        // lean on those.
        assert!(
            explained > 0 && named * 4 >= explained * 3,
            "{named} of {explained} alarms name a feature their fault drove"
        );
    }
}
