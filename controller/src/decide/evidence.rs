//! Everything the correlation engine decides from, as plain data.
//!
//! The daemon fills an [`Evidence`] as a deployment runs and stores it with
//! every decision, so `backstop replay ID` reads it back and gets the same
//! decision: nothing the engine uses may live outside this struct (no
//! clock, no model, no store). Values the daemon computes with a model
//! (P(failure), the divergence) are stored as computed, not recomputed on
//! replay, so a replay is exact even after the model changed.
//!
//! Fields only grow, with serde defaults, so evidence stored by an older
//! controller still reads.

use serde::{Deserialize, Serialize};

use super::float;

/// Where the deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The live install's steps are running.
    Installing,
    /// The install finished; the post-install monitoring period runs.
    Monitoring,
    /// The monitoring period is over: the engine must commit, roll back or
    /// say it cannot tell; it never answers "continue".
    Done,
}

/// The inputs to one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub phase: Phase,
    /// One entry per live window, in order.
    #[serde(default)]
    pub windows: Vec<WindowEvidence>,
    /// The live install's steps, in manifest order (only those started).
    #[serde(default)]
    pub live_steps: Vec<StepOutcome>,
    /// The shadow's results so far; `None` when the manifest runs no
    /// shadow.
    #[serde(default)]
    pub shadow: Option<ShadowEvidence>,
    /// One entry per health probe the manifest names, results in order.
    #[serde(default)]
    pub probes: Vec<ProbeEvidence>,
    /// The performance check's measures: before the deployment and during
    /// monitoring.
    #[serde(default)]
    pub performance: Vec<PerfSeries>,
    #[serde(default)]
    pub history: History,
    /// Levels of what an install can exhaust (the scope's free space),
    /// per live window, for [`super::trend`].
    #[serde(default)]
    pub resources: super::trend::Resources,
    /// Why no model scored the windows (none installed, or the one found
    /// was refused), when none did: every such decision says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_model: Option<String>,
    /// The live windows' length against the model's training windows',
    /// when they differ ([`super::range::window_length`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_length: Option<WindowLength>,
}

/// A deployment whose live windows are not as long as the windows the
/// model was trained on: its per-window counts and peaks are on another
/// scale than the calibration measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowLength {
    /// The longest live window (every window but the last is full length;
    /// a deployment of one window gives a lower bound).
    pub live_ms: u32,
    pub model_ms: u32,
}

/// One live window as the model and the shadow saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowEvidence {
    /// The window's `seq` in the live stream.
    pub index: u64,
    /// The model's P(failure) for the live stream at this window.
    #[serde(with = "float::any")]
    pub live_p: f64,
    /// The model's P(failure) for the shadow's window of the same index
    /// (the same seconds since its install started); `None` when there is
    /// no shadow or it has no such window.
    #[serde(default, with = "float::option")]
    pub shadow_p: Option<f64>,
    /// The threshold of the model that scored this window (its calibrated
    /// one); a manifest's `threshold` overrides it in [`super::Params`].
    #[serde(with = "float::any")]
    pub threshold: f64,
    /// How far live and shadow behaved apart up to this window
    /// ([`super::divergence`]); `None` without a shadow window.
    #[serde(default)]
    pub divergence: Option<Divergence>,
    /// Set when the host's state at this window lies outside what the
    /// model was trained on: its P(failure) here (live and shadow) is not
    /// counted, and the decision says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<OutOfRange>,
    /// Set when the host's conditions at this window lie outside those the
    /// model was trained on (schema v3: a note, the vote still counts,
    /// since no model input is a host level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_outside: Option<HostOutside>,
    /// Set when the live window lies beyond the model's healthy envelope
    /// (`predict::envelope`): an alarm like a P(failure) over the
    /// threshold, whatever the P.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beyond: Option<crate::predict::envelope::Beyond>,
    /// For a live window that alarms (P over the threshold in force, or
    /// beyond the envelope): the features that drove it, most first
    /// (`Model::explain_alarm`); empty for every other window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drivers: Vec<String>,
}

/// The host condition furthest outside the model's training range at one
/// window (`predict::range`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostOutside {
    /// One of `backstop_common::hostlevels::CONDITIONS`.
    pub condition: String,
    #[serde(with = "float::any")]
    pub value: f64,
    #[serde(with = "float::any")]
    pub min: f64,
    #[serde(with = "float::any")]
    pub max: f64,
}

/// The host measure furthest outside the model's training range at one
/// window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutOfRange {
    pub feature: String,
    /// How far, in training standard deviations of its log1p value.
    #[serde(with = "float::any")]
    pub z: f64,
}

/// The divergence between the live and the shadow stream at one window,
/// as [`super::divergence::divergence`] computes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// The share of the install's behaviour features (in [0, 1]) on which
    /// live and shadow differ by more than
    /// [`super::divergence::DIFFERS`] training standard deviations.
    #[serde(with = "float::any")]
    pub share: f64,
    /// The feature that differed most.
    pub feature: String,
    /// That feature's difference, live minus shadow, in training standard
    /// deviations of its log1p value: positive when live did more of it.
    #[serde(with = "float::any")]
    pub live_minus_shadow: f64,
}

/// How a step (an install step or a shadow test) ended, or that it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Exited {
        code: i32,
    },
    /// Ended by a signal (or torn down) with no exit code.
    Killed {
        signal: Option<i32>,
    },
    TimedOut,
    OomKilled,
}

impl StepStatus {
    /// How a step ended, as a decision's sentence says it.
    pub(super) fn describe(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepStatus::Running => f.write_str("is still running"),
            StepStatus::Exited { code } => write!(f, "failed (exit {code})"),
            StepStatus::Killed { signal: Some(sig) } => write!(f, "was killed by signal {sig}"),
            StepStatus::Killed { signal: None } => f.write_str("was killed before it exited"),
            StepStatus::TimedOut => f.write_str("timed out"),
            StepStatus::OomKilled => f.write_str("was killed by the OOM killer"),
        }
    }

    /// A finished step's status from the fields an agent's step result and
    /// shadow report carry (`exit_code`, `timed_out`, `oom_killed`): a
    /// timeout wins over the kill it caused, and an OOM kill counts only
    /// when the step has no exit code of its own.
    pub fn finished(exit_code: Option<i32>, timed_out: bool, oom_killed: bool) -> StepStatus {
        match (exit_code, timed_out, oom_killed) {
            (_, true, _) => StepStatus::TimedOut,
            (Some(code), _, _) => StepStatus::Exited { code },
            (None, _, true) => StepStatus::OomKilled,
            (None, _, false) => StepStatus::Killed { signal: None },
        }
    }

    /// Finished, and not with exit code 0.
    pub fn failed(&self) -> bool {
        !matches!(self, StepStatus::Running | StepStatus::Exited { code: 0 })
    }
}

/// A named step and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub name: String,
    pub status: StepStatus,
}

/// What the shadow said so far. A `ShadowReport` converts into this: its
/// command and tests through [`StepStatus::finished`], its `oom_kills`,
/// and `finished: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowEvidence {
    #[serde(default)]
    pub steps: Vec<StepOutcome>,
    #[serde(default)]
    pub tests: Vec<StepOutcome>,
    /// Processes the shadow's memory cgroup OOM-killed, whichever step
    /// they belonged to.
    #[serde(default)]
    pub oom_kills: u64,
    /// The shadow ran every step and test and reported.
    #[serde(default)]
    pub finished: bool,
    /// Why the shadow could not run, as its agent said (it then never
    /// reports, and this names what is missing).
    #[serde(default)]
    pub error: Option<String>,
}

/// One health probe and its results after the install, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEvidence {
    pub name: String,
    #[serde(default)]
    pub results: Vec<ProbeResult>,
}

/// One run of a health probe. The agent judges `ok` against the
/// manifest's expectation (exit 0, connect, status, latency budget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The live window in which it ran.
    pub window: u64,
    pub ok: bool,
    #[serde(default, with = "float::option")]
    pub latency_ms: Option<f64>,
    /// Why it failed, as the agent saw it ("status 503", "connect refused").
    #[serde(default)]
    pub detail: String,
}

/// One measure of the service for the performance check: samples taken
/// just before the deployment and samples during monitoring. Higher is
/// worse for every measure (latency, CPU, memory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfSeries {
    /// What is measured, for the reason ("probe `http` latency", "service
    /// CPU").
    pub metric: String,
    pub unit: String,
    /// The smallest level that matters in this unit (1 ms, 1% CPU, 1 MiB):
    /// a relative change is taken against at least this, so a service
    /// idle before (median 0) does not show an infinite rise.
    #[serde(with = "float::any")]
    pub noise_floor: f64,
    #[serde(default, with = "float::vec")]
    pub before: Vec<f64>,
    #[serde(default, with = "float::vec")]
    pub during: Vec<f64>,
}

/// What the fleet knows of this package: its version's outcomes on other
/// hosts and its recent rollbacks anywhere (any version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub version_committed: u32,
    #[serde(default)]
    pub version_rolled_back: u32,
    /// Rollbacks of this package, any version, on any host, in the
    /// store's recent period.
    #[serde(default)]
    pub package_recent_rollbacks: u32,
}
