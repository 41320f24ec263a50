//! The host's absolute levels at a window's end, kept beside the window's
//! features and never among them.
//!
//! Why apart: a model fitted on one machine learns that machine's free
//! disk, free memory and load as "normal". Issue 16 measured the shipped
//! schema-v2 model on a host with 75 GB free instead of 49 GB: the disk
//! feature's z-score was +385 and every install alarmed, healthy or not.
//! So since schema v3 a window's features describe the install, and the
//! host enters them only as what was consumed since the stream began
//! ([`HostLevels::derive`]): an install that writes 1 GB shows 1 GB on a
//! disk with 10 GB free and on one with 10 TB free. Whether that is too
//! much for this host is the disk trend rule's question, which reads the
//! absolute levels kept here.
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
    /// into `features`, the stream's levels when it began being `first`:
    /// the bytes of free disk and of available memory gone since (negative
    /// when they grew; 0 when either reading measured nothing). A host that
    /// had more or less of either to begin with gives the same values.
    pub fn derive(&self, first: &HostLevels, features: &mut [f64]) {
        let measured = |a: f64, b: f64| a > 0.0 && b > 0.0;
        features[feature::HOST_DISK_FREE_FALL] =
            if measured(first.disk_total_bytes, self.disk_total_bytes) {
                first.disk_free_bytes - self.disk_free_bytes
            } else {
                0.0
            };
        features[feature::HOST_MEM_AVAILABLE_FALL] =
            if measured(first.mem_total_bytes, self.mem_total_bytes) {
                first.mem_available_bytes - self.mem_available_bytes
            } else {
                0.0
            };
    }

    /// The same host with `disk` more bytes free and `mem` more available
    /// throughout (negative: less), and its CPUs `busy` busier (the share a
    /// neighbour takes, capped at all of them) with `load` more load: what
    /// the same install would meet on another host. For the invariance
    /// checks.
    #[must_use]
    pub fn shifted(&self, disk: f64, mem: f64, busy: f64, load: f64) -> HostLevels {
        HostLevels {
            disk_free_bytes: (self.disk_free_bytes + disk).max(0.0),
            disk_total_bytes: self.disk_total_bytes + disk.max(0.0),
            mem_available_bytes: (self.mem_available_bytes + mem).max(0.0),
            mem_total_bytes: self.mem_total_bytes + mem.max(0.0),
            load1: (self.load1 + load).max(0.0),
            cpus: self.cpus,
            cpu_util: (self.cpu_util + busy).clamp(0.0, 1.0),
        }
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
        let (first, now) = (levels(40e9, 8e9), levels(39e9, 7.5e9));
        let mut v = vec![0.0; FEATURES.len()];
        now.derive(&first, &mut v);
        assert_eq!(v[feature::HOST_DISK_FREE_FALL], 1e9);
        assert_eq!(v[feature::HOST_MEM_AVAILABLE_FALL], 0.5e9);
        // The same install on hosts with 0.1x to 10x the free disk and
        // 0.25x to 4x the memory, busy or idle.
        for (kd, km, busy) in [(0.1, 0.25, 0.7), (10.0, 4.0, -0.25), (2.0, 0.5, 0.0)] {
            let shift = |l: &HostLevels| l.shifted(40e9 * (kd - 1.0), 8e9 * (km - 1.0), busy, 3.0);
            let mut w = vec![0.0; FEATURES.len()];
            shift(&now).derive(&shift(&first), &mut w);
            assert_eq!(w, v, "x{kd} disk, x{km} memory");
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
