//! `backstop crossval`: one model per fold, every deployment tested once.

use std::path::PathBuf;

use anyhow::{Context, Result};
use backstop_controller::learn::{self, corpus, train};

use super::learn::{EARLY, print_held_out, print_model, print_table, read_corpus};

pub fn run(
    corpus_dirs: &[PathBuf],
    cfg: &train::TrainConfig,
    folds: u8,
    by_family: bool,
    json: bool,
) -> Result<i32> {
    if by_family {
        return self::by_family(corpus_dirs, cfg, folds, json);
    }
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
    let mut rows = cv.detectors.clone();
    rows.push(cv.with_history.clone());
    print_table(&rows);
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

/// `backstop crossval --by-family`: each fault family left out in turn.
fn by_family(
    corpus_dirs: &[PathBuf],
    cfg: &train::TrainConfig,
    folds: u8,
    json: bool,
) -> Result<i32> {
    let all = read_corpus(corpus_dirs)?;
    eprintln!(
        "backstop: leaving one fault family out at a time, {} deployments, package folds {folds}, seed {}: one model per family",
        all.len(),
        cfg.seed
    );
    let lofo = learn::leave_one_family_out(&all, cfg, folds, |f| {
        eprintln!(
            "  {} ({}): trained on {}, recall {:.3}, FPR {:.3} on fold {}'s healthy, threshold {:.4}",
            f.family,
            if f.group.is_empty() { "-" } else { &f.group },
            f.trained_on,
            f.model.recall,
            f.model.false_positive_rate,
            f.package_fold,
            f.threshold
        );
    })
    .context("leaving one family out")?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&lofo).expect("plain data serializes")
        );
        return Ok(0);
    }
    println!(
        "{:<24} {:<9} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>5} {:>10}",
        "family left out",
        "group",
        "failing",
        "caught",
        "early",
        "+trend",
        "+room",
        "healthy",
        "FPR",
        "lead (ms)"
    );
    for f in &lofo.families {
        let early = |m: &learn::eval::Metrics, lead: usize| {
            if f.group == "silent" {
                format!("{}t", m.tells)
            } else {
                lead.to_string()
            }
        };
        println!(
            "{:<24} {:<9} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>5.3} {:>10}",
            f.family,
            f.group,
            f.lead.failing,
            f.lead.caught,
            early(&f.model, f.lead.caught_before_onset),
            early(&f.with_trend, f.with_trend.caught_before_onset),
            early(&f.with_room, f.with_room.caught_before_onset),
            f.model.healthy,
            f.model.false_positive_rate,
            f.lead
                .lead_time_median_ms
                .map_or("-".into(), |l| format!("{l:.0}"))
        );
    }
    println!(
        "\nrecall {:.3} ({}/{}); false alarms {:.3} ({}/{} healthy installs of unseen packages, per model)",
        lofo.model.recall,
        lofo.model.caught,
        lofo.model.failing,
        lofo.model.false_positive_rate,
        lofo.model.false_alarms,
        lofo.model.healthy_tested
    );
    println!(
        "build-up faults alarmed before onset {:.3} ({}/{}), median lead {}; tells on silent faults {} (\"t\" above)",
        lofo.model.build_up_early_share,
        lofo.model.build_up_early,
        lofo.model.build_up_failing,
        lofo.model
            .build_up_lead_median_ms
            .map_or("-".into(), |l| format!("{:.1} s", l / 1000.0)),
        lofo.model.tells
    );
    print_detectors(&lofo);
    Ok(0)
}

/// The pooled lines of the detectors beside the model.
fn print_detectors(lofo: &learn::lofo::Lofo) {
    for (t, what) in [
        (
            &lofo.with_trend,
            "with the disk trend (decide::trend, what a live deployment is also rolled back by)",
        ),
        (
            &lofo.with_room,
            "and with the room check (refusing before the install, where .debs do not fit)",
        ),
    ] {
        println!(
            "{what}: recall {:.3} ({}/{}), false alarms {:.3} ({}), before onset {:.3} ({}/{}), median lead {}, tells {}",
            t.recall,
            t.caught,
            lofo.model.failing,
            t.false_positive_rate,
            t.false_alarms,
            t.build_up_early_share,
            t.build_up_early,
            lofo.model.build_up_failing,
            t.build_up_lead_median_ms
                .map_or("-".into(), |l| format!("{:.1} s", l / 1000.0)),
            t.tells
        );
    }
}
