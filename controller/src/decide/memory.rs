//! Memory growing towards the live install's limit
//! (`monitor.memory_limit_mb`): the room left under the limit is a level
//! that falls as the install's working set grows, and it runs out where
//! the kernel's OOM killer ends the step. It is projected exactly as the
//! disk's free space is ([`super::trend`]: the same Theil-Sen rate, the
//! same guards: enough samples, a sustained fall, a real share of the room
//! used, no further than the fall watched, before the deadline in force),
//! so a steady leak is rolled back before the OOM kill or the step's
//! timeout, and an install that grows to a plateau is not.

use super::trend::{Exhaustion, Resources, first_held};

/// The projection of the room under the memory limit, when it runs out
/// in time.
pub fn memory(r: &Resources) -> Option<Exhaustion> {
    first_held(&r.memory_room, r.deadline_ms, "memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::evidence::{Evidence, Phase};
    use crate::decide::reason::Reason;
    use crate::decide::trend::Level;
    use crate::decide::{Params, Verdict, decide};

    const MB: f64 = 1024.0 * 1024.0;
    const LIMIT: f64 = 96.0;

    /// One sample a second; `used` in MB under a 96 MB limit.
    fn room(used: &[f64]) -> Resources {
        Resources {
            memory_room: used
                .iter()
                .enumerate()
                .map(|(i, u)| Level {
                    index: i as u64 + 1,
                    at_ms: (i as f64 + 1.0) * 1000.0,
                    value: (LIMIT - u) * MB,
                })
                .collect(),
            ..Resources::default()
        }
    }

    /// 8 MB at start, growing 3 MB/s for `secs`, then flat.
    fn growth(secs: usize, total: usize) -> Vec<f64> {
        (0..total).map(|t| 8.0 + 3.0 * t.min(secs) as f64).collect()
    }

    fn evidence(r: Resources) -> Evidence {
        Evidence {
            phase: Phase::Installing,
            windows: Vec::new(),
            live_steps: Vec::new(),
            shadow: None,
            probes: Vec::new(),
            performance: Vec::new(),
            history: crate::decide::evidence::History::default(),
            resources: r,
            no_model: None,
            window_length: None,
        }
    }

    /// A case: its name, MB used per second, the deadline, the window
    /// the rollback is decided at.
    type Row = (&'static str, fn() -> Vec<f64>, Option<f64>, Option<u64>);

    // One row per case: (name, used MB per second, deadline ms, the
    // window the rollback is decided at, or None: no projection).
    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        // Room 88 MB at 3 MB/s: runs out at ~30 s; held once the time
        // to the limit is no more than the time watched (t ~ 15 s).
        ("a steady leak to the limit", || growth(40, 30), None, Some(16)),
        ("a leak the step's timeout ends first", || growth(40, 30), Some(20_000.0), None),
        ("a leak well before a far timeout", || growth(40, 30), Some(180_000.0), Some(16)),
        ("growth to a plateau at a third", || growth(10, 60), None, None),
        ("too few samples", || growth(40, 4), None, None),
        ("a working set that wobbles", || (0..40).map(|t| 40.0 + if t % 2 == 0 { 6.0 } else { -6.0 }).collect(), None, None),
        ("a tiny drift", || (0..40).map(|t| 8.0 + 0.02 * f64::from(t)).collect(), None, None),
    ];

    #[test]
    fn the_memory_table() {
        for (name, used, deadline, want) in TABLE {
            let mut r = room(&used());
            r.deadline_ms = *deadline;
            let got = memory(&r).map(|x| x.last);
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn a_leak_is_a_rollback_that_names_memory_and_disk_is_not_blamed() {
        let d = decide(&evidence(room(&growth(40, 30))), &Params::default());
        assert_eq!(d.verdict, Verdict::Rollback, "{d:?}");
        let Reason::Exhaustion {
            resource,
            rate_per_s,
            free,
            ..
        } = &d.reasons[0]
        else {
            panic!("{d:?}");
        };
        assert_eq!(resource, "memory");
        assert!((rate_per_s / MB - 3.0).abs() < 0.01, "{rate_per_s}");
        assert!(free / MB < 44.0, "half the room is gone: {free}");
        let text = d.reasons[0].to_string();
        assert!(
            text.starts_with("memory growing: the live install's cgroup takes 3.0 MiB/s")
                && text.contains("left under its limit"),
            "{text}"
        );
        let plateau = decide(&evidence(room(&growth(10, 60))), &Params::default());
        assert_eq!(plateau.verdict, Verdict::Continue, "{plateau:?}");
    }
}
