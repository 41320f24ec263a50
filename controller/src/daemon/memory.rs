//! The memory-growth rule's levels ([`crate::decide::memory`]), from the
//! stored `LiveMemory` events alone: the room left under the live
//! install's limit, one sample a window, so `backstop replay` projects
//! exactly what the daemon projected.
//!
//! The samples' clock is the agent's, from the live install's start, as
//! close to the first live window's start as the disk levels' clock is
//! (both begin when the runner is launched), so one deadline serves both.
//! A sample's `index` counts from 0 at that start, one a window, so
//! `index + 1` is the live window it falls in (windows count from 1).

use backstop_common::deploy::DeployEvent;

use crate::decide::trend::Level;

/// Limit minus working set, in the order the agent took them (each
/// sample once).
pub fn room(events: &[DeployEvent]) -> Vec<Level> {
    let mut out: Vec<Level> = Vec::new();
    for ev in events {
        let DeployEvent::LiveMemory { sample } = ev else {
            continue;
        };
        if out.last().is_some_and(|l| l.index > sample.index) {
            continue;
        }
        out.push(Level {
            index: sample.index + 1,
            at_ms: sample.at_ms,
            value: sample.limit_bytes.saturating_sub(sample.current_bytes) as f64,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use backstop_common::deploy::MemorySample;

    use super::*;

    fn sample(index: u64, current_mb: u64) -> DeployEvent {
        DeployEvent::LiveMemory {
            sample: MemorySample {
                index,
                at_ms: index as f64 * 1000.0,
                current_bytes: current_mb << 20,
                limit_bytes: 64 << 20,
                oom_kills: 0,
            },
        }
    }

    #[test]
    fn room_is_the_limit_minus_the_working_set_per_window() {
        let events = vec![
            sample(0, 4),
            DeployEvent::Installed { ok: true },
            sample(1, 10),
            sample(1, 10),
            sample(2, 70),
        ];
        let got: Vec<(u64, f64)> = room(&events).iter().map(|l| (l.index, l.value)).collect();
        assert_eq!(
            got,
            vec![(1, f64::from(60 << 20)), (2, f64::from(54 << 20)), (3, 0.0)],
            "one level per sample, over the limit is no room"
        );
    }
}
