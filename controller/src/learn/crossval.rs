//! Cross-validation: every deployment tested once, by a model that never
//! saw its package or its variant.

use serde::Serialize;

use super::baselines::Detector;
use super::corpus::{self, Record};
use super::eval::{self, Metrics};
use super::train::TrainConfig;
use super::{
    Alarm, FamilyLead, Scored, SplitSizes, alarms_from, at_own_threshold, by_family, rows,
    score_test,
};
use crate::predict::model;

/// One fold of a cross-validation: its split and its model's figures on
/// its own test part.
#[derive(Debug, Clone, Serialize)]
pub struct FoldFigures {
    pub fold: u8,
    pub split: SplitSizes,
    pub threshold: f64,
    pub model: Metrics,
}

/// Every deployment tested once, by a model that never saw its package or
/// its variant: one model per fold, trained on the other folds but one and
/// calibrated on that one.
///
/// Why: one split's test part holds a few dozen healthy installs from a
/// dozen packages, so one unusual healthy package moves the false-positive
/// rate by points and the figures swing with the split seed. Pooled over
/// the folds, every healthy install is tested once, and a 1% target means
/// something.
#[derive(Debug, Clone, Serialize)]
pub struct CrossValidation {
    pub seed: u64,
    #[serde(rename = "deployments")]
    pub records: usize,
    /// Deployments no fold tested: their package and their variant fell
    /// in different folds.
    pub never_tested: usize,
    /// Records no fold saw: held-out families (scored apart, see
    /// `held_out`) and the lockbox (scored only by `eval --lockbox`).
    pub set_aside: usize,
    pub target_fpr: f64,
    pub folds: Vec<FoldFigures>,
    /// Over every fold's test part, each detector at the threshold its own
    /// fold chose without that part: the model, the three baselines, the
    /// model or (a). Scores are taken relative to their fold's threshold,
    /// so ROC AUC ranks deployments by how far above or below it they went.
    pub detectors: Vec<Metrics>,
    /// Each detector at the threshold that suits it best on the pooled
    /// test deployments while alarming on no larger share of healthy ones
    /// than the model did: recall at equal false positives (see
    /// [`eval::at_fpr`]).
    pub at_model_fpr: Vec<Metrics>,
    /// The same at the target false-positive rate: what a perfect
    /// calibration would give each.
    pub at_target_fpr: Vec<Metrics>,
    /// The model with each package's healthy history in its fold's test
    /// part as its noise floor ([`super::detectors::WithHistory`]), pooled
    /// like `detectors`: the gain (or loss) of history as context.
    pub with_history: Metrics,
    pub model_alarms: Vec<Alarm>,
    pub model_by_family: Vec<FamilyLead>,
    /// Families kept out of every fold's training, each record scored by
    /// the fold that tests its package.
    pub held_out: Vec<FamilyLead>,
}

/// Cross-validate over `k` folds (see [`corpus::folds`]); `progress` hears
/// of each fold as it finishes (training one takes a while).
pub fn cross_validate(
    all: &[Record],
    cfg: &TrainConfig,
    k: u8,
    mut progress: impl FnMut(&FoldFigures),
) -> model::Result<CrossValidation> {
    let digest = corpus::digest(all);
    let total = all.len();
    let (all, held) = super::honest::partition(all);
    let all = &all[..];
    let (mut held_alarms, mut held_ds) = (Vec::new(), Vec::new());
    let folds = corpus::folds(all, k, cfg.seed);
    let mut pooled: Vec<Scored> = (0..4).map(|_| Scored::pooled(String::new())).collect();
    let mut history = Scored::pooled(String::new());
    let (mut tested, mut alarms, mut per_fold) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..folds.k {
        let split = folds.split(all, t);
        if split.test.is_empty() || split.validation.is_empty() {
            return Err(model::ModelError::Data(format!(
                "fold {} of {}: {} train, {} validation, {} test deployments: too few packages or variants for {} folds",
                t + 1,
                folds.k,
                split.train.len(),
                split.validation.len(),
                split.test.len(),
                folds.k
            )));
        }
        let m = super::train::train(&split.train, &split.validation, cfg, digest.clone())?;
        let scored = score_test(&m, &split);
        let with = super::detectors::WithHistory::new(&scored[0], &split.test, &split.test);
        history.name = super::baselines::Detector::name(&with);
        history.add_relative(Scored::of(&with, &split.test));
        let (a, d) = super::honest::score_held_out(&m, &held, &split.test);
        held_alarms.extend(a);
        held_ds.extend(d);
        let fold = FoldFigures {
            fold: t,
            split: SplitSizes::of(&split),
            threshold: m.meta.threshold,
            model: eval::evaluate(&scored[0], scored[0].threshold(), &split.test),
        };
        progress(&fold);
        per_fold.push(fold);
        alarms.extend(alarms_from(&m, &scored[0], &split.test));
        for (p, s) in pooled.iter_mut().zip(scored) {
            p.name.clone_from(&s.name);
            p.add_relative(s);
        }
        tested.extend(split.test);
    }
    let pooled: [Scored; 4] = pooled
        .try_into()
        .unwrap_or_else(|_| unreachable!("four detectors"));
    let detectors = rows(&pooled, at_own_threshold(&tested));
    let at = |fpr: f64| rows(&pooled, |d| eval::at_fpr(d, &tested, fpr));
    Ok(CrossValidation {
        seed: cfg.seed,
        records: all.len(),
        never_tested: all.len() - tested.len(),
        set_aside: total - all.len(),
        target_fpr: cfg.target_fpr,
        at_model_fpr: at(detectors[0].false_positive_rate),
        at_target_fpr: at(cfg.target_fpr),
        detectors,
        with_history: eval::evaluate(&history, 0.0, &tested),
        model_by_family: by_family(&alarms, &tested),
        model_alarms: alarms,
        held_out: super::honest::held_out_families(&held_alarms, &held_ds),
        folds: per_fold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_validation_tests_each_deployment_once_and_pools_the_folds_as_they_scored() {
        let all = corpus::synthetic(9, 30, 8);
        let cfg = TrainConfig {
            epochs: 5,
            ..Default::default()
        };
        let mut heard = 0;
        let cv = cross_validate(&all, &cfg, 3, |_| heard += 1).unwrap();
        assert_eq!((heard, cv.folds.len()), (3, 3));
        let tested: usize = cv.folds.iter().map(|f| f.split.test).sum();
        assert_eq!(tested + cv.never_tested + cv.set_aside, all.len());
        // The model, three baselines, model or (a), model or the disk
        // trend, and that or the room check.
        assert_eq!(cv.detectors.len(), 7);
        assert!(
            cv.detectors[6]
                .detector
                .ends_with("(or the room check before it)")
        );
        let model = &cv.detectors[0];
        assert_eq!(model.failing + model.healthy, tested);
        // Pooled, each deployment alarms exactly as it did in its fold at
        // that fold's threshold.
        let caught: f64 = cv
            .folds
            .iter()
            .map(|f| f.model.recall * f.model.failing as f64)
            .sum();
        let false_alarms: f64 = cv
            .folds
            .iter()
            .map(|f| f.model.false_positive_rate * f.model.healthy as f64)
            .sum();
        assert!((model.recall * model.failing as f64 - caught).abs() < 1e-6);
        assert!((model.false_positive_rate * model.healthy as f64 - false_alarms).abs() < 1e-6);
        let alarmed = cv.model_alarms.len() as f64;
        assert!((alarmed - caught - false_alarms).abs() < 1e-6);
        // At equal false positives no detector alarms more healthy ones
        // than the model did, nor more than the target at the target.
        for m in &cv.at_model_fpr {
            assert!(m.false_positive_rate <= model.false_positive_rate, "{m:?}");
        }
        for m in &cv.at_target_fpr {
            assert!(m.false_positive_rate <= cfg.target_fpr, "{m:?}");
        }
    }
}
