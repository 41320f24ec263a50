//! The service's CPU and memory for the performance check
//! (`monitor.service_cgroup`), from the stored `Service` events alone:
//! samples the agent took with the baseline's rounds are "before", those
//! of the monitoring period "during", judged as probe latency is
//! ([`crate::decide::judge`]). Stored inside the decision's evidence, so
//! `backstop replay` judges exactly these samples.
//!
//! CPU is a rate, in percent of one CPU: the CPU time between two
//! consecutive samples of one side over the time between them. A pair
//! across the install is never used (the install's own work, restarts,
//! are not the service's steady state). Memory is memory.current, in MiB,
//! where the group has a memory controller.

use backstop_common::deploy::{DeployEvent, ServiceSample};

use crate::decide::PerfSeries;

/// The smallest CPU change that matters, in percent of one CPU: a service
/// idle before (0-2%) that answers a few probes more is not +100%.
pub const CPU_NOISE_FLOOR_PERCENT: f64 = 5.0;
/// The smallest memory level that matters, MiB.
pub const MEMORY_NOISE_FLOOR_MIB: f64 = 1.0;

const MIB: f64 = 1024.0 * 1024.0;

/// The CPU and memory series, when the deployment sampled a service.
pub fn series(events: &[DeployEvent]) -> Vec<PerfSeries> {
    let samples: Vec<&ServiceSample> = events
        .iter()
        .filter_map(|e| match e {
            DeployEvent::Service { sample } => Some(sample),
            _ => None,
        })
        .collect();
    if samples.is_empty() {
        return Vec::new();
    }
    let side = |baseline: bool| -> Vec<&ServiceSample> {
        samples
            .iter()
            .copied()
            .filter(|s| s.baseline == baseline)
            .collect()
    };
    let (before, during) = (side(true), side(false));
    let mut out = vec![PerfSeries {
        metric: "service CPU".into(),
        unit: "% of a CPU".into(),
        noise_floor: CPU_NOISE_FLOOR_PERCENT,
        before: cpu(&before),
        during: cpu(&during),
    }];
    let memory = |side: &[&ServiceSample]| -> Vec<f64> {
        side.iter()
            .filter_map(|s| s.memory_bytes.map(|b| b as f64 / MIB))
            .collect()
    };
    if samples.iter().any(|s| s.memory_bytes.is_some()) {
        out.push(PerfSeries {
            metric: "service memory".into(),
            unit: "MiB".into(),
            noise_floor: MEMORY_NOISE_FLOOR_MIB,
            before: memory(&before),
            during: memory(&during),
        });
    }
    out
}

/// Percent of one CPU between consecutive samples (a counter that went
/// back, a group recreated, gives no rate).
fn cpu(side: &[&ServiceSample]) -> Vec<f64> {
    side.windows(2)
        .filter_map(|w| {
            let dt_ms = w[1].at_ms - w[0].at_ms;
            let used_us = w[1].cpu_usage_usec.checked_sub(w[0].cpu_usage_usec)?;
            (dt_ms > 0.0).then(|| used_us as f64 / 1000.0 / dt_ms * 100.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Params, Phase, Verdict, decide};

    fn at(baseline: bool, at_ms: f64, usec: u64, mem: Option<u64>) -> DeployEvent {
        DeployEvent::Service {
            sample: ServiceSample {
                baseline,
                at_ms,
                cpu_usage_usec: usec,
                memory_bytes: mem,
            },
        }
    }

    #[test]
    fn cpu_is_a_rate_within_each_side_and_memory_is_in_mib() {
        let events = vec![
            at(true, 0.0, 0, Some(8 << 20)),
            at(true, 250.0, 25_000, Some(8 << 20)),
            at(true, 500.0, 50_000, Some(9 << 20)),
            DeployEvent::Installed { ok: true },
            at(false, 9_000.0, 4_000_000, Some(20 << 20)),
            at(false, 9_500.0, 4_400_000, Some(21 << 20)),
            at(false, 10_000.0, 3_000, None),
        ];
        let s = series(&events);
        assert_eq!(s[0].metric, "service CPU");
        assert_eq!(s[0].before, vec![10.0, 10.0], "25 ms of CPU per 250 ms");
        assert_eq!(
            s[0].during,
            vec![80.0],
            "a counter that went back is no rate"
        );
        assert_eq!(s[1].before, vec![8.0, 8.0, 9.0]);
        assert_eq!(s[1].during, vec![20.0, 21.0]);
        assert!(series(&[DeployEvent::Installed { ok: true }]).is_empty());
        let no_mem = series(&[at(true, 0.0, 0, None), at(true, 1.0, 1, None)]);
        assert_eq!(no_mem.len(), 1, "no memory controller: CPU only");
    }

    /// A service at ~10% before and `during` % after, 10 samples a side.
    fn deployment(during: f64) -> crate::decide::Evidence {
        let jitter = |i: usize| ((i * 7919) % 200) as f64 / 100.0 - 1.0;
        let mut events = Vec::new();
        let mut used = 0.0;
        for i in 0..11 {
            used += 25_000.0 * (1.0 + 0.1 * jitter(i));
            events.push(at(true, i as f64 * 250.0, used as u64, None));
        }
        events.push(DeployEvent::Step {
            stream: backstop_common::window::Stream::Live,
            step: backstop_common::deploy::StepResult {
                name: "install".into(),
                exit_code: Some(0),
                ..Default::default()
            },
        });
        for i in 0..11 {
            used += during * 2_500.0 * (1.0 + 0.1 * jitter(i + 40));
            events.push(at(false, 60_000.0 + i as f64 * 250.0, used as u64, None));
        }
        super::super::decider::evidence(&events, 1)
    }

    #[test]
    fn a_service_that_burns_cpu_after_the_install_is_rolled_back_naming_cpu() {
        let e = deployment(90.0);
        assert_eq!(e.phase, Phase::Monitoring);
        let d = decide(&e, &Params::default());
        assert_eq!(d.verdict, Verdict::Rollback, "{d:?}");
        let why = d.reasons[0].to_string();
        assert!(why.starts_with("service CPU regressed"), "{why}");
        let same = decide(&deployment(10.0), &Params::default());
        assert_eq!(same.verdict, Verdict::Continue, "{same:?}");
    }
}
