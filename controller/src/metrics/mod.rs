//! The controller's Prometheus metrics: what the daemon did since it
//! started, kept in one process-wide registry that the daemon's hooks
//! write through the events in `events.rs` (one type per thing counted, as
//! vector's `internal_events`), and that `/metrics` renders.
//!
//! The names are an API (dashboards and alert rules name them): they start
//! with `backstop_`, carry their unit (`_seconds`, `_total`), and change
//! only by adding. The README's metrics table lists every one.

mod events;

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Instant;

use backstop_common::prom::{Histogram, Kind, Text};

pub use events::{AlertDelivery, DecisionMade, DeploymentEnded, EvidenceArrived, WindowsIngested};

/// Decision latency buckets (seconds): a decision is expected within a
/// window or two of its evidence (windows are 1 s by default), and a slow
/// store or model shows as the tail.
const LATENCY_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

struct Registry {
    deployments: BTreeMap<(String, String), u64>,
    decisions: BTreeMap<String, u64>,
    latency: Histogram,
    windows: BTreeMap<(String, String), u64>,
    lost: BTreeMap<String, u64>,
    delivered: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    /// When each running deployment's newest evidence reached the daemon.
    evidence: HashMap<String, Instant>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    Mutex::new(Registry {
        deployments: BTreeMap::new(),
        decisions: BTreeMap::new(),
        latency: Histogram::new(&LATENCY_BOUNDS),
        windows: BTreeMap::new(),
        lost: BTreeMap::new(),
        delivered: BTreeMap::new(),
        failed: BTreeMap::new(),
        evidence: HashMap::new(),
    })
});

/// Act on the registry; held for a map update, never across an await.
fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Windows of `deployment` reached the daemon from `host`: counted, and
/// the moment a decision's latency is measured from.
pub fn windows_received(host: &str, deployment: &str, windows: &[backstop_common::window::Window]) {
    WindowsIngested::batch(host, windows);
    EvidenceArrived { deployment }.emit();
}

/// New evidence about `deployment` (a step's event, the end of its
/// monitoring period) reached the daemon.
pub fn evidence(deployment: &str) {
    EvidenceArrived { deployment }.emit();
}

/// A decision about `deployment` was stored.
pub fn decided(deployment: &str, verdict: &impl std::fmt::Display) {
    let verdict = verdict.to_string();
    DecisionMade {
        deployment,
        verdict: &verdict,
    }
    .emit();
}

/// The `/metrics` body. `connected` is the number of agents with a live
/// session now (the daemon's, read by the caller).
pub fn render(connected: usize) -> String {
    with(|r| {
        let mut t = Text::new();
        let fam = "backstop_deployments_total";
        t.family(fam, "Deployments that ended, by final state and the decision stored for them (none: no decision).", Kind::Counter);
        for ((state, decision), n) in &r.deployments {
            t.sample(fam, &[("state", state), ("decision", decision)], *n as f64);
        }
        let fam = "backstop_decisions_total";
        t.family(fam, "Decisions stored, by verdict.", Kind::Counter);
        for (verdict, n) in &r.decisions {
            t.sample(fam, &[("verdict", verdict)], *n as f64);
        }
        let fam = "backstop_decision_latency_seconds";
        t.family(fam, "Time from the newest evidence (windows or a step) of a deployment reaching the controller to the decision it led to.", Kind::Histogram)
            .histogram(fam, &[], &r.latency);
        let fam = "backstop_windows_ingested_total";
        t.family(
            fam,
            "Feature windows received from agents, by host and stream (redeliveries included).",
            Kind::Counter,
        );
        for ((host, stream), n) in &r.windows {
            t.sample(fam, &[("host", host), ("stream", stream)], *n as f64);
        }
        let fam = "backstop_lost_events_total";
        t.family(
            fam,
            "Events the probes could not record, as the received windows report them, by host.",
            Kind::Counter,
        );
        for (host, n) in &r.lost {
            t.sample(fam, &[("host", host)], *n as f64);
        }
        let fam = "backstop_alert_deliveries_total";
        t.family(fam, "Alerts delivered, by sink.", Kind::Counter);
        for (sink, n) in &r.delivered {
            t.sample(fam, &[("sink", sink)], *n as f64);
        }
        let fam = "backstop_alert_delivery_failures_total";
        t.family(
            fam,
            "Failed alert delivery attempts (each retry counts), by sink.",
            Kind::Counter,
        );
        for (sink, n) in &r.failed {
            t.sample(fam, &[("sink", sink)], *n as f64);
        }
        let fam = "backstop_agents_connected";
        t.family(fam, "Agents with a live session now.", Kind::Gauge)
            .sample(fam, &[], connected as f64);
        t.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_moves_its_own_series_only() {
        WindowsIngested {
            host: "metrics-unit-a",
            stream: "live",
            windows: 3,
            lost_events: 2,
        }
        .emit();
        AlertDelivery {
            sink: "metrics-unit-sink",
            ok: false,
        }
        .emit();
        let body = render(7);
        assert!(
            body.contains(
                "backstop_windows_ingested_total{host=\"metrics-unit-a\",stream=\"live\"} 3\n"
            ),
            "{body}"
        );
        assert!(
            body.contains("backstop_lost_events_total{host=\"metrics-unit-a\"} 2\n"),
            "{body}"
        );
        assert!(
            body.contains("backstop_alert_delivery_failures_total{sink=\"metrics-unit-sink\"} 1\n"),
            "{body}"
        );
        assert!(
            !body.contains("backstop_alert_deliveries_total{sink=\"metrics-unit-sink\"}"),
            "{body}"
        );
        assert!(body.contains("backstop_agents_connected 7\n"), "{body}");
    }

    #[test]
    fn a_decision_observes_the_time_since_its_evidence() {
        EvidenceArrived {
            deployment: "metrics-unit-d",
        }
        .emit();
        let before = with(|r| r.latency.count());
        DecisionMade {
            deployment: "metrics-unit-d",
            verdict: "rollback",
        }
        .emit();
        assert_eq!(with(|r| r.latency.count()), before + 1);
        assert!(with(|r| !r.evidence.contains_key("metrics-unit-d")));
    }
}
