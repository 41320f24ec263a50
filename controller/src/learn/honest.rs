//! What keeps the evaluation honest (issue 16, item 4): families held out
//! of training are scored apart, on packages the model did not train on
//! either, and reported on their own; silent faults' early alarms are
//! counted as tells (see [`super::eval::Metrics::tells`]); and a lockbox,
//! a fixed tenth of the packages, is never seen by `train` or `crossval`
//! (no split, no fold, no calibration, no choice of hyperparameters made
//! with them), only by `eval --lockbox`, once every choice is made.

use std::collections::BTreeSet;

use super::corpus::Record;
use super::{Alarm, FamilyLead, Scored, alarms_from, by_family};
use crate::predict::model::Model;

/// Whether a package's records are in the lockbox: a fixed hash of its
/// name (no seed, so no run can move a package in or out), one in ten.
pub fn in_lockbox(package: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in package.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h.is_multiple_of(10)
}

/// (what the model may train and calibrate on, the held-out families'
/// records), both without the lockbox. Held-out records never reach a
/// split.
pub fn partition(all: &[Record]) -> (Vec<Record>, Vec<Record>) {
    all.iter()
        .filter(|d| !in_lockbox(&d.package))
        .cloned()
        .partition(|d| !d.held_out)
}

/// The lockbox's records, held-out families included.
pub fn lockbox(all: &[Record]) -> Vec<Record> {
    all.iter()
        .filter(|d| in_lockbox(&d.package))
        .cloned()
        .collect()
}

/// The held-out records whose package is in `test` (so neither their
/// family nor their package was trained on), scored by `model`: its
/// alarms on them and the records.
pub fn score_held_out(
    model: &Model,
    held: &[Record],
    test: &[Record],
) -> (Vec<Alarm>, Vec<Record>) {
    let packages: BTreeSet<&str> = test.iter().map(|d| d.package.as_str()).collect();
    let ds: Vec<Record> = held
        .iter()
        .filter(|d| packages.contains(d.package.as_str()))
        .cloned()
        .collect();
    let scored = Scored::of(&super::ModelDetector(model), &ds);
    (alarms_from(model, &scored, &ds), ds)
}

/// Per held-out family: failing, caught, caught before onset (for a
/// silent family: tells).
pub fn held_out_families(alarms: &[Alarm], ds: &[Record]) -> Vec<FamilyLead> {
    by_family(alarms, ds)
}

#[cfg(test)]
mod tests {
    use super::super::corpus::synthetic;
    use super::super::eval::evaluate;
    use super::*;
    use crate::learn::baselines::tests::{Echo, dep};

    #[test]
    fn held_out_records_never_reach_training_and_silent_early_alarms_are_tells() {
        let mut all = synthetic(1, 40, 2);
        all[1].held_out = true;
        let (train, held) = partition(&all);
        let boxed = lockbox(&all);
        assert!(
            !boxed.is_empty() && boxed.len() < all.len() / 4,
            "{}",
            boxed.len()
        );
        assert_eq!(train.len() + held.len() + boxed.len(), all.len());
        assert!(train.iter().all(|d| !d.held_out && !in_lockbox(&d.package)));
        assert!(held.iter().all(|d| d.held_out && !in_lockbox(&d.package)));
        // Two failing records alarmed at window 0, onset 1: the build-up
        // one is early, the silent one is a tell and not early.
        let mut silent = dep("s", "p", &[0.9, 0.9], true);
        silent.group = "silent".into();
        let mut build = dep("b", "p", &[0.9, 0.9], true);
        build.group = "build-up".into();
        let m = evaluate(&Echo, 0.5, &[silent, build, dep("h", "p", &[0.1], false)]);
        assert_eq!((m.caught_before_onset, m.tells), (1, 1));
        assert_eq!(m.recall_before_onset, 1.0);
        assert_eq!(m.recall, 1.0);
    }
}
