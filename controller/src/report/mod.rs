//! Post-rollback analysis: what `backstop report ID` prints and what the
//! diagnostics bundle (`bundle.rs`) carries as `report.json`. A pure
//! function ([`analyse`]) from a deployment's stored data to a [`Report`]:
//! the timeline, the features that deviated most from a healthy baseline,
//! the first failing step with its errors, the failing syscalls by errno,
//! and live against shadow. No I/O here, so it is tested on crafted data.
//!
//! The baseline: the live windows of this package's committed deployments
//! (its healthy history) when the store has any; otherwise the
//! deployment's own first windows (the first third of its live stream),
//! and the report says which.

pub mod bundle;
pub mod lead;
mod stats;
mod text;

use backstop_common::deploy::{DeployEvent, StepResult};
use backstop_common::window::{Stream, Window};
use serde::Serialize;

use crate::store::{DecisionRow, DeployEventRow, DeployRow, DeployState, Store, StoreError};

pub use stats::{Deviation, Difference, errno_counts};
pub use text::render;

/// How many deviations and differences a report lists.
pub const TOP: usize = 10;

/// Everything stored about one deployment.
#[derive(Debug, Clone)]
pub struct Stored {
    pub row: DeployRow,
    pub events: Vec<DeployEventRow>,
    pub windows: Vec<Window>,
    pub decisions: Vec<DecisionRow>,
}

impl Stored {
    pub async fn load(store: &Store, id: &str) -> Result<Stored, StoreError> {
        let (row, _) = store.deploy(id).await?;
        Ok(Stored {
            row,
            events: store.deploy_events(id).await?,
            windows: store.windows(id).await?,
            decisions: store.decisions(id).await?,
        })
    }

    pub fn stream(&self, stream: Stream) -> Vec<&Window> {
        self.windows.iter().filter(|w| w.stream == stream).collect()
    }
}

/// The live windows of every committed deployment of `row`'s package but
/// `row` itself: its healthy history.
pub async fn history(store: &Store, row: &DeployRow) -> Result<Vec<Window>, StoreError> {
    let Some(package) = &row.package else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for d in store.deploys().await? {
        let same = d.package.as_ref() == Some(package) && d.id != row.id;
        if same && d.state == DeployState::Committed {
            let w = store.windows(&d.id).await?;
            out.extend(w.into_iter().filter(|w| w.stream == Stream::Live));
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    pub at_ms: i64,
    /// started, step_started, step_ended, first_alarm, onset, decision,
    /// restored, committed, ended.
    pub what: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedStep {
    pub stream: Stream,
    /// "step" or "shadow test".
    pub kind: &'static str,
    pub index: usize,
    pub name: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: f64,
    /// The last lines of its output.
    pub output_tail: Vec<String>,
    /// Its output's lines that read as errors.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// "history" (committed deployments of the package), "own first
    /// windows", or "none".
    pub kind: &'static str,
    pub windows: usize,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionSummary {
    pub at_ms: i64,
    pub verdict: String,
    pub acted: bool,
    pub reasons: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub deployment: String,
    pub host: String,
    pub name: String,
    pub package: Option<String>,
    pub state: &'static str,
    pub reason: Option<String>,
    pub timeline: Vec<Moment>,
    /// The decision's lead time over the failing step's end.
    pub lead: lead::Lead,
    pub first_failure: Option<FailedStep>,
    pub decision: Option<DecisionSummary>,
    pub baseline: Baseline,
    pub deviations: Vec<Deviation>,
    /// Per stream ("live", "shadow"): errno class -> failing syscalls.
    pub errors_by_errno: serde_json::Value,
    /// None when a stream has no windows (`live_vs_shadow_note` says).
    pub live_vs_shadow: Option<Vec<Difference>>,
    pub live_vs_shadow_note: String,
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(std::string::ToString::to_string)
        .collect()
}

fn error_lines(text: &str) -> Vec<String> {
    const WORDS: [&str; 7] = [
        "error", "fail", "denied", "no such", "cannot", "fatal", "no space",
    ];
    text.lines()
        .filter(|l| {
            let l = l.to_lowercase();
            WORDS.iter().any(|w| l.contains(w))
        })
        .map(str::to_string)
        .collect()
}

fn failed(stream: Stream, kind: &'static str, s: &StepResult) -> FailedStep {
    FailedStep {
        stream,
        kind,
        index: s.index,
        name: s.name.clone(),
        exit_code: s.exit_code,
        timed_out: s.timed_out,
        duration_ms: s.duration_ms,
        output_tail: tail(&s.output_tail, 20),
        errors: error_lines(&s.output_tail),
    }
}

/// The first failing live step, else the first failing shadow step or
/// test, with the time it was reported.
pub fn first_failure(events: &[DeployEventRow]) -> Option<(i64, FailedStep)> {
    let live = events.iter().find_map(|r| match &r.event {
        DeployEvent::Step {
            stream: Stream::Live,
            step,
        } if !step.passed() => Some((r.at_ms, failed(Stream::Live, "step", step))),
        _ => None,
    });
    live.or_else(|| {
        events.iter().find_map(|r| match &r.event {
            DeployEvent::Step { stream, step } if !step.passed() => {
                Some((r.at_ms, failed(*stream, "step", step)))
            }
            DeployEvent::ShadowTest { step } if !step.passed() => {
                Some((r.at_ms, failed(Stream::Shadow, "shadow test", step)))
            }
            _ => None,
        })
    })
}

/// The first alarm when it was the decision itself: its first reason.
fn decided_early(d: &DecisionRow) -> String {
    let first = d.reasons.get(0).map_or(String::new(), |r| {
        r.get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("?")
            .to_string()
    });
    format!(
        "the decision ({}), before any step or probe failed: {first}",
        d.verdict
    )
}

/// The first event that reads as trouble: a failing step, test or probe,
/// a failed shadow, a failure to start.
fn first_alarm(events: &[DeployEventRow]) -> Option<(i64, String)> {
    events.iter().find_map(|r| {
        let why = match &r.event {
            DeployEvent::Step { stream, step } if !step.passed() => format!(
                "{} step `{}` exited {}",
                stream.as_str(),
                step.name,
                exit_text(step)
            ),
            DeployEvent::ShadowTest { step } if !step.passed() => {
                format!("shadow test `{}` exited {}", step.name, exit_text(step))
            }
            DeployEvent::Probe { probe } if !probe.ok => {
                format!("probe `{}` failed: {}", probe.name, probe.detail)
            }
            DeployEvent::Shadow { report } if !report.passed() => "the shadow failed".into(),
            DeployEvent::Installed { ok: false } => "the install failed".into(),
            DeployEvent::Failed { reason } | DeployEvent::Refused { reason } => reason.clone(),
            _ => return None,
        };
        Some((r.at_ms, why))
    })
}

pub fn exit_text(s: &StepResult) -> String {
    match (s.exit_code, s.timed_out) {
        (_, true) => "nothing: it timed out".into(),
        (Some(c), _) => c.to_string(),
        (None, _) => "nothing: it was killed".into(),
    }
}

fn step_moments(events: &[DeployEventRow], out: &mut Vec<Moment>) {
    for r in events {
        let (label, step) = match &r.event {
            DeployEvent::Step { stream, step } => (format!("{} step", stream.as_str()), step),
            DeployEvent::ShadowTest { step } => ("shadow test".to_string(), step),
            _ => continue,
        };
        let start = r.at_ms - step.duration_ms.round() as i64;
        out.push(Moment {
            at_ms: start,
            what: "step_started",
            detail: format!("{label} {} `{}`", step.index, step.name),
        });
        out.push(Moment {
            at_ms: r.at_ms,
            what: "step_ended",
            detail: format!(
                "{label} {} `{}` exited {}",
                step.index,
                step.name,
                exit_text(step)
            ),
        });
    }
}

fn end_moment(r: &DeployEventRow) -> Option<Moment> {
    let (what, detail) = match &r.event {
        DeployEvent::RolledBack { report, local } => (
            "restored",
            restored(
                report,
                if *local {
                    "by the agent's local policy"
                } else {
                    "on the controller's order"
                },
            ),
        ),
        DeployEvent::Interrupted { report } => (
            "restored",
            restored(report, "at the agent's restart (interrupted)"),
        ),
        DeployEvent::Committed { .. } => ("committed", "committed".to_string()),
        e if e.is_final() => ("ended", format!("ended: {}", e.kind())),
        _ => return None,
    };
    Some(Moment {
        at_ms: r.at_ms,
        what,
        detail,
    })
}

fn restored(report: &backstop_common::deploy::RollbackReport, by: &str) -> String {
    match &report.restore {
        Some(s) => format!("restored {by}, restore took {:.1} ms", s.duration_ms),
        None => format!(
            "rolled back {by}, but not restored: {}",
            report.problems.join("; ")
        ),
    }
}

/// The timeline: start, steps, first alarm, onset, decision, end.
pub fn timeline(s: &Stored) -> Vec<Moment> {
    let mut out = vec![Moment {
        at_ms: s.row.created_ms,
        what: "started",
        detail: format!("deployment of `{}` to {}", s.row.name, s.row.host),
    }];
    step_moments(&s.events, &mut out);
    // A decision made before any step or probe failed (a projected
    // exhaustion, the model) is itself the first alarm, as `lead` counts it.
    let decided = s.decisions.iter().find(|d| d.verdict != "commit");
    let alarm = match (first_alarm(&s.events), decided) {
        (Some((at, _)), Some(d)) if d.at_ms < at => Some((d.at_ms, decided_early(d))),
        (None, Some(d)) if d.verdict == "rollback" => Some((d.at_ms, decided_early(d))),
        (a, _) => a,
    };
    if let Some((at, why)) = alarm {
        out.push(Moment {
            at_ms: at,
            what: "first_alarm",
            detail: why,
        });
    }
    if let Some((at, f)) = first_failure(&s.events) {
        let start = at - f.duration_ms.round() as i64;
        let detail = format!(
            "{} {} `{}` began (it failed)",
            f.stream.as_str(),
            f.kind,
            f.name
        );
        out.push(Moment {
            at_ms: start,
            what: "onset",
            detail,
        });
    }
    if let Some(d) = s.decisions.first() {
        let would = if d.acted { "" } else { " (not acted on)" };
        out.push(Moment {
            at_ms: d.at_ms,
            what: "decision",
            detail: format!("{}{would}", d.verdict),
        });
    }
    out.extend(lead::moment(&lead::lead(&s.events, &s.decisions)));
    out.extend(s.events.iter().filter_map(end_moment));
    // Stable: equal times keep the order above (a step's start before the
    // onset it is).
    out.sort_by_key(|m| m.at_ms);
    out
}

/// The analysis of `s`, its deviations measured against `history` (the
/// package's healthy windows; empty: the deployment's own first windows).
pub fn analyse(s: &Stored, history: &[Window]) -> Report {
    let live = s.stream(Stream::Live);
    let shadow = s.stream(Stream::Shadow);
    let (baseline, deviations) = stats::deviations(&live, history);
    let (live_vs_shadow, note) = stats::live_vs_shadow(&live, &shadow);
    Report {
        deployment: s.row.id.clone(),
        host: s.row.host.clone(),
        name: s.row.name.clone(),
        package: s.row.package.clone(),
        state: s.row.state.as_str(),
        reason: s.row.reason.clone(),
        timeline: timeline(s),
        lead: lead::lead(&s.events, &s.decisions),
        first_failure: first_failure(&s.events).map(|(_, f)| f),
        decision: s.decisions.first().map(|d| DecisionSummary {
            at_ms: d.at_ms,
            verdict: d.verdict.clone(),
            acted: d.acted,
            reasons: d.reasons.clone(),
        }),
        baseline,
        deviations,
        errors_by_errno: serde_json::json!({
            "live": errno_counts(&live),
            "shadow": errno_counts(&shadow),
        }),
        live_vs_shadow,
        live_vs_shadow_note: note,
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
