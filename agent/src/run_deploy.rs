//! The long-running agent's side of `ControllerMsg::Deploy`: start the
//! executor (`deploy::run`) in the background, forward the controller's
//! `Decision` orders to it, and put what it reports into the durable
//! outbox: windows as `AgentMsg::Windows`, lifecycle records as
//! `AgentMsg::Events`, everything else as `AgentMsg::Deployment` in
//! common's `DeployEvent` (converted here, at the edge), numbered per
//! deployment so a redelivered event is stored once. Unacknowledged
//! messages are redelivered on the next connection, as for `exec`; when
//! the orders channel closes, the executor's local policy decides.
//! At the agent's start, `recover` rolls back what a killed agent left
//! unfinished and reports each as `Interrupted` through the same outbox.
//!
//! The agent keeps the controller's rule itself: one deployment per root
//! at a time, nested roots included (two would fight over dpkg's lock,
//! and the outer one's restore would undo the inner one's install). The
//! controller refuses such a deployment before sending it; the agent
//! refuses it again, so that a controller's bug, or a second controller
//! the host was enrolled with, cannot turn a restore against another
//! deployment's install.
//!
//! A child module of `run` (for its outbox).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use backstop_common::deploy as wire;
use backstop_common::manifest::Manifest;
use backstop_common::wire::AgentMsg;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::watch;

use super::OutboxHandle;
use crate::deploy::{self, DeployEvent, Order, Outcome, Plan};

/// One running deployment's channels: the controller's orders in, and
/// its event stream (for the session markers).
struct Entry {
    orders: UnboundedSender<Order>,
    events: UnboundedSender<DeployEvent>,
    root: PathBuf,
}

/// Whether two roots are one tree or one holds the other, as given or as
/// they resolve now (a symlink between them is one tree; resolving is
/// only read here, never acted on).
pub(super) fn roots_overlap(a: &Path, b: &Path) -> bool {
    let nested = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    nested(a, b) || nested(&real(a), &real(b))
}

/// Why a deployment on `root` cannot start beside `running` (the
/// running one it overlaps, named); None when it can.
fn refusal(running: &HashMap<String, Entry>, root: &Path) -> Option<String> {
    let (other, e) = running.iter().find(|(_, e)| roots_overlap(&e.root, root))?;
    Some(format!(
        "this agent already runs deployment {other} on root {}, which overlaps root {}: one deployment per root (nested roots included) at a time",
        e.root.display(),
        root.display()
    ))
}

/// The deployments this agent runs, and whether it has a session with its
/// controller (what the local policy needs to know, `install.rs`).
#[derive(Clone)]
pub(super) struct Running {
    map: Arc<Mutex<HashMap<String, Entry>>>,
    connected: Arc<watch::Sender<bool>>,
}

impl Default for Running {
    fn default() -> Self {
        Running {
            map: Arc::default(),
            connected: Arc::new(watch::channel(false).0),
        }
    }
}

/// What [`Running::admit`] made of a deployment.
#[derive(Debug, PartialEq)]
enum Admit {
    /// Entered: it may run.
    Started,
    /// Its id runs already.
    AlreadyRunning,
    /// Its root overlaps a running one's: why.
    Refused(String),
}

impl Running {
    /// Enter deployment `id` unless it runs already or its root overlaps a
    /// running deployment's; one lock for the check and the entry, so two
    /// starts cannot both pass.
    fn admit(&self, id: &str, entry: Entry) -> Admit {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(id) {
            return Admit::AlreadyRunning;
        }
        if let Some(reason) = refusal(&map, &entry.root) {
            return Admit::Refused(reason);
        }
        map.insert(id.to_string(), entry);
        Admit::Started
    }

    /// How many deployments run now (for `/metrics`).
    pub(super) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Forward the controller's order; false when no such deployment runs.
    pub(super) fn order(&self, id: &str, order: wire::Order) -> bool {
        let order = match order {
            wire::Order::Rollback { reason } => Order::Rollback { reason },
            wire::Order::Commit => Order::Commit,
        };
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(id).is_some_and(|e| e.orders.send(order).is_ok())
    }

    /// The session with the controller came up (true) or went down.
    /// Each deployment still waiting on the controller gets a marker in
    /// its event stream first (`ControllerLost` / `ControllerBack`), so
    /// the controller, reading the stream later, knows which of its events
    /// the local policy had the say over; one the local policy already
    /// took over (its orders channel closed) gets none. The lock is held
    /// across both, so no deployment starts between marker and flag.
    pub(super) fn session(&self, up: bool) {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if *self.connected.borrow() == up {
            return;
        }
        for (id, e) in map.iter().filter(|(_, e)| !e.orders.is_closed()) {
            tracing::info!(
                deployment = id,
                connected = up,
                "marking the controller's session"
            );
            let _ = e.events.send(DeployEvent::Controller { connected: up });
        }
        self.connected.send_replace(up);
    }
}

/// Start deployment `id` in the background; it outlives the connection.
pub(super) fn start(
    ctx: deploy::Context,
    outbox: OutboxHandle,
    running: Running,
    id: String,
    manifest: &Manifest,
    dry_run: bool,
) {
    // A dry run never acts, and a refusal would: the room check's
    // refusal is sent as `WouldRefuse` and the install goes on.
    let plan = Plan {
        dry_run,
        ..Plan::from_manifest(manifest, &id)
    };
    let (otx, orx) = unbounded_channel();
    let (etx, mut erx) = unbounded_channel();
    let connected = running.connected.subscribe();
    let entry = Entry {
        orders: otx,
        events: etx.clone(),
        root: plan.root.clone(),
    };
    match running.admit(&id, entry) {
        Admit::Started => {}
        Admit::AlreadyRunning => {
            // Its events carry seqs from 0 already: a second run would
            // only collide with them.
            tracing::warn!(
                deployment = id,
                "already running; a second start is ignored"
            );
            return;
        }
        Admit::Refused(reason) => {
            tracing::warn!(deployment = id, "refused: {reason}");
            let msg = AgentMsg::Deployment {
                deployment: id,
                seq: 0,
                event: Box::new(wire::DeployEvent::Refused { reason }),
            };
            tokio::spawn(async move { outbox.push_outcome(msg).await });
            return;
        }
    }
    let out = outbox.clone();
    let fid = id.clone();
    let forwarder = tokio::spawn(async move {
        let mut at = Forwarded::default();
        while let Some(ev) = erx.recv().await {
            forward(&out, &fid, &mut at, ev).await;
        }
        at.seq
    });
    tokio::spawn(async move {
        tracing::info!(deployment = id, "deploy");
        let result = deploy::run_connected(&ctx, &id, &plan, Some(orx), Some(connected), etx).await;
        running
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        let seq = forwarder.await.unwrap_or(0);
        if let Err(e) = result {
            let msg = AgentMsg::Deployment {
                deployment: id.clone(),
                seq,
                event: Box::new(wire::DeployEvent::Failed {
                    reason: e.to_string(),
                }),
            };
            outbox.push_outcome(msg).await;
        }
    });
}

/// Roll back the deployments a killed agent left unfinished and queue an
/// `Interrupted` report for each, delivered when a session comes up. A
/// recovery that fails is logged: the agent runs on, and the next start
/// tries again (the journals stay unfinished).
pub(super) async fn recover(data: &std::path::Path, outbox: &OutboxHandle) {
    let found = match deploy::recover::recover(data).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!("recovering unfinished deployments: {e}");
            return;
        }
    };
    for r in found {
        let report = r.rollback.unwrap_or_else(|| wire::RollbackReport {
            reason: "interrupted before the live install started; nothing to undo".into(),
            ..wire::RollbackReport::default()
        });
        tracing::warn!(deployment = r.id, found = ?r.found, "reporting an interrupted deployment");
        let msg = AgentMsg::Deployment {
            deployment: r.id.clone(),
            seq: wire::INTERRUPTED_SEQ,
            event: Box::new(wire::DeployEvent::Interrupted { report }),
        };
        // On disk before the recovery's own record of it goes: see
        // `deploy::recover`.
        let pushed = outbox.with(move |s| s.push(&msg)).await;
        if pushed == crate::outbox::Pushed::Written {
            deploy::recover::reported(data, &r.id);
        }
    }
}

/// Where a deployment's forwarder is: the next event's seq, and the last
/// live window sent (a probe is stamped with it).
#[derive(Default)]
struct Forwarded {
    seq: u64,
    live_window: u64,
}

async fn forward(outbox: &OutboxHandle, id: &str, at: &mut Forwarded, ev: DeployEvent) {
    let deployment = id.to_string();
    let event = match ev {
        DeployEvent::Window { window } => {
            if window.stream == backstop_common::window::Stream::Live {
                at.live_window = at.live_window.max(window.seq);
            }
            let windows = vec![window];
            return outbox.push(AgentMsg::Windows {
                deployment,
                windows,
            });
        }
        DeployEvent::Process { process, .. } => {
            let events = vec![process];
            return outbox.push(AgentMsg::Events { deployment, events });
        }
        other => match convert(other, at.live_window) {
            Some(e) => e,
            None => return,
        },
    };
    let msg = AgentMsg::Deployment {
        deployment,
        seq: at.seq,
        event: Box::new(event.clone()),
    };
    at.seq += 1;
    // Never shed: a lost step or probe result would change the decision.
    outbox.push_outcome(msg).await;
}

fn shadow_step(index: usize, s: crate::shadow::StepResult) -> wire::StepResult {
    wire::StepResult {
        index,
        name: s.command,
        exit_code: s.exit_code,
        duration_ms: s.duration_ms.unwrap_or(0.0),
        timed_out: false,
        output_tail: s.output_tail,
    }
}

/// The executor's event in the wire's terms; None for what the wire does
/// not carry (a committed or rolled-back `Finished`, already reported).
/// A probe is stamped with `live_window`, the last live window sent.
fn convert(ev: DeployEvent, live_window: u64) -> Option<wire::DeployEvent> {
    Some(match ev {
        DeployEvent::Started { snapshot, .. } => wire::DeployEvent::Started { snapshot },
        DeployEvent::Step { stream, step: s } => wire::DeployEvent::Step { stream, step: s },
        DeployEvent::Probe { mut probe } => {
            probe.window = live_window;
            wire::DeployEvent::Probe { probe }
        }
        DeployEvent::Baseline { probe } => wire::DeployEvent::Baseline { probe },
        DeployEvent::LiveMemory { sample } => wire::DeployEvent::LiveMemory { sample },
        DeployEvent::Service { sample } => wire::DeployEvent::Service { sample },
        DeployEvent::Shadow { report } => {
            let r = *report;
            let changed = r.diff.added.len() + r.diff.changed.len() + r.diff.removed.len();
            wire::DeployEvent::Shadow {
                report: wire::ShadowSummary {
                    steps: vec![shadow_step(0, r.cmd)],
                    tests: r
                        .tests
                        .into_iter()
                        .enumerate()
                        .map(|(i, t)| shadow_step(i, t))
                        .collect(),
                    timed_out: r.timed_out,
                    oom_killed: r.oom_killed,
                    oom_kills: r.oom_kills,
                    changed_paths: changed as u64,
                    cleanup_problems: r.cleanup_problems,
                },
            }
        }
        DeployEvent::ShadowFailed { reason } => wire::DeployEvent::ShadowFailed { reason },
        DeployEvent::WouldRefuse { reason } => wire::DeployEvent::WouldRefuse { reason },
        DeployEvent::RolledBack { report, local } => {
            wire::DeployEvent::RolledBack { report, local }
        }
        DeployEvent::Controller { connected: false } => wire::DeployEvent::ControllerLost,
        DeployEvent::Controller { connected: true } => wire::DeployEvent::ControllerBack,
        DeployEvent::Finished { outcome, .. } => match outcome {
            Outcome::Committed => wire::DeployEvent::Committed { local: false },
            Outcome::Refused { reason } => wire::DeployEvent::Refused { reason },
            Outcome::RolledBack { .. } => return None,
        },
        DeployEvent::Window { .. } | DeployEvent::Process { .. } => return None,
    })
}

#[cfg(test)]
#[path = "run_deploy_tests.rs"]
mod tests;
