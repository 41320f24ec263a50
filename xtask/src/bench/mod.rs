//! `cargo xtask bench`: slowdowns measured side by side in one run.
//!
//! Each workload runs alternately without and with the agent, several
//! times, and the median of the paired ratios is reported, so a noisy
//! neighbour on this shared machine moves both sides of a pair alike. What
//! is timed is the workload itself (`backstop-workload` reports its own
//! elapsed time), never the agent's start-up.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

mod decide;
mod ingest;
mod onset;
mod overhead;
mod predict;
mod rollback;
mod shadow;

#[derive(Subcommand, Clone)]
pub enum Which {
    /// Shadow cost: create+start+wait+delete of /bin/true in a shadow vs
    /// unshare+chroot on an overlay; then dpkg -i in a shadow vs a chroot.
    Shadow {
        #[arg(long, default_value_t = 20)]
        reps: usize,
    },
    /// The model: inference per window on one core, and its size on disk
    /// (a model trained on a generated corpus of the same shape).
    Predict,
    /// A window's way to a decision: scoring every window so far and
    /// `decide`, per window, against the window length (a); then, for a
    /// fault that builds up, onset to restored as backstop decides (b)
    /// against exit-code-only rollback (c), for small, /etc, /usr scopes.
    Decide {
        /// Repetitions of each (b) and (c) run per scope.
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Snapshots and restore of /usr of the Debian rootfs against cp -a and
    /// rsync -a --delete.
    Rollback {
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Simulated agents (real QUIC + mTLS connections) streaming windows to
    /// a real controller: windows stored per second, p99 delay from a
    /// window's send to its commit, controller RSS.
    Ingest {
        /// Agent counts to run, one after another.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        agents: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        hz: u32,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// The agent's cost to the tree it watches and to the rest of the host.
    Overhead {
        /// Pairs (without, with) per workload.
        #[arg(long, default_value_t = 7)]
        reps: usize,
        /// stat() calls in the syscall-heavy loop.
        #[arg(long, default_value_t = 1_000_000)]
        stat_calls: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Overhead {
            reps,
            stat_calls,
            json,
        } => overhead::overhead(reps.max(1), stat_calls, json),
        Which::Rollback { reps } => rollback::rollback(reps.max(1)),
        Which::Shadow { reps } => shadow::shadow(reps.max(1)),
        Which::Predict => predict::predict(),
        Which::Decide { reps } => decide::decide(reps.max(1)),
        Which::Ingest {
            agents,
            hz,
            seconds,
        } => ingest::ingest(&agents, hz, seconds),
    }
}

struct Bins {
    agent: PathBuf,
    workload: PathBuf,
}

fn build() -> Result<Bins> {
    let dir = crate::ebpf::release(&["backstop-agent", "backstop-tests"])?;
    Ok(Bins {
        agent: dir.join("backstop-agent"),
        workload: dir.join("backstop-workload"),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Removes a bench's directory however the bench ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write out every dirty page, so the next timed run does not pay for
/// the writeback of what came before it.
fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Time a command; fail with its output if it fails.
fn time_cmd(what: &str, cmd: &mut Command) -> Result<f64> {
    let start = std::time::Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

/// The release `backstop` and a cache directory holding a model trained
/// on a generated corpus (80 packages x 16, seed 5; training seed 1): the
/// fixture `bench predict` and `bench decide` measure against.
fn trained_model(name: &str) -> Result<(PathBuf, PathBuf)> {
    let backstop = crate::util::release_backstop()?;
    let base = crate::util::cache_dir().join(name);
    let _ = std::fs::remove_dir_all(&base);
    let synth = ["corpus", "synth", "--packages", "80", "--per-package", "16"];
    crate::util::output(
        Command::new(&backstop)
            .args(synth)
            .args(["--seed", "5", "--out"])
            .arg(base.join("corpus")),
    )?;
    crate::util::output(
        Command::new(&backstop)
            .args(["train", "--json", "--seed", "1", "--corpus"])
            .arg(base.join("corpus"))
            .arg("--out")
            .arg(base.join("model")),
    )?;
    Ok((backstop, base))
}
