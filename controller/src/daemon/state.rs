//! What both sides of the daemon share: the store, which hosts have a live
//! session, who waits for which deployment's outcome, and the one writer
//! that commits windows in groups. The agents' side (`agents.rs`) and the
//! control socket (`control.rs`) act through [`Daemon`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use backstop_common::control::ExecEnd;
use backstop_common::wire::ControllerMsg;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{DeploymentKind, Store};

/// A host is gone for good when its session ended and no new one started
/// within this long (an agent's reconnect backoff tops out at 5 s); then
/// whoever waits for its deployments is told they were interrupted.
pub const HOST_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(6);

pub(crate) struct Session {
    pub(crate) id: u64,
    pub(super) tx: mpsc::Sender<ControllerMsg>,
    pub(crate) conn: quinn::Connection,
}

/// Control-socket clients waiting for one deployment's outcome.
struct Waiting {
    host: String,
    senders: Vec<oneshot::Sender<ExecEnd>>,
}

/// Windows waiting for the writer, with where to send the result.
type WriteRequest = (
    String,
    Vec<backstop_common::window::Window>,
    oneshot::Sender<Result<u64, crate::store::StoreError>>,
);

/// Shared daemon state: the store, who is connected, who waits for what.
pub struct Daemon {
    pub store: Store,
    /// Where rollbacks raise alerts (`Alerts::fire`) and commits resolve
    /// them; both return once the alert is queued on disk.
    pub alerts: Arc<crate::alert::Alerts>,
    writes: mpsc::Sender<WriteRequest>,
    pub(crate) sessions: Mutex<HashMap<String, Session>>,
    waiters: Mutex<HashMap<String, Waiting>>,
    /// The newest session id each host had.
    pub(super) last_session: Mutex<HashMap<String, u64>>,
    pub(super) next_session: AtomicU64,
    /// `backstop deploy`'s running deployments (see `deploy.rs`).
    pub(super) deploys: super::deploy::Registry,
    /// The model deployments are scored with (`scoring.rs`), set at start.
    pub model: super::scoring::ModelSlot,
    /// The turns each deployment's decisions take (`turns.rs`).
    pub(super) turns: super::turns::Turns,
    /// Each deployment's windows, events and scores between its
    /// decisions (`score_cache.rs`).
    pub(super) kept: super::score_cache::Kept,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("host {0} is not connected")]
    NotConnected(String),
    #[error("argv is empty")]
    NoCommand,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("making a deployment id: {0}")]
    Random(String),
}

impl Daemon {
    pub fn new(store: Store, alerts: crate::alert::Alerts) -> Arc<Self> {
        let (writes, queue) = mpsc::channel(4096);
        tokio::spawn(writer(store.clone(), queue));
        Arc::new(Daemon {
            store,
            alerts: Arc::new(alerts),
            writes,
            sessions: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            last_session: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            deploys: super::deploy::Registry::default(),
            model: super::scoring::ModelSlot::default(),
            turns: super::turns::Turns::default(),
            kept: super::score_cache::Kept::default(),
        })
    }

    /// Store windows through the writer; resolves once they are committed.
    pub(super) async fn write_windows(
        &self,
        deployment: String,
        windows: Vec<backstop_common::window::Window>,
    ) -> Result<u64, crate::store::StoreError> {
        let (tx, rx) = oneshot::channel();
        let gone = || crate::store::StoreError::Unusable {
            url: "store".into(),
            reason: "the writer stopped".into(),
        };
        self.writes
            .send((deployment, windows, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// `d` and 128 bits from the OS RNG in hex: an id another agent cannot
    /// guess (the ownership check stops it anyway; this stops it finding
    /// targets).
    pub(super) fn deployment_id() -> Result<String, ExecError> {
        let bits = crate::pki::os_random::<16>().map_err(|e| ExecError::Random(e.to_string()))?;
        Ok(format!("d{}", hex::encode(bits)))
    }

    /// Ask `host`'s agent to run `argv` as a tracked tree. Returns the new
    /// deployment's id and a receiver for its outcome.
    pub async fn exec(
        &self,
        host: &str,
        argv: Vec<String>,
        window_ms: u32,
    ) -> Result<(String, oneshot::Receiver<ExecEnd>), ExecError> {
        if argv.is_empty() {
            return Err(ExecError::NoCommand);
        }
        let tx = {
            let sessions = self.sessions.lock().await;
            let s = sessions
                .get(host)
                .ok_or_else(|| ExecError::NotConnected(host.to_string()))?;
            s.tx.clone()
        };
        let id = Self::deployment_id()?;
        self.store
            .new_deployment(&id, host, DeploymentKind::Exec, &argv)
            .await?;
        let (otx, orx) = oneshot::channel();
        self.waiters
            .lock()
            .await
            .entry(id.clone())
            .or_insert_with(|| Waiting {
                host: host.to_string(),
                senders: Vec::new(),
            })
            .senders
            .push(otx);
        let msg = ControllerMsg::Exec {
            deployment: id.clone(),
            argv,
            window_ms,
        };
        if tx.send(msg).await.is_err() {
            self.waiters.lock().await.remove(&id);
            return Err(ExecError::NotConnected(host.to_string()));
        }
        tracing::info!(deployment = %id, host, "exec sent");
        Ok((id, orx))
    }

    pub(super) async fn notify(&self, deployment: &str, outcome: ExecEnd) {
        if let Some(w) = self.waiters.lock().await.remove(deployment) {
            for s in w.senders {
                let _ = s.send(outcome.clone());
            }
        }
    }

    /// `backstop revoke` changed `host`'s records: close its live session
    /// if the certificate it presented is no longer good. Returns whether
    /// one was closed.
    pub async fn recheck_certificate(&self, host: &str) -> bool {
        let conn = match self.sessions.lock().await.get(host) {
            Some(s) => s.conn.clone(),
            None => return false,
        };
        let cert = super::identity::peer_cert(&conn);
        let Some(cert) = cert else { return false };
        match super::identity::check_certificate(&self.store, host, &cert).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(host, "closing the live session: {}", e.reason);
                conn.close(e.code.into(), e.reason.as_bytes());
                true
            }
        }
    }

    /// `host`'s session `session` ended. If no new session of the host
    /// starts within [`HOST_GONE_GRACE`], everyone waiting for one of its
    /// deployments gets an `interrupted` outcome instead of waiting forever.
    pub(super) fn watch_gone(self: &Arc<Self>, host: &str, session: u64) {
        let daemon = self.clone();
        let host = host.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(HOST_GONE_GRACE).await;
            if daemon.sessions.lock().await.contains_key(&host)
                || daemon.session_started_since(&host, session).await
            {
                return;
            }
            let ended: Vec<(String, Waiting)> = {
                let mut waiters = daemon.waiters.lock().await;
                let ids: Vec<String> = waiters
                    .iter()
                    .filter(|(_, w)| w.host == host)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.into_iter()
                    .filter_map(|id| waiters.remove(&id).map(|w| (id, w)))
                    .collect()
            };
            for (id, w) in ended {
                tracing::warn!(host, deployment = %id, "host gone: its waiters are told the deployment was interrupted");
                let outcome = ExecEnd::Interrupted {
                    reason: format!(
                        "host {host} disconnected and did not come back within {} s",
                        HOST_GONE_GRACE.as_secs()
                    ),
                };
                for s in w.senders {
                    let _ = s.send(outcome.clone());
                }
            }
        });
    }

    /// Whether `host` had a session newer than `session` (one that may
    /// have come and gone again within the grace; its own end starts its
    /// own watch).
    async fn session_started_since(&self, host: &str, session: u64) -> bool {
        self.last_session
            .lock()
            .await
            .get(host)
            .is_some_and(|&id| id > session)
    }
}

/// The one writer of windows: whatever arrived while the last transaction
/// committed goes into the next one (group commit), so a thousand agents
/// cost a few commits a second, not ten thousand. Each sender learns its
/// result only after the commit, and acknowledges to its agent then.
async fn writer(store: Store, mut queue: mpsc::Receiver<WriteRequest>) {
    const MAX_BATCH: usize = 2048;
    let mut batch: Vec<WriteRequest> = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let parts: Vec<(&str, &[backstop_common::window::Window])> = batch
            .iter()
            .map(|(d, ws, _)| (d.as_str(), ws.as_slice()))
            .collect();
        let result = store.insert_window_batches(&parts).await;
        match result {
            Ok(_) => {
                for (_, ws, tx) in batch.drain(..) {
                    // Redeliveries are fine: "new" is informational.
                    let _ = tx.send(Ok(ws.len() as u64));
                }
            }
            Err(e) => {
                tracing::error!("storing windows: {e}");
                let msg = e.to_string();
                for (_, _, tx) in batch.drain(..) {
                    let _ = tx.send(Err(crate::store::StoreError::Unusable {
                        url: "store".into(),
                        reason: msg.clone(),
                    }));
                }
            }
        }
    }
}
