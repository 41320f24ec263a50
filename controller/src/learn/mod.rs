//! Learning: the corpus a model learns from, the catalog that produces
//! it, training, the baselines the model must beat, and the evaluation
//! that compares them on the same deployments.
//!
//! The claim to be measured is that a failing install can be seen coming
//! before it says so itself. So everything is judged per deployment and
//! against the moment the failure would have shown without prediction
//! (its onset), on packages and fault variants the model never saw.
//!
//! The model itself lives in [`crate::predict`] and takes a stream's
//! feature windows; this module hands it a record's windows.

pub mod baselines;
pub mod catalog;
pub mod corpus;
pub mod corpus_file;
pub mod crossval;
pub mod detectors;
pub mod eval;
pub mod honest;
pub mod lofo;
pub mod split;
mod synth_host;
pub mod train;

use serde::Serialize;

use crate::predict::model::{self, Model};
use baselines::{ChecksOnly, Detector, MannWhitneyJudge, StaticThresholds};
use corpus::{Record, Split};
use eval::Metrics;
use train::TrainConfig;

pub use crossval::{CrossValidation, FoldFigures, cross_validate};
pub use detectors::{ModelDetector, ModelOrChecks, ModelOrTrend, Scored};
pub use lofo::{FamilyFold, Lofo, leave_one_family_out};

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Records in the test part (serde name kept for old output readers).
    #[serde(rename = "deployments")]
    pub records: usize,
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
    /// Families kept out of training, scored on the test part's packages.
    pub held_out: Vec<FamilyLead>,
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
    /// "build-up", "silent", "real" or empty; for a silent family,
    /// caught_before_onset counts tells.
    pub group: String,
    pub held_out: bool,
    pub failing: usize,
    pub caught: usize,
    pub caught_before_onset: usize,
    pub lead_time_median_ms: Option<f64>,
}

/// Per fault family, from the model's first alarms.
pub fn by_family(alarms: &[Alarm], ds: &[Record]) -> Vec<FamilyLead> {
    let mut fams: std::collections::BTreeMap<&str, FamilyLead> = std::collections::BTreeMap::new();
    for d in ds.iter().filter(|d| d.failing()) {
        let f = fams.entry(&d.family).or_insert_with(|| FamilyLead {
            family: d.family.clone(),
            group: d.group.clone(),
            held_out: d.held_out,
            failing: 0,
            caught: 0,
            caught_before_onset: 0,
            lead_time_median_ms: None,
        });
        f.failing += 1;
    }
    let mut leads: std::collections::BTreeMap<String, Vec<f64>> = std::collections::BTreeMap::new();
    for a in alarms {
        let Some(d) = ds.iter().find(|d| d.id == a.record && d.failing()) else {
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
                .push(((o - a.window) as u64 * u64::from(d.window_ms)) as f64);
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
    fn with_families(mut self, test: &[Record]) -> Self {
        self.model_by_family = by_family(&self.model_alarms, test);
        self
    }
}

/// The model's first alarm on a deployment and the features that drove it.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    /// The record's id (serde name kept for old output readers).
    #[serde(rename = "deployment")]
    pub record: String,
    pub outcome: corpus::Outcome,
    pub window: usize,
    pub onset_window: Option<usize>,
    pub probability: f64,
    /// (feature, fall in the logit when the feature is made typical).
    pub drivers: Vec<(String, f64)>,
}

/// The model's first alarm on each deployment, explained.
pub fn alarms(model: &Model, ds: &[Record]) -> Vec<Alarm> {
    alarms_from(model, &Scored::of(&ModelDetector(model), ds), ds)
}

/// [`alarms`] from the model's scores, computed already.
pub(crate) fn alarms_from(model: &Model, scored: &Scored, ds: &[Record]) -> Vec<Alarm> {
    ds.iter()
        .filter_map(|d| {
            let p = scored.scores(d);
            let t = p.iter().position(|&v| v > model.meta.threshold)?;
            Some(Alarm {
                record: d.id.clone(),
                outcome: d.outcome,
                window: t,
                onset_window: d.onset_window,
                probability: p[t],
                drivers: model.explain_alarm(&d.windows, t, 3),
            })
        })
        .collect()
}

/// The model and the three baselines scored on the test part, each with
/// a threshold chosen without it: (b) is tuned on `train`, (c) judges each
/// deployment against the healthy deployments of the same package in
/// `test` (other hosts' history), with its threshold calibrated on
/// `validation` to the model's false-positive target.
pub(crate) fn score_test(model: &Model, split: &Split) -> [Scored; 4] {
    let target = model.meta.target_fpr;
    let statics = StaticThresholds::tune(&split.train, target);
    let judge = MannWhitneyJudge::new(&split.test);
    let judge_val = MannWhitneyJudge::new(&split.validation);
    let judge_thr = baselines::calibrated_threshold(&judge_val, &split.validation, target);
    [
        Scored::of(&ModelDetector(model), &split.test),
        Scored::of(&ChecksOnly, &split.test),
        Scored::of(&statics, &split.test),
        Scored::at(&judge, judge_thr, &split.test),
    ]
}

/// The rows of a table: the model, the three baselines, the model or (a),
/// the model or the disk trend, and that or the room check, each measured
/// by `measure`.
pub(crate) fn rows(
    scored: &[Scored; 4],
    measure: impl Fn(&dyn Detector) -> Metrics,
) -> Vec<Metrics> {
    let mut v: Vec<Metrics> = scored.iter().map(|s| measure(s)).collect();
    v.push(measure(&ModelOrChecks(&scored[0])));
    v.push(measure(&ModelOrTrend(&scored[0])));
    v.push(measure(&detectors::WithRoom(&ModelOrTrend(&scored[0]))));
    v
}

/// Each detector at its own threshold.
pub(crate) fn at_own_threshold(ds: &[Record]) -> impl Fn(&dyn Detector) -> Metrics + '_ {
    move |d| eval::evaluate(d, d.threshold(), ds)
}

/// Evaluate the model and the baselines on the test split (see
/// [`score_test`] for how each baseline gets its threshold).
pub fn evaluate(model: &Model, split: &Split) -> Evaluation {
    let scored = score_test(model, split);
    Evaluation {
        records: split.test.len(),
        split: SplitSizes::of(split),
        target_fpr: model.meta.target_fpr,
        detectors: rows(&scored, at_own_threshold(&split.test)),
        model_by_family: Vec::new(),
        model_alarms: alarms_from(model, &scored[0], &split.test),
        held_out: Vec::new(),
    }
    .with_families(&split.test)
}

impl SplitSizes {
    pub(crate) fn of(split: &Split) -> SplitSizes {
        SplitSizes {
            train: split.train.len(),
            validation: split.validation.len(),
            test: split.test.len(),
            left_out: split.left_out,
        }
    }
}

/// The split a saved model was trained on, rebuilt from the corpus by its
/// seed, to evaluate it on its test part. Refused when the model was split
/// by another rule (it would be tested on deployments it trained on) or
/// when the test part is empty.
pub fn test_split(model: &Model, all: &[Record]) -> model::Result<Split> {
    if model.meta.split_rule != corpus::SPLIT_RULE {
        return Err(model::ModelError::Data(format!(
            "trained with split rule {:?}, this build splits by {:?}: its test split cannot be rebuilt (it would be tested on deployments it trained on); retrain it, or use `backstop crossval`",
            model.meta.split_rule,
            corpus::SPLIT_RULE
        )));
    }
    // As training split it: without held-out families and the lockbox.
    let (all, _) = honest::partition(all);
    let split = corpus::split(&all, model.meta.seed);
    if split.test.is_empty() {
        return Err(model::ModelError::Data(format!(
            "the test split of this corpus (by the model's seed {}) is empty",
            model.meta.seed
        )));
    }
    Ok(split)
}

/// Split, train, calibrate, evaluate on the test split; the evaluation is
/// stored in the model's metadata.
pub fn train_and_evaluate(all: &[Record], cfg: &TrainConfig) -> model::Result<(Model, Evaluation)> {
    train_and_evaluate_with(all, cfg, &backstop_common::progress::Silent)
}

/// [`train_and_evaluate`], reporting each training epoch to `progress`.
pub fn train_and_evaluate_with(
    all: &[Record],
    cfg: &TrainConfig,
    progress: &dyn backstop_common::progress::Progress,
) -> model::Result<(Model, Evaluation)> {
    // The digest names the whole corpus; the split sees no held-out family.
    let digest = corpus::digest(all);
    let (all, held) = honest::partition(all);
    let all = &all[..];
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
    let mut m = train::train_with(&split.train, &split.validation, cfg, digest, progress)?;
    let mut e = evaluate(&m, &split);
    let (held_alarms, held_ds) = honest::score_held_out(&m, &held, &split.test);
    e.held_out = honest::held_out_families(&held_alarms, &held_ds);
    m.meta.evaluation = Some(serde_json::to_value(&e).expect("plain data serializes"));
    Ok((m, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_common::features::FEATURES;

    #[test]
    fn a_model_split_by_another_rule_is_not_evaluated() {
        let all = corpus::synthetic(9, 20, 6);
        let cfg = TrainConfig {
            epochs: 1,
            ..Default::default()
        };
        let (mut m, e) = train_and_evaluate(&all, &cfg).unwrap();
        let again = evaluate(&m, &test_split(&m, &all).unwrap());
        assert_eq!(again.split.test, e.split.test);
        m.meta.split_rule = String::new();
        let err = test_split(&m, &all).unwrap_err().to_string();
        assert!(
            err.contains("split rule") && err.contains("retrain"),
            "{err}"
        );
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
        let (model, e) = train_and_evaluate(&all, &cfg).unwrap();
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
        // And at equal false positives: the model at the threshold that
        // alarms on no more healthy test deployments than (b) did.
        let test = corpus::split(&all, cfg.seed).test;
        let level = eval::at_fpr(&ModelDetector(&model), &test, b.false_positive_rate);
        assert!(
            level.recall > b.recall,
            "at (b)'s FPR {}, model recall {} not above (b)'s {}",
            b.false_positive_rate,
            level.recall,
            b.recall
        );
        // The threshold calibrated on validation holds roughly on unseen
        // packages (here 1% of 128 healthy validation deployments is one;
        // this corpus's healthy bursts have a heavier tail than the fit).
        assert!(
            m.false_positive_rate <= 0.1,
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
                .find(|d| d.id == a.record)
                .map(|d| d.family.as_str());
            let Some((_, feats)) = corpus::SYNTHETIC_FAMILIES
                .iter()
                .find(|(f, _)| Some(*f) == family)
            else {
                continue;
            };
            explained += 1;
            let feature_names: Vec<&str> = feats.iter().map(|&i| FEATURES[i].name).collect();
            if a.drivers
                .iter()
                .any(|(f, _)| feature_names.contains(&f.as_str()))
            {
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
