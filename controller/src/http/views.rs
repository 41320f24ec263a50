//! The dashboard's JSON under `/api/v1/...`: plain serde structs, built
//! from the store's rows and the report's analysis. Where the CLI prints
//! the same thing with `--json`, the field holds the CLI's own type
//! (`DeployRow`, `DeployEventRow`, `DecisionRow`, `Lead`, `Report`,
//! `HostRow`, the model's `meta`), so the two never drift apart.

use serde::Serialize;

use crate::report::Report;
use crate::report::lead::Lead;
use crate::store::{DecisionRow, DeployEventRow, DeployRow, HostRow};

/// One row of `/api/v1/deployments`.
#[derive(Debug, Clone, Serialize)]
pub struct DeploySummary {
    pub id: String,
    pub host: String,
    pub name: String,
    pub package: Option<String>,
    pub version: Option<String>,
    pub state: &'static str,
    pub dry_run: bool,
    /// The first decision's verdict other than commit, else the first
    /// decision's; `None` before any.
    pub decision: Option<String>,
    /// How long before the failing step's end the decision came.
    pub lead_ms: Option<i64>,
    /// From submission to the final event, or to now while it runs.
    pub duration_ms: i64,
    pub created_ms: i64,
    pub ended_ms: Option<i64>,
}

/// `/api/v1/deployments/ID`: what `backstop show --json` prints (same
/// field names), the report `backstop report --json` prints, and the
/// timeline series the plot draws.
#[derive(Debug, Clone, Serialize)]
pub struct DeployDetail {
    pub deployment: DeployRow,
    pub events: Vec<DeployEventRow>,
    pub decisions: Vec<DecisionRow>,
    pub lead: Lead,
    pub report: Report,
    pub series: Series,
    /// Since submission, to the end or to now.
    pub elapsed_ms: i64,
    /// Still running or rolling back: the page keeps polling.
    pub live: bool,
}

/// The timeline plot's data; every time is ms since the deployment was
/// submitted.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// The features plotted (the report's top deviations, then defaults).
    pub features: Vec<String>,
    pub live: Vec<Point>,
    pub shadow: Vec<Point>,
    /// P(failure) per live window, when a model scored them.
    pub p_failure: Vec<PPoint>,
    /// The threshold in force: the manifest's, else the model's.
    pub threshold: Option<f64>,
    /// Where the model came from, or "no model".
    pub model: String,
    /// Steps and shadow tests, start to end.
    pub steps: Vec<Span>,
    /// first_alarm, onset, decision, restored, committed, step_would_end.
    pub markers: Vec<Marker>,
    /// How window times were placed (they are the probes' monotonic clock).
    pub clock: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub seq: u64,
    pub t_ms: i64,
    /// In `Series::features` order.
    pub values: Vec<f64>,
    pub lost_events: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PPoint {
    pub seq: u64,
    pub t_ms: i64,
    pub live: f64,
    pub shadow: Option<f64>,
    /// False when the host was outside the model's training range here
    /// (the vote is not counted).
    pub counted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// "live step", "shadow step" or "shadow test".
    pub kind: String,
    pub index: usize,
    pub name: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    pub what: &'static str,
    pub t_ms: i64,
    pub detail: String,
}

/// `/api/v1/hosts`: the store's row (as `backstop hosts --json`) and the
/// events its probes lost, summed over its stored windows.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    #[serde(flatten)]
    pub host: HostRow,
    pub lost_events: i64,
}

/// `/api/v1/models`: the model in use (`source` and `meta` as `backstop
/// model --json`), and what it blamed for recent alarms.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    /// `None`: the daemon decides without a model.
    pub source: Option<String>,
    pub meta: Option<serde_json::Value>,
    pub recent_alarms: Vec<AlarmExplained>,
}

/// The first live window over the threshold of one recent deployment, and
/// the features that moved the model most there.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmExplained {
    pub deployment: String,
    pub package: Option<String>,
    pub seq: u64,
    pub p_failure: f64,
    pub threshold: f64,
    /// (feature, contribution to P(failure)).
    pub features: Vec<(String, f64)>,
}

/// An error as JSON: what went wrong, and the parameter or id it is about.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}
