//! `cargo xtask corpus | train-default | crossval`: the shipped catalog's
//! corpus, the default model trained from it, and its cross-validation.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::fixtures::rootfs;
use crate::util;

/// The shipped catalog run into target/xtask/corpus (resumable).
pub fn corpus() -> Result<PathBuf> {
    if !util::is_root() {
        bail!("corpus: needs root (shadows, chroot for apt)");
    }
    let root = rootfs()?;
    let debs = util::cache_dir().join("corpus-debs");
    let mut fetch = Command::new("bash");
    fetch
        .arg(util::root().join("corpus/fetch.sh"))
        .arg(&debs)
        .env("ROOTFS", &root);
    util::step("corpus/fetch.sh (the packages' closures, cached)", fetch)?;
    let bin = crate::ebpf::release(&["backstop-agent", "backstop-controller"])?;
    let out = util::cache_dir().join("corpus");
    let mut run = Command::new(bin.join("backstop"));
    run.args(["corpus", "run", "--catalog"])
        .arg(util::root().join("corpus/catalog.toml"))
        .arg("--root")
        .arg(&root)
        .arg("--debs")
        .arg(debs.join("closures"))
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(bin.join("backstop-agent"));
    util::step(
        "backstop corpus run (every scenario of corpus/catalog.toml)",
        run,
    )?;
    Ok(out)
}

/// The default model, trained from the shipped catalog's corpus.
pub fn train_default() -> Result<()> {
    let corpus = corpus()?;
    let out = util::root().join("models/default");
    let mut train = Command::new(util::target_dir().join("release/backstop"));
    train
        .args(["train", "--seed", "1", "--corpus"])
        .arg(&corpus)
        .arg("--out")
        .arg(&out);
    util::step("backstop train (the default model)", train)?;
    eprintln!("train-default: {} (commit it)", out.display());
    Ok(())
}

/// Cross-validation of the shipped catalog's corpus, once per seed.
pub fn crossval(seeds: &[u64]) -> Result<()> {
    let corpus = corpus()?;
    for seed in seeds {
        let mut cv = Command::new(util::target_dir().join("release/backstop"));
        cv.args(["crossval", "--seed", &seed.to_string(), "--corpus"])
            .arg(&corpus);
        util::step(&format!("backstop crossval --seed {seed}"), cv)?;
    }
    Ok(())
}
