//! `backstop cancel ID [--force]`: the daemon's side.
//!
//! Why `--force` exists: a deployment holds its root (`RootBusy`) while it
//! is `running` or `rolling_back`, and only its agent's final event ends
//! it. An agent that vanished for good (the host was rebuilt, or the
//! agent reinstalled with a fresh data directory and knowing nothing of
//! the deployment) never sends that event, so the root stayed blocked
//! forever, and a plain cancel only moved it to `rolling_back`, which
//! blocks it too. `--force` marks the deployment `abandoned` at once (an
//! ended state, so the root is free), after sending the rollback order
//! if the agent is connected. It restores nothing by itself: an agent
//! that comes back with the deployment unfinished rolls it back at start
//! (`agent/src/deploy/recover.rs`) and its report, stored as it comes,
//! moves the deployment on from `abandoned`.

use std::sync::Arc;

use backstop_common::control::Reply;
use backstop_common::deploy::Order;

use super::deploy::DeployError;
use super::state::Daemon;
use crate::store::DeployState;

/// Answer one cancel request.
pub(super) async fn cancel(
    daemon: &Arc<Daemon>,
    id: &str,
    force: bool,
) -> Result<Reply, DeployError> {
    if !force {
        daemon.cancel(id).await?;
        return Ok(Reply::Cancelled {
            id: id.to_string(),
            abandoned: false,
            ordered: true,
        });
    }
    let (row, _) = daemon.store.deploy(id).await?;
    if row.state.ended() {
        return Err(DeployError::Ended {
            id: id.to_string(),
            state: row.state.as_str(),
        });
    }
    let order = Order::Rollback {
        reason: "cancelled by an operator (backstop cancel --force)".into(),
    };
    let ordered = daemon.order(&row.host, id, order).await.is_ok();
    let reason = if ordered {
        format!(
            "abandoned by an operator (backstop cancel --force); rollback ordered from host {}'s agent",
            row.host
        )
    } else {
        format!(
            "abandoned by an operator (backstop cancel --force); host {}'s agent was not connected, so nothing was rolled back",
            row.host
        )
    };
    daemon
        .store
        .set_deploy_state(id, DeployState::Abandoned, Some(&reason))
        .await?;
    tracing::warn!(deployment = %id, host = %row.host, ordered, "deployment abandoned; its root is free");
    Ok(Reply::Cancelled {
        id: id.to_string(),
        abandoned: true,
        ordered,
    })
}
