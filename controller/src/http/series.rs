//! The timeline plot's series, from what the report already computed (its
//! moments and deviations) and the model's scores (the decider's own
//! `scoring::score`): nothing here judges a deployment again.
//!
//! Window times are the probes' monotonic clock, which the store cannot
//! turn into wall time; each stream is placed by its offsets from its own
//! first window, anchored at the first live step's start (the live and
//! shadow installs start together), else at the agent's `Started` event.

use backstop_common::deploy::DeployEvent;
use backstop_common::features::FEATURES;
use backstop_common::window::{Stream, Window};

use super::views::{Marker, PPoint, Point, Series, Span};
use crate::decide::evidence::WindowEvidence;
use crate::report::{Report, Stored};

/// How many features the plot draws.
const PLOTTED: usize = 3;
/// Drawn when the report has fewer deviations than [`PLOTTED`].
const DEFAULTS: [&str; 3] = ["syscalls_total", "syscall_errors_total", "proc_execs"];
/// The report's moments the plot marks.
const MARKED: [&str; 6] = [
    "first_alarm",
    "onset",
    "decision",
    "restored",
    "committed",
    "step_would_end",
];

/// The model's view of the windows: scores and the threshold in force.
pub struct Scores {
    pub windows: Vec<WindowEvidence>,
    pub threshold: Option<f64>,
    pub model: String,
}

fn chosen(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = report
        .deviations
        .iter()
        .take(PLOTTED)
        .map(|d| d.feature.to_string())
        .collect();
    for d in DEFAULTS {
        let known = FEATURES.iter().any(|f| f.name == d);
        if out.len() < PLOTTED && known && !out.iter().any(|f| f == d) {
            out.push(d.to_string());
        }
    }
    out
}

/// Where a stream's first window starts: the first live step's start (the
/// tracked tree's first exec) once a live step has reported, else the
/// agent's `Started` event, else submission.
fn anchor(s: &Stored) -> i64 {
    let step = s.events.iter().find_map(|r| match &r.event {
        DeployEvent::Step {
            stream: Stream::Live,
            step,
        } => Some(r.at_ms - step.duration_ms.round() as i64),
        _ => None,
    });
    let started = s.events.iter().find_map(|r| match r.event {
        DeployEvent::Started { .. } => Some(r.at_ms),
        _ => None,
    });
    step.or(started).unwrap_or(s.row.created_ms) - s.row.created_ms
}

fn points(s: &Stored, stream: Stream, features: &[String], at: i64) -> Vec<Point> {
    let mut ws: Vec<&Window> = s.stream(stream);
    ws.sort_by_key(|w| w.seq);
    ws.dedup_by_key(|w| w.seq);
    let Some(first) = ws.first().map(|w| w.start_ns) else {
        return Vec::new();
    };
    ws.iter()
        .map(|w| Point {
            seq: w.seq,
            t_ms: at + ns_to_ms(w.end_ns.saturating_sub(first)),
            values: features.iter().map(|f| w.get(f).unwrap_or(0.0)).collect(),
            lost_events: w.lost_events,
        })
        .collect()
}

fn ns_to_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

fn spans(s: &Stored) -> Vec<Span> {
    s.events
        .iter()
        .filter_map(|r| {
            let (kind, step) = match &r.event {
                DeployEvent::Step { stream, step } => (format!("{} step", stream.as_str()), step),
                DeployEvent::ShadowTest { step } => ("shadow test".to_string(), step),
                _ => return None,
            };
            let end_ms = r.at_ms - s.row.created_ms;
            Some(Span {
                kind,
                index: step.index,
                name: step.name.clone(),
                start_ms: end_ms - step.duration_ms.round() as i64,
                end_ms,
                passed: step.passed(),
            })
        })
        .collect()
}

/// The series of `s`, whose analysis is `report`.
pub fn series(s: &Stored, report: &Report, scores: Scores) -> Series {
    let features = chosen(report);
    let at = anchor(s);
    let live = points(s, Stream::Live, &features, at);
    let p_failure = scores
        .windows
        .iter()
        .map(|w| PPoint {
            seq: w.index,
            t_ms: live
                .iter()
                .find(|p| p.seq == w.index)
                .map_or(at, |p| p.t_ms),
            live: w.live_p,
            shadow: w.shadow_p,
            counted: w.outside.is_none(),
        })
        .collect();
    let markers = report
        .timeline
        .iter()
        .filter(|m| MARKED.contains(&m.what))
        .map(|m| Marker {
            what: m.what,
            t_ms: m.at_ms - s.row.created_ms,
            detail: m.detail.clone(),
        })
        .collect();
    Series {
        shadow: points(s, Stream::Shadow, &features, at),
        features,
        live,
        p_failure,
        threshold: scores.threshold,
        model: scores.model,
        steps: spans(s),
        markers,
        clock: "window times: offsets on the probes' monotonic clock from each stream's first window, anchored at the first live step's start (else the agent's Started event)",
    }
}

#[cfg(test)]
mod tests {
    use backstop_common::deploy::StepResult;

    use super::*;
    use crate::store::{DeployEventRow, DeployRow, DeployState};

    fn stored(events: Vec<DeployEventRow>) -> Stored {
        let windows = (0..3)
            .map(|s| {
                // Monotonic ns far from zero, 1 s apart.
                let start = 5_000_000_000 + s * 1_000_000_000;
                let mut w = Window::new(Stream::Live, s, start, start + 1_000_000_000);
                w.features[0] = s as f64;
                w
            })
            .collect();
        Stored {
            row: DeployRow {
                id: "d1".into(),
                host: "web-1".into(),
                name: "hello".into(),
                package: None,
                version: None,
                dry_run: false,
                state: DeployState::Running,
                reason: None,
                created_ms: 10_000,
                ended_ms: None,
            },
            events,
            windows,
            decisions: Vec::new(),
        }
    }

    fn started(at_ms: i64) -> DeployEventRow {
        let event = DeployEvent::Started {
            snapshot: "s".into(),
        };
        DeployEventRow {
            seq: 0,
            at_ms,
            event,
        }
    }

    fn no_scores() -> Scores {
        Scores {
            windows: Vec::new(),
            threshold: None,
            model: "no model".into(),
        }
    }

    #[test]
    fn windows_sit_after_started_until_a_live_step_names_its_start() {
        let s = stored(vec![started(12_000)]);
        let report = crate::report::analyse(&s, &[]);
        let out = series(&s, &report, no_scores());
        let t: Vec<i64> = out.live.iter().map(|p| p.t_ms).collect();
        assert_eq!(t, vec![3_000, 4_000, 5_000], "Started at +2 s, window ends");
        assert!(out.markers.is_empty() && out.p_failure.is_empty());
        assert_eq!(out.features.len(), PLOTTED);

        let step = StepResult {
            name: "install".into(),
            exit_code: Some(1),
            duration_ms: 3_500.0,
            ..StepResult::default()
        };
        let ended = DeployEventRow {
            seq: 1,
            at_ms: 15_000,
            event: DeployEvent::Step {
                stream: Stream::Live,
                step,
            },
        };
        let s = stored(vec![started(12_000), ended]);
        let report = crate::report::analyse(&s, &[]);
        let out = series(&s, &report, no_scores());
        assert_eq!(out.live[0].t_ms, 1_500 + 1_000, "from the step's start");
        assert_eq!((out.steps[0].start_ms, out.steps[0].end_ms), (1_500, 5_000));
        assert!(!out.steps[0].passed);
        let marked: Vec<&str> = out.markers.iter().map(|m| m.what).collect();
        assert_eq!(marked, vec!["onset", "first_alarm"], "{marked:?}");
    }
}
