//! A fault that builds up: a resource falling steadily towards zero (the
//! free space of the scope's filesystem) is rolled back before it runs
//! out, not after the step that fills it fails with ENOSPC.
//!
//! The reading, and why:
//! - The fall is measured from the level's latest peak: a level that rose
//!   again (a temporary file removed) starts a new fall.
//! - The rate is the Theil-Sen slope of the samples since that peak (the
//!   median of the pairwise slopes): one odd sample (another process's
//!   burst, a delayed writeback) moves it little, where a least-squares
//!   fit, as Prometheus' `predict_linear` uses, follows it.
//! - A sustained fall only: at least [`MIN_SAMPLES`] samples, and at least
//!   three quarters of the steps between them falls, so a level that
//!   wobbles around a mean never projects anything.
//! - Extrapolate no further than observed: exhaustion must be projected
//!   within the time the level has already been falling. A healthy install
//!   that writes a quarter of the free space and stops therefore never
//!   rolls back (at any moment of its fall the projection is farther than
//!   its history), while a steady fill is caught once half the space it
//!   started with is gone, with as much lead time left as it took to get
//!   there. The price: a fill that is fast against the room left is caught
//!   late or only by the step's own failure.
//! - And before the deadline in force (the running step's timeout, or the
//!   end of monitoring): a step that will time out first is rolled back by
//!   its timeout anyway.
//! - A fall smaller than [`MIN_FALL_BYTES`] is measurement noise, and one
//!   that took less than [`MIN_CONSUMED`] of the room is not projected.
//! - Read at one sample a second at most ([`SAMPLE_MS`]), whatever the
//!   window length: a writer's pauses are shorter than a second, so a level
//!   sampled every 250 ms shows flat steps between its falls, which the
//!   sustained-fall guard would read as a wobble. Deployments are scored in
//!   the model's windows; the rule reads them at its own pace.

use serde::{Deserialize, Serialize};

use std::fmt;

use super::evidence::Evidence;
use super::float;
use super::reason::Reason;
use super::rules::{Finding, Weight};

/// Fewest samples (windows) of one fall before it is projected.
pub const MIN_SAMPLES: usize = 5;
/// Share of the room at the peak a fall must have taken before it is
/// projected. A steady fill is projected at a half (see the module doc),
/// so this does not delay it: it is a cheap filter that spares the
/// quadratic fit for every small fall of a large disk, at every window.
pub const MIN_CONSUMED: f64 = 1.0 / 3.0;
/// Most recent samples fitted (the cost is quadratic in it).
pub const MAX_SAMPLES: usize = 120;
/// Shortest time between two samples a fall is read from, in ms.
pub const SAMPLE_MS: f64 = 1000.0;
/// Smallest fall that counts, in bytes (1 MiB, also the unit reasons are
/// written in).
pub const MIN_FALL_BYTES: f64 = 1024.0 * 1024.0;

/// The levels of the resources an install can exhaust, one sample per live
/// window, and the deadline they are projected against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Free bytes on the scope's filesystem (the window's
    /// `host_disk_free_bytes`), in window order.
    #[serde(default)]
    pub disk_free: Vec<Level>,
    /// Room left under the live install's memory limit (limit minus its
    /// cgroup's working set), one sample a window ([`super::memory`]);
    /// empty without `monitor.memory_limit_mb`.
    #[serde(default)]
    pub memory_room: Vec<Level>,
    /// When the deadline in force ends, in ms on the samples' clock: the
    /// running live step's timeout while installing, the end of monitoring
    /// after; `None`: none known (the projection is then bounded by the
    /// observed fall alone).
    #[serde(default, with = "float::option")]
    pub deadline_ms: Option<f64>,
    /// Why the agent's room check would have refused the deployment
    /// before it began: a dry run's, which went on (a real run ends
    /// `refused` instead, and is never decided on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_room: Option<String>,
}

/// One sample of a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// The live window's `seq`.
    pub index: u64,
    /// The window's end, in ms since the first live window began.
    #[serde(with = "float::any")]
    pub at_ms: f64,
    #[serde(with = "float::any")]
    pub value: f64,
}

/// A projected exhaustion: the window it was seen at and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhaustion {
    pub first: u64,
    pub last: u64,
    pub reason: Reason,
}

/// The engine's finding: a projected exhaustion rolls back by itself, at
/// the first window it held (see the module doc for the guards).
pub(super) fn finding(e: &Evidence) -> Option<Finding> {
    if let Some(reason) = &e.resources.no_room {
        let reason = Reason::NoRoom {
            reason: reason.clone(),
        };
        return Some(Finding::new(Weight::Hard, None, reason));
    }
    let x = disk(&e.resources).or_else(|| super::memory::memory(&e.resources))?;
    Some(Finding::new(
        Weight::Hard,
        Some((x.first, x.last)),
        x.reason,
    ))
}

/// The sentence of a [`Reason::Exhaustion`] ("disk filling: the scope's
/// filesystem loses 2.0 MiB/s, 31.5 MiB free, full in 16 s (falling for
/// 16 s)") or of a [`Reason::NoRoom`].
pub(super) fn fmt_reason(r: &Reason, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if let Reason::NoRoom { reason } = r {
        return write!(
            f,
            "the agent's room check would have refused this deployment before it began \
             (a dry run, so it went on): {reason}"
        );
    }
    let Reason::Exhaustion {
        resource,
        window,
        free,
        rate_per_s,
        full_in_ms,
        falling_ms,
    } = r
    else {
        return write!(f, "{r:?}");
    };
    let (what, verb, left) = match resource.as_str() {
        "disk" => ("disk filling: the scope's filesystem", "loses", "free"),
        "memory" => (
            "memory growing: the live install's cgroup",
            "takes",
            "left under its limit",
        ),
        other => (other, "loses", "free"),
    };
    write!(
        f,
        "{what} {verb} {:.1} MiB/s, {:.1} MiB {left} at window {window}, full in {:.0} s (falling for {:.0} s)",
        rate_per_s / MIN_FALL_BYTES,
        free / MIN_FALL_BYTES,
        full_in_ms / 1000.0,
        falling_ms / 1000.0
    )
}

/// The projection of the disk's free space, when it runs out in time.
pub fn disk(r: &Resources) -> Option<Exhaustion> {
    // Each prefix is a moment the daemon decided at: the first moment the
    // projection held is the one reported, so the reason does not drift
    // as evidence grows after it.
    first_held(&r.disk_free, r.deadline_ms, "disk")
}

/// The first prefix of `levels` whose projection holds.
pub(super) fn first_held(
    levels: &[Level],
    deadline_ms: Option<f64>,
    resource: &str,
) -> Option<Exhaustion> {
    let paced = paced(levels);
    (MIN_SAMPLES..=paced.len()).find_map(|n| project(&paced[..n], deadline_ms, resource))
}

/// The first level, then each next one at least [`SAMPLE_MS`] after the
/// last kept (less a tenth: a window may end a little early); levels
/// already that far apart are all kept.
fn paced(levels: &[Level]) -> Vec<Level> {
    let mut out: Vec<Level> = Vec::with_capacity(levels.len());
    for l in levels {
        if out
            .last()
            .is_none_or(|k| l.at_ms - k.at_ms >= SAMPLE_MS * 0.9)
        {
            out.push(l.clone());
        }
    }
    out
}

fn project(levels: &[Level], deadline_ms: Option<f64>, resource: &str) -> Option<Exhaustion> {
    let tail = &levels[levels.len().saturating_sub(MAX_SAMPLES)..];
    if tail
        .iter()
        .any(|l| !l.value.is_finite() || !l.at_ms.is_finite())
    {
        return None;
    }
    // The latest peak (`max_by` keeps the last of equals), and the fall
    // since.
    let peak = tail
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.value.total_cmp(&b.1.value))
        .map(|(i, _)| i)?;
    let fall = &tail[peak..];
    let (first, last) = (fall.first()?, fall.last()?);
    let falls = fall.windows(2).filter(|w| w[1].value < w[0].value).count();
    if fall.len() < MIN_SAMPLES || falls * 4 < (fall.len() - 1) * 3 {
        return None;
    }
    let fallen = first.value - last.value;
    if fallen < MIN_FALL_BYTES || fallen < first.value * MIN_CONSUMED {
        return None;
    }
    // The slower of the whole fall's rate and the latest samples' rate: a
    // fill that stopped is not projected on its past speed.
    let recent = &fall[fall.len() - MIN_SAMPLES..];
    let slope = theil_sen(fall)?.max(theil_sen(recent)?);
    if slope >= 0.0 {
        return None;
    }
    // The level as measured at the last window: a fitted level lags a
    // fill that slowed down.
    let level = last.value.max(0.0);
    let full_in_ms = level / -slope;
    let observed_ms = last.at_ms - first.at_ms;
    let in_time = deadline_ms.is_none_or(|d| last.at_ms + full_in_ms <= d);
    (full_in_ms <= observed_ms && in_time).then(|| Exhaustion {
        first: first.index,
        last: last.index,
        reason: Reason::Exhaustion {
            resource: resource.into(),
            window: last.index,
            free: level,
            rate_per_s: -slope * 1000.0,
            full_in_ms,
            falling_ms: observed_ms,
        },
    })
}

/// The median of the pairwise slopes, per ms.
fn theil_sen(ls: &[Level]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(ls.len() * ls.len() / 2);
    for (i, a) in ls.iter().enumerate() {
        for b in &ls[i + 1..] {
            let dt = b.at_ms - a.at_ms;
            if dt > 0.0 {
                slopes.push((b.value - a.value) / dt);
            }
        }
    }
    median(slopes)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        f64::midpoint(v[m - 1], v[m])
    })
}

#[cfg(test)]
#[path = "trend_tests.rs"]
mod tests;
