//! The correlation engine: a pure function from a deployment's evidence to
//! a decision. No I/O, no clock, no randomness: the daemon gathers the
//! [`Evidence`] and stores it with each decision, and `backstop replay`
//! feeds the stored evidence back and gets the same [`Decision`].
//!
//! The rules, and why:
//! - A hard live failure (a step exits non-zero, dies by a signal, times
//!   out or is OOM-killed) rolls back at once: the install itself said no,
//!   and waiting only lets a half-configured package run.
//! - A failed shadow step or test, or an OOM kill in the shadow, rolls back
//!   even when live looks healthy: the shadow is the same install on a
//!   copy of this host, and its tests are checks the SRE wrote; a failure
//!   there is a failure the live host has not shown yet.
//! - The live model alone needs `min_windows` consecutive windows over the
//!   threshold (default 2). The threshold is calibrated so that 1% of
//!   healthy installs have one window above it somewhere; a second window
//!   in a row costs one window of lead time and removes the alarms that a
//!   single noisy window (a burst of page-cache writeback, a CPU-hungry
//!   neighbour) would raise. Runs are counted anywhere in the deployment,
//!   so a decision once reached stays reached as evidence grows.
//! - A live alarm shorter than that rolls back when something independent
//!   confirms it within the model's context (K windows): the shadow's
//!   model over the threshold (two universes agree: one window is enough),
//!   live and shadow diverging, a failed health probe, or history.
//! - Divergence alone, or the shadow's model alone, is weaker evidence: the
//!   shadow runs without network, on a tmpfs upper layer, under its own
//!   limits, so it can be the odd one. They never roll back alone; at the
//!   end they leave the deployment inconclusive.
//! - A health probe failing `probe_failures` times in a row (default 2)
//!   after the install rolls back; a single failure is a witness, and a
//!   probe still failing when monitoring ends blocks a commit.
//! - The performance check (probe latency, the service's CPU and memory
//!   during monitoring against just before the deployment) rolls back on a
//!   regression as Kayenta judges one: Mann-Whitney p < alpha and a median
//!   risen by at least the guard ([`judge`]). It is judged on all samples
//!   so far, so unlike the runs above it can come and go while monitoring
//!   runs; the daemon acts on the first regression it sees.
//! - History (this version rolled back on other hosts more often than
//!   committed, or the package's recent rollbacks in the fleet) only
//!   confirms a live alarm: it never rolls back alone and never blocks a
//!   commit, because another host's failure may be that host's disk, and
//!   lowering the threshold would change the calibrated false-alarm rate
//!   for every window in a way no data measured.
//! - Commit only at [`Phase::Done`], with every live step exited 0, the
//!   shadow (when there is one) finished and clean, every probe's latest
//!   result healthy, every input readable, and nothing alarmed. Before
//!   that, `Continue` (with whatever is suspicious so far); at the end,
//!   `Inconclusive` when something alarmed and nothing confirmed it, with
//!   where an SRE should look ([`Reason::look_at`]).
//! - A dry run's room check that would have refused the deployment (its
//!   .debs do not fit where they unpack; the agent went on, as a dry run
//!   never acts) rolls back, with `exhaustion` on: the decision a dry run
//!   records is the one a real run would have met before it began.
//!
//! Windows outside the range the model was trained on: [`range`].

use std::fmt;

pub mod divergence;
pub mod evidence;
mod float;
pub mod judge;
pub mod memory;
pub mod params;
pub mod range;
pub mod reason;
mod rules;
#[cfg(test)]
mod tests;
pub mod trend;

pub use evidence::{
    Divergence, Evidence, History, PerfSeries, Phase, ProbeEvidence, ProbeResult, ShadowEvidence,
    StepOutcome, StepStatus, WindowEvidence,
};
pub use params::Params;
pub use reason::{Decision, Reason, Verdict};
use rules::{Finding, Weight};

/// The decision the evidence supports under these parameters.
pub fn decide(e: &Evidence, p: &Params) -> Decision {
    let found = rules::findings(e, p);
    let hard: Vec<Reason> = found
        .iter()
        .filter(|f| f.weight == Weight::Hard)
        .map(|f| f.reason.clone())
        .collect();
    if !hard.is_empty() {
        let mut reasons = hard;
        reasons.extend(summarise(found.iter().filter(|f| f.weight != Weight::Hard)));
        return decision(Verdict::Rollback, reasons);
    }
    if let Some((alarm, witness)) = confirmed(&found, p) {
        let mut reasons = vec![alarm.reason.clone(), witness.reason.clone()];
        reasons.extend(notes(&found));
        return decision(Verdict::Rollback, reasons);
    }
    if e.phase != Phase::Done {
        return decision(Verdict::Continue, summarise(found.iter()));
    }
    let blockers: Vec<&Finding> = found
        .iter()
        .filter(|f| {
            !matches!(
                f.weight,
                Weight::Note
                    | Weight::Witness {
                        blocks_commit: false
                    }
            )
        })
        .collect();
    if !blockers.is_empty() {
        let mut reasons = summarise(blockers.into_iter());
        reasons.extend(notes(&found));
        return decision(Verdict::Inconclusive, reasons);
    }
    let clean = Reason::Clean {
        windows: e.windows.len() as u64,
        probes: e.probes.len() as u32,
        shadow: e.shadow.is_some(),
    };
    let mut reasons = vec![clean];
    reasons.extend(notes(&found));
    decision(Verdict::Commit, reasons)
}

/// The findings that weigh nothing but are said in every decision.
fn notes(found: &[Finding]) -> impl Iterator<Item = Reason> + '_ {
    found
        .iter()
        .filter(|f| f.weight == Weight::Note)
        .map(|f| f.reason.clone())
}

fn decision(verdict: Verdict, reasons: Vec<Reason>) -> Decision {
    Decision { verdict, reasons }
}

/// The first live alarm (in window order) with a witness near it, and the
/// nearest such witness (the first of equals).
fn confirmed<'a>(found: &'a [Finding], p: &Params) -> Option<(&'a Finding, &'a Finding)> {
    let witnesses: Vec<&Finding> = found
        .iter()
        .filter(|f| matches!(f.weight, Weight::Witness { .. }))
        .collect();
    found
        .iter()
        .filter(|f| f.weight == Weight::LiveAlarm)
        .find_map(|alarm| {
            witnesses
                .iter()
                .filter(|w| alarm.distance(w) <= u64::from(p.confirm_within))
                .min_by_key(|w| alarm.distance(w))
                .map(|w| (alarm, *w))
        })
}

/// One reason per kind of soft evidence (per probe for probes), the
/// strongest of its kind, in the findings' order: a noisy model can alarm
/// in dozens of windows, and an SRE needs the worst one and the kind.
fn summarise<'a>(found: impl Iterator<Item = &'a Finding>) -> Vec<Reason> {
    let mut out: Vec<Reason> = Vec::new();
    for f in found {
        let key = key(&f.reason);
        match out
            .iter_mut()
            .find(|r| key.is_some() && self::key(r) == key)
        {
            Some(kept) if strength(&f.reason) > strength(kept) => *kept = f.reason.clone(),
            Some(_) => {}
            None => out.push(f.reason.clone()),
        }
    }
    out
}

/// What makes two reasons "the same kind" for [`summarise`]; `None`: every
/// one is kept (steps, missing inputs).
fn key(r: &Reason) -> Option<(u8, &str)> {
    match r {
        Reason::LiveModel { .. } => Some((0, "")),
        Reason::ShadowModel { .. } => Some((1, "")),
        Reason::Divergence { .. } => Some((2, "")),
        Reason::Probe { name, .. } => Some((3, name)),
        _ => None,
    }
}

fn strength(r: &Reason) -> f64 {
    match r {
        Reason::LiveModel { p, .. } | Reason::ShadowModel { p, .. } => *p,
        Reason::Divergence { share, .. } => *share,
        // The latest run of failures is the one that matters now.
        Reason::Probe { window, .. } => *window as f64,
        _ => 0.0,
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.verdict)?;
        for (i, r) in self.reasons.iter().enumerate() {
            write!(f, "{} {r}", if i == 0 { ":" } else { ";" })?;
        }
        if self.verdict == Verdict::Inconclusive {
            let hints: Vec<String> = self.reasons.iter().filter_map(Reason::look_at).collect();
            if !hints.is_empty() {
                write!(f, ". Look at: {}", hints.join("; "))?;
            }
        }
        Ok(())
    }
}
