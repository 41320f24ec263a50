//! The controller's side of `backstop deploy`: store the deployment and
//! send it to the host's agent, store every event the agent reports (once
//! each, by seq), move the deployment's state on its final event, pass
//! orders (`backstop cancel`: roll back) to the agent, and stream progress
//! lines to whoever runs `backstop deploy --wait`.
//!
//! Why progress is a broadcast channel: any number of CLI clients may
//! watch one deployment, and a slow one must not hold up the agent's
//! session; a client that falls behind is told how many lines it missed.

use std::collections::HashMap;
use std::sync::Arc;

use backstop_common::control::{DeployLine, DeployRequest, Progress, Reply};
use backstop_common::deploy::{DeployEvent, Order};
use backstop_common::manifest::Manifest;
use backstop_common::wire::ControllerMsg;
use tokio::sync::{Mutex, broadcast, mpsc};

use super::state::{Daemon, ExecError};
use crate::store::{DeployState, StoreError};

/// Progress lines one deployment may have queued for a slow watcher.
const PROGRESS_BACKLOG: usize = 256;

/// The running deployments' progress channels.
#[derive(Default)]
pub struct Registry(Mutex<HashMap<String, broadcast::Sender<Reply>>>);

impl Registry {
    async fn publish(&self, id: &str, line: DeployLine, last: bool) {
        let mut map = self.0.lock().await;
        if let Some(tx) = map.get(id) {
            let _ = tx.send(Reply::Event(line));
        }
        if last {
            map.remove(id);
        }
    }

    /// Tell `id`'s watchers where it is (`Reply::Progress`).
    pub(super) async fn progress(&self, id: &str, p: Progress) {
        if let Some(tx) = self.0.lock().await.get(id) {
            let _ = tx.send(Reply::Progress(p));
        }
    }

    /// Whether `id` is a deployment running in this daemon.
    pub(super) async fn running(&self, id: &str) -> bool {
        self.0.lock().await.contains_key(id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("deployment {id} already ended ({state})")]
    Ended { id: String, state: &'static str },
}

/// One progress line, as `backstop deploy --wait` prints it.
pub fn progress_line(id: &str, seq: u64, event: &DeployEvent) -> DeployLine {
    DeployLine {
        deployment: id.to_string(),
        seq,
        kind: event.kind().to_string(),
        last: event.is_final(),
        event: event.clone(),
    }
}

impl Daemon {
    /// Store a deployment and send it to `host`'s agent. Returns its id and,
    /// when `watch`, a receiver of its progress lines.
    pub async fn deploy(
        &self,
        host: &str,
        manifest: Manifest,
        window_ms: Option<u32>,
        dry_run: bool,
        watch: bool,
    ) -> Result<(String, Option<broadcast::Receiver<Reply>>), DeployError> {
        let tx = self.session_tx(host).await?;
        let window_ms = window_ms.unwrap_or_else(|| self.model.window_ms());
        let id = Self::deployment_id()?;
        self.store.new_deploy(&id, host, &manifest, dry_run).await?;
        let (ptx, prx) = broadcast::channel(PROGRESS_BACKLOG);
        self.deploys.0.lock().await.insert(id.clone(), ptx);
        let msg = ControllerMsg::Deploy {
            deployment: id.clone(),
            manifest: Box::new(manifest),
            window_ms,
            dry_run,
        };
        if tx.send(msg).await.is_err() {
            self.deploys.0.lock().await.remove(&id);
            let reason = format!("host {host} disconnected before the deployment was sent");
            self.store
                .set_deploy_state(&id, DeployState::Failed, Some(&reason))
                .await?;
            crate::metrics::DeploymentEnded::after(&self.store, &id, "failed").await;
            return Err(ExecError::NotConnected(host.to_string()).into());
        }
        tracing::info!(deployment = %id, host, dry_run, "deployment sent");
        Ok((id, watch.then_some(prx)))
    }

    /// Order a running deployment rolled back (`backstop cancel`).
    pub async fn cancel(&self, id: &str) -> Result<(), DeployError> {
        let (row, _) = self.store.deploy(id).await?;
        if row.state.ended() {
            return Err(DeployError::Ended {
                id: id.to_string(),
                state: row.state.as_str(),
            });
        }
        let reason = "cancelled by an operator (backstop cancel)";
        self.order(
            &row.host,
            id,
            Order::Rollback {
                reason: reason.into(),
            },
        )
        .await?;
        self.store
            .set_deploy_state(id, DeployState::RollingBack, Some(reason))
            .await?;
        Ok(())
    }

    /// Send `order` about `id` to `host`'s agent.
    pub async fn order(&self, host: &str, id: &str, order: Order) -> Result<(), ExecError> {
        let tx = self.session_tx(host).await?;
        let msg = ControllerMsg::Decision {
            deployment: id.to_string(),
            order,
        };
        tx.send(msg)
            .await
            .map_err(|_| ExecError::NotConnected(host.to_string()))
    }

    async fn session_tx(&self, host: &str) -> Result<mpsc::Sender<ControllerMsg>, ExecError> {
        let sessions = self.sessions.lock().await;
        let s = sessions
            .get(host)
            .ok_or_else(|| ExecError::NotConnected(host.to_string()))?;
        Ok(s.tx.clone())
    }

    /// Subscribe to a running deployment's progress (None when it is not
    /// running in this daemon).
    pub async fn watch_deploy(&self, id: &str) -> Option<broadcast::Receiver<Reply>> {
        self.deploys
            .0
            .lock()
            .await
            .get(id)
            .map(broadcast::Sender::subscribe)
    }
}

/// An agent reported `event` about `deployment` (its ownership already
/// checked): store it once, end the deployment on a final event, tell the
/// watchers, and let the agent forget a final event.
pub(super) async fn on_event(
    daemon: &Arc<Daemon>,
    host: &str,
    deployment: String,
    seq: u64,
    event: DeployEvent,
    tx: &mpsc::Sender<ControllerMsg>,
) -> Result<(), StoreError> {
    let new = daemon
        .store
        .add_deploy_event(&deployment, seq, &event)
        .await?;
    let state = DeployState::after(&event);
    if let Some(state) = state {
        daemon.kept.forget(&deployment);
        super::alerting::ended(daemon, &deployment, &event).await;
        let reason = final_reason(&event);
        daemon
            .store
            .set_deploy_state(&deployment, state, reason.as_deref())
            .await?;
        tracing::info!(host, deployment, state = state.as_str(), "deployment ended");
        if new {
            crate::metrics::DeploymentEnded::after(&daemon.store, &deployment, state.as_str())
                .await;
        }
        let _ = tx
            .send(ControllerMsg::Ack {
                deployment: deployment.clone(),
                through_seq: None,
                finished: true,
            })
            .await;
    }
    if new && state.is_none() {
        crate::metrics::evidence(&deployment);
        super::decider::after_event(daemon, &deployment, &event).await?;
        if super::reconcile::agent_back(&event) {
            super::abandon::agent_back(daemon, host, &deployment).await;
        }
    }
    crate::report::bundle::after_end(daemon, &deployment, state.filter(|_| new));
    if new {
        let line = progress_line(&deployment, seq, &event);
        daemon
            .deploys
            .publish(&deployment, line, state.is_some())
            .await;
    }
    Ok(())
}

fn final_reason(event: &DeployEvent) -> Option<String> {
    match event {
        DeployEvent::RolledBack { report, local } => Some(if *local {
            format!("rolled back by the agent's local policy: {}", report.reason)
        } else {
            report.reason.clone()
        }),
        DeployEvent::Interrupted { report } => Some(format!(
            "the agent was stopped mid-deployment and rolled it back at start: {}",
            report.reason
        )),
        DeployEvent::Refused { reason } | DeployEvent::Failed { reason } => Some(reason.clone()),
        _ => None,
    }
}

/// Answer a deploy request on the control socket: the id, then (with
/// `wait`) the progress lines until the final event.
pub(super) async fn answer(
    daemon: &Arc<Daemon>,
    req: DeployRequest,
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> std::io::Result<()> {
    use super::control::send;
    let manifest = match Manifest::from_toml_in(&req.manifest, req.base.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            let refused = Reply::Error {
                message: format!("manifest: {e}"),
                field: e.field().map(str::to_string),
            };
            return send(w, refused).await;
        }
    };
    let started = daemon
        .deploy(&req.host, manifest, req.window_ms, req.dry_run, req.wait)
        .await;
    let (deployment, rx) = match started {
        Ok(x) => x,
        Err(e) => return send(w, Reply::error(e.to_string())).await,
    };
    send(w, Reply::Started { deployment }).await?;
    let Some(mut rx) = rx else { return Ok(()) };
    loop {
        match rx.recv().await {
            Ok(reply) => {
                let last = reply.is_final();
                send(w, reply).await?;
                if last {
                    return Ok(());
                }
            }
            Err(broadcast::error::RecvError::Lagged(count)) => {
                send(w, Reply::Missed { count }).await?;
            }
            Err(broadcast::error::RecvError::Closed) => {
                let gone = Reply::error("the daemon stopped watching the deployment");
                return send(w, gone).await;
            }
        }
    }
}
