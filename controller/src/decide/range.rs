//! Where a model's votes stop counting: a window whose host state lies
//! far outside anything the model was trained on.
//!
//! Why: a model fitted on one machine learns that machine's free disk,
//! free memory and load as part of "normal". Issue 16 measured the shipped
//! model on another host: every install alarmed in its first window,
//! healthy or not, and the model's own explanation ranked free disk first.
//! Rolling a host back on such a vote is rolling it back for being a
//! different host. So the daemon marks each window whose `host_*` measure
//! is more than [`MAX_HOST_Z`] training standard deviations from the
//! training mean (in the normaliser's log1p space), the rules leave that
//! window's live and shadow P(failure) out, and every decision names the
//! measure and how far out it was. Steps, probes, shadow tests, the
//! performance check and the disk trend still decide.

use super::evidence::{Evidence, OutOfRange};
use super::reason::Reason;
use super::rules::{Finding, Weight};

/// Training standard deviations beyond which a host measure is outside
/// the model's range. Generous on purpose: within it, the model has seen
/// hosts like this one; beyond it, its vote is extrapolation.
pub const MAX_HOST_Z: f64 = 8.0;

/// The `host_*` measure of `row` furthest outside the range `mean` and
/// `std` describe (log1p space, as the normaliser), when one is beyond
/// [`MAX_HOST_Z`].
pub fn outside(names: &[&str], mean: &[f64], std: &[f64], row: &[f64]) -> Option<OutOfRange> {
    let mut worst: Option<OutOfRange> = None;
    for (i, name) in names.iter().enumerate() {
        if !name.starts_with("host_") {
            continue;
        }
        let (Some(m), Some(s), Some(v)) = (mean.get(i), std.get(i), row.get(i)) else {
            continue;
        };
        let z = (v.max(0.0).ln_1p() - m) / s.max(f64::MIN_POSITIVE);
        if !z.is_finite() || z.abs() <= MAX_HOST_Z {
            continue;
        }
        if worst.as_ref().is_none_or(|w| z.abs() > w.z.abs()) {
            worst = Some(OutOfRange {
                feature: (*name).to_string(),
                z,
            });
        }
    }
    worst
}

/// One note per run of consecutive windows outside the range, naming the
/// worst measure of the run.
pub(super) fn out_of_range(e: &Evidence, out: &mut Vec<Finding>) {
    let mut i = 0;
    while i < e.windows.len() {
        if e.windows[i].outside.is_none() {
            i += 1;
            continue;
        }
        let start = i;
        let mut worst = e.windows[i].outside.clone();
        while let Some(o) = e.windows.get(i).and_then(|w| w.outside.as_ref()) {
            if worst.as_ref().is_none_or(|w| o.z.abs() > w.z.abs()) {
                worst = Some(o.clone());
            }
            i += 1;
        }
        let Some(worst) = worst else { continue };
        let (first, last) = (e.windows[start].index, e.windows[i - 1].index);
        let reason = Reason::ModelOutOfRange {
            window: first,
            windows: u32::try_from(i - start).unwrap_or(u32::MAX),
            feature: worst.feature,
            z: worst.z,
        };
        out.push(Finding::new(Weight::Note, Some((first, last)), reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 3] = ["syscalls_total", "host_disk_free_bytes", "host_load1"];

    #[test]
    fn only_host_measures_far_outside_count_and_the_worst_is_named() {
        let mean = [10.0, 24.0, 1.0];
        let std = [0.5, 0.001, 0.5];
        // Disk within range (ln1p(e^24 - 1) = 24), load within: none.
        let inside = [1e9, 24f64.exp() - 1.0, 1.0];
        assert_eq!(outside(&NAMES, &mean, &std, &inside), None);
        // The install's own counts far out never count: they are what
        // the model is for.
        let busy = [1e30, 24f64.exp() - 1.0, 1.0];
        assert_eq!(outside(&NAMES, &mean, &std, &busy), None);
        // A host with 40% more free disk: z in the hundreds.
        let other = [1e9, (24f64.exp() - 1.0) * 1.4, 1.0];
        let o = outside(&NAMES, &mean, &std, &other).expect("outside");
        assert_eq!(o.feature, "host_disk_free_bytes");
        assert!(o.z > 300.0, "{}", o.z);
        // Both out: the larger |z| is named.
        let both = [1e9, (24f64.exp() - 1.0) * 1.001, 1e6];
        let o = outside(&NAMES, &mean, &std, &both).expect("outside");
        assert_eq!(o.feature, "host_load1", "{o:?}");
    }
}
