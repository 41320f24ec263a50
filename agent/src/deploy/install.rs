//! The live install and what follows it: the monitoring period and the
//! decision. Orders from the controller win; without one (never, or the
//! channel closed), the local policy decides.

use std::path::Path;
use std::time::Duration;

use backstop_common::window::Stream;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::sync::watch;

use super::cgroup::LiveCgroup;
use super::flow::{Context, joined};
use super::journal::{Journal, Phase};
use super::live::{self, LiveOutcome, LivePlan};
use super::policy::{Decision, Evidence, local_decision};
use super::shadowing::{ShadowTask, report_shadow, run_shadow};
use super::{DeployError, DeployEvent, EventTx, Order, Plan};

/// Where the decision comes from: orders from the controller, or the local
/// policy once there is none (never was, or the channel closed).
pub(super) struct Orders {
    pub(super) rx: Option<UnboundedReceiver<Order>>,
    /// Whether the long-running agent has a session with its controller
    /// (None: the local verb, which never has one).
    pub(super) connected: Option<watch::Receiver<bool>>,
    /// The rollback was the local policy's, not an order.
    pub(super) decided_locally: bool,
}

impl Orders {
    fn local(&self) -> bool {
        self.rx.is_none()
    }

    /// No controller to wait for now: none at all, or the session is down.
    fn offline(&self) -> bool {
        self.local() || self.connected.as_ref().is_some_and(|c| !*c.borrow())
    }

    /// The local policy takes this deployment over for good. The orders
    /// channel is dropped, so the agent sends no `ControllerBack` for it
    /// and a late order finds it closed.
    fn go_local(&mut self) {
        self.rx = None;
        self.decided_locally = true;
    }

    /// The next order; None (and local from then on) when the controller
    /// is gone.
    async fn next(&mut self) -> Option<Order> {
        let rx = self.rx.as_mut()?;
        if let Some(o) = rx.recv().await {
            Some(o)
        } else {
            tracing::warn!("the controller is gone: the local policy decides");
            self.rx = None;
            None
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

/// The live install (and a concurrent shadow), the monitoring period and
/// the decision. A rollback order mid-install kills the live cgroup at
/// once; the install's end is still awaited, so its change log is closed
/// before the restore reads it.
pub(super) async fn install_and_monitor(
    ctx: &Context,
    dir: &Path,
    plan: &Plan,
    cgroup: &LiveCgroup,
    orders: &mut Orders,
    j: &mut Journal,
    tx: &EventTx,
) -> Result<(Order, ShadowTask), DeployError> {
    // The shadow reports straight to `tx`, its report as soon as it ends
    // (not after the decision: its tests are evidence for that decision);
    // only live events are looked at here.
    let shadow = (plan.mode == super::Mode::Concurrent && plan.shadow.is_some()).then(|| {
        let (ctx, plan, stx, snap) = (ctx.clone(), plan.clone(), tx.clone(), j.snapshot.clone());
        tokio::spawn(async move {
            report_shadow(run_shadow(&ctx, &plan, snap, stx.clone()).await, &stx)
        })
    });
    let (outcome, seen, ordered) = live_until_done(ctx, dir, plan, cgroup, orders, tx).await?;
    if let Some(o) = ordered {
        return Ok((o, shadow));
    }
    let hard = match local_decision(&evidence(&outcome, &seen)) {
        Decision::RollBack { reason } => Some(reason),
        Decision::FinishAndWait => None,
    };
    if let (Some(reason), true) = (&hard, orders.offline()) {
        let reason = reason.clone();
        orders.go_local();
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
        disk: super::disk::watched(&plan.root, &plan.scope),
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
/// gone) the local policy's. With a hard failure, losing the session is
/// enough to act alone; a healthy install waits for a controller however
/// long it is away (the policy never commits on its own authority).
async fn decide(orders: &mut Orders, hard: Option<String>) -> Result<Order, DeployError> {
    let mut lost = orders.connected.clone();
    while !orders.local() {
        if hard.is_some() && orders.offline() {
            break;
        }
        tokio::select! {
            o = orders.next() => {
                if let Some(o) = o {
                    return Ok(o);
                }
            }
            () = session_lost(lost.as_mut()), if hard.is_some() => {}
        }
    }
    if hard.is_some() {
        orders.go_local();
    }
    Ok(match hard {
        Some(reason) => Order::Rollback { reason },
        None => Order::Commit,
    })
}

/// Resolves once the session is down (never without a session to watch).
async fn session_lost(c: Option<&mut watch::Receiver<bool>>) {
    match c {
        Some(c) => {
            let _ = c.wait_for(|up| !*up).await;
        }
        None => std::future::pending().await,
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
        super::service::sample(plan, false, tx);
        let next = due.iter().copied().min().unwrap_or(end).min(end);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            Some(o) = orders.next(), if !orders.local() => return Some(o),
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
    }
}

#[cfg(test)]
#[path = "install_race_tests.rs"]
mod race_tests;
