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
//! (`agent/src/deploy/recover.rs`), an agent that kept running it and
//! reconnects is ordered to roll it back when it says it is back
//! ([`agent_back`]), and its report, stored as it comes, moves the
//! deployment on from `abandoned`.

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

/// The agent of `id` says it is back (`ControllerBack`) with `id` still
/// running. When an operator abandoned `id` while that agent was away,
/// no decision will ever come for it (an abandoned deployment is ended
/// here), and the agent would wait for an order with the root held, so
/// every later deployment on that root would be refused by the agent.
/// Abandoning means rolling back, as an agent restarted with the
/// deployment unfinished does at start: order that now.
pub(super) async fn agent_back(daemon: &Arc<Daemon>, host: &str, id: &str) {
    let row = match daemon.store.deploy(id).await {
        Ok((row, _)) => row,
        Err(e) => {
            tracing::error!(deployment = %id, "reading an agent's returning deployment: {e}");
            return;
        }
    };
    if row.state != DeployState::Abandoned {
        return;
    }
    let order = Order::Rollback {
        reason: "abandoned by an operator (backstop cancel --force) while its agent was away"
            .into(),
    };
    if let Err(e) = daemon.order(host, id, order).await {
        tracing::warn!(deployment = %id, host, "ordering an abandoned deployment's rollback: {e}");
        return;
    }
    tracing::warn!(
        deployment = %id,
        host,
        "an abandoned deployment's agent is back with it running: rollback ordered"
    );
}
