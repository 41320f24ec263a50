//! `backstop train`: train, calibrate and evaluate a model, and save it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use backstop_common::progress::{Progress, Reporter};
use backstop_controller::learn::{self, train};

use super::learn::{print_eval, read_corpus};

pub fn run(
    corpus_dirs: &[PathBuf],
    out: &Path,
    cfg: &train::TrainConfig,
    expect_digest: Option<String>,
    json: bool,
) -> Result<i32> {
    let all = read_corpus(corpus_dirs)?;
    if let Some(d) = expect_digest {
        learn::corpus_file::expect_digest(&all, &d).context("--expect-digest")?;
    }
    eprintln!(
        "backstop: training on {} deployments ({} failing), seed {}",
        all.len(),
        all.iter().filter(|d| d.failing()).count(),
        cfg.seed
    );
    let progress = Reporter::new("backstop: train", json);
    progress.note("training epochs");
    let (m, e) = learn::train_and_evaluate_with(&all, cfg, &progress).context("training")?;
    drop(progress);
    m.save(out)
        .with_context(|| format!("saving the model to {}", out.display()))?;
    print_eval(&e, json);
    if !json {
        println!(
            "model saved to {} (threshold {:.4}, corpus {})",
            out.display(),
            m.meta.threshold,
            &m.meta.corpus_digest[..12]
        );
    }
    Ok(0)
}
