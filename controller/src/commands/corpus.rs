//! `backstop corpus run | pack | room | synth`: corpora for training.

use std::path::PathBuf;

use anyhow::Result;
use backstop_controller::learn::{catalog, corpus};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Action {
    /// Run every scenario of a catalog (TOML) as a real `dpkg -i` in a
    /// shadow on ROOT, under the probes, with its fault injected, and
    /// append the deployment (windows, outcome, onset) to
    /// OUT/deployments.jsonl. Scenarios already there are skipped, so an
    /// interrupted run continues. Needs root and `backstop-agent`.
    ///
    /// Example: backstop corpus run --catalog corpus/catalog.toml --root /srv/rootfs --debs /srv/debs --out /var/lib/backstop/corpus
    Run {
        #[arg(long, value_name = "FILE")]
        catalog: PathBuf,
        /// The Debian root the shadows overlay.
        #[arg(long)]
        root: PathBuf,
        /// DEBS/<package>/*.deb: each package and the dependencies the root lacks.
        #[arg(long)]
        debs: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The agent binary (default: backstop-agent beside this binary, else PATH).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Run every scenario under this host condition (fuller-disk,
        /// less-memory, busy-neighbour), named NAME-on-CONDITION so the
        /// records pool with a quiet-host run of the same catalog.
        #[arg(long = "host-condition", value_name = "CONDITION")]
        host: Option<String>,
    },
    /// Pack corpora (directories or files) into one gzip JSON-lines file,
    /// sorted by id, byte-reproducible: the form the repo ships and
    /// `train`, `eval` and `crossval` read directly. Prints its digest.
    ///
    /// Example: backstop corpus pack --corpus target/xtask/corpus --out corpus/recorded/deployments.jsonl.gz
    Pack {
        #[arg(long = "corpus", required = true, value_name = "DIR")]
        corpus: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Relabel every faulty record with this catalog's `[families]`
        /// table (group, held out) before packing: a family regrouped
        /// after recording needs no re-recording.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
    },
    /// Run the room check (`backstop-agent room`) for each record of a
    /// corpus recorded before the runner ran it, as the runner would have
    /// before each install, and write the corpus again with each verdict
    /// (packed, as `pack`). A refusal is an alarm before window 0 in
    /// `eval` and `crossval` ("or the room check"). Needs the catalog's
    /// .debs (corpus/fetch.sh) and the root they were installed on; the
    /// installs are not run again.
    ///
    /// Example: backstop corpus room --catalog corpus/catalog.toml --corpus corpus/recorded/deployments.jsonl.gz --root /srv/rootfs --debs /srv/debs --out deployments.jsonl.gz
    Room {
        #[arg(long, value_name = "FILE")]
        catalog: PathBuf,
        #[arg(long = "corpus", required = true, value_name = "DIR")]
        corpus: Vec<PathBuf>,
        /// The Debian root the installs were recorded on.
        #[arg(long)]
        root: PathBuf,
        /// DEBS/<package>/*.deb, as for `run`.
        #[arg(long)]
        debs: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The agent binary (default: backstop-agent beside this binary, else PATH).
        #[arg(long)]
        agent: Option<PathBuf>,
    },
    /// Write a generated corpus (packages with their own levels, healthy
    /// installs with bursts, faults that build up over time) to DIR. It
    /// exercises train and eval; it is not a substitute for real installs.
    Synth {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 40)]
        packages: usize,
        #[arg(long, default_value_t = 14)]
        per_package: usize,
    },
}

pub fn run(action: Action) -> Result<i32> {
    match action {
        Action::Run {
            catalog,
            root,
            debs,
            out,
            agent,
            host,
        } => run_catalog(&catalog, root, debs, out, agent, host.as_deref()),
        Action::Synth {
            out,
            seed,
            packages,
            per_package,
        } => synth(&out, seed, packages, per_package),
        Action::Pack {
            corpus,
            out,
            catalog,
        } => pack(&corpus, &out, catalog.as_deref()),
        Action::Room {
            catalog,
            corpus,
            root,
            debs,
            out,
            agent,
        } => room(&catalog, &corpus, &root, &debs, &out, agent),
    }
}

fn room(
    catalog: &std::path::Path,
    dirs: &[PathBuf],
    root: &std::path::Path,
    debs: &std::path::Path,
    out: &std::path::Path,
    agent: Option<PathBuf>,
) -> Result<i32> {
    let c = catalog::load(catalog)?;
    let mut all = super::learn::read_corpus(dirs)?;
    let agent = agent_binary(agent);
    // The repacked .debs, beside OUT; removed however the check ends.
    let work = PathBuf::from(format!("{}.work", out.display()));
    let o = catalog::Recheck {
        agent: &agent,
        root,
        debs,
        work: &work,
    };
    let checked = catalog::recheck(&c, &o, &mut all, &|line| eprintln!("{line}"));
    let _ = std::fs::remove_dir_all(&work);
    let checked = checked?;
    backstop_controller::learn::corpus_file::write_packed(out, &all)?;
    let refused = (all.iter())
        .filter(|r| matches!(r.room, Some(corpus::Room::Refused { .. })))
        .count();
    println!(
        "{}: {} records, {checked} checked, {refused} refused, digest {}",
        out.display(),
        all.len(),
        corpus::digest(&backstop_controller::learn::corpus::read(&[out])?)
    );
    Ok(0)
}

/// The agent binary: the one given, else backstop-agent beside this
/// binary, else PATH's.
fn agent_binary(agent: Option<PathBuf>) -> PathBuf {
    agent.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("backstop-agent")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("backstop-agent"))
    })
}

fn pack(dirs: &[PathBuf], out: &std::path::Path, catalog: Option<&std::path::Path>) -> Result<i32> {
    let mut all = super::learn::read_corpus(dirs)?;
    if let Some(c) = catalog {
        let c = backstop_controller::learn::catalog::load(c)?;
        for r in &mut all {
            c.label(r);
        }
    }
    backstop_controller::learn::corpus_file::write_packed(out, &all)?;
    println!(
        "{}: {} records, digest {}",
        out.display(),
        all.len(),
        corpus::digest(&backstop_controller::learn::corpus::read(&[out])?)
    );
    Ok(0)
}

fn run_catalog(
    catalog: &std::path::Path,
    root: PathBuf,
    debs: PathBuf,
    out: PathBuf,
    agent: Option<PathBuf>,
    host: Option<&str>,
) -> Result<i32> {
    let agent = agent_binary(agent);
    let mut c = catalog::load(catalog)?;
    if let Some(h) = host {
        let cond: catalog::HostCondition = serde_json::from_value(serde_json::Value::from(h))
            .map_err(|_| {
                anyhow::anyhow!("--host {h:?}: one of fuller-disk, less-memory, busy-neighbour")
            })?;
        for s in &mut c.scenarios {
            s.host = Some(cond);
            s.name = format!("{}-on-{h}", s.name);
        }
    }
    let opts = catalog::RunOptions {
        agent,
        root,
        debs,
        out,
    };
    let progress = backstop_common::progress::Reporter::new("backstop: corpus", false);
    catalog::stop::on_signals();
    let all = match catalog::run(&c, &opts, &progress) {
        Err(catalog::CatalogError::Stopped) => {
            drop(progress);
            eprintln!(
                "backstop: corpus run stopped by a signal: what it recorded is in {}, and the same command resumes",
                opts.out.display()
            );
            return Ok(130);
        }
        r => r?,
    };
    drop(progress);
    let failing = all.iter().filter(|d| d.failing()).count();
    println!(
        "{} deployments in {} ({} failing or degraded)",
        all.len(),
        opts.out.display(),
        failing
    );
    Ok(0)
}

fn synth(out: &std::path::Path, seed: u64, packages: usize, per_package: usize) -> Result<i32> {
    let all = corpus::synthetic(seed, packages, per_package);
    corpus::write(out, &all)?;
    println!("{} deployments written to {}", all.len(), out.display());
    Ok(0)
}
