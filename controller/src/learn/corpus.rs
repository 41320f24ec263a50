//! The corpus: records of past installs with their windows, outcome and
//! onset, as the model learns from them and the evaluation replays them.
//!
//! A corpus directory holds `deployments.jsonl`, one [`Record`] per
//! line. Splits ([`super::split`]) are by package and by fault variant,
//! never by window: windows of one install are near-copies of each
//! other, and a model tested on a package or a fault variant it trained
//! on is tested on what it memorised.

use std::io::{BufRead, Write};
use std::path::Path;

use backstop_common::features::{FEATURES, SCHEMA_VERSION, feature};
use backstop_common::hostlevels::HostLevels;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

// Splitting lives in its own file; its names stay reachable from here.
pub use super::split::{Folds, Split, folds, names, split};

/// A record's label is the shadow verdict's outcome: one type for both.
pub use backstop_common::shadow::Outcome;

/// The variant name of a deployment with no fault injected.
pub const HEALTHY: &str = "none";

/// Names the rule [`split`] follows. A model records it: evaluating a model
/// on a split rebuilt by another rule would test it on deployments it
/// trained on.
pub const SPLIT_RULE: &str = "folds5-swap.v1";

/// One training record: a past install's windows with its outcome and
/// onset, one line of `deployments.jsonl`. Not a live deployment: those
/// are the daemon's (the file keeps its name, its format is unchanged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub package: String,
    /// Fault family ("none" when healthy).
    pub family: String,
    /// Fault variant: family plus magnitude and timing ("none" when healthy).
    pub variant: String,
    pub outcome: Outcome,
    /// The window in which the failure became visible without prediction
    /// (the failing step's exit, a timeout, a health probe failing, an OOM
    /// kill); None when healthy.
    pub onset_window: Option<usize>,
    /// Whether an exit code or a health probe shows the failure at all
    /// (a slowdown may not).
    pub visible_to_checks: bool,
    pub window_ms: u32,
    pub schema: String,
    /// Feature values per window, in [`FEATURES`] order.
    pub windows: Vec<Vec<f64>>,
    /// The family's group ("build-up", "silent", "real"; empty when
    /// healthy or when the catalog named none): evaluation reports an
    /// early alarm on a silent fault as a tell.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The family is kept out of the default model's training.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_out: bool,
    /// The host condition the install ran under (empty: a quiet host).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_condition: String,
    /// A real failure's cause, as the package said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The host's levels per window (schema v3; empty when not recorded):
    /// never a model input, only the range of host conditions a model
    /// records (`predict::range`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<HostLevels>,
    /// The room check a deployment runs on its .debs before anything
    /// changes (`backstop-agent room`), as the install's shadow was sized;
    /// None where it was not run (corpora from before stop 35).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<Room>,
}

/// The room check's verdict on a record's .debs. A refusal is an alarm
/// before window 0: a live deployment would not have started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Room {
    Fits,
    Refused { reason: String },
}

impl Record {
    pub fn failing(&self) -> bool {
        self.outcome != Outcome::Ok
    }

    /// A fault with nothing observable before its onset: an alarm before
    /// it is a tell, and it counts in no early metric.
    pub fn silent(&self) -> bool {
        self.failing() && self.group == "silent"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Bad {
        path: String,
        line: usize,
        reason: String,
    },
    #[error(
        "the corpus's digest is {found}, expected {expected}: this is not the corpus the model was trained on (a record added, dropped or changed)"
    )]
    Digest { expected: String, found: String },
    #[error(
        "deployment {id:?} is in {first} and again in {again}: a deployment counted twice would weigh twice in training and in every figure"
    )]
    Duplicate {
        id: String,
        first: String,
        again: String,
    },
}

/// Read every corpus's deployments: a directory with `deployments.jsonl`
/// (what `corpus run` writes) or `deployments.jsonl.gz` (what the repo
/// ships), or such a file named directly. A deployment id read twice, in
/// one file or across them, is an error.
pub fn read(dirs: &[&Path]) -> Result<Vec<Record>, CorpusError> {
    let mut out = Vec::new();
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for dir in dirs {
        let p = super::corpus_file::locate(dir);
        let path = p.display().to_string();
        let f = super::corpus_file::open(&p).map_err(|source| CorpusError::Io {
            path: path.clone(),
            source,
        })?;
        for (i, line) in f.lines().enumerate() {
            let line = line.map_err(|source| CorpusError::Io {
                path: path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| CorpusError::Bad {
                path: path.clone(),
                line: i + 1,
                reason,
            };
            let d: Record = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            if d.schema != SCHEMA_VERSION {
                return Err(bad(format!(
                    "feature schema {:?}, this build has {SCHEMA_VERSION:?}",
                    d.schema
                )));
            }
            if let Some(w) = d.windows.iter().find(|w| w.len() != FEATURES.len()) {
                return Err(bad(format!(
                    "a window has {} values, the schema {}",
                    w.len(),
                    FEATURES.len()
                )));
            }
            if d.windows.is_empty() {
                return Err(bad("no windows".into()));
            }
            let here = format!("{path} line {}", i + 1);
            if let Some(first) = seen.insert(d.id.clone(), here.clone()) {
                return Err(CorpusError::Duplicate {
                    id: d.id,
                    first,
                    again: here,
                });
            }
            out.push(d);
        }
    }
    Ok(out)
}

pub fn write(dir: &Path, records: &[Record]) -> Result<(), CorpusError> {
    let io = |source| CorpusError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join("deployments.jsonl.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    for d in records {
        let line = serde_json::to_string(d).expect("plain data serializes");
        writeln!(f, "{line}").map_err(io)?;
    }
    f.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, dir.join("deployments.jsonl")).map_err(io)
}

/// SHA-256 over the records, each as its JSON line (ids, windows, host
/// levels and every label: outcome, onset, family, group, held out), to
/// name what a model was trained on. A relabelled record is another
/// corpus: a label decides what a model learns and how it is scored.
pub fn digest(records: &[Record]) -> String {
    let mut h = Sha256::new();
    for d in records {
        h.update(serde_json::to_vec(d).expect("plain data serializes"));
        h.update([b'\n']);
    }
    hex::encode(h.finalize())
}

/// The generated corpus's fault families and the features each drives.
pub const SYNTHETIC_FAMILIES: [(&str, &[usize]); 5] = [
    (
        "memory-growth",
        &[feature::MEM_ANON_PEAK_BYTES, feature::SYSCALLS_MEM],
    ),
    (
        "disk-fill",
        &[feature::PAGE_DIRTIED_BYTES, feature::SYSCALL_ERRORS_ENOSPC],
    ),
    (
        "io-stall",
        &[
            feature::BLOCK_LATENCY_P99_US,
            feature::SYSCALL_LATENCY_P99_US,
        ],
    ),
    (
        "cpu-runaway",
        &[
            feature::SCHED_ON_CPU_NS,
            feature::SCHED_INVOLUNTARY_SWITCHES,
        ],
    ),
    (
        "error-storm",
        &[feature::SYSCALL_ERRORS_TOTAL, feature::SYSCALL_ERRORS_OTHER],
    ),
];

/// A generated corpus for tests and the benchmark: packages with their own
/// baseline levels; healthy installs with noise and the odd burst; faults
/// that build up over time (memory growth, disk fill, I/O stall, CPU
/// runaway, error storm) in variants of magnitude and timing. Not a stand-in
/// for the real corpus: it exists so the learning machinery can be tested
/// quickly and deterministically.
pub fn synthetic(seed: u64, packages: usize, per_package: usize) -> Vec<Record> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let families = SYNTHETIC_FAMILIES;
    let nf = FEATURES.len();
    let mut out = Vec::new();
    for p in 0..packages {
        let package = format!("pkg{p:02}");
        let base: Vec<f64> = (0..nf)
            .map(|_| 10f64.powf(rng.random_range(0.0..5.0)))
            .collect();
        for k in 0..per_package {
            let len = rng.random_range(16..32);
            let fault = k % 2 == 1;
            let (family, feats) = families[rng.random_range(0..families.len())];
            let magnitude = rng.random_range(0..3);
            let timing = rng.random_range(0..2);
            let variant = if fault {
                format!("{family}-m{magnitude}-t{timing}")
            } else {
                HEALTHY.to_string()
            };
            // The fault starts building up here, and shows at the end.
            let start = if timing == 0 { len / 4 } else { len / 2 };
            let growth: f64 = [1.15, 1.3, 1.5][magnitude];
            let mut windows = Vec::with_capacity(len);
            for t in 0..len {
                let mut w: Vec<f64> = base
                    .iter()
                    .map(|b| b * rng.random_range(0.6..1.6))
                    .collect();
                // Healthy installs have bursts too: a static threshold must
                // sit above them.
                if rng.random_range(0.0..1.0) < 0.08 {
                    let i = rng.random_range(0..nf);
                    w[i] *= rng.random_range(2.0..4.0);
                }
                if fault && t >= start {
                    for &i in feats {
                        w[i] = base[i].max(1.0)
                            * growth.powi((t - start + 1) as i32)
                            * rng.random_range(0.9..1.1);
                    }
                }
                windows.push(w);
            }
            out.push(Record {
                id: format!("{package}-{k}"),
                package: package.clone(),
                family: if fault { family } else { HEALTHY }.to_string(),
                variant,
                outcome: if fault { Outcome::Failed } else { Outcome::Ok },
                onset_window: fault.then_some(len - 1),
                visible_to_checks: fault,
                window_ms: 1000,
                schema: SCHEMA_VERSION.to_string(),
                host: super::synth_host::levels(&mut rng, &mut windows),
                room: None,
                windows,
                group: if fault { "build-up" } else { "" }.into(),
                held_out: false,
                host_condition: String::new(),
                cause: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_round_trips_and_refuses_another_schema() {
        let dir = std::env::temp_dir().join(format!("backstop-corpus-{}", std::process::id()));
        let all = synthetic(3, 2, 3);
        write(&dir, &all).unwrap();
        let back = read(&[&dir]).unwrap();
        assert_eq!(digest(&back), digest(&all));
        // A label is part of the corpus: regrouping one record changes it.
        let mut regrouped = back.clone();
        regrouped[0].group = "build-up".into();
        assert_ne!(digest(&regrouped), digest(&all));
        let mut bad = all.clone();
        bad[0].schema = "backstop.features.v0".into();
        write(&dir, &bad).unwrap();
        let e = read(&[&dir]).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("v0"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_deployment_read_twice_is_refused_by_its_id() {
        let dir = std::env::temp_dir().join(format!("backstop-corpus-dup-{}", std::process::id()));
        let all = synthetic(4, 2, 2);
        write(&dir, &all).unwrap();
        // The same corpus given twice, as `corpus pack --corpus A --corpus A` would.
        let e = read(&[&dir, &dir]).unwrap_err().to_string();
        assert!(e.contains(&format!("{:?}", all[0].id)), "{e}");
        assert!(e.contains("line 1") && e.contains("again"), "{e}");
        // One file holding one install twice.
        let mut twice = all.clone();
        twice.push(all[1].clone());
        write(&dir, &twice).unwrap();
        let e = read(&[&dir]).unwrap_err().to_string();
        let last = format!("line {}", twice.len());
        assert!(
            e.contains(&format!("{:?}", all[1].id)) && e.contains(&last),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
