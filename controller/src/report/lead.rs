//! The lead time of a decision: how long before the failing live step
//! would have ended the decision came. `backstop show` and `backstop
//! report` carry it, so a stored deployment says whether backstop acted
//! in time, not only that it acted.
//!
//! Where the step's end comes from:
//! - recorded: the step ended on its own (a dry run, which never acts, or
//!   a decision the step outran), and its stored end is the end;
//! - projected: the rollback killed the step first, so its own end never
//!   happened; when the decision rests on a projected exhaustion
//!   ([`crate::decide::trend`]), the end is when the resource was
//!   projected to run out. Otherwise the lead is unknown, and shown so.

use backstop_common::deploy::DeployEvent;
use backstop_common::window::Stream;
use serde::Serialize;

use super::Moment;
use crate::store::{DecisionRow, DeployEventRow};

/// The moments a lead time is read from, in ms since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lead {
    /// The first trouble seen: a failing event, or the decision itself
    /// when it was the first to see any.
    pub first_alarm_ms: Option<i64>,
    /// The first decision other than commit, acted on or not.
    pub decision_ms: Option<i64>,
    pub acted: bool,
    /// The rollback's end (restored).
    pub restored_ms: Option<i64>,
    /// The failing live step's end ([`Lead::step_end`] says which kind).
    pub step_end_ms: Option<i64>,
    /// "recorded" or "projected".
    pub step_end: Option<&'static str>,
    /// The step's end minus the decision: positive when the decision came
    /// first.
    pub lead_ms: Option<i64>,
}

/// The lead of a deployment's stored events and decisions.
pub fn lead(events: &[DeployEventRow], decisions: &[DecisionRow]) -> Lead {
    let decision = decisions.iter().find(|d| d.verdict != "commit");
    let alarm = events.iter().find(|r| trouble(&r.event)).map(|r| r.at_ms);
    let restored_ms = events.iter().find_map(|r| match r.event {
        DeployEvent::RolledBack { .. } | DeployEvent::Interrupted { .. } => Some(r.at_ms),
        _ => None,
    });
    let mut out = Lead {
        first_alarm_ms: match (alarm, decision.map(|d| d.at_ms)) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        },
        decision_ms: decision.map(|d| d.at_ms),
        acted: decision.is_some_and(|d| d.acted),
        restored_ms,
        ..Lead::default()
    };
    let failing = events.iter().find_map(|r| match &r.event {
        DeployEvent::Step {
            stream: Stream::Live,
            step,
        } if !step.passed() => Some((r.at_ms, step)),
        _ => None,
    });
    let (Some(d), Some((ended, step))) = (decision, failing) else {
        return out;
    };
    let (end, kind) = if step.exit_code.is_some() || step.timed_out {
        (Some(ended), "recorded")
    } else {
        (projected(d).map(|ms| d.at_ms + ms), "projected")
    };
    if let Some(end) = end {
        out.step_end_ms = Some(end);
        out.step_end = Some(kind);
        out.lead_ms = Some(end - d.at_ms);
    }
    out
}

/// The timeline's moment for a projected end (a recorded one is already
/// there as the step's `step_ended`).
pub fn moment(l: &Lead) -> Option<Moment> {
    if l.step_end != Some("projected") {
        return None;
    }
    Some(Moment {
        at_ms: l.step_end_ms?,
        what: "step_would_end",
        detail: format!(
            "the failing step would have ended about here (resource projected to run out): lead time {} ms",
            l.lead_ms?
        ),
    })
}

/// The text `backstop show` prints for it.
pub fn text(l: &Lead) -> String {
    let at = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let lead = match (l.lead_ms, l.step_end) {
        (Some(ms), Some(kind)) => format!("{ms} ms before the failing step's {kind} end"),
        _ => "unknown".to_string(),
    };
    format!(
        "timeline: first alarm {}, decision {}{}, restored {}; lead time {lead}",
        at(l.first_alarm_ms),
        at(l.decision_ms),
        if l.acted { "" } else { " (not acted on)" },
        at(l.restored_ms)
    )
}

/// The decision's projected time to exhaustion, in ms after it.
fn projected(d: &DecisionRow) -> Option<i64> {
    d.reasons.as_array()?.iter().find_map(|r| {
        (r["kind"] == "exhaustion")
            .then(|| r["full_in_ms"].as_f64())
            .flatten()
            .map(|ms| ms.round() as i64)
    })
}

fn trouble(e: &DeployEvent) -> bool {
    match e {
        DeployEvent::Step { step, .. } | DeployEvent::ShadowTest { step } => !step.passed(),
        DeployEvent::Probe { probe } => !probe.ok,
        DeployEvent::Shadow { report } => !report.passed(),
        DeployEvent::Installed { ok } => !ok,
        DeployEvent::Failed { .. } | DeployEvent::Refused { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use backstop_common::deploy::StepResult;

    use super::*;

    fn step(at_ms: i64, exit_code: Option<i32>) -> DeployEventRow {
        DeployEventRow {
            seq: 1,
            at_ms,
            event: DeployEvent::Step {
                stream: Stream::Live,
                step: StepResult {
                    exit_code,
                    ..StepResult::default()
                },
            },
        }
    }

    fn decision(at_ms: i64, acted: bool, full_in_ms: f64) -> DecisionRow {
        DecisionRow {
            at_ms,
            verdict: "rollback".into(),
            reasons: serde_json::json!([{"kind": "exhaustion", "full_in_ms": full_in_ms}]),
            evidence: serde_json::Value::Null,
            acted,
        }
    }

    #[test]
    fn a_dry_run_measures_the_lead_to_the_recorded_end() {
        let l = lead(
            &[step(30_000, Some(1))],
            &[decision(18_000, false, 15_000.0)],
        );
        assert_eq!(l.first_alarm_ms, Some(18_000), "the decision saw it first");
        assert_eq!(
            (l.step_end_ms, l.step_end),
            (Some(30_000), Some("recorded"))
        );
        assert_eq!(l.lead_ms, Some(12_000));
        assert!(moment(&l).is_none());
    }

    #[test]
    fn a_killed_step_takes_its_end_from_the_projection() {
        let mut rolled = step(18_100, None);
        rolled.seq = 1;
        let l = lead(&[rolled], &[decision(18_000, true, 15_000.0)]);
        assert_eq!(
            (l.step_end_ms, l.step_end),
            (Some(33_000), Some("projected"))
        );
        assert_eq!(l.lead_ms, Some(15_000));
        assert_eq!(moment(&l).map(|m| m.what), Some("step_would_end"));
        let mut other = decision(18_000, true, 0.0);
        other.reasons = serde_json::json!([{"kind": "live_step"}]);
        assert_eq!(lead(&[step(18_100, None)], &[other]).lead_ms, None);
    }
}
