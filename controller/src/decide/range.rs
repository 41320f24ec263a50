//! Where the model's training range shows in a decision.
//!
//! Schema v3 (issue 16): no model input is a host level, so a host unlike
//! the training hosts no longer makes the model extrapolate. The daemon
//! marks each window whose host conditions lie outside the range the
//! model recorded in training (`predict::range`, in
//! `WindowEvidence::host_outside`), and every decision says so in a note
//! ([`host_outside`]); the vote still counts, so the decision is the same
//! on any host. A deployment no model scored says that too ([`no_model`]).
//!
//! Before v3 the daemon marked windows whose `host_*` feature lay more
//! than 8 training standard deviations out (`WindowEvidence::outside`),
//! and the rules left those windows' votes out. Decisions stored then
//! still carry that mark, and [`out_of_range`] still reads it, so
//! `backstop replay` of an old decision gives the verdict it gave.

use super::evidence::{Evidence, WindowEvidence};
use super::reason::Reason;
use super::rules::{Finding, Weight};

/// The runs of consecutive windows for which `mark` gives something,
/// as (first, last) positions in `e.windows`.
fn runs<T>(e: &Evidence, mark: impl Fn(&WindowEvidence) -> Option<&T>) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < e.windows.len() {
        if mark(&e.windows[i]).is_none() {
            i += 1;
            continue;
        }
        let start = i;
        while e.windows.get(i).and_then(&mark).is_some() {
            i += 1;
        }
        out.push((start, i - 1));
    }
    out
}

/// One note per run of windows outside the model's host range, naming the
/// run's first window's condition.
pub(super) fn host_outside(e: &Evidence, out: &mut Vec<Finding>) {
    for (a, b) in runs(e, |w| w.host_outside.as_ref()) {
        let Some(o) = &e.windows[a].host_outside else {
            continue;
        };
        let (first, last) = (e.windows[a].index, e.windows[b].index);
        let reason = Reason::HostOutsideTraining {
            window: first,
            windows: u32::try_from(b - a + 1).unwrap_or(u32::MAX),
            condition: o.condition.clone(),
            value: o.value,
            min: o.min,
            max: o.max,
        };
        out.push(Finding::new(Weight::Note, Some((first, last)), reason));
    }
}

/// A note when the live windows are not as long as the model's.
pub(super) fn window_length(e: &Evidence, out: &mut Vec<Finding>) {
    if let Some(w) = e.window_length {
        let reason = Reason::WindowLength {
            live_ms: w.live_ms,
            model_ms: w.model_ms,
        };
        out.push(Finding::new(Weight::Note, None, reason));
    }
}

/// The note's sentence, as [`Reason::WindowLength`] displays it.
pub(super) fn fmt_window_length(
    f: &mut std::fmt::Formatter<'_>,
    live_ms: u32,
    model_ms: u32,
) -> std::fmt::Result {
    write!(
        f,
        "live windows of {live_ms} ms, the model was trained on {model_ms} ms windows: its \
         false-alarm rate and lead were measured on those (deploy with --window-ms {model_ms} \
         to score as it was calibrated)"
    )
}

/// A note when no model scored the deployment.
pub(super) fn no_model(e: &Evidence, out: &mut Vec<Finding>) {
    if let Some(why) = &e.no_model {
        let reason = Reason::NoModel { why: why.clone() };
        out.push(Finding::new(Weight::Note, None, reason));
    }
}

/// One note per run of consecutive windows outside the range, naming the
/// worst measure of the run.
pub(super) fn out_of_range(e: &Evidence, out: &mut Vec<Finding>) {
    let mut i = 0;
    while i < e.windows.len() {
        if e.windows[i].outside.is_none() {
            i += 1;
            continue;
        }
        let start = i;
        let mut worst = e.windows[i].outside.clone();
        while let Some(o) = e.windows.get(i).and_then(|w| w.outside.as_ref()) {
            if worst.as_ref().is_none_or(|w| o.z.abs() > w.z.abs()) {
                worst = Some(o.clone());
            }
            i += 1;
        }
        let Some(worst) = worst else { continue };
        let (first, last) = (e.windows[start].index, e.windows[i - 1].index);
        let reason = Reason::ModelOutOfRange {
            window: first,
            windows: u32::try_from(i - start).unwrap_or(u32::MAX),
            feature: worst.feature,
            z: worst.z,
        };
        out.push(Finding::new(Weight::Note, Some((first, last)), reason));
    }
}
