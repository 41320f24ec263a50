//! `deploy::run`: one deployment from snapshot to commit or rollback.
//!
//! The order: journal, build, room check, snapshot, (shadow-first: the shadow, and a
//! stop unless it passed), live cgroup and journal, then the live install
//! (with the shadow beside it in concurrent mode), the monitoring period,
//! and the decision (`install.rs`): an order from outside, or the local
//! policy when there is no controller (see `policy.rs`). Only this file
//! and `install.rs` move a deployment's journal through its phases while
//! it runs; `recover.rs` finishes the ones a stopped agent left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backstop_common::window::Stream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use super::cgroup::LiveCgroup;
use super::install::{Orders, install_and_monitor};
use super::journal::{Journal, Phase, deployment_dir};
use super::plan::{stage, unstage};
use super::rollback::{self, Host};
use super::shadowing::{shadow_done, shadow_first};
use super::{DeployError, DeployEvent, EventTx, Order, Outcome, Plan};
use crate::snapshot::{self, Scope, Store};
use crate::track::SharedProbes;

/// What every deployment of one agent shares.
#[derive(Clone)]
pub struct Context {
    pub probes: SharedProbes,
    pub data: PathBuf,
    pub window: Duration,
}

/// Run deployment `id`. Events go to `tx`; `orders` is the controller's
/// channel (None: decide by the local policy alone).
pub async fn run(
    ctx: &Context,
    id: &str,
    plan: &Plan,
    orders: Option<UnboundedReceiver<Order>>,
    tx: EventTx,
) -> Result<Outcome, DeployError> {
    run_connected(ctx, id, plan, orders, None, tx).await
}

/// Build the artifact when the plan says how (on the host, not in the
/// root); the reason when the build failed.
async fn build_artifact(plan: &Plan, tx: &EventTx) -> Option<String> {
    let build = plan.build.as_ref()?;
    let r = rollback::run_cmd(0, build, Path::new("/")).await;
    if r.exit_code == Some(0) {
        return None;
    }
    let reason = format!("the build {} failed: exit {:?}", build.name, r.exit_code);
    let _ = tx.send(DeployEvent::Step {
        stream: Stream::Live,
        step: r,
    });
    Some(reason)
}

/// Whether the artifact fits where it unpacks (`room/`), asked after
/// the build (which may make it) and before the snapshot.
async fn room_refusal(plan: &Plan) -> Option<String> {
    if plan.room_check.is_empty() {
        return None;
    }
    let (root, paths) = (plan.root.clone(), plan.room_check.clone());
    let upper = plan.shadow.as_ref().and_then(|s| s.upper_bytes);
    tokio::task::spawn_blocking(move || super::room::refusal(&root, &paths, upper))
        .await
        .unwrap_or_else(|e| Some(format!("the room check failed: {e}")))
}

/// `run` for the long-running agent: `connected` says whether it has a
/// session with its controller, so a hard failure while it has none is
/// rolled back by the local policy at once (see `policy.rs`).
pub async fn run_connected(
    ctx: &Context,
    id: &str,
    plan: &Plan,
    orders: Option<UnboundedReceiver<Order>>,
    connected: Option<watch::Receiver<bool>>,
    tx: EventTx,
) -> Result<Outcome, DeployError> {
    check(plan)?;
    let dir = deployment_dir(&ctx.data, id)?;
    let mut j = Journal {
        id: id.to_string(),
        plan: plan.clone(),
        snapshot: None,
        cgroup: None,
        phase: Phase::Snapshotting,
        note: None,
    };
    j.save(&ctx.data)?;
    if let Some(reason) = build_artifact(plan, &tx).await {
        return finish(ctx, &mut j, Outcome::Refused { reason }, &tx);
    }
    if let Some(reason) = room_refusal(plan).await {
        if !plan.dry_run {
            return finish(ctx, &mut j, Outcome::Refused { reason }, &tx);
        }
        tracing::warn!(
            deployment = id,
            "dry run, going on; the room check would refuse: {reason}"
        );
        let _ = tx.send(DeployEvent::WouldRefuse { reason });
    }
    j.snapshot = Some(take_snapshot(&ctx.data, plan).await?);
    j.save(&ctx.data)?;
    let mut orders = Orders {
        rx: orders,
        connected,
        decided_locally: false,
    };
    if plan.mode == super::Mode::ShadowFirst && plan.shadow.is_some() {
        j.advance(&ctx.data, Phase::Shadowing)?;
        if let Some(reason) = shadow_first(ctx, plan, &j, &tx).await? {
            return finish(ctx, &mut j, Outcome::Refused { reason }, &tx);
        }
    } else {
        stage(plan)?;
    }
    super::baseline::measure(plan, &tx).await;
    let cgroup = LiveCgroup::create(id)?;
    super::memory::limit(&cgroup, plan.memory_limit)?;
    j.cgroup = Some(cgroup.path.clone());
    j.advance(&ctx.data, Phase::Installing)?;
    let _ = tx.send(DeployEvent::Started {
        id: id.to_string(),
        snapshot: j.snapshot.clone().unwrap_or_default(),
        cgroup: j.cgroup.clone(),
    });
    let (decision, shadow) =
        install_and_monitor(ctx, &dir, plan, &cgroup, &mut orders, &mut j, &tx)
            .await
            .unwrap_or_else(|e| undo_after(id, &e));
    match decision {
        Order::Commit => {
            release(&cgroup);
            unstage(plan);
            shadow_done(shadow).await;
            finish(ctx, &mut j, Outcome::Committed, &tx)
        }
        Order::Rollback { reason } => {
            j.advance(&ctx.data, Phase::RollingBack)?;
            let mut host = Host {
                data: &ctx.data,
                plan,
                cgroup: Some(cgroup),
                snapshot: j.snapshot.clone(),
                changes: Some(dir.join("changes")),
            };
            let report = rollback::rollback(&mut host, plan, &reason).await;
            let local = orders.decided_locally;
            let _ = tx.send(DeployEvent::RolledBack { report, local });
            shadow_done(shadow).await;
            finish(ctx, &mut j, Outcome::RolledBack { reason }, &tx)
        }
    }
}

/// The agent itself failed after the live cgroup was made (no free probe
/// slot while many deployments and execs run, an I/O error): the install
/// may have begun and the artifact is staged, so roll back now, as for an
/// order. Returning the error instead left the root half-changed until
/// the next agent start recovered it, by when a later deployment to the
/// same root (the controller saw this one end) could have run, and that
/// recovery's restore would have undone it too.
fn undo_after(id: &str, e: &DeployError) -> (Order, super::shadowing::ShadowTask) {
    tracing::error!(
        deployment = id,
        "the live install failed in the agent: {e}; rolling back"
    );
    let reason = format!("the agent failed mid-install: {e}");
    (Order::Rollback { reason }, None)
}

/// A plan the agent can carry out: a root with a shell for chroot'ed
/// steps, something to install, something to snapshot.
fn check(plan: &Plan) -> Result<(), DeployError> {
    let bad = |field: &str, reason: String| DeployError::Plan {
        field: field.into(),
        reason,
    };
    if plan.steps.is_empty() {
        return Err(bad("steps", "no step to run".into()));
    }
    if plan.scope.is_empty() {
        return Err(bad("scope.paths", "nothing to snapshot".into()));
    }
    if plan.root != Path::new("/") && !plan.root.join("bin/sh").exists() {
        let root = plan.root.display();
        return Err(bad("root", format!("{root} has no /bin/sh to chroot into")));
    }
    super::memory::check(plan)
}

async fn take_snapshot(data: &Path, plan: &Plan) -> Result<String, DeployError> {
    let scope = Scope {
        root: plan.root.clone(),
        paths: plan.scope.clone(),
        excludes: plan.excludes.clone(),
    };
    let data = data.to_path_buf();
    let r = tokio::task::spawn_blocking(move || {
        let store = Store::open(&data)?;
        snapshot::create(&store, &scope)
    })
    .await
    .map_err(|e| DeployError::Io {
        context: "the snapshot thread".into(),
        source: std::io::Error::other(e),
    })??;
    Ok(r.id)
}

pub(super) fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, DeployError> {
    r.map_err(|e| DeployError::Io {
        context: "a deployment task".into(),
        source: std::io::Error::other(e),
    })
}

/// After a commit: an empty live cgroup is removed; one with tasks (the
/// service the install started) stays until they end, and the running
/// agent's sweep (`recover::sweep_cgroups`, every few seconds) removes it
/// then.
fn release(cgroup: &LiveCgroup) {
    if !cgroup.populated().unwrap_or(true)
        && let Err(e) = cgroup.remove()
    {
        tracing::warn!("{e}");
    }
}

fn finish(
    ctx: &Context,
    j: &mut Journal,
    outcome: Outcome,
    tx: &EventTx,
) -> Result<Outcome, DeployError> {
    let (phase, note) = match &outcome {
        Outcome::Committed => (Phase::Committed, None),
        Outcome::RolledBack { reason } | Outcome::Refused { reason } => {
            (Phase::RolledBack, Some(reason.clone()))
        }
    };
    j.note = note;
    j.advance(&ctx.data, phase)?;
    let _ = tx.send(DeployEvent::Finished {
        id: j.id.clone(),
        outcome: outcome.clone(),
    });
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The long-running agent runs deployments on spawned tasks.
    #[test]
    fn a_deployment_and_a_recovery_can_run_on_a_spawned_task() {
        fn send<T: Send>(_: &T) {}
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let probes_unloaded = |ctx: &Context| {
            let plan = super::super::tests::plan();
            let f = run(ctx, "d", &plan, None, tx.clone());
            send(&f);
        };
        let _ = probes_unloaded;
        let f = super::super::recover::recover(Path::new("/nonexistent"));
        send(&f);
    }
}
