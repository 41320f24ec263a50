//! The performance check's "before": the manifest's HTTP and TCP probes,
//! run `monitor.baseline_samples` times each just before the live install
//! starts, each result sent as a `Baseline` event. The controller judges
//! the monitoring period's `Probe` results against these (Mann-Whitney
//! with an effect-size guard, `controller/src/decide/judge.rs`).
//!
//! Why only HTTP and TCP: their latency is the service's; a command
//! probe's is mostly the fork and exec of the command. Why just before
//! the live install and after a shadow-first shadow: the service is
//! measured as it is when the change lands, not minutes earlier. Why the
//! samples are spaced at most [`MAX_SPACING`] apart, not at the probe's
//! own interval: ten samples at the default 5 s interval would hold the
//! install back for almost a minute; a loopback service's latency does
//! not depend on how often it is asked at these rates.

use std::time::Duration;

use super::health::{ProbeKind, probe};
use super::{DeployEvent, EventTx, Plan};

/// The longest gap between two baseline rounds.
pub const MAX_SPACING: Duration = Duration::from_millis(250);

/// The gap between two rounds: the shortest measured probe's interval,
/// at most [`MAX_SPACING`].
fn spacing(plan: &Plan) -> Duration {
    plan.probes
        .iter()
        .filter(|p| measured(&p.kind))
        .map(|p| p.interval)
        .min()
        .unwrap_or(MAX_SPACING)
        .min(MAX_SPACING)
}

fn measured(kind: &ProbeKind) -> bool {
    matches!(kind, ProbeKind::Http { .. } | ProbeKind::Tcp { .. })
}

/// Take the baseline: `plan.baseline_samples` rounds of every HTTP and
/// TCP probe, each result a `Baseline` event. Failed runs are sent too
/// (the controller measures only the ones that passed); nothing here
/// stops the deployment.
pub(super) async fn measure(plan: &Plan, tx: &EventTx) {
    let probes: Vec<_> = plan.probes.iter().filter(|p| measured(&p.kind)).collect();
    if (probes.is_empty() && plan.service_cgroup.is_none()) || plan.baseline_samples == 0 {
        return;
    }
    let gap = spacing(plan);
    for round in 0..plan.baseline_samples {
        if round > 0 {
            tokio::time::sleep(gap).await;
        }
        for p in &probes {
            let probe = probe(p, &plan.root).await;
            let _ = tx.send(DeployEvent::Baseline { probe });
        }
        super::service::sample(plan, true, tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::ProbeSpec;

    fn http(interval_ms: u64) -> ProbeSpec {
        ProbeSpec {
            name: "web".into(),
            kind: ProbeKind::Http {
                url: "http://127.0.0.1:1/".into(),
                expect_status: 200,
            },
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(interval_ms),
            latency_budget: None,
        }
    }

    #[test]
    fn rounds_are_spaced_by_the_shortest_measured_interval_at_most_250_ms() {
        let mut plan = crate::deploy::tests::plan();
        plan.probes = vec![http(5000)];
        assert_eq!(spacing(&plan), MAX_SPACING);
        plan.probes.push(http(100));
        assert_eq!(spacing(&plan), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn each_round_samples_every_tcp_and_http_probe_and_no_command_probe() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mut plan = crate::deploy::tests::plan();
        plan.baseline_samples = 3;
        plan.probes[0].kind = ProbeKind::Tcp { addr };
        plan.probes[0].interval = Duration::from_millis(100);
        plan.probes.push(ProbeSpec {
            name: "cmd".into(),
            kind: ProbeKind::Command(crate::deploy::tests::cmd("c", &["true"])),
            ..plan.probes[0].clone()
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        measure(&plan, &tx).await;
        drop(tx);
        let mut seen = Vec::new();
        while let Some(ev) = rx.recv().await {
            let DeployEvent::Baseline { probe } = ev else {
                panic!("only baseline events, got {ev:?}");
            };
            seen.push((probe.name, probe.ok));
        }
        assert_eq!(
            seen,
            vec![("up".to_string(), true); 3],
            "3 rounds of the tcp probe"
        );
        plan.baseline_samples = 0;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        measure(&plan, &tx).await;
        assert!(rx.try_recv().is_err(), "0: no baseline");
    }
}
