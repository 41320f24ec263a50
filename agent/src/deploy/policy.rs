//! The local policy: what the agent decides on its own when no controller
//! is there to decide (the local `deploy` verb, or the controller lost
//! mid-install).
//!
//! The rule: roll back on a hard failure of the live install: a step that
//! exits non-zero, a step over its timeout, or an OOM kill in the live
//! tree. Anything else (a slow probe, a failing probe, a shadow that
//! disagrees, a high P(failure)) is evidence for the controller to weigh,
//! not a reason for the agent to act alone: the install is finished and
//! the monitoring period run, then the deployment waits for the controller
//! (or, in the local verb, which has none, is committed). A hard failure
//! is one no judgement can overrule, so acting on it alone is safe.

use serde::Serialize;

/// What the agent knows of the live install when it must decide alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The first step that exited non-zero: its name and exit code.
    pub failed_step: Option<(String, i32)>,
    /// The step whose timeout ran out.
    pub timed_out_step: Option<String>,
    /// OOM kills in the live tree (the probes' oom records).
    pub oom_kills: u64,
    /// A step that died without an exit code of its own (a signal).
    pub killed_step: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    RollBack {
        reason: String,
    },
    /// No hard failure: finish, monitor, then wait for the controller.
    FinishAndWait,
}

/// The local policy, in one place (see the module doc).
pub fn local_decision(e: &Evidence) -> Decision {
    let reason = if let Some(step) = &e.timed_out_step {
        format!("step {step} ran past its timeout")
    } else if e.oom_kills > 0 {
        format!("the live install was OOM-killed ({} kills)", e.oom_kills)
    } else if let Some((step, code)) = &e.failed_step {
        format!("step {step} exited {code}")
    } else if let Some(step) = &e.killed_step {
        format!("step {step} was killed")
    } else {
        return Decision::FinishAndWait;
    };
    Decision::RollBack { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hard_failures_roll_back_on_the_agents_own_authority() {
        let healthy = Evidence::default();
        assert_eq!(local_decision(&healthy), Decision::FinishAndWait);
        let cases = [
            (
                Evidence {
                    failed_step: Some(("postinst".into(), 1)),
                    ..Default::default()
                },
                "step postinst exited 1",
            ),
            (
                Evidence {
                    timed_out_step: Some("install".into()),
                    ..Default::default()
                },
                "step install ran past its timeout",
            ),
            (
                Evidence {
                    oom_kills: 2,
                    ..Default::default()
                },
                "the live install was OOM-killed (2 kills)",
            ),
            (
                Evidence {
                    killed_step: Some("install".into()),
                    ..Default::default()
                },
                "step install was killed",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(
                local_decision(&e),
                Decision::RollBack {
                    reason: want.into()
                },
                "{e:?}"
            );
        }
        // A timeout is named before the exit code it caused.
        let both = Evidence {
            failed_step: Some(("install".into(), 137)),
            timed_out_step: Some("install".into()),
            ..Default::default()
        };
        assert_eq!(
            local_decision(&both),
            Decision::RollBack {
                reason: "step install ran past its timeout".into()
            }
        );
    }
}
