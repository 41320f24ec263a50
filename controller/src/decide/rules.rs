//! One reading per kind of evidence: what it says, and how much that
//! weighs. [`super::decide`] combines the findings; the module doc there
//! gives the why of each weight.

use super::evidence::{Evidence, Phase, ProbeEvidence, StepOutcome, StepStatus};
use super::judge::judge;
use super::params::Params;
use super::reason::Reason;

/// How much a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Weight {
    /// Rolls back by itself, at once.
    Hard,
    /// The live model alarmed, not long enough to roll back alone.
    LiveAlarm,
    /// Confirms a live alarm near it; alone, it keeps a deployment from
    /// committing when `blocks_commit`.
    Witness { blocks_commit: bool },
    /// Something missing or unreadable: blocks a commit, never rolls back.
    Open,
    /// Said in every decision, weighs nothing (the model's votes not
    /// counted where the host is outside its training range).
    Note,
}

#[derive(Debug, Clone)]
pub(super) struct Finding {
    pub weight: Weight,
    /// The live windows it covers, first and last; `None`: no window
    /// (a step, history), near every alarm.
    pub span: Option<(u64, u64)>,
    pub reason: Reason,
}

impl Finding {
    pub(super) fn new(weight: Weight, span: Option<(u64, u64)>, reason: Reason) -> Finding {
        Finding {
            weight,
            span,
            reason,
        }
    }

    /// Windows between two findings' spans (0 when they overlap or either
    /// has none).
    pub fn distance(&self, other: &Finding) -> u64 {
        match (self.span, other.span) {
            (Some((a0, a1)), Some((b0, b1))) => a0.saturating_sub(b1).max(b0.saturating_sub(a1)),
            _ => 0,
        }
    }
}

/// Every finding, in a fixed order: live steps, probes, performance, live
/// model, shadow steps and tests, shadow model, divergence, history, then
/// what is missing. The order is the order reasons are reported in.
pub(super) fn findings(e: &Evidence, p: &Params) -> Vec<Finding> {
    let mut out = Vec::new();
    live_steps(e, &mut out);
    for probe in &e.probes {
        probe_runs(probe, e.phase, p, &mut out);
    }
    performance(e, p, &mut out);
    if p.exhaustion {
        out.extend(super::trend::finding(e));
    }
    live_model(e, p, &mut out);
    super::range::out_of_range(e, &mut out);
    super::range::host_outside(e, &mut out);
    super::range::no_model(e, &mut out);
    super::range::window_length(e, &mut out);
    shadow(e, &mut out);
    shadow_windows(e, p, &mut out);
    history(e, p, &mut out);
    out
}

fn live_steps(e: &Evidence, out: &mut Vec<Finding>) {
    for StepOutcome { name, status } in &e.live_steps {
        if status.failed() {
            let reason = Reason::LiveStep {
                name: name.clone(),
                status: status.clone(),
            };
            out.push(Finding::new(Weight::Hard, None, reason));
        } else if e.phase == Phase::Done && *status == StepStatus::Running {
            let what = format!("live step `{name}`");
            out.push(Finding::new(
                Weight::Open,
                None,
                Reason::Unfinished { what },
            ));
        }
    }
    if e.phase == Phase::Done && e.live_steps.is_empty() {
        let what = "the live install (no step reported)".to_string();
        out.push(Finding::new(
            Weight::Open,
            None,
            Reason::Unfinished { what },
        ));
    }
}

/// Runs of failed results: `probe_failures` in a row roll back; a shorter
/// run witnesses, and blocks a commit while it is the probe's latest word.
fn probe_runs(probe: &ProbeEvidence, phase: Phase, p: &Params, out: &mut Vec<Finding>) {
    let rs = &probe.results;
    if phase == Phase::Done && rs.is_empty() {
        let what = format!("health probe `{}` (never ran)", probe.name);
        out.push(Finding::new(
            Weight::Open,
            None,
            Reason::Unfinished { what },
        ));
    }
    let mut i = 0;
    while i < rs.len() {
        if rs[i].ok {
            i += 1;
            continue;
        }
        let start = i;
        while i < rs.len() && !rs[i].ok {
            i += 1;
        }
        let last = &rs[i - 1];
        let failures = (i - start) as u32;
        let weight = if failures >= p.probe_failures.max(1) {
            Weight::Hard
        } else {
            Weight::Witness {
                blocks_commit: i == rs.len(),
            }
        };
        let reason = Reason::Probe {
            name: probe.name.clone(),
            window: last.window,
            failures,
            detail: last.detail.clone(),
        };
        out.push(Finding::new(
            weight,
            Some((rs[start].window, last.window)),
            reason,
        ));
        if weight == Weight::Hard {
            return;
        }
    }
}

fn performance(e: &Evidence, p: &Params, out: &mut Vec<Finding>) {
    for s in &e.performance {
        let Some(j) = judge(s, p.perf_alpha, p.perf_min_effect, p.perf_min_samples) else {
            continue;
        };
        if j.regressed {
            let reason = Reason::Performance {
                metric: s.metric.clone(),
                unit: s.unit.clone(),
                before_median: j.before_median,
                during_median: j.during_median,
                effect: j.effect,
                p_value: j.p_value,
            };
            out.push(Finding::new(Weight::Hard, None, reason));
        }
    }
}

/// Runs of live windows over the threshold: the first run of
/// `min_windows` rolls back; shorter runs are live alarms.
fn live_model(e: &Evidence, p: &Params, out: &mut Vec<Finding>) {
    let over = |i: usize| {
        let w = &e.windows[i];
        w.outside.is_none() && (w.live_p > p.threshold_for(w.threshold) || w.beyond.is_some())
    };
    let mut i = 0;
    while i < e.windows.len() {
        let w = &e.windows[i];
        if !w.live_p.is_finite() || !w.threshold.is_finite() {
            let what = format!("live P(failure) {} at window {}", w.live_p, w.index);
            out.push(Finding::new(
                Weight::Open,
                None,
                Reason::BadEvidence { what },
            ));
        }
        if !over(i) {
            i += 1;
            continue;
        }
        let start = i;
        let mut top = i;
        while i < e.windows.len() && over(i) {
            if e.windows[i].live_p > e.windows[top].live_p {
                top = i;
            }
            i += 1;
        }
        let (first, last) = (&e.windows[start], &e.windows[i - 1]);
        let windows = (i - start) as u32;
        let beyond = e.windows[start..i]
            .iter()
            .filter_map(|w| w.beyond.as_ref())
            .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
            .cloned();
        let reason = Reason::LiveModel {
            window: first.index,
            windows,
            p: e.windows[top].live_p,
            threshold: p.threshold_for(e.windows[top].threshold),
            beyond,
            drivers: e.windows[top].drivers.clone(),
        };
        let hard = windows >= p.min_windows.max(1);
        let weight = if hard {
            Weight::Hard
        } else {
            Weight::LiveAlarm
        };
        out.push(Finding::new(
            weight,
            Some((first.index, last.index)),
            reason,
        ));
        if hard {
            return;
        }
    }
}

fn shadow(e: &Evidence, out: &mut Vec<Finding>) {
    let Some(s) = &e.shadow else { return };
    for (steps, test) in [(&s.steps, false), (&s.tests, true)] {
        for StepOutcome { name, status } in steps {
            let (name, status) = (name.clone(), status.clone());
            if status.failed() {
                let reason = if test {
                    Reason::ShadowTest { name, status }
                } else {
                    Reason::ShadowStep { name, status }
                };
                out.push(Finding::new(Weight::Hard, None, reason));
            }
        }
    }
    if s.oom_kills > 0 {
        let reason = Reason::ShadowOom { kills: s.oom_kills };
        out.push(Finding::new(Weight::Hard, None, reason));
    }
    let running = (s.steps.iter().chain(&s.tests)).any(|t| t.status == StepStatus::Running);
    if e.phase == Phase::Done && (!s.finished || running) {
        let what = match &s.error {
            Some(why) => format!("the shadow (it could not run: {why})"),
            None => "the shadow (no final report)".to_string(),
        };
        out.push(Finding::new(
            Weight::Open,
            None,
            Reason::Unfinished { what },
        ));
    }
}

/// The shadow's model alarms and the divergence, window by window: each
/// confirms a live alarm near it, and alone keeps a deployment from
/// committing.
fn shadow_windows(e: &Evidence, p: &Params, out: &mut Vec<Finding>) {
    let witness = Weight::Witness {
        blocks_commit: true,
    };
    for w in e.windows.iter().filter(|w| w.outside.is_none()) {
        let thr = p.threshold_for(w.threshold);
        match w.shadow_p {
            Some(sp) if !sp.is_finite() => {
                let what = format!("shadow P(failure) {sp} at window {}", w.index);
                out.push(Finding::new(
                    Weight::Open,
                    None,
                    Reason::BadEvidence { what },
                ));
            }
            Some(sp) if sp > thr => {
                let reason = Reason::ShadowModel {
                    window: w.index,
                    p: sp,
                    threshold: thr,
                };
                out.push(Finding::new(witness, Some((w.index, w.index)), reason));
            }
            _ => {}
        }
    }
    for w in &e.windows {
        let Some(d) = &w.divergence else { continue };
        if !d.share.is_finite() {
            let what = format!("divergence {} at window {}", d.share, w.index);
            out.push(Finding::new(
                Weight::Open,
                None,
                Reason::BadEvidence { what },
            ));
        } else if d.share > p.max_divergence {
            let reason = Reason::Divergence {
                window: w.index,
                share: d.share,
                limit: p.max_divergence,
                feature: d.feature.clone(),
                live_minus_shadow: d.live_minus_shadow,
            };
            out.push(Finding::new(witness, Some((w.index, w.index)), reason));
        }
    }
}

/// History confirms, bounded: this version rolled back on enough other
/// hosts (and more often than committed), or the package rolled back
/// often in the fleet lately. It never weighs more than a witness.
fn history(e: &Evidence, p: &Params, out: &mut Vec<Finding>) {
    let h = &e.history;
    let version = h.version_rolled_back >= p.history_min_rollbacks.max(1)
        && h.version_rolled_back > h.version_committed;
    let recent = h.package_recent_rollbacks >= p.history_recent_rollbacks.max(1);
    if p.history && (version || recent) {
        let reason = Reason::History {
            version_rolled_back: h.version_rolled_back,
            version_committed: h.version_committed,
            package_recent_rollbacks: h.package_recent_rollbacks,
        };
        let weight = Weight::Witness {
            blocks_commit: false,
        };
        out.push(Finding::new(weight, None, reason));
    }
}
