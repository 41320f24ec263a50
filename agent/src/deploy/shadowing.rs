//! The shadow install of a deployment: its options from the plan, the
//! shadow-first gate, and the report of a concurrent one.

use std::time::Duration;

use backstop_common::window::Stream;

use super::flow::{Context, joined};
use super::journal::Journal;
use super::plan::stage;
use super::rollback::{self, Host};
use super::{DeployError, DeployEvent, EventTx, Plan, StreamSink};
use crate::shadow::{self, ShadowOptions, ShadowReport};

/// A concurrent shadow still running: awaited after the decision is
/// carried out, so it never delays a rollback. It sends its own report
/// when it ends ([`report_shadow`]), so the controller can decide on its
/// tests while live is still being monitored.
pub(super) type ShadowTask = Option<tokio::task::JoinHandle<Result<(), DeployError>>>;

/// Shadow-first: stage the artifact, run the shadow; when it fails, put
/// the scope (and the staged copy's /tmp) back and say why.
pub(super) async fn shadow_first(
    ctx: &Context,
    plan: &Plan,
    j: &Journal,
    tx: &EventTx,
) -> Result<Option<String>, DeployError> {
    stage(plan)?;
    let report = run_shadow(ctx, plan, j.snapshot.clone(), tx.clone()).await?;
    let passed = report.verdict().passed();
    let _ = tx.send(DeployEvent::Shadow {
        report: Box::new(report),
    });
    if passed {
        return Ok(None);
    }
    if plan.staging.is_some() {
        let mut host = Host {
            data: &ctx.data,
            plan,
            cgroup: None,
            snapshot: j.snapshot.clone(),
            changes: None,
        };
        rollback::HostActions::restore(&mut host)
            .await
            .map_err(|reason| DeployError::Plan {
                field: "artifact".into(),
                reason: format!("removing the staged copy: {reason}"),
            })?;
    }
    Ok(Some("the shadow failed; live was not started".into()))
}

/// A concurrent shadow's end: its report goes out at once, and so does
/// the reason when it could not run (the controller then says why the
/// shadow's evidence is missing, instead of only that it is).
pub(super) fn report_shadow(
    r: Result<ShadowReport, DeployError>,
    tx: &EventTx,
) -> Result<(), DeployError> {
    match r {
        Ok(report) => {
            let _ = tx.send(DeployEvent::Shadow {
                report: Box::new(report),
            });
            Ok(())
        }
        Err(e) => {
            let _ = tx.send(DeployEvent::ShadowFailed {
                reason: crate::error::chain(&e),
            });
            Err(e)
        }
    }
}

/// Wait for a concurrent shadow (it reported itself when it ended).
pub(super) async fn shadow_done(task: ShadowTask) {
    let Some(h) = task else { return };
    if let Err(e) = joined(h.await).and_then(|r| r) {
        tracing::error!("the shadow install failed to run: {e}");
    }
}

/// The shadow install, over the scope as `snapshot` recorded it (the
/// known-good state, taken before live started): live changes the root
/// while the shadow reads it, and the shadow must not see that.
pub(super) async fn run_shadow(
    ctx: &Context,
    plan: &Plan,
    snapshot: Option<String>,
    tx: EventTx,
) -> Result<ShadowReport, DeployError> {
    let s = plan
        .shadow
        .clone()
        .unwrap_or_else(|| unreachable!("checked by the caller"));
    let quote = |argv: &[String]| {
        argv.iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let script = plan
        .steps
        .iter()
        .map(|st| quote(&st.argv))
        .collect::<Vec<_>>()
        .join(" && ");
    let timeout: Duration = plan.steps.iter().chain(&s.tests).map(|c| c.timeout).sum();
    let opts = ShadowOptions {
        root: plan.root.clone(),
        limits: shadow::Limits {
            memory_bytes: s.memory_bytes,
            pids: s.pids,
            cpu_quota_us: s.cpu_quota_us,
        },
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        tests: s.tests.iter().map(|t| quote(&t.argv)).collect(),
        copy_in: Vec::new(),
        window: ctx.window,
        timeout: Some(timeout),
        upper_size: s.upper_bytes,
        durable: false,
        frozen: snapshot.map(|snapshot| shadow::FrozenScope {
            snapshot,
            staged: plan.staging.clone().map(|d| (d, plan.artifact.clone())),
        }),
    };
    let mut sink = StreamSink {
        tx,
        stream: Stream::Shadow,
    };
    let mut report = shadow::run(&ctx.probes, &ctx.data, &opts, &mut sink).await?;
    // The shadow knows a test by its command line; the controller's
    // reason ("shadow test `check-config` failed") names it as the
    // manifest does.
    for (t, cmd) in report.tests.iter_mut().zip(&s.tests) {
        t.command.clone_from(&cmd.name);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_that_could_not_run_is_reported_with_its_cause() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let e = DeployError::Io {
            context: "creating the shadow".into(),
            source: std::io::Error::other("EAGAIN"),
        };
        assert!(report_shadow(Err(e), &tx).is_err(), "still an error");
        match rx.try_recv() {
            Ok(DeployEvent::ShadowFailed { reason }) => {
                assert_eq!(reason, "creating the shadow: EAGAIN");
            }
            other => panic!("{other:?}"),
        }
    }
}
