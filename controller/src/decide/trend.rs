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
    let x = disk(&e.resources).or_else(|| super::memory::memory(&e.resources))?;
    Some(Finding::new(
        Weight::Hard,
        Some((x.first, x.last)),
        x.reason,
    ))
}

/// The sentence of a [`Reason::Exhaustion`]: "disk filling: the scope's
/// filesystem loses 2.0 MiB/s, 31.5 MiB free, full in 16 s (falling for
/// 16 s)".
pub(super) fn fmt_reason(r: &Reason, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
mod tests {
    use super::*;

    const MB: f64 = 1024.0 * 1024.0;

    /// One sample a second from `values` (in MB).
    fn levels(values: &[f64]) -> Vec<Level> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Level {
                index: i as u64 + 1,
                at_ms: (i as f64 + 1.0) * 1000.0,
                value: v * MB,
            })
            .collect()
    }

    fn with(values: &[f64], deadline_ms: Option<f64>) -> Resources {
        Resources {
            disk_free: levels(values),
            memory_room: Vec::new(),
            deadline_ms,
        }
    }

    /// 64 MB filling at 2 MB/s for `secs` seconds, then flat.
    fn fill(secs: usize, total: usize) -> Vec<f64> {
        (0..total)
            .map(|t| 64.0 - 2.0 * t.min(secs) as f64)
            .collect()
    }

    #[test]
    fn a_steady_fill_is_caught_once_half_is_gone_with_the_rest_as_lead() {
        let e = disk(&with(&fill(32, 33), None)).expect("a fill to zero is projected");
        let Reason::Exhaustion {
            window,
            rate_per_s,
            full_in_ms,
            ..
        } = e.reason
        else {
            panic!("{:?}", e.reason)
        };
        // Free 64 - 2t hits zero at t = 32 s (window 33); projected once
        // the time to full is no more than the 2t s watched: at window 17.
        assert_eq!(window, 17, "caught at the half, not before");
        assert!((rate_per_s - 2.0 * MB).abs() < 1.0, "{rate_per_s}");
        assert!((full_in_ms - 16_000.0).abs() < 1.0, "{full_in_ms}");
    }

    #[test]
    fn a_fill_that_stops_at_a_quarter_is_never_projected() {
        assert_eq!(disk(&with(&fill(8, 60), None)), None);
        // Even stopping just short of half: never "full sooner than seen",
        // and once it stopped its past speed projects nothing.
        assert_eq!(disk(&with(&fill(15, 60), None)), None);
        // Slowing down to a crawl near the half: the recent rate decides.
        let mut slow = fill(15, 16);
        slow.extend((1..30).map(|t| 34.0 - 0.05 * f64::from(t)));
        assert_eq!(disk(&with(&slow, None)), None);
    }

    #[test]
    fn too_few_windows_project_nothing() {
        // Four windows that fall 15 MB each would be full in the fifth.
        assert_eq!(disk(&with(&[64.0, 49.0, 34.0, 19.0], None)), None);
        assert!(disk(&with(&[64.0, 49.0, 34.0, 19.0, 4.0], None)).is_some());
    }

    #[test]
    fn a_level_that_wobbles_is_not_a_fall() {
        let noisy: Vec<f64> = (0..40)
            .map(|t| 10.0 + if t % 2 == 0 { 3.0 } else { -3.0 })
            .collect();
        assert_eq!(disk(&with(&noisy, None)), None);
        // A falling level with every other step a rise is not sustained.
        let saw: Vec<f64> = (0..40)
            .map(|t| 40.0 - f64::from(t) + if t % 2 == 0 { 0.0 } else { 1.5 })
            .collect();
        assert_eq!(disk(&with(&saw, None)), None);
    }

    #[test]
    fn one_odd_sample_does_not_move_a_robust_rate() {
        let mut v = fill(32, 25);
        v[8] = 20.0; // a momentary dip (a burst freed a second later)
        let e = disk(&with(&v, None)).expect("still a fill");
        let Reason::Exhaustion {
            rate_per_s, window, ..
        } = e.reason
        else {
            panic!("{:?}", e.reason)
        };
        assert_eq!(window, 17);
        assert!((rate_per_s / MB - 2.0).abs() < 0.1, "{rate_per_s}");
    }

    #[test]
    fn short_windows_are_read_a_second_apart_so_a_writers_pauses_are_no_wobble() {
        // 2 MB/s written in the first half of each second: in 250 ms
        // windows half the steps are flat, which the raw reading takes for
        // a wobble; paced, it is the steady fill of one-second windows.
        let quarter: Vec<Level> = (0..132)
            .map(|q| Level {
                index: q + 1,
                at_ms: (q as f64 + 1.0) * 250.0,
                value: (64.0 - (q / 4 * 2 + (q % 4).min(2)) as f64) * MB,
            })
            .collect();
        let raw = (MIN_SAMPLES..=quarter.len()).find_map(|n| project(&quarter[..n], None, "disk"));
        assert_eq!(raw, None, "unpaced, the pauses hide the fill");
        let r = Resources {
            disk_free: quarter,
            ..Resources::default()
        };
        let e = disk(&r).expect("paced, the fill is projected");
        let at_s = e.last as f64 / 4.0;
        assert!(
            (16.0..=18.0).contains(&at_s),
            "caught at {at_s} s, as at 1 s windows"
        );
    }

    #[test]
    fn a_small_fall_of_a_large_disk_is_not_projected() {
        // 10 GB free losing 20 MB/s for 30 s: full in minutes, watched
        // for seconds.
        let big: Vec<f64> = (0..30).map(|t| 10_000.0 - 20.0 * f64::from(t)).collect();
        assert_eq!(disk(&with(&big, None)), None);
    }

    #[test]
    fn a_fall_too_small_to_measure_is_noise() {
        let tiny: Vec<f64> = (0..20).map(|t| 1.0 - 0.04 * f64::from(t)).collect();
        assert_eq!(disk(&with(&tiny, None)), None, "0.8 MB in all");
    }

    #[test]
    fn a_rise_starts_a_new_fall() {
        let mut v = fill(32, 20); // 64 -> 26 by window 20
        v.extend([60.0, 58.0, 56.0]); // space freed: the fall starts over
        assert_eq!(
            disk(&with(&v[..16], None)).map(|e| e.last),
            None,
            "not yet at half"
        );
        let e = disk(&with(&v, None)).expect("the first fall reached its half");
        assert_eq!(
            e.last, 17,
            "the first moment it held, kept as evidence grows"
        );
    }

    #[test]
    fn a_deadline_before_the_projected_end_leaves_it_to_the_timeout() {
        // Full at 33 s; the step's timeout ends at 25 s.
        assert_eq!(disk(&with(&fill(32, 33), Some(25_000.0))), None);
        assert!(disk(&with(&fill(32, 33), Some(40_000.0))).is_some());
    }
}
