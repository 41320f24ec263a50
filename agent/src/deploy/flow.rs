//! `deploy::run`: one deployment from snapshot to commit or rollback.
//!
//! The order: journal, snapshot, (shadow-first: the shadow, and a stop
//! unless it passed), live cgroup and journal, then the live install (with
//! the shadow beside it in concurrent mode), the monitoring period, and
//! the decision: an order from outside, or the local policy when there is
//! no controller (see `policy.rs`). Only this file moves a deployment's
//! journal through its phases while it runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backstop_common::window::Stream;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::cgroup::LiveCgroup;
use super::journal::{Journal, Phase, deployment_dir};
use super::live::{self, LiveOutcome, LivePlan};
use super::plan::{stage, unstage};
use super::policy::{Decision, Evidence, local_decision};
use super::rollback::{self, Host};
use super::{DeployError, DeployEvent, EventTx, Order, Outcome, Plan, StreamSink};
use crate::shadow::{self, ShadowOptions, ShadowReport};
use crate::snapshot::{self, Scope, Store};
use crate::track::SharedProbes;

/// What every deployment of one agent shares.
#[derive(Clone)]
pub struct Context {
    pub probes: SharedProbes,
    pub data: PathBuf,
    pub window: Duration,
}

/// Where the decision comes from: orders from the controller, or the local
/// policy once there is none (never was, or the channel closed).
struct Orders {
    rx: Option<UnboundedReceiver<Order>>,
}

impl Orders {
    fn local(&self) -> bool {
        self.rx.is_none()
    }

    /// The next order; None (and local from then on) when the controller
    /// is gone.
    async fn next(&mut self) -> Option<Order> {
        let rx = self.rx.as_mut()?;
        match rx.recv().await {
            Some(o) => Some(o),
            None => {
                tracing::warn!("the controller is gone: the local policy decides");
                self.rx = None;
                None
            }
        }
    }
}

/// The live install's evidence, gathered from its events.
#[derive(Default)]
struct Seen {
    oom_kills: u64,
}

/// Forward an event, noting what the local policy needs.
fn forward(ev: DeployEvent, seen: &mut Seen, tx: &EventTx) {
    if let DeployEvent::Process {
        stream: Stream::Live,
        process,
    } = &ev
        && process.kind == "oom_kill"
    {
        seen.oom_kills += 1;
    }
    let _ = tx.send(ev);
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
    if let Some(build) = &plan.build {
        let r = rollback::run_cmd(0, build, Path::new("/")).await;
        if r.exit_code != Some(0) {
            let reason = format!("the build {} failed: exit {:?}", build.name, r.exit_code);
            let _ = tx.send(DeployEvent::Step {
                stream: Stream::Live,
                step: r,
            });
            return finish(ctx, &mut j, Outcome::Refused { reason }, &tx);
        }
    }
    j.snapshot = Some(take_snapshot(&ctx.data, plan).await?);
    j.save(&ctx.data)?;
    let mut orders = Orders { rx: orders };
    if plan.mode == super::Mode::ShadowFirst && plan.shadow.is_some() {
        j.advance(&ctx.data, Phase::Shadowing)?;
        if let Some(reason) = shadow_first(ctx, plan, &j, &tx).await? {
            return finish(ctx, &mut j, Outcome::Refused { reason }, &tx);
        }
    } else {
        stage(plan)?;
    }
    let cgroup = LiveCgroup::create(id)?;
    j.cgroup = Some(cgroup.path.clone());
    j.advance(&ctx.data, Phase::Installing)?;
    let _ = tx.send(DeployEvent::Started {
        id: id.to_string(),
        snapshot: j.snapshot.clone().unwrap_or_default(),
        cgroup: j.cgroup.clone(),
    });
    let (decision, shadow) =
        install_and_monitor(ctx, &dir, plan, &cgroup, &mut orders, &mut j, &tx).await?;
    match decision {
        Order::Commit => {
            release(&cgroup);
            unstage(plan);
            shadow_done(shadow, &tx).await;
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
            let _ = tx.send(DeployEvent::RolledBack { report });
            shadow_done(shadow, &tx).await;
            finish(ctx, &mut j, Outcome::RolledBack { reason }, &tx)
        }
    }
}

/// Shadow-first: stage the artifact, run the shadow; when it fails, put
/// the scope (and the staged copy's /tmp) back and say why.
async fn shadow_first(
    ctx: &Context,
    plan: &Plan,
    j: &Journal,
    tx: &EventTx,
) -> Result<Option<String>, DeployError> {
    stage(plan)?;
    let report = run_shadow(ctx, plan, tx.clone()).await?;
    let passed = report.passed();
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
    Ok(())
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

/// A concurrent shadow still running: awaited after the decision is
/// carried out, so it never delays a rollback.
type ShadowTask = Option<tokio::task::JoinHandle<Result<ShadowReport, DeployError>>>;

/// The live install (and a concurrent shadow), the monitoring period and
/// the decision. A rollback order mid-install kills the live cgroup at
/// once; the install's end is still awaited, so its change log is closed
/// before the restore reads it.
async fn install_and_monitor(
    ctx: &Context,
    dir: &Path,
    plan: &Plan,
    cgroup: &LiveCgroup,
    orders: &mut Orders,
    j: &mut Journal,
    tx: &EventTx,
) -> Result<(Order, ShadowTask), DeployError> {
    // The shadow reports straight to `tx`; only live events are looked at.
    let shadow = (plan.mode == super::Mode::Concurrent && plan.shadow.is_some()).then(|| {
        let (ctx, plan, stx) = (ctx.clone(), plan.clone(), tx.clone());
        tokio::spawn(async move { run_shadow(&ctx, &plan, stx).await })
    });
    let (outcome, seen, ordered) = live_until_done(ctx, dir, plan, cgroup, orders, tx).await?;
    if let Some(o) = ordered {
        return Ok((o, shadow));
    }
    let hard = match local_decision(&evidence(&outcome, &seen)) {
        Decision::RollBack { reason } => Some(reason),
        Decision::FinishAndWait => None,
    };
    if let (Some(reason), true) = (&hard, orders.local()) {
        let reason = reason.clone();
        return Ok((Order::Rollback { reason }, shadow));
    }
    if hard.is_none() {
        j.advance(&ctx.data, Phase::Monitoring)?;
        if let Some(o) = monitor(plan, orders, tx).await {
            return Ok((o, shadow));
        }
    }
    Ok((decide(orders, hard).await?, shadow))
}

/// Run the live install to its end, forwarding its events; an order that
/// arrives meanwhile is returned (a rollback kills the cgroup at once).
async fn live_until_done(
    ctx: &Context,
    dir: &Path,
    plan: &Plan,
    cgroup: &LiveCgroup,
    orders: &mut Orders,
    tx: &EventTx,
) -> Result<(LiveOutcome, Seen, Option<Order>), DeployError> {
    let (itx, mut irx) = unbounded_channel();
    let live_plan = LivePlan {
        root: plan.root.clone(),
        steps: plan.steps.clone(),
        io: dir.join("io"),
        changes: dir.join("changes"),
        window: ctx.window,
    };
    let (probes, cg) = (ctx.probes.clone(), cgroup.clone());
    let mut live = tokio::spawn(async move { live::install(&probes, &live_plan, &cg, &itx).await });
    let mut seen = Seen::default();
    let mut ordered: Option<Order> = None;
    let outcome = loop {
        tokio::select! {
            r = &mut live => break joined(r)??,
            Some(ev) = irx.recv() => forward(ev, &mut seen, tx),
            o = orders.next(), if ordered.is_none() && !orders.local() => {
                if let Some(Order::Rollback { .. }) = &o {
                    let cg = cgroup.clone();
                    let _ = tokio::task::spawn_blocking(move || cg.kill()).await;
                }
                ordered = o;
            }
        }
    };
    while let Ok(ev) = irx.try_recv() {
        forward(ev, &mut seen, tx);
    }
    Ok((outcome, seen, ordered))
}

/// After the monitoring period: the controller's order, or (none, or
/// gone) the local policy's.
async fn decide(orders: &mut Orders, hard: Option<String>) -> Result<Order, DeployError> {
    while !orders.local() {
        if let Some(o) = orders.next().await {
            return Ok(o);
        }
    }
    Ok(match hard {
        Some(reason) => Order::Rollback { reason },
        None => Order::Commit,
    })
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, DeployError> {
    r.map_err(|e| DeployError::Io {
        context: "a deployment task".into(),
        source: std::io::Error::other(e),
    })
}

/// Wait for a concurrent shadow and pass its report on.
async fn shadow_done(task: ShadowTask, tx: &EventTx) {
    let Some(h) = task else { return };
    match joined(h.await).and_then(|r| r) {
        Ok(report) => {
            let _ = tx.send(DeployEvent::Shadow {
                report: Box::new(report),
            });
        }
        Err(e) => tracing::error!("the shadow install failed to run: {e}"),
    }
}

fn evidence(o: &LiveOutcome, seen: &Seen) -> Evidence {
    let step_name = |n: usize| {
        o.steps
            .iter()
            .find(|s| s.index == n)
            .map(|s| s.name.clone())
    };
    let failed = o.failed_step();
    Evidence {
        failed_step: failed.and_then(|s| s.exit_code.map(|c| (s.name.clone(), c))),
        timed_out_step: o.timed_out.and_then(step_name),
        oom_kills: seen.oom_kills,
        killed_step: failed
            .filter(|s| s.exit_code.is_none())
            .map(|s| s.name.clone())
            .or_else(|| {
                // The runner itself died without a step result.
                (o.summary.exit_code != 0 && failed.is_none())
                    .then(|| format!("runner (exit {})", o.summary.exit_code))
            }),
    }
}

/// Run each probe at its interval for the monitoring period (each at
/// least once); an order ends it early.
async fn monitor(plan: &Plan, orders: &mut Orders, tx: &EventTx) -> Option<Order> {
    let start = tokio::time::Instant::now();
    let end = start + plan.monitor;
    let mut due = vec![start; plan.probes.len()];
    loop {
        for (p, at) in plan.probes.iter().zip(due.iter_mut()) {
            if *at <= tokio::time::Instant::now() {
                let probe = super::health::probe(p, &plan.root).await;
                let _ = tx.send(DeployEvent::Probe { probe });
                *at = tokio::time::Instant::now() + p.interval.max(Duration::from_millis(100));
            }
        }
        let next = due.iter().copied().min().unwrap_or(end).min(end);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            Some(o) = orders.next(), if !orders.local() => return Some(o),
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
    }
}

async fn run_shadow(ctx: &Context, plan: &Plan, tx: EventTx) -> Result<ShadowReport, DeployError> {
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
    };
    let mut sink = StreamSink {
        tx,
        stream: Stream::Shadow,
    };
    Ok(shadow::run(&ctx.probes, &ctx.data, &opts, &mut sink).await?)
}

/// After a commit: an empty live cgroup is removed; one with tasks (the
/// service the install started) stays until they end, and the next
/// agent's sweep removes it then.
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
        let (tx, _rx) = unbounded_channel();
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
