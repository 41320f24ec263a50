//! One type per thing the controller counts, each with an `emit()`: a hook
//! in the daemon is one line, and what each metric means is written here,
//! once.

use std::time::{Duration, Instant};

use super::with;

/// Running deployments whose evidence time is kept before old ones are
/// pruned, and the age past which they are.
const EVIDENCE_BOUND: usize = 1024;
const EVIDENCE_MAX_AGE: Duration = Duration::from_hours(1);

/// Windows of one batch from `host` were received (before storing:
/// redeliveries count again, as they cost the controller again).
pub struct WindowsIngested<'a> {
    pub host: &'a str,
    pub stream: &'a str,
    pub windows: u64,
    pub lost_events: u64,
}

impl WindowsIngested<'_> {
    pub fn emit(self) {
        with(|r| {
            *r.windows
                .entry((self.host.to_string(), self.stream.to_string()))
                .or_default() += self.windows;
            *r.lost.entry(self.host.to_string()).or_default() += self.lost_events;
        });
    }

    /// One event per stream of a received batch.
    pub fn batch(host: &str, windows: &[backstop_common::window::Window]) {
        let mut by = std::collections::BTreeMap::<&str, (u64, u64)>::new();
        for w in windows {
            let e = by.entry(w.stream.as_str()).or_default();
            e.0 += 1;
            e.1 += w.lost_events;
        }
        for (stream, (windows, lost_events)) in by {
            WindowsIngested {
                host,
                stream,
                windows,
                lost_events,
            }
            .emit();
        }
    }
}

/// Evidence about `deployment` (windows, a step) reached the daemon: a
/// decision it leads to measures its latency from here.
pub struct EvidenceArrived<'a> {
    pub deployment: &'a str,
}

impl EvidenceArrived<'_> {
    pub fn emit(self) {
        with(|r| {
            let now = Instant::now();
            // An `exec` run gets windows but never a decision or a
            // deployment end, so its entry would stay: past a bound,
            // entries older than any decision waits are let go.
            if r.evidence.len() >= EVIDENCE_BOUND {
                r.evidence
                    .retain(|_, at| now.duration_since(*at) < EVIDENCE_MAX_AGE);
            }
            r.evidence.insert(self.deployment.to_string(), now);
        });
    }
}

/// A decision was stored.
pub struct DecisionMade<'a> {
    pub deployment: &'a str,
    pub verdict: &'a str,
}

impl DecisionMade<'_> {
    pub fn emit(self) {
        with(|r| {
            *r.decisions.entry(self.verdict.to_string()).or_default() += 1;
            if let Some(at) = r.evidence.remove(self.deployment) {
                r.latency.observe(at.elapsed().as_secs_f64());
            }
        });
    }
}

/// A deployment reached a final state.
pub struct DeploymentEnded<'a> {
    pub deployment: &'a str,
    pub state: &'a str,
    /// The verdict stored for it, if one was.
    pub decision: Option<&'a str>,
}

impl DeploymentEnded<'_> {
    pub fn emit(self) {
        with(|r| {
            let key = (
                self.state.to_string(),
                self.decision.unwrap_or("none").to_string(),
            );
            *r.deployments.entry(key).or_default() += 1;
            r.evidence.remove(self.deployment);
        });
    }

    /// Look up the decision `deployment` had, then emit (a hook after the
    /// final state is stored).
    pub async fn after(store: &crate::store::Store, deployment: &str, state: &str) {
        let decisions = store.decisions(deployment).await.unwrap_or_default();
        DeploymentEnded {
            deployment,
            state,
            decision: decisions.first().map(|d| d.verdict.as_str()),
        }
        .emit();
    }
}

/// One delivery attempt of an alert to `sink`.
pub struct AlertDelivery<'a> {
    pub sink: &'a str,
    pub ok: bool,
}

impl AlertDelivery<'_> {
    pub fn emit(self) {
        with(|r| {
            let map = if self.ok {
                &mut r.delivered
            } else {
                &mut r.failed
            };
            *map.entry(self.sink.to_string()).or_default() += 1;
        });
    }
}
