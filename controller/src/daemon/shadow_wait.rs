//! The end of monitoring waits for a concurrent shadow's report.
//!
//! Why: the shadow's tests are evidence the engine must weigh (a failed
//! one rolls back even when live looks healthy), and a shadow may take
//! longer than the monitoring period (a short or `"0s"` period, a slow
//! install in the shadow). Deciding at the period's end without it gives
//! `inconclusive`, and the install is kept with its shadow test never
//! read. The agent waits for an order after monitoring, so waiting here
//! holds nothing up but the commit; the wait is bounded by the shadow's
//! own time limit (the steps' and tests' timeouts, as the agent sets it)
//! plus a margin for its set-up, after which the engine decides without
//! it (and says the shadow did not finish).

use std::sync::Arc;
use std::time::Duration;

use backstop_common::deploy::DeployEvent;
use backstop_common::manifest::Manifest;

use super::state::Daemon;
use crate::decide::Evidence;
use crate::decide::evidence::ShadowEvidence;
use crate::store::{DeployState, StoreError};

/// How often the store is read while waiting.
const POLL: Duration = Duration::from_millis(250);
/// A shadow's set-up and teardown beyond its steps and tests.
const MARGIN: Duration = Duration::from_secs(30);

/// The longest a shadow of `m` may run: what the agent gives it, plus
/// [`MARGIN`]; zero when there is no concurrent shadow to wait for.
pub fn bound(m: &Manifest) -> Duration {
    if !m.shadow.enabled {
        return Duration::ZERO;
    }
    let steps = m.steps.iter().chain(&m.shadow.tests).map(|s| s.timeout);
    steps.sum::<Duration>() + MARGIN
}

/// Wait until `id`'s shadow reported, the deployment ended or was
/// decided, or the bound passed.
pub async fn until_reported(daemon: &Arc<Daemon>, id: &str) -> Result<(), StoreError> {
    let (_, manifest) = daemon.store.deploy(id).await?;
    if bound(&manifest).is_zero() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + bound(&manifest);
    // Only the events stored since the last look are read: in 250 ms
    // windows a deployment stores a memory sample with every window.
    let mut seen = 0;
    while tokio::time::Instant::now() < deadline {
        let (row, _) = daemon.store.deploy(id).await?;
        if row.state != DeployState::Running || !daemon.store.decisions(id).await?.is_empty() {
            return Ok(());
        }
        let (events, last) = daemon.store.deploy_events_since(id, seen).await?;
        seen = last;
        if events.iter().any(|r| {
            matches!(
                r.event,
                DeployEvent::Shadow { .. } | DeployEvent::ShadowFailed { .. }
            )
        }) {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    tracing::warn!(
        deployment = id,
        "the shadow did not report by its time limit"
    );
    Ok(())
}

/// A shadow the manifest asked for counts even when it never reported
/// (it failed to run, or the agent died with it): without this the engine
/// sees no shadow at all and could commit on live alone. With it, a
/// silent shadow is "the shadow (no final report)" at the end, which is
/// `inconclusive`, never a pass.
pub fn expect(e: &mut Evidence, m: &Manifest) {
    if m.shadow.enabled && e.shadow.is_none() {
        e.shadow = Some(ShadowEvidence {
            steps: Vec::new(),
            tests: Vec::new(),
            oom_kills: 0,
            finished: false,
            error: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Params, Phase, Verdict, decide};
    use backstop_common::deploy::StepResult;
    use backstop_common::window::Stream;

    #[test]
    fn a_shadow_that_never_reported_is_inconclusive_not_a_commit() {
        let text = include_str!("../../../examples/hello.toml");
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let m = Manifest::from_toml_in(text, Some(&base)).unwrap();
        assert!(m.shadow.enabled, "hello.toml asks for a shadow");
        let live = DeployEvent::Step {
            stream: Stream::Live,
            step: StepResult {
                name: "install".into(),
                exit_code: Some(0),
                ..StepResult::default()
            },
        };
        let params = Params::from_policy(&m.policy);
        let mut e = super::super::decider::evidence(&[live], m.steps.len());
        e.phase = Phase::Done;
        assert_eq!(
            decide(&e, &params).verdict,
            Verdict::Commit,
            "without the expectation, live alone commits"
        );
        expect(&mut e, &m);
        let d = decide(&e, &params);
        assert_eq!(d.verdict, Verdict::Inconclusive, "{d:?}");
        assert!(format!("{d:?}").contains("no final report"), "{d:?}");
    }

    #[test]
    fn a_shadow_that_could_not_run_is_inconclusive_and_says_why() {
        let text = include_str!("../../../examples/hello.toml");
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let m = Manifest::from_toml_in(text, Some(&base)).unwrap();
        let events = [
            DeployEvent::ShadowFailed {
                reason: "creating the shadow: EAGAIN".into(),
            },
            DeployEvent::Step {
                stream: Stream::Live,
                step: StepResult {
                    name: "install".into(),
                    exit_code: Some(0),
                    ..StepResult::default()
                },
            },
        ];
        let mut e = super::super::decider::evidence(&events, m.steps.len());
        expect(&mut e, &m);
        let params = Params::from_policy(&m.policy);
        assert_eq!(decide(&e, &params).verdict, Verdict::Continue);
        e.phase = Phase::Done;
        let d = decide(&e, &params);
        assert_eq!(d.verdict, Verdict::Inconclusive, "{d:?}");
        let said = d
            .reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            said.contains("it could not run: creating the shadow: EAGAIN"),
            "{said}"
        );
    }

    #[test]
    fn the_bound_is_the_shadows_own_time_limit_plus_a_margin() {
        let text = include_str!("../../../examples/hello.toml");
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut m = Manifest::from_toml_in(text, Some(&base)).unwrap();
        m.shadow.enabled = true;
        let want: Duration = m
            .steps
            .iter()
            .chain(&m.shadow.tests)
            .map(|s| s.timeout)
            .sum();
        assert_eq!(bound(&m), want + MARGIN);
        m.shadow.enabled = false;
        assert_eq!(bound(&m), Duration::ZERO, "no shadow: no wait");
    }
}
