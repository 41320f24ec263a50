//! How a decision is stored and replayed: the evidence and the knobs
//! (`Params`) it was made with go into one JSON value beside the verdict,
//! its reasons and its time, so `backstop replay ID` runs `decide` again
//! over exactly what the daemon saw and says whether it gets the same
//! answer. One place for the format, so writer and replayer cannot drift.

use serde::{Deserialize, Serialize};

use crate::decide::{Decision, Evidence, Params, decide};
use crate::store::DecisionRow;

/// The stored inputs of one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub evidence: Evidence,
    pub params: Params,
    /// The model that scored the windows (where it was loaded from), or
    /// "no model"; empty in decisions stored before the model voted.
    #[serde(default)]
    pub model: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("decision at {at_ms} ms: stored {what} does not read back: {source}")]
    Unreadable {
        at_ms: i64,
        what: &'static str,
        source: serde_json::Error,
    },
}

/// The row to store for `decision`, made from `inputs` at `at_ms`; `acted`
/// is false under `--dry-run` (then `at_ms` is when it would have fired).
pub fn row(inputs: &Inputs, decision: &Decision, at_ms: i64, acted: bool) -> DecisionRow {
    DecisionRow {
        at_ms,
        verdict: decision.verdict.to_string(),
        reasons: serde_json::to_value(&decision.reasons).unwrap_or_default(),
        evidence: serde_json::to_value(inputs).unwrap_or_default(),
        acted,
    }
}

/// One stored decision, run again.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub at_ms: i64,
    pub stored_verdict: String,
    pub verdict: String,
    /// Verdict and reasons both equal the stored ones.
    pub reproduced: bool,
    pub reasons: serde_json::Value,
}

/// Run `decide` again over a stored decision's inputs.
pub fn replay(stored: &DecisionRow) -> Result<Replayed, ReplayError> {
    let inputs: Inputs = serde_json::from_value(stored.evidence.clone()).map_err(|source| {
        ReplayError::Unreadable {
            at_ms: stored.at_ms,
            what: "evidence",
            source,
        }
    })?;
    let again = decide(&inputs.evidence, &inputs.params);
    let reasons = serde_json::to_value(&again.reasons).unwrap_or_default();
    let verdict = again.verdict.to_string();
    Ok(Replayed {
        at_ms: stored.at_ms,
        reproduced: verdict == stored.verdict && reasons == stored.reasons,
        stored_verdict: stored.verdict.clone(),
        verdict,
        reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::scoring::NO_MODEL;
    use crate::decide::evidence::{Phase, StepOutcome, StepStatus};

    fn inputs(code: i32) -> Inputs {
        Inputs {
            evidence: Evidence {
                phase: Phase::Installing,
                windows: Vec::new(),
                live_steps: vec![StepOutcome {
                    name: "install".into(),
                    status: StepStatus::Exited { code },
                }],
                shadow: None,
                probes: Vec::new(),
                performance: Vec::new(),
                history: crate::decide::evidence::History::default(),
                resources: crate::decide::trend::Resources::default(),
                no_model: None,
                window_length: None,
            },
            params: Params::from_policy(&backstop_common::manifest::Policy {
                threshold: None,
                guards: backstop_common::manifest::Guards::default(),
            }),
            model: NO_MODEL.into(),
        }
    }

    #[test]
    fn a_stored_decision_replays_and_a_tampered_one_does_not() {
        let i = inputs(1);
        let d = decide(&i.evidence, &i.params);
        assert_eq!(
            d.verdict.to_string(),
            "rollback",
            "a failed step rolls back"
        );
        let stored = row(&i, &d, 1234, false);
        let text = serde_json::to_string(&stored.evidence).unwrap();
        let mut back = stored.clone();
        back.evidence = serde_json::from_str(&text).unwrap();
        let r = replay(&back).unwrap();
        assert!(r.reproduced, "{r:?}");
        assert_eq!(r.at_ms, 1234);
        // The same verdict from other evidence is not a reproduction.
        let mut other = stored.clone();
        other.evidence = serde_json::to_value(inputs(0)).unwrap();
        assert!(!replay(&other).unwrap().reproduced);
        other.evidence = serde_json::json!({"evidence": 3});
        assert!(matches!(
            replay(&other),
            Err(ReplayError::Unreadable { .. })
        ));
    }
}
