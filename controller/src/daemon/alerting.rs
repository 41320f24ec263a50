//! Alerts raised by deployments, through `Daemon::alerts`:
//! - a rollback the controller orders fires one (`ordered`), after the
//!   order is sent: the alert only goes on the queue on disk, so it never
//!   delays the rollback;
//! - a deployment the agent ends on its own, rolled back by its local
//!   policy or interrupted (rolled back at its next start), fires one when
//!   its final event arrives (`ended`), unless the controller had already
//!   ordered the rollback (the deployment was `rolling_back`: a decision,
//!   which fired, or an operator's `backstop cancel`, who knows);
//! - a deployment that commits resolves every firing alert of its package.
//!
//! A dry run fires and resolves nothing. A failure to queue an alert is
//! logged and never fails the deployment's flow.

use std::sync::Arc;

use backstop_common::deploy::DeployEvent;

use super::state::Daemon;
use crate::alert::Alert;
use crate::decide::Decision;
use crate::store::{DeployRow, DeployState};

/// The package an alert names: the manifest's `package.name`, else the
/// deployment's name.
fn package(row: &DeployRow) -> (&str, &str) {
    (
        row.package.as_deref().unwrap_or(&row.name),
        row.version.as_deref().unwrap_or(""),
    )
}

async fn fire(daemon: &Daemon, row: &DeployRow, decision: &str, reasons: Vec<String>) {
    let (name, version) = package(row);
    let alert = Alert::firing(&row.host, &row.id, name, version, decision, reasons);
    match daemon.alerts.fire(alert).await {
        Ok(()) => tracing::info!(deployment = row.id, decision, "alert queued"),
        Err(e) => tracing::error!(
            deployment = row.id,
            "alert not queued: {}",
            crate::alert::chain(&e)
        ),
    }
}

/// The controller ordered `row` rolled back on `decision` (the order is
/// already sent).
pub(super) async fn ordered(daemon: &Arc<Daemon>, row: &DeployRow, decision: &Decision) {
    if row.dry_run {
        return;
    }
    let reasons = decision.reasons.iter().map(ToString::to_string).collect();
    fire(daemon, row, &decision.verdict.to_string(), reasons).await;
}

/// `event`, a final event of `id`, arrived; called before the state moves,
/// so a redelivered final event (the state already ended) does nothing.
pub(super) async fn ended(daemon: &Arc<Daemon>, id: &str, event: &DeployEvent) {
    let row = match daemon.store.deploy(id).await {
        Ok((row, _)) => row,
        Err(e) => {
            tracing::error!(deployment = id, "alerts: reading the deployment: {e}");
            return;
        }
    };
    if row.dry_run || row.state.ended() {
        return;
    }
    match event {
        DeployEvent::Committed { .. } => {
            let (name, _) = package(&row);
            match daemon.alerts.resolve(name).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deployment = id, package = name, n, "alerts resolved"),
                Err(e) => tracing::error!(
                    deployment = id,
                    "alerts not resolved: {}",
                    crate::alert::chain(&e)
                ),
            }
        }
        DeployEvent::RolledBack { report, .. } if row.state == DeployState::Running => {
            let why = format!("rolled back by the agent's local policy: {}", report.reason);
            fire(daemon, &row, "rollback", vec![why]).await;
        }
        DeployEvent::Interrupted { report } if row.state == DeployState::Running => {
            let why = format!(
                "the agent was stopped mid-deployment and rolled it back at start: {}",
                report.reason
            );
            fire(daemon, &row, "interrupted", vec![why]).await;
        }
        _ => {}
    }
}
