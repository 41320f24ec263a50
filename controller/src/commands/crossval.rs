//! `backstop crossval`: one model per fold, every deployment tested once.

use std::path::PathBuf;

use anyhow::{Context, Result};
use backstop_controller::learn::{self, corpus, train};

use super::learn::{EARLY, print_held_out, print_model, print_table, read_corpus};

pub fn run(
    corpus_dirs: &[PathBuf],
    cfg: &train::TrainConfig,
    folds: u8,
    json: bool,
) -> Result<i32> {
    let all = read_corpus(corpus_dirs)?;
    eprintln!(
        "backstop: cross-validating over {folds} folds of {} deployments ({} failing), seed {}: one model per fold",
        all.len(),
        all.iter().filter(|d| d.failing()).count(),
        cfg.seed
    );
    let cv = learn::cross_validate(&all, cfg, folds, |f| {
        eprintln!(
            "  fold {}/{folds}: trained on {}, calibrated on {}, tested on {}: recall {:.3}, FPR {:.3}, threshold {:.4}",
            f.fold + 1,
            f.split.train,
            f.split.validation,
            f.split.test,
            f.model.recall,
            f.model.false_positive_rate,
            f.threshold
        );
    })
    .context("cross-validating")?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&cv).expect("plain data serializes")
        );
        return Ok(0);
    }
    let (failing, healthy) = cv
        .detectors
        .first()
        .map_or((0, 0), |m| (m.failing, m.healthy));
    println!(
        "{} deployments tested once each ({failing} failing, {healthy} healthy; {} never tested: package and fault variant in different folds)",
        failing + healthy,
        cv.never_tested
    );
    println!(
        "each fold's thresholds for at most {:.1}% false alarms, chosen without its test part\n",
        cv.target_fpr * 100.0
    );
    println!("{EARLY}");
    print_table(&cv.detectors);
    let model_fpr = cv.detectors.first().map_or(0.0, |m| m.false_positive_rate);
    println!(
        "\nat equal false positives: each detector at the threshold that suits it best on these deployments, alarming on at most {:.1}% of healthy ones (the model's rate)\n",
        model_fpr * 100.0
    );
    print_table(&cv.at_model_fpr);
    println!(
        "\nthe same at {:.1}% (what a perfect calibration to the target would give)\n",
        cv.target_fpr * 100.0
    );
    print_table(&cv.at_target_fpr);
    let false_alarms: Vec<learn::Alarm> = cv
        .model_alarms
        .iter()
        .filter(|a| a.outcome == corpus::Outcome::Ok)
        .cloned()
        .collect();
    print_model(
        &cv.model_by_family,
        &false_alarms,
        "the model's false alarms on healthy installs",
        false_alarms.len(),
    );
    print_held_out(&cv.held_out);
    Ok(0)
}
