//! The host's absolute levels at a window's end, kept beside the window's
//! features and never among them.
//!
//! Why apart: a model fitted on one machine learns that machine's free
//! disk, free memory and load as "normal". Issue 16 measured the shipped
//! schema-v2 model on a host with 75 GB free instead of 49 GB: the disk
//! feature's z-score was +385 and every install alarmed, healthy or not.
//! So since schema v3 a window's features describe the install, and the
//! host enters them only as a change since the stream's first window
//! ([`HostLevels::derive`]), which is the same on a 10 GB and a 10 TB disk.
//! The absolute levels still matter: the disk trend rule extrapolates free
//! bytes, and a model records the range of host conditions
//! ([`HostLevels::conditions`]) it was trained on, so a decision can say
//! when a host lies outside it.

use serde::{Deserialize, Serialize};

use crate::features::feature;

/// Levels read from /proc and statvfs at a window's end (`cpu_util` is
/// over the window). Zero everywhere: not measured (windows from before
/// schema v3, or a test's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HostLevels {
    /// Bytes free to unprivileged users on the scope's filesystem.
    pub disk_free_bytes: f64,
    /// That filesystem's size.
    pub disk_total_bytes: f64,
    /// MemAvailable.
    pub mem_available_bytes: f64,
    /// MemTotal.
    pub mem_total_bytes: f64,
    /// The 1-minute load average.
    pub load1: f64,
    /// Online CPUs.
    pub cpus: f64,
    /// Whole-host busy fraction of all CPUs over the window (0..1).
    pub cpu_util: f64,
}

/// The host conditions a model records its training range of, by name:
/// each a fraction or a per-CPU figure, so hosts of any size compare.
pub const CONDITIONS: [&str; 4] = [
    "disk_free_fraction",
    "mem_available_fraction",
    "load1_per_cpu",
    "cpu_util",
];

impl HostLevels {
    /// [`CONDITIONS`]' values, in that order; `None` where a level was not
    /// measured (a zero total).
    pub fn conditions(&self) -> [Option<f64>; 4] {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        [
            ratio(self.disk_free_bytes, self.disk_total_bytes),
            ratio(self.mem_available_bytes, self.mem_total_bytes),
            ratio(self.load1, self.cpus),
            (self.cpus > 0.0).then_some(self.cpu_util),
        ]
    }

    /// Write the host-derived features of a window whose levels are `self`
    /// into `features`, the stream's first levels being `first`: the share
    /// of the first window's free disk and available memory that is gone
    /// since (negative when it grew). Multiplying the host's free disk or
    /// memory by any factor changes neither.
    pub fn derive(&self, first: &HostLevels, features: &mut [f64]) {
        features[feature::HOST_DISK_FREE_FALL] = fall(first.disk_free_bytes, self.disk_free_bytes);
        features[feature::HOST_MEM_AVAILABLE_FALL] =
            fall(first.mem_available_bytes, self.mem_available_bytes);
    }
}

/// The share of `first` that is gone at `now` (0 when `first` is unknown).
fn fall(first: f64, now: f64) -> f64 {
    if first > 0.0 {
        (first - now) / first
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FEATURES;

    fn levels(disk: f64, mem: f64) -> HostLevels {
        HostLevels {
            disk_free_bytes: disk,
            disk_total_bytes: 100e9,
            mem_available_bytes: mem,
            mem_total_bytes: 16e9,
            load1: 2.0,
            cpus: 4.0,
            cpu_util: 0.25,
        }
    }

    #[test]
    fn derived_features_do_not_move_with_the_hosts_size() {
        let (first, now) = (levels(40e9, 8e9), levels(30e9, 6e9));
        let mut v = vec![0.0; FEATURES.len()];
        now.derive(&first, &mut v);
        assert_eq!(v[feature::HOST_DISK_FREE_FALL], 0.25);
        assert_eq!(v[feature::HOST_MEM_AVAILABLE_FALL], 0.25);
        for k in [0.1, 0.25, 4.0, 10.0] {
            let mut w = vec![0.0; FEATURES.len()];
            levels(now.disk_free_bytes * k, now.mem_available_bytes * k)
                .derive(&levels(40e9 * k, 8e9 * k), &mut w);
            for i in [feature::HOST_DISK_FREE_FALL, feature::HOST_MEM_AVAILABLE_FALL] {
                assert!((w[i] - v[i]).abs() < 1e-12, "x{k}: {} vs {}", w[i], v[i]);
            }
        }
        let mut z = vec![0.0; FEATURES.len()];
        now.derive(&HostLevels::default(), &mut z);
        assert_eq!(z[feature::HOST_DISK_FREE_FALL], 0.0, "unknown first level");
    }

    #[test]
    fn conditions_are_fractions_and_unknown_when_unmeasured() {
        let c = levels(40e9, 8e9).conditions();
        assert_eq!(c, [Some(0.4), Some(0.5), Some(0.5), Some(0.25)]);
        assert_eq!(HostLevels::default().conditions(), [None; 4]);
    }
}
