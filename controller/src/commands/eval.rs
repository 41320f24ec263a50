//! `backstop eval`: a saved model and the baselines on a corpus's test split.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use backstop_controller::learn;
use backstop_controller::predict::model;

use super::learn::{print_eval, read_corpus};

pub fn run(model_dir: &Path, corpus_dirs: &[PathBuf], json: bool) -> Result<i32> {
    let m = model::Model::load(model_dir)
        .with_context(|| format!("--model {}", model_dir.display()))?;
    let all = read_corpus(corpus_dirs)?;
    let split =
        learn::test_split(&m, &all).with_context(|| format!("--model {}", model_dir.display()))?;
    let e = learn::evaluate(&m, &split);
    print_eval(&e, json);
    Ok(0)
}
