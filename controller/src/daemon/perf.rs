//! The performance check's evidence, built from stored events only: each
//! probe's `Baseline` results (taken by the agent just before the live
//! install) are its "before", its `Probe` results (the monitoring period)
//! its "during". No clock and no model: the series is a function of the
//! stored events, and it is stored inside the decision's `Evidence`, so
//! `backstop replay` judges exactly the samples the daemon judged.
//!
//! Only runs that passed are measured: a failed run's latency is a
//! timeout or a refused connect, not the service's speed, and failures
//! have their own rule (consecutive probe failures roll back). A probe
//! with no baseline (a command probe, `baseline_samples = 0`, an agent
//! that predates baselines) has no series and is not judged.

use backstop_common::deploy::{DeployEvent, ProbeResult};

use crate::decide::PerfSeries;

/// The smallest latency change that matters, ms: loopback answers take
/// a fraction of that, so a rise from 0.2 to 0.4 ms is not +100%.
pub const LATENCY_NOISE_FLOOR_MS: f64 = 1.0;

/// The metric name a probe's latency series carries (and its reason
/// shows).
pub fn metric(probe: &str) -> String {
    format!("probe `{probe}` latency")
}

/// One latency series per probe that has a baseline, in the order the
/// baselines were taken.
pub fn series(events: &[DeployEvent]) -> Vec<PerfSeries> {
    let mut out: Vec<(String, PerfSeries)> = Vec::new();
    for ev in events {
        if let DeployEvent::Baseline { probe } = ev
            && !out.iter().any(|(n, _)| *n == probe.name)
        {
            out.push((probe.name.clone(), empty(&probe.name)));
        }
    }
    for ev in events {
        let (probe, before): (&ProbeResult, bool) = match ev {
            DeployEvent::Baseline { probe } => (probe, true),
            DeployEvent::Probe { probe } => (probe, false),
            _ => continue,
        };
        let Some((_, s)) = out.iter_mut().find(|(n, _)| *n == probe.name) else {
            continue;
        };
        if probe.ok {
            let side = if before { &mut s.before } else { &mut s.during };
            side.push(probe.latency_ms);
        }
    }
    out.into_iter().map(|(_, s)| s).collect()
}

fn empty(probe: &str) -> PerfSeries {
    PerfSeries {
        metric: metric(probe),
        unit: "ms".into(),
        noise_floor: LATENCY_NOISE_FLOOR_MS,
        before: Vec::new(),
        during: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Params, Phase, Verdict, decide};

    fn run(name: &str, ok: bool, ms: f64) -> ProbeResult {
        ProbeResult {
            name: name.into(),
            ok,
            latency_ms: ms,
            detail: String::new(),
            window: 0,
        }
    }

    fn baseline(name: &str, ok: bool, ms: f64) -> DeployEvent {
        DeployEvent::Baseline {
            probe: run(name, ok, ms),
        }
    }

    fn probe(name: &str, ok: bool, ms: f64) -> DeployEvent {
        DeployEvent::Probe {
            probe: run(name, ok, ms),
        }
    }

    #[test]
    fn baselines_are_before_probes_are_during_and_failures_are_not_measured() {
        let events = vec![
            baseline("web", true, 10.0),
            baseline("port", true, 0.1),
            baseline("web", false, 2000.0),
            baseline("web", true, 11.0),
            DeployEvent::Installed { ok: true },
            probe("web", true, 80.0),
            probe("web", false, 5000.0),
            probe("cmd", true, 3.0),
            probe("port", true, 0.2),
        ];
        let s = series(&events);
        let names: Vec<&str> = s.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(
            names,
            ["probe `web` latency", "probe `port` latency"],
            "no baseline, no series (cmd)"
        );
        assert_eq!(
            (s[0].before.clone(), s[0].during.clone()),
            (vec![10.0, 11.0], vec![80.0])
        );
        assert_eq!(
            (s[1].before.clone(), s[1].during.clone()),
            (vec![0.1], vec![0.2])
        );
        assert_eq!(s[0].unit, "ms");
    }

    /// Deterministic jitter in [-1, 1): no rng in a decision's tests.
    fn jitter(i: usize) -> f64 {
        ((i * 7919) % 200) as f64 / 100.0 - 1.0
    }

    fn deployment(during_ms: f64, during: usize) -> crate::decide::Evidence {
        let mut events: Vec<DeployEvent> = (0..10)
            .map(|i| baseline("web", true, 10.0 + jitter(i)))
            .collect();
        events.push(DeployEvent::Step {
            stream: backstop_common::window::Stream::Live,
            step: backstop_common::deploy::StepResult {
                name: "install".into(),
                exit_code: Some(0),
                ..Default::default()
            },
        });
        events.extend((0..during).map(|i| probe("web", true, during_ms + jitter(i + 50))));
        super::super::decider::evidence(&events, 1)
    }

    #[test]
    fn a_regression_rolls_back_while_monitoring_once_five_samples_show_it() {
        let p = Params::default();
        let e = deployment(80.0, 4);
        assert_eq!(e.phase, Phase::Monitoring);
        assert_eq!(
            decide(&e, &p).verdict,
            Verdict::Continue,
            "4 during: too few"
        );
        let e = deployment(80.0, 5);
        let d = decide(&e, &p);
        assert_eq!(d.verdict, Verdict::Rollback, "{d:?}");
        let why = d.reasons[0].to_string();
        assert!(
            why.contains("probe `web` latency regressed") && why.contains("-> 80"),
            "{why}"
        );
        let same = decide(&deployment(10.0, 20), &p);
        assert_eq!(same.verdict, Verdict::Continue, "{same:?}");
    }
}
