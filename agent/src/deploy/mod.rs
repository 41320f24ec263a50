//! One deployment, as the agent carries it out: snapshot the scope, run
//! the live install in a cgroup of its own (and the shadow install beside
//! it or before it), probe the service during the monitoring period, and
//! commit or roll back on an order from outside, or by the local policy
//! when there is no controller to give one.
//!
//! Everything that happens goes out as a [`DeployEvent`] on a channel:
//! the long-running agent forwards them to the controller, the local
//! `deploy` verb prints them. What a deployment must survive (the agent
//! killed mid-install) is in `journal.rs`; the order of a rollback in
//! `rollback.rs`; the live cgroup in `cgroup.rs`.

mod baseline;
pub mod cgroup;
mod disk;
mod flow;
pub mod health;
mod install;
pub mod journal;
pub mod live;
mod memory;
pub mod plan;
pub mod policy;
pub mod recover;
pub mod rollback;
pub mod room;
mod service;
mod shadowing;

use std::path::PathBuf;
use std::time::Duration;

use backstop_common::window::{Stream, Window};
use serde::{Deserialize, Serialize};

pub use flow::{Context, run, run_connected};
pub use health::{ProbeKind, ProbeResult, ProbeSpec};
pub use policy::{Decision, Evidence, local_decision};
pub use rollback::RollbackReport;

use crate::error::AgentError;
use crate::shadow::ShadowReport;
use crate::track::WindowSink;

/// A command the agent runs: a step, a shadow test, a hook, a probe.
/// `argv` is run as given (no shell implied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cmd {
    pub name: String,
    pub argv: Vec<String>,
    pub timeout: Duration,
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

pub use backstop_common::manifest::Mode;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowPlan {
    pub tests: Vec<Cmd>,
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    pub cpu_quota_us: Option<i64>,
    /// The size of the shadow's writable layer (a tmpfs).
    pub upper_bytes: Option<u64>,
}

/// What the agent needs of a manifest, in the agent's terms: built from
/// the manifest once (`Plan::from_manifest`), kept in the journal so a
/// later agent can roll the deployment back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub root: PathBuf,
    pub mode: Mode,
    pub steps: Vec<Cmd>,
    /// Absolute paths inside the root.
    pub scope: Vec<PathBuf>,
    pub excludes: Vec<String>,
    /// Host files copied into the root's `staging` directory (root other
    /// than "/"; see `plan.rs`).
    pub artifact: Vec<PathBuf>,
    pub staging: Option<PathBuf>,
    /// Run on the host before the snapshot; a failure ends the deployment
    /// before anything changed.
    pub build: Option<Cmd>,
    pub shadow: Option<ShadowPlan>,
    pub probes: Vec<ProbeSpec>,
    /// How long the service is watched after the install before commit.
    pub monitor: Duration,
    /// HTTP and TCP probe rounds taken just before the live install (the
    /// performance check's baseline, `baseline.rs`); 0: none. Absent
    /// from journals written before it existed.
    #[serde(default)]
    pub baseline_samples: u32,
    pub rollback_hooks: Vec<Cmd>,
    /// The live install's memory limit in bytes (`memory.rs`); None: none.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// The service's cgroup beneath the v2 root (`service.rs`).
    #[serde(default)]
    pub service_cgroup: Option<PathBuf>,
    /// The artifact's host paths whose .debs must fit before anything
    /// changes (`room/`); empty with `policy.guards.exhaustion` off, and
    /// in journals written before it existed.
    #[serde(default)]
    pub room_check: Vec<PathBuf>,
    /// A controller's dry run: the room check's refusal is reported
    /// (`WouldRefuse`) and the deployment goes on, as a dry run never
    /// acts.
    #[serde(default)]
    pub dry_run: bool,
}

/// One step's result (live step, shadow test, rollback hook): the wire's
/// type, so what the agent records is what the controller stores.
pub use backstop_common::deploy::StepResult;

/// How a deployment ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    Committed,
    RolledBack {
        reason: String,
    },
    /// Live never ran: the shadow failed in shadow-first mode, the build
    /// failed, or the artifact does not fit (`room/`).
    Refused {
        reason: String,
    },
}

/// What a deployment reports as it goes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum DeployEvent {
    Started {
        id: String,
        snapshot: String,
        cgroup: Option<PathBuf>,
    },
    Step {
        stream: Stream,
        step: StepResult,
    },
    Window {
        window: Window,
    },
    Process {
        stream: Stream,
        process: backstop_common::wire::ProcEvent,
    },
    Probe {
        probe: ProbeResult,
    },
    /// A probe run just before the live install (`baseline.rs`).
    Baseline {
        probe: ProbeResult,
    },
    Shadow {
        report: Box<ShadowReport>,
    },
    /// A concurrent shadow could not run: why (`shadowing.rs`).
    ShadowFailed {
        reason: String,
    },
    /// A dry run's room check would have refused the deployment (`flow.rs`).
    WouldRefuse {
        reason: String,
    },
    RolledBack {
        report: RollbackReport,
        /// Ordered by the local policy, not by the controller.
        local: bool,
    },
    /// The live cgroup's memory, once a window (`memory.rs`).
    LiveMemory {
        sample: backstop_common::deploy::MemorySample,
    },
    /// The service's cgroup (`service.rs`).
    Service {
        sample: backstop_common::deploy::ServiceSample,
    },
    /// The long-running agent lost (false) or regained (true) its
    /// controller while this deployment waited on it (`run_deploy.rs`).
    Controller {
        connected: bool,
    },
    Finished {
        id: String,
        outcome: Outcome,
    },
}

pub type EventTx = tokio::sync::mpsc::UnboundedSender<DeployEvent>;

/// An order from the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Rollback { reason: String },
    Commit,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no cgroup v2 hierarchy mounted (looked at {tried}): the live install needs one")]
    NoCgroup2 { tried: String },
    #[error("cgroup {path}: {what}: {source}")]
    Cgroup {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("cgroup {path} still has tasks {pids:?} after cgroup.kill")]
    CgroupStuck { path: PathBuf, pids: Vec<u32> },
    #[error("journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{field}: {reason}")]
    Plan { field: String, reason: String },
    #[error(transparent)]
    Agent(#[from] Box<AgentError>),
}

impl From<AgentError> for DeployError {
    fn from(e: AgentError) -> Self {
        DeployError::Agent(Box::new(e))
    }
}

impl From<crate::snapshot::SnapshotError> for DeployError {
    fn from(e: crate::snapshot::SnapshotError) -> Self {
        DeployError::Agent(Box::new(e.into()))
    }
}

/// Windows and lifecycle records of one stream, onto the event channel.
pub struct StreamSink {
    pub tx: EventTx,
    pub stream: Stream,
}

impl WindowSink for StreamSink {
    fn window(&mut self, w: &Window) -> crate::Result<()> {
        let _ = self.tx.send(DeployEvent::Window { window: w.clone() });
        Ok(())
    }
    fn event(&mut self, ev: &backstop_common::kernel::ProcRecord) -> crate::Result<()> {
        let _ = self.tx.send(DeployEvent::Process {
            stream: self.stream,
            process: ev.into(),
        });
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cmd(name: &str, argv: &[&str]) -> Cmd {
        Cmd {
            name: name.into(),
            argv: argv.iter().map(std::string::ToString::to_string).collect(),
            timeout: Duration::from_secs(5),
            env: Vec::new(),
        }
    }

    pub(crate) fn plan() -> Plan {
        Plan {
            name: "hello".into(),
            root: "/".into(),
            mode: Mode::Concurrent,
            steps: vec![cmd("install", &["true"])],
            scope: vec!["/etc".into()],
            excludes: Vec::new(),
            artifact: Vec::new(),
            staging: None,
            build: None,
            shadow: None,
            probes: vec![ProbeSpec {
                name: "up".into(),
                kind: ProbeKind::Tcp {
                    addr: "127.0.0.1:1".into(),
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                latency_budget: None,
            }],
            monitor: Duration::ZERO,
            baseline_samples: 0,
            rollback_hooks: vec![cmd("restart-1", &["true"]), cmd("restart-2", &["true"])],
            memory_limit: None,
            service_cgroup: None,
            room_check: Vec::new(),
            dry_run: false,
        }
    }
}
