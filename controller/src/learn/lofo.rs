//! Leave-one-family-out cross-validation (issue 16, item 4).
//!
//! Why, beside the package and variant folds of [`super::crossval`]: a
//! variant fold still trains on the family's other variants (the same
//! script at another strength), so its recall says how well the model
//! knows a fault it has seen in another guise. Here each fault family in
//! turn is kept out of training and calibration altogether and tested
//! together with the healthy installs of a package fold the model never
//! saw either: recall on a kind of failure it never met, false alarms on
//! packages it never met. This is the figure that should carry over to a
//! new host's failures, which the catalog does not have.
//!
//! Cost: one model per family. Healthy installs are tested by the package
//! fold `family index mod k`, so with more families than folds a package
//! is tested by several models; the pooled false-alarm rate counts each
//! (install, model) pair, an average over the models.

use serde::Serialize;

use super::baselines::Detector;
use super::corpus::{self, HEALTHY, Record};
use super::detectors::WithRoom;
use super::eval::{self, Metrics};
use super::train::TrainConfig;
use super::{FamilyLead, ModelDetector, ModelOrTrend, Scored, alarms_from, by_family};
use crate::predict::model;

/// One family kept out: the model trained without it, on its fold's test.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyFold {
    pub family: String,
    pub group: String,
    /// The package fold whose healthy installs were tested beside it.
    pub package_fold: u8,
    pub trained_on: usize,
    pub threshold: f64,
    /// The model on this family's faulty installs and the fold's healthy.
    pub model: Metrics,
    pub lead: FamilyLead,
    /// The same model or the disk trend, whichever alarms first
    /// ([`ModelOrTrend`]): what a live deployment is rolled back by.
    pub with_trend: Metrics,
    /// The model or the disk trend, or the room check before the install
    /// ([`WithRoom`]): everything a live deployment is stopped by.
    pub with_room: Metrics,
}

/// Every family's fold, and the figures the Must-hold names.
#[derive(Debug, Clone, Serialize)]
pub struct Lofo {
    pub seed: u64,
    #[serde(rename = "deployments")]
    pub records: usize,
    /// Held-out families and the lockbox: in no fold (see `honest.rs`).
    pub set_aside: usize,
    pub target_fpr: f64,
    pub families: Vec<FamilyFold>,
    /// The model's pooled figures (flat in the JSON, as before).
    #[serde(flatten)]
    pub model: Pooled,
    /// The same figures for the model or the disk trend.
    pub with_trend: Pooled,
    /// And for the model, the disk trend or the room check.
    pub with_room: Pooled,
}

/// The pooled figures of one detector over every family's fold.
#[derive(Debug, Clone, Serialize)]
pub struct Pooled {
    /// Faulty installs of the family left out, alarmed at any window.
    pub failing: usize,
    pub caught: usize,
    pub recall: f64,
    /// (healthy install, model) pairs on unseen packages, and alarms.
    pub healthy_tested: usize,
    pub false_alarms: usize,
    pub false_positive_rate: f64,
    /// Build-up families: faulty installs, and those alarmed before onset.
    pub build_up_failing: usize,
    pub build_up_early: usize,
    pub build_up_early_share: f64,
    /// Median of the build-up families' early alarms' lead (ms).
    pub build_up_lead_median_ms: Option<f64>,
    /// Silent faults alarmed before their onset (must be 0).
    pub tells: usize,
}

/// Leave each fault family out in turn (see the module doc); `progress`
/// hears of each family's fold as it finishes.
pub fn leave_one_family_out(
    all: &[Record],
    cfg: &TrainConfig,
    k: u8,
    mut progress: impl FnMut(&FamilyFold),
) -> model::Result<Lofo> {
    let digest = corpus::digest(all);
    let total = all.len();
    let (all, _) = super::honest::partition(all);
    let folds = corpus::folds(&all, k, cfg.seed);
    let families = families(&all);
    if families.len() < 2 {
        return Err(model::ModelError::Data(format!(
            "{} fault famil(ies) in the corpus: leaving one out needs at least 2",
            families.len()
        )));
    }
    let mut out = Vec::new();
    let (mut leads, mut trend_leads, mut room_leads) = (Vec::new(), Vec::new(), Vec::new());
    for (i, family) in families.iter().enumerate() {
        let t = (i % usize::from(folds.k)) as u8;
        let split = folds.split(&all, t);
        let of_family = |d: &Record| d.failing() && d.family == *family;
        let without =
            |v: Vec<Record>| -> Vec<Record> { v.into_iter().filter(|d| !of_family(d)).collect() };
        let (train, validation) = (without(split.train), without(split.validation));
        let mut test: Vec<Record> = split
            .test
            .into_iter()
            .filter(|d| d.variant == HEALTHY && !d.failing())
            .collect();
        test.extend(all.iter().filter(|d| of_family(d)).cloned());
        if train.is_empty() || validation.is_empty() {
            return Err(model::ModelError::Data(format!(
                "leaving {family} out of fold {t}: {} train, {} validation deployments",
                train.len(),
                validation.len()
            )));
        }
        let m = super::train::train(&train, &validation, cfg, digest.clone())?;
        let scored = Scored::of(&ModelDetector(&m), &test);
        let alarms = alarms_from(&m, &scored, &test);
        let lead = by_family(&alarms, &test)
            .into_iter()
            .next()
            .unwrap_or_else(|| unreachable!("the family's records are in the test"));
        leads.extend(build_up_leads(&scored, m.meta.threshold, &test));
        let both = ModelOrTrend(&scored);
        trend_leads.extend(build_up_leads(&both, m.meta.threshold, &test));
        let all_of = WithRoom(&both);
        room_leads.extend(build_up_leads(&all_of, m.meta.threshold, &test));
        let fold = FamilyFold {
            family: (*family).to_string(),
            group: lead.group.clone(),
            package_fold: t,
            trained_on: train.len(),
            threshold: m.meta.threshold,
            model: eval::evaluate(&scored, m.meta.threshold, &test),
            lead,
            with_trend: eval::evaluate(&both, m.meta.threshold, &test),
            with_room: eval::evaluate(&all_of, m.meta.threshold, &test),
        };
        progress(&fold);
        out.push(fold);
    }
    let with_trend = pool(&out, |f| &f.with_trend, &mut trend_leads);
    let with_room = pool(&out, |f| &f.with_room, &mut room_leads);
    Ok(pooled(
        cfg,
        (all.len(), total - all.len()),
        out,
        &mut leads,
        [with_trend, with_room],
    ))
}

/// How long before onset `det` first alarmed (ms), on each build-up
/// fault of `test` it alarmed on before onset.
fn build_up_leads(det: &dyn Detector, threshold: f64, test: &[Record]) -> Vec<f64> {
    let outcomes = eval::outcomes(det, threshold, test);
    (test.iter().zip(outcomes))
        .filter_map(|(d, (failing, _, first))| {
            let (on, at) = (d.onset_window? as i64, first?);
            (failing && d.group == "build-up" && at < on)
                .then(|| ((on - at) * i64::from(d.window_ms)) as f64)
        })
        .collect()
}

/// The fault families of `records`, sorted, once each (not "none": a
/// planned-healthy install that failed by itself has no family to leave
/// out).
fn families(records: &[Record]) -> Vec<&str> {
    let mut v: Vec<&str> = records
        .iter()
        .filter(|d| d.failing() && d.family != HEALTHY)
        .map(|d| d.family.as_str())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `counts`: records in the folds, and set aside.
fn pooled(
    cfg: &TrainConfig,
    (records, set_aside): (usize, usize),
    families: Vec<FamilyFold>,
    leads: &mut [f64],
    [with_trend, with_room]: [Pooled; 2],
) -> Lofo {
    Lofo {
        seed: cfg.seed,
        records,
        set_aside,
        target_fpr: cfg.target_fpr,
        model: pool(&families, |f| &f.model, leads),
        with_trend,
        with_room,
        families,
    }
}

/// One detector's figures over every family's fold, from each fold's
/// metrics of it (`metrics`) and its early alarms' leads.
fn pool(
    families: &[FamilyFold],
    metrics: impl Fn(&FamilyFold) -> &Metrics,
    leads: &mut [f64],
) -> Pooled {
    let count = |share: f64, of: usize| (share * of as f64).round() as usize;
    let sum = |g: &dyn Fn(&FamilyFold) -> usize| families.iter().map(g).sum::<usize>();
    let failing = sum(&|f| metrics(f).failing);
    let healthy = sum(&|f| metrics(f).healthy);
    let caught = sum(&|f| count(metrics(f).recall, metrics(f).failing));
    let false_alarms = sum(&|f| count(metrics(f).false_positive_rate, metrics(f).healthy));
    let build_up = |f: &FamilyFold| f.group == "build-up";
    let build_up_failing = sum(&|f| if build_up(f) { metrics(f).failing } else { 0 });
    let build_up_early = sum(&|f| {
        if build_up(f) {
            metrics(f).caught_before_onset
        } else {
            0
        }
    });
    leads.sort_by(f64::total_cmp);
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Pooled {
        failing,
        caught,
        recall: ratio(caught, failing),
        healthy_tested: healthy,
        false_alarms,
        false_positive_rate: ratio(false_alarms, healthy),
        build_up_failing,
        build_up_early,
        build_up_early_share: ratio(build_up_early, build_up_failing),
        build_up_lead_median_ms: leads.get(leads.len() / 2).copied(),
        tells: sum(&|f| metrics(f).tells),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_is_tested_by_a_model_that_never_saw_it() {
        let mut all = corpus::synthetic(3, 40, 6);
        // A planned-healthy install that failed by itself (family "none"):
        // no fold of its own, and its healthy siblings still train.
        let h = all.iter().position(|d| !d.failing()).unwrap();
        all[h].outcome = corpus::Outcome::Failed;
        let cfg = TrainConfig {
            epochs: 3,
            ..TrainConfig::default()
        };
        let mut seen = Vec::new();
        let lofo = leave_one_family_out(&all, &cfg, 4, |f| seen.push(f.family.clone())).unwrap();
        let (kept, _) = super::super::honest::partition(&all);
        assert_eq!(seen, families(&kept), "one fold per family, in order");
        for f in &lofo.families {
            let faulty = kept
                .iter()
                .filter(|d| d.failing() && d.family == f.family)
                .count();
            assert_eq!(
                f.lead.failing, faulty,
                "{}: every faulty install tested",
                f.family
            );
            assert_eq!(
                f.model.failing, faulty,
                "{}: and nothing else faulty",
                f.family
            );
            assert!(
                f.model.healthy > 0,
                "{}: healthy installs beside it",
                f.family
            );
        }
        assert_eq!(
            lofo.model.failing,
            lofo.families.iter().map(|f| f.lead.failing).sum::<usize>()
        );
        assert!((0.0..=1.0).contains(&lofo.model.recall));
        // The disk trend only adds alarms to the model's.
        for f in &lofo.families {
            assert!(f.with_trend.recall >= f.model.recall, "{}", f.family);
            assert!(f.with_trend.caught_before_onset >= f.model.caught_before_onset);
        }
        assert!(lofo.with_trend.caught >= lofo.model.caught);
        assert_eq!(lofo.records + lofo.set_aside, all.len());
    }
}
