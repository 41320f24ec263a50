//! The report's numbers: per-feature deviation from a baseline, live
//! against shadow, and failing syscalls by errno class.

use std::collections::BTreeMap;

use backstop_common::features::{FEATURES, feature};
use backstop_common::window::Window;
use serde::Serialize;

use super::{Baseline, TOP};

#[derive(Debug, Clone, Serialize)]
pub struct Deviation {
    pub feature: &'static str,
    pub unit: &'static str,
    /// The deployment's mean over the windows compared.
    pub value: f64,
    pub baseline_mean: f64,
    pub baseline_sd: f64,
    /// |value - mean| / max(sd, 10% of |mean|, [`unit_floor`]): standard
    /// deviations, floored so a flat baseline (one short healthy
    /// deployment, a feature that was always 0) does not make every wobble
    /// millions of deviations.
    pub score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub feature: &'static str,
    pub unit: &'static str,
    pub live_mean: f64,
    pub shadow_mean: f64,
    /// |shadow - live| / max(|live|, |shadow|): 0 same, 1 one of them zero.
    pub relative: f64,
}

/// The least spread a baseline is taken to have, per unit: one of a
/// count, a page of bytes, a millisecond of time. Below it a difference is
/// noise whatever the baseline's own spread says.
fn unit_floor(unit: &str) -> f64 {
    match unit {
        "count" | "ms" => 1.0,
        "bytes" => 4096.0,
        "us" => 1_000.0,
        "ns" => 1_000_000.0,
        _ => 1e-6,
    }
}

fn mean_sd(windows: &[&Window], i: usize) -> (f64, f64) {
    let n = windows.len() as f64;
    if windows.is_empty() {
        return (0.0, 0.0);
    }
    let v = |w: &&Window| w.features.get(i).copied().unwrap_or(0.0);
    let mean = windows.iter().map(v).sum::<f64>() / n;
    let var = windows.iter().map(|w| (v(w) - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The features of `live` furthest from the baseline: `history` when it
/// has windows, else `live`'s own first third.
pub fn deviations(live: &[&Window], history: &[Window]) -> (Baseline, Vec<Deviation>) {
    let (base, rest, baseline): (Vec<&Window>, &[&Window], Baseline) = if !history.is_empty() {
        let b = Baseline {
            kind: "history",
            windows: history.len(),
            detail: "live windows of this package's committed deployments".into(),
        };
        (history.iter().collect(), live, b)
    } else if live.len() >= 2 {
        let k = (live.len() / 3).max(1);
        let b = Baseline {
            kind: "own first windows",
            windows: k,
            detail: format!(
                "no committed deployment of this package is stored: the deployment's first {k} live window(s), against its other {}",
                live.len() - k
            ),
        };
        (live[..k].to_vec(), &live[k..], b)
    } else {
        let b = Baseline {
            kind: "none",
            windows: 0,
            detail: format!(
                "no committed deployment of this package is stored and the deployment has {} live window(s): nothing to compare",
                live.len()
            ),
        };
        return (b, Vec::new());
    };
    let mut out: Vec<Deviation> = FEATURES
        .iter()
        .enumerate()
        .map(|(i, def)| {
            let (mean, sd) = mean_sd(&base, i);
            let (value, _) = mean_sd(rest, i);
            let floor = sd.max(0.1 * mean.abs()).max(unit_floor(def.unit));
            Deviation {
                feature: def.name,
                unit: def.unit,
                value,
                baseline_mean: mean,
                baseline_sd: sd,
                score: (value - mean).abs() / floor,
            }
        })
        .filter(|d| d.score > 0.0)
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(TOP);
    (baseline, out)
}

/// Per-feature means of live and shadow, the most different first.
pub fn live_vs_shadow(live: &[&Window], shadow: &[&Window]) -> (Option<Vec<Difference>>, String) {
    if live.is_empty() || shadow.is_empty() {
        let note = format!(
            "not compared: {} live and {} shadow window(s) stored",
            live.len(),
            shadow.len()
        );
        return (None, note);
    }
    let mut out: Vec<Difference> = FEATURES
        .iter()
        .enumerate()
        .map(|(i, def)| {
            let (l, _) = mean_sd(live, i);
            let (s, _) = mean_sd(shadow, i);
            let scale = l.abs().max(s.abs());
            Difference {
                feature: def.name,
                unit: def.unit,
                live_mean: l,
                shadow_mean: s,
                relative: if scale > 0.0 {
                    (s - l).abs() / scale
                } else {
                    0.0
                },
            }
        })
        .filter(|d| d.relative > 0.0)
        .collect();
    out.sort_by(|a, b| b.relative.total_cmp(&a.relative));
    out.truncate(TOP);
    let note = format!(
        "means over {} live and {} shadow window(s)",
        live.len(),
        shadow.len()
    );
    (Some(out), note)
}

/// Failing syscalls summed over `windows`, by errno class (classes with
/// none left out).
pub fn errno_counts(windows: &[&Window]) -> BTreeMap<&'static str, f64> {
    (feature::SYSCALL_ERRORS_TOTAL..=feature::SYSCALL_ERRORS_OTHER)
        .map(|i| {
            let sum = windows
                .iter()
                .map(|w| w.features.get(i).copied().unwrap_or(0.0))
                .sum::<f64>();
            (FEATURES[i].name, sum)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect()
}
