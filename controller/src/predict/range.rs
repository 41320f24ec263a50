//! The range of host conditions a model was trained on, and whether a
//! window's host lies outside it.
//!
//! Why record it when no model input is a host level (schema v3): the
//! install's own features still feel the host (a loaded host stretches
//! run-queue delays and latencies), so an SRE reading a decision should
//! know when the model never saw a host like this one. The range is a
//! note in the decision, never a reason to drop the model's vote: the
//! vote does not depend on the host's levels, and a decision must not
//! change with them (issue 16's invariance test).

use backstop_common::hostlevels::{CONDITIONS, HostLevels};
use serde::{Deserialize, Serialize};

use crate::decide::evidence::HostOutside;

/// One condition's smallest and largest value in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionRange {
    pub name: String,
    pub min: f64,
    pub max: f64,
}

/// Per condition of [`CONDITIONS`] that training measured, its range;
/// empty when the corpus recorded no host levels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRange {
    pub conditions: Vec<ConditionRange>,
}

impl HostRange {
    pub fn fit<'a>(levels: impl Iterator<Item = &'a HostLevels>) -> HostRange {
        let mut lo = [f64::INFINITY; CONDITIONS.len()];
        let mut hi = [f64::NEG_INFINITY; CONDITIONS.len()];
        for l in levels {
            for (i, v) in l.conditions().iter().enumerate() {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    lo[i] = lo[i].min(v);
                    hi[i] = hi[i].max(v);
                }
            }
        }
        let conditions = CONDITIONS
            .iter()
            .enumerate()
            .filter(|&(i, _)| lo[i] <= hi[i])
            .map(|(i, name)| ConditionRange {
                name: (*name).to_string(),
                min: lo[i],
                max: hi[i],
            })
            .collect();
        HostRange { conditions }
    }

    /// The condition of `host` furthest outside its range (by the share of
    /// the range's width it lies beyond), if any is.
    pub fn outside(&self, host: &HostLevels) -> Option<HostOutside> {
        let values = host.conditions();
        let mut worst: Option<(f64, HostOutside)> = None;
        for r in &self.conditions {
            let Some(i) = CONDITIONS.iter().position(|c| *c == r.name) else {
                continue;
            };
            let Some(v) = values[i] else { continue };
            let beyond = (r.min - v).max(v - r.max);
            if beyond <= 0.0 {
                continue;
            }
            let how_far = beyond / (r.max - r.min).max(f64::EPSILON);
            if worst.as_ref().is_none_or(|(w, _)| how_far > *w) {
                let o = HostOutside {
                    condition: r.name.clone(),
                    value: v,
                    min: r.min,
                    max: r.max,
                };
                worst = Some((how_far, o));
            }
        }
        worst.map(|(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(free: f64, load1: f64) -> HostLevels {
        HostLevels {
            disk_free_bytes: free,
            disk_total_bytes: 100.0,
            mem_available_bytes: 50.0,
            mem_total_bytes: 100.0,
            load1,
            cpus: 2.0,
            cpu_util: 0.5,
        }
    }

    #[test]
    fn records_each_conditions_range_and_names_the_worst_outside() {
        let r = HostRange::fit([host(40.0, 1.0), host(60.0, 2.0)].iter());
        let disk = &r.conditions[0];
        assert_eq!(
            (disk.name.as_str(), disk.min, disk.max),
            ("disk_free_fraction", 0.4, 0.6)
        );
        assert_eq!(r.conditions.len(), CONDITIONS.len());
        assert_eq!(r.outside(&host(50.0, 1.5)), None, "inside every range");
        let o = r.outside(&host(10.0, 1.5)).expect("a fuller disk");
        assert_eq!((o.condition.as_str(), o.value), ("disk_free_fraction", 0.1));
        // Disk 1.5 widths out, load 3 widths out: load is named.
        let o = r.outside(&host(10.0, 4.0)).expect("both out");
        assert_eq!(o.condition, "load1_per_cpu");
        assert_eq!(r.outside(&HostLevels::default()), None, "unmeasured");
        assert!(HostRange::fit(std::iter::empty()).conditions.is_empty());
    }
}
