//! `backstop eval`: a saved model and the baselines on a corpus's test
//! split, on its lockbox, or on all of a corpus recorded elsewhere.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use backstop_controller::learn::{self, honest};
use backstop_controller::predict::model;

use super::learn::{print_eval, read_corpus};

/// `which`: (`--lockbox`, `--all`).
pub fn run(
    model_dir: &Path,
    corpus_dirs: &[PathBuf],
    which: (bool, bool),
    json: bool,
) -> Result<i32> {
    let (lockbox, every) = which;
    let m = model::Model::load(model_dir)
        .with_context(|| format!("--model {}", model_dir.display()))?;
    let all = read_corpus(corpus_dirs)?;
    if every {
        eprintln!(
            "backstop: every one of {} deployments, no split; the baselines are tuned on them (their best case)",
            all.len()
        );
        let split = learn::split::Split {
            train: all.clone(),
            validation: all.clone(),
            test: all,
            left_out: 0,
        };
        print_eval(&learn::evaluate(&m, &split), json);
        return Ok(0);
    }
    let mut split =
        learn::test_split(&m, &all).with_context(|| format!("--model {}", model_dir.display()))?;
    if lockbox {
        // The baselines keep the thresholds they get from the model's own
        // train and validation parts; only what is scored changes.
        split.test = honest::lockbox(&all);
        anyhow::ensure!(
            !split.test.is_empty(),
            "--lockbox: no record of this corpus is in the lockbox"
        );
        eprintln!(
            "backstop: the lockbox: {} records no training, calibration or cross-validation saw",
            split.test.len()
        );
    }
    let mut e = learn::evaluate(&m, &split);
    if !lockbox {
        let (_, held) = honest::partition(&all);
        let (alarms, ds) = honest::score_held_out(&m, &held, &split.test);
        e.held_out = honest::held_out_families(&alarms, &ds);
    }
    print_eval(&e, json);
    Ok(0)
}
