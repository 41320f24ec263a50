//! What one deployment says over the wire: the events an agent reports as
//! it carries a deployment out ([`DeployEvent`], inside
//! `AgentMsg::Deployment`), and the orders the controller gives it
//! ([`Order`], inside `ControllerMsg::Decision`).
//!
//! Why these live in `common` and not in the agent: the controller stores
//! them, builds the correlation engine's evidence from them and shows
//! them; one type per idea on both ends means no hand-kept copy drifts.
//! Windows and lifecycle records are not here: they keep flowing as
//! `AgentMsg::Windows` / `AgentMsg::Events` (a window carries its stream,
//! live or shadow), so the store and model see one kind of window.
//!
//! Postcard rule (see `wire.rs`): externally tagged enums only, no
//! `flatten`, no `skip_serializing_if`. The JSON spelling (stored events,
//! `backstop show --json`) is serde's default for these shapes.

use serde::{Deserialize, Serialize};

use crate::window::Stream;

mod samples;
pub use samples::{MemorySample, ProbeResult, ServiceSample};

/// One command's result: a live install step, a shadow step or test, a
/// rollback hook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// Position in its list (steps, tests or hooks), from 0.
    pub index: usize,
    pub name: String,
    /// None when it never exited on its own (killed, timed out).
    pub exit_code: Option<i32>,
    pub duration_ms: f64,
    pub timed_out: bool,
    /// The last few KiB of its output, for the SRE reading `show`.
    pub output_tail: String,
}

impl StepResult {
    /// Exited 0 within its timeout.
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
}

/// What the shadow install reported, reduced to what the controller
/// decides from and shows. The full filesystem diff stays on the agent
/// (it goes into the diagnostics bundle, not over the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowSummary {
    /// The install steps as the shadow ran them.
    pub steps: Vec<StepResult>,
    /// The manifest's shadow tests.
    pub tests: Vec<StepResult>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub oom_kills: u64,
    /// Paths the shadow install added, changed or removed in its overlay.
    pub changed_paths: u64,
    /// Whatever teardown could not do (should be empty).
    pub cleanup_problems: Vec<String>,
}

impl ShadowSummary {
    /// Every step and test exited 0 and nothing was OOM-killed.
    pub fn passed(&self) -> bool {
        !self.timed_out
            && !self.oom_killed
            && self.steps.iter().all(StepResult::passed)
            && self.tests.iter().all(StepResult::passed)
    }

    /// The first test that did not pass, for a reason such as "shadow
    /// test `greets` exited 1".
    pub fn first_failed_test(&self) -> Option<&StepResult> {
        self.tests.iter().find(|t| !t.passed())
    }
}

/// What the restore part of a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestoreSummary {
    pub snapshot: String,
    /// Why the whole scope was walked instead of the change log's paths.
    pub full_walk_reason: Option<String>,
    pub duration_ms: f64,
}

/// The agent's account of one rollback, in its order: kill the live
/// cgroup, restore the snapshot, run the hooks, re-run the probes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollbackReport {
    pub reason: String,
    /// The pids still in the live cgroup when it was killed.
    pub killed_pids: Vec<u32>,
    /// None when the restore did not happen (see `problems`).
    pub restore: Option<RestoreSummary>,
    pub hooks: Vec<StepResult>,
    /// The health probes, re-run against the restored state.
    pub probes: Vec<ProbeResult>,
    /// What went wrong on the way (empty when all went well).
    pub problems: Vec<String>,
}

impl RollbackReport {
    /// Restored exactly, every hook exited 0, every probe passed.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
            && self.restore.is_some()
            && self.hooks.iter().all(StepResult::passed)
            && self.probes.iter().all(|p| p.ok)
    }
}

/// The seq of the `Interrupted` event an agent reports at its start for a
/// deployment a killed agent left: the dead agent's count is lost with it,
/// so the report takes a seq after any it could have used.
pub const INTERRUPTED_SEQ: u64 = i64::MAX as u64;

/// What an agent reports about a deployment, in the order it happens.
/// Exactly one of `RolledBack`, `Committed`, `Interrupted`, `Refused`,
/// `Failed` ends a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployEvent {
    /// The snapshot is taken and the installs start.
    Started { snapshot: String },
    /// A step of the live install or of the shadow's install ended.
    Step { stream: Stream, step: StepResult },
    /// A shadow test ended.
    ShadowTest { step: StepResult },
    /// A health probe ran (during the install or the monitoring period).
    Probe { probe: ProbeResult },
    /// The shadow finished and was torn down.
    Shadow { report: ShadowSummary },
    /// A concurrent shadow could not run (its set-up failed, its creator
    /// died): why. Its evidence is missing, which is never a pass.
    ShadowFailed { reason: String },
    /// The live install finished its steps (all passed when `ok`); the
    /// monitoring period begins.
    Installed { ok: bool },
    /// Rolled back, on an order or by the agent's local policy (`local`).
    RolledBack { report: RollbackReport, local: bool },
    /// Committed: the snapshot is released and the change stays.
    Committed { local: bool },
    /// An agent found this deployment unfinished when it started (it was
    /// killed mid-install) and rolled it back.
    Interrupted { report: RollbackReport },
    /// The live install never ran, and nothing on the host changed: the
    /// shadow failed (shadow-first), the build failed, or the artifact
    /// does not fit where it unpacks (the agent's room check).
    Refused { reason: String },
    /// The deployment could not start (a bad plan, no room for the
    /// snapshot, a failing build); nothing on the host changed.
    Failed { reason: String },
    /// In a dry run, the agent would have refused the deployment here,
    /// before anything changed, for `reason` (its room check); being a
    /// dry run, it went on.
    WouldRefuse { reason: String },
    /// A health probe ran just before the live install started: the
    /// performance check's "before" sample (`Probe` results are "during").
    /// Kept apart from `Probe` so a service already slow or down before
    /// the deployment is never counted as the install's failure.
    Baseline { probe: ProbeResult },

    /// The agent lost the controller while this deployment ran: from here
    /// on its local policy has the say on a hard failure, so the
    /// controller does not decide on the events that follow (they arrive
    /// late, replayed from the agent's outbox) until `ControllerBack`.
    ControllerLost,
    /// The agent reached a controller again and still waits for its order
    /// (it has not decided locally): the controller decides once more.
    ControllerBack,

    /// One reading of the live install's memory cgroup, taken once a
    /// window while the install runs, when the manifest sets
    /// `monitor.memory_limit_mb` (the memory-growth rule's levels).
    LiveMemory { sample: MemorySample },
    /// One reading of the manifest's `monitor.service_cgroup`: with each
    /// baseline round (`baseline`) and each monitoring round after.
    Service { sample: ServiceSample },
}

impl DeployEvent {
    /// This event ends the deployment.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            DeployEvent::RolledBack { .. }
                | DeployEvent::Committed { .. }
                | DeployEvent::Interrupted { .. }
                | DeployEvent::Refused { .. }
                | DeployEvent::Failed { .. }
        )
    }

    /// A short name, for the store's `kind` column and progress lines.
    pub fn kind(&self) -> &'static str {
        match self {
            DeployEvent::Started { .. } => "started",
            DeployEvent::Step { .. } => "step",
            DeployEvent::ShadowTest { .. } => "shadow_test",
            DeployEvent::Probe { .. } => "probe",
            DeployEvent::Shadow { .. } => "shadow",
            DeployEvent::ShadowFailed { .. } => "shadow_failed",
            DeployEvent::Installed { .. } => "installed",
            DeployEvent::RolledBack { .. } => "rolled_back",
            DeployEvent::Committed { .. } => "committed",
            DeployEvent::Interrupted { .. } => "interrupted",
            DeployEvent::Refused { .. } => "refused",
            DeployEvent::Failed { .. } => "failed",
            DeployEvent::WouldRefuse { .. } => "would_refuse",
            DeployEvent::Baseline { .. } => "baseline",

            DeployEvent::ControllerLost => "controller_lost",
            DeployEvent::ControllerBack => "controller_back",
            DeployEvent::LiveMemory { .. } => "live_memory",
            DeployEvent::Service { .. } => "service",
        }
    }
}

/// The controller's order about a running deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Kill the live tree, restore, run the hooks, re-probe, report.
    Rollback { reason: String },
    /// Keep the change: release the snapshot and finish.
    Commit,
}

#[cfg(test)]
mod tests;
