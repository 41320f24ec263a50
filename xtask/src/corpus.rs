//! `cargo xtask corpus | train-default | crossval`: the shipped catalog's
//! corpus, the default model trained from it, and its cross-validation.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

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
        .args(catalog_packages()?)
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

/// The packages corpus/catalog.toml installs (its `package = "..."`
/// lines): only their closures are fetched.
fn catalog_packages() -> Result<Vec<String>> {
    let path = util::root().join("corpus/catalog.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("package = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    if v.is_empty() {
        bail!("{}: no scenario names a package", path.display());
    }
    Ok(v)
}

/// The shipped recorded corpus: what `train-default` trains from.
pub fn recorded() -> PathBuf {
    util::root().join("corpus/recorded/deployments.jsonl.gz")
}

/// The default model, trained from the shipped recorded corpus without
/// re-running installs. The corpus must have the digest models/default
/// records (unless `new`: a newly recorded corpus replaces it). One
/// thread, so the float sums are added in one order; with `check`, the
/// model is trained aside and compared byte for byte with models/default.
pub fn train_default(check: bool, new: bool) -> Result<()> {
    let corpus = recorded();
    if !corpus.exists() {
        bail!(
            "train-default: no recorded corpus at {}: record one (cargo xtask corpus), then pack it (backstop corpus pack --corpus target/xtask/corpus --out {})",
            corpus.display(),
            corpus.display()
        );
    }
    let shipped = util::root().join("models/default");
    let expected = if new {
        None
    } else {
        let meta = shipped.join("model.json");
        let text = std::fs::read_to_string(&meta).with_context(|| {
            format!(
                "reading {} (train with --new for a first model)",
                meta.display()
            )
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", meta.display()))?;
        Some(
            v["corpus_digest"]
                .as_str()
                .with_context(|| format!("{}: no corpus_digest", meta.display()))?
                .to_string(),
        )
    };
    let backstop = util::release_backstop()?;
    let out = if check {
        util::cache_dir().join("train-default-check")
    } else {
        shipped.clone()
    };
    let mut train = Command::new(&backstop);
    train
        .args(["train", "--seed", "1", "--corpus"])
        .arg(&corpus)
        .arg("--out")
        .arg(&out)
        .env("RAYON_NUM_THREADS", "1");
    if let Some(d) = &expected {
        train.args(["--expect-digest", d]);
    }
    util::step("backstop train (the default model, one thread)", train)?;
    if check {
        for f in ["model.safetensors", "model.json"] {
            let (a, b) = (std::fs::read(out.join(f))?, std::fs::read(shipped.join(f))?);
            if a != b {
                bail!(
                    "train-default --check: {f} differs from models/default/{f}: the default model is not reproduced from {}",
                    corpus.display()
                );
            }
        }
        eprintln!(
            "train-default: models/default reproduced byte for byte from {}",
            corpus.display()
        );
    } else {
        // The binary embeds models/default at build time: built again, it
        // is the model just trained that `backstop model` and a daemon
        // without DATA/models/current use, not the one before it.
        util::release_backstop()?;
        eprintln!("train-default: {} (commit it)", out.display());
    }
    Ok(())
}

/// Cross-validation of the shipped catalog's corpus, once per seed.
pub fn crossval(seeds: &[u64]) -> Result<()> {
    // corpus() built the release binaries it recorded with.
    let corpus = corpus()?;
    for seed in seeds {
        let mut cv = Command::new(util::target_dir().join("release/backstop"));
        cv.args(["crossval", "--seed", &seed.to_string(), "--corpus"])
            .arg(&corpus);
        util::step(&format!("backstop crossval --seed {seed}"), cv)?;
    }
    Ok(())
}
