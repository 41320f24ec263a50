//! The per-deployment decision, driven by the agent's events: after each
//! new event the daemon rebuilds the deployment's `Evidence` from what is
//! stored, calls the correlation engine (`decide`), and on its first
//! verdict other than `continue` stores it with its inputs and time and
//! acts: a rollback order goes to the agent, unless the deployment is a
//! dry run (then only the would-be decision and its time are stored).
//!
//! The model votes through the evidence's `windows`: `scoring.rs` scores
//! the stored live and shadow windows before every decision, and a batch
//! of windows is a trigger too (`after_windows`), so a deployment is
//! decided within the window that carries the evidence, not at its next
//! event. A deployment's decisions run one at a time (`turns.rs`), so
//! two triggers never both store one, and window batches that arrive
//! while a decision waits for its turn share it; other deployments decide
//! beside it. The fleet's history of the package is
//! read before every decision (`history.rs`). An acted rollback fires an
//! alert (`alerting.rs`), after its order is sent.

use std::sync::Arc;

use backstop_common::deploy::{DeployEvent, Order, StepResult};
use backstop_common::window::Stream;

use super::record::{Inputs, row};
use super::state::Daemon;
use crate::decide::evidence::{
    History, Phase, ProbeEvidence, ProbeResult, ShadowEvidence, StepOutcome, StepStatus,
};
use crate::decide::{Evidence, Params, Verdict, decide};
use crate::store::{DeployState, StoreError, now_ms};

fn outcome(s: &StepResult) -> StepOutcome {
    StepOutcome {
        name: s.name.clone(),
        status: StepStatus::finished(s.exit_code, s.timed_out, false),
    }
}

fn shadow_mut(e: &mut Evidence) -> &mut ShadowEvidence {
    e.shadow.get_or_insert_with(|| ShadowEvidence {
        steps: Vec::new(),
        tests: Vec::new(),
        oom_kills: 0,
        finished: false,
        error: None,
    })
}

/// The evidence the stored events give (no model scores: see the module
/// doc).
pub fn evidence(events: &[DeployEvent], steps: usize) -> Evidence {
    let mut e = Evidence {
        phase: Phase::Installing,
        windows: Vec::new(),
        live_steps: Vec::new(),
        shadow: None,
        probes: Vec::new(),
        performance: Vec::new(),
        history: History::default(),
        resources: crate::decide::trend::Resources::default(),
        no_model: None,
        window_length: None,
    };
    for ev in events {
        match ev {
            DeployEvent::Step {
                stream: Stream::Live,
                step,
            } => e.live_steps.push(outcome(step)),
            DeployEvent::Step {
                stream: Stream::Shadow,
                step,
            } => shadow_mut(&mut e).steps.push(outcome(step)),
            DeployEvent::ShadowTest { step } => shadow_mut(&mut e).tests.push(outcome(step)),
            DeployEvent::ShadowFailed { reason } => shadow_mut(&mut e).error = Some(reason.clone()),
            DeployEvent::Shadow { report } => {
                e.shadow = Some(ShadowEvidence {
                    steps: report.steps.iter().map(outcome).collect(),
                    tests: report.tests.iter().map(outcome).collect(),
                    oom_kills: report.oom_kills,
                    finished: true,
                    error: None,
                });
            }
            DeployEvent::Probe { probe } => {
                let r = ProbeResult {
                    window: probe.window,
                    ok: probe.ok,
                    latency_ms: Some(probe.latency_ms),
                    detail: probe.detail.clone(),
                };
                match e.probes.iter_mut().find(|p| p.name == probe.name) {
                    Some(p) => p.results.push(r),
                    None => e.probes.push(ProbeEvidence {
                        name: probe.name.clone(),
                        results: vec![r],
                    }),
                }
            }
            _ => {}
        }
    }
    if e.live_steps.len() >= steps && steps > 0 {
        e.phase = Phase::Monitoring;
    }
    e.performance = super::perf::series(events);
    e.performance.extend(super::service::series(events));
    e
}

/// After a new, non-final event of `id`: decide once from everything
/// stored, and act on the first verdict that is not `continue`.
pub(super) async fn after_event(
    daemon: &Arc<Daemon>,
    id: &str,
    event: &DeployEvent,
) -> Result<(), StoreError> {
    // A sample (one a window, in the model's 250 ms windows) is read like
    // a batch of windows: its decision may wait and be shared.
    if matches!(
        event,
        DeployEvent::LiveMemory { .. } | DeployEvent::Service { .. }
    ) {
        queue(daemon, id);
        return Ok(());
    }
    let done = decide_now(daemon, id, Trigger::Event).await?;
    let last_step = matches!(event, DeployEvent::Step { stream: Stream::Live, step }
        if step.passed() && step.index + 1 == done.steps);
    // Back from a time without the controller, with the install over: the
    // agent waits for an order (see `reconcile.rs`).
    let back = super::reconcile::agent_back(event) && done.installed;
    if !done.decided && (last_step || back) {
        // The install is done: decide for good when the monitoring period
        // the agent runs is over.
        let (daemon, id, period) = (daemon.clone(), id.to_string(), done.monitor);
        tokio::spawn(async move {
            tokio::time::sleep(period).await;
            if let Err(e) = super::shadow_wait::until_reported(&daemon, &id).await {
                tracing::warn!(deployment = id, "waiting for the shadow's report: {e}");
            }
            crate::metrics::evidence(&id);
            if let Err(e) = decide_now(&daemon, &id, Trigger::Monitored).await {
                tracing::error!(deployment = id, "deciding after monitoring: {e}");
            }
        });
    }
    Ok(())
}

/// After a batch of windows of `id` was stored: decide again, in a task
/// of its own (scoring must not hold up the agent's session), when `id` is
/// a deployment running here (an `exec` has no decision) and no decision
/// triggered by windows already waits for its turn (`turns.rs`).
pub(super) async fn after_windows(daemon: &Arc<Daemon>, id: &str) {
    if daemon.deploys.running(id).await {
        queue(daemon, id);
    }
}

/// Queue a decision of `id` in a task of its own, unless one already
/// waits for its turn (it will read what was just stored).
fn queue(daemon: &Arc<Daemon>, id: &str) {
    if !daemon.turns.queue(id) {
        return;
    }
    let (daemon, id) = (daemon.clone(), id.to_string());
    tokio::spawn(async move {
        if let Err(e) = decide_now(&daemon, &id, Trigger::Queued).await {
            tracing::error!(deployment = id, "deciding after windows or a sample: {e}");
        }
    });
}

/// What set a decision off.
#[derive(Clone, Copy, PartialEq)]
enum Trigger {
    /// A new event of the deployment.
    Event,
    /// A batch of its windows (`after_windows`) or a sample: queued,
    /// shared by the batches and samples stored before it starts.
    Queued,
    /// The monitoring period is over: phase `done`.
    Monitored,
}

struct Progress {
    decided: bool,
    /// Every live step ran and passed.
    installed: bool,
    steps: usize,
    monitor: std::time::Duration,
}

/// Decide from what is stored, store the first verdict other than
/// `continue`, and act.
async fn decide_now(
    daemon: &Arc<Daemon>,
    id: &str,
    trigger: Trigger,
) -> Result<Progress, StoreError> {
    let finished = trigger == Trigger::Monitored;
    let turn = daemon.turns.deciding(id);
    let _one_at_a_time = turn.lock().await;
    if trigger == Trigger::Queued {
        daemon.turns.started(id);
    }
    let (row_, manifest) = daemon.store.deploy(id).await?;
    let mut progress = Progress {
        decided: true,
        installed: false,
        steps: manifest.steps.len(),
        monitor: manifest.monitor.period,
    };
    if row_.state != DeployState::Running || !daemon.store.decisions(id).await?.is_empty() {
        return Ok(progress);
    }
    // The windows and events stored since its last decision, beside those
    // it read before (`score_cache.rs`). An error below drops them: the
    // next decision reads everything again.
    let mut cache = daemon.kept.take(id);
    cache.refresh_events(&daemon.store, id).await?;
    if super::reconcile::agent_alone(cache.events()) {
        daemon.kept.put(id, cache);
        progress.decided = false;
        return Ok(progress);
    }
    let mut inputs = Inputs {
        evidence: evidence(cache.events(), manifest.steps.len()),
        params: Params::from_policy(&manifest.policy),
        model: String::new(),
    };
    progress.installed = inputs.evidence.phase == Phase::Monitoring
        && inputs
            .evidence
            .live_steps
            .iter()
            .all(|s| s.status == StepStatus::Exited { code: 0 });
    if finished {
        inputs.evidence.phase = Phase::Done;
    }
    super::shadow_wait::expect(&mut inputs.evidence, &manifest);
    inputs.evidence.history =
        super::history::of(&daemon.store, &row_, &manifest, &inputs.params).await?;
    // The trends and the model both read every window.
    if let Err(e) = cache.refresh(&daemon.store, id).await {
        tracing::error!(deployment = id, "reading the stored windows: {e}");
    }
    inputs.evidence.resources =
        super::resources::resources(&cache.stored, cache.events(), &manifest);
    let scored = super::scoring::windows(daemon, id, cache, &inputs.params).await;
    (inputs.evidence.windows, inputs.model) = (scored.windows, scored.model);
    inputs.evidence.no_model = scored.no_model;
    inputs.evidence.window_length = scored.window_length;
    let decision = decide(&inputs.evidence, &inputs.params);
    let threshold = scored.threshold.map(|t| inputs.params.threshold_for(t));
    super::scoring::progress(daemon, &row_, &inputs.evidence, threshold).await;
    if decision.verdict == Verdict::Continue {
        progress.decided = false;
        return Ok(progress);
    }
    act(daemon, &row_, id, &inputs, &decision, finished).await?;
    Ok(progress)
}

/// Store a decision other than `continue` and act on it: order the
/// rollback (unless a dry run or inconclusive) and alert, or tell the
/// waiting agent to keep the install.
async fn act(
    daemon: &Arc<Daemon>,
    row_: &crate::store::DeployRow,
    id: &str,
    inputs: &Inputs,
    decision: &crate::decide::Decision,
    finished: bool,
) -> Result<(), StoreError> {
    let acted = !row_.dry_run && decision.verdict != Verdict::Inconclusive;
    daemon
        .store
        .add_decision(id, &row(inputs, decision, now_ms(), acted))
        .await?;
    crate::metrics::decided(id, &decision.verdict);
    let reason: Vec<String> = decision
        .reasons
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    let reason = reason.join("; ");
    tracing::info!(deployment = id, verdict = %decision.verdict, dry_run = row_.dry_run, reason, "decision");
    // A dry run, an inconclusive verdict, a commit: the install stays, and
    // the agent, which waits for an order once monitoring is over, is told
    // so (a dry run at once: nothing it decides is acted on).
    if !acted || decision.verdict == Verdict::Commit {
        if finished || row_.dry_run {
            let _ = daemon.order(&row_.host, id, Order::Commit).await;
        }
        return Ok(());
    }
    {
        let order = Order::Rollback {
            reason: reason.clone(),
        };
        if let Err(e) = daemon.order(&row_.host, id, order).await {
            tracing::warn!(
                deployment = id,
                "rollback order not sent: {e}; the agent's local policy applies"
            );
        }
        daemon
            .store
            .set_deploy_state(id, DeployState::RollingBack, Some(&reason))
            .await?;
        super::alerting::ordered(daemon, row_, decision).await;
    }
    Ok(())
}
