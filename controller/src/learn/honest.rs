//! What keeps the evaluation honest (issue 16, item 4): families held out
//! of training are scored apart, on packages the model did not train on
//! either, and reported on their own; silent faults' early alarms are
//! counted as tells (see [`super::eval::Metrics::tells`]).

use std::collections::BTreeSet;

use super::corpus::Record;
use super::{Alarm, FamilyLead, Scored, alarms_from, by_family};
use crate::predict::model::Model;

/// (what the model may train and calibrate on, the held-out families'
/// records). Held-out records never reach a split.
pub fn partition(all: &[Record]) -> (Vec<Record>, Vec<Record>) {
    all.iter().cloned().partition(|d| !d.held_out)
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
        let mut all = synthetic(1, 2, 2);
        all[1].held_out = true;
        let (train, held) = partition(&all);
        assert_eq!((train.len(), held.len()), (3, 1));
        assert!(train.iter().all(|d| !d.held_out));
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
