//! What the controller does with a deployment the agent carried on without
//! it. The agent's journal is the truth for its host: the controller never
//! invents an outcome, it only reads the agent's event stream, in which the
//! agent marks where it lost (`ControllerLost`) and regained
//! (`ControllerBack`) its session.
//! - Between the two, a hard failure is the local policy's to act on, and
//!   the agent does: its events arrive late, replayed from its outbox, and
//!   the controller must not decide on them (a second, phantom decision
//!   and alert). It stores them and waits for the agent's final event.
//! - After `ControllerBack` the agent is waiting for an order: the
//!   controller decides again from everything stored, and, when the
//!   install already ended, once more when the monitoring period is over
//!   (the decision timer of a controller that was killed died with it).
//!
//! Known limit: a step that fails in the instant before the agent notices
//! the session is gone is queued without a marker; the controller then
//! decides on it too, and both say rollback.

use backstop_common::deploy::DeployEvent;

/// The agent was without its controller at the end of `events` (in seq
/// order): its local policy, not the controller, decides a hard failure.
pub fn agent_alone(events: &[DeployEvent]) -> bool {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            DeployEvent::ControllerLost => Some(true),
            DeployEvent::ControllerBack => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

/// `event` tells the controller that the agent waits for it again.
pub fn agent_back(event: &DeployEvent) -> bool {
    matches!(event, DeployEvent::ControllerBack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_marker_counts() {
        let step = DeployEvent::Started {
            snapshot: "s".into(),
        };
        assert!(
            !agent_alone(std::slice::from_ref(&step)),
            "no marker: connected"
        );
        let lost = [step.clone(), DeployEvent::ControllerLost, step.clone()];
        assert!(agent_alone(&lost));
        let back = [
            DeployEvent::ControllerLost,
            step.clone(),
            DeployEvent::ControllerBack,
        ];
        assert!(!agent_alone(&back));
        assert!(agent_back(&DeployEvent::ControllerBack));
        assert!(!agent_back(&DeployEvent::ControllerLost));
    }
}
