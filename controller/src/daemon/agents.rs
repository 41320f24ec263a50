//! The daemon's agent side: a QUIC endpoint with mutual TLS. Each agent
//! holds one connection with one bidirectional stream of frames. A bad
//! frame, an unknown protocol version or a refused certificate ends that
//! connection, with the reason logged and sent as the close reason; every
//! other connection goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use backstop_common::control::ExecEnd;
use backstop_common::quic::{ReadError, read_frame, write_frame};
use backstop_common::wire::{AgentMsg, ControllerMsg, PROTOCOL_VERSION, check_hello};
use tokio::sync::mpsc;

use super::state::{Daemon, Session};
use crate::store::DeploymentState;

/// Close codes an agent sees (listed in the README).
pub mod close {
    pub const NORMAL: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    pub const VERSION: u32 = 2;
    /// The certificate names no host.
    pub const IDENTITY: u32 = 3;
    pub const INTERNAL: u32 = 4;
    pub const SHUTDOWN: u32 = 5;
    /// The certificate is revoked, or not on record for a host that has
    /// records.
    pub const REVOKED: u32 = 6;
    /// A message about a deployment that does not exist or is another
    /// host's.
    pub const FOREIGN_DEPLOYMENT: u32 = 7;
    /// The host already has a live session.
    pub const DUPLICATE_SESSION: u32 = 8;
    /// A newer session of the same host found this one silent.
    pub const REPLACED: u32 = 9;
}

/// Accept connections until the endpoint closes. Unlike a TCP or Unix
/// listener, this accept cannot fail with EMFILE: every connection shares
/// the endpoint's one UDP socket, so there is nothing to back off from.
pub async fn accept_loop(daemon: Arc<Daemon>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let d = daemon.clone();
        tokio::spawn(async move { serve_connection(d, incoming).await });
    }
}

/// Why a connection ended, for the log and the close frame.
pub(crate) struct Ended {
    pub(crate) code: u32,
    pub(crate) reason: String,
}

impl Ended {
    pub(crate) fn new(code: u32, reason: impl Into<String>) -> Self {
        Ended {
            code,
            reason: reason.into(),
        }
    }
}

async fn serve_connection(daemon: Arc<Daemon>, incoming: quinn::Incoming) {
    let remote: SocketAddr = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, "connection refused: {e}");
            return;
        }
    };
    let cert = super::identity::peer_cert(&conn);
    let Some(host) = cert.as_ref().and_then(|c| crate::pki::host_of(c)) else {
        tracing::warn!(%remote, "connection refused: the client certificate names no host");
        conn.close(close::IDENTITY.into(), b"certificate names no host");
        return;
    };
    let cert = cert.expect("a host came from it");
    if let Err(e) = super::identity::check_certificate(&daemon.store, &host, &cert).await {
        tracing::warn!(%remote, host, code = e.code, "connection refused: {}", e.reason);
        conn.close(e.code.into(), e.reason.as_bytes());
        return;
    }
    let ended = session(&daemon, &conn, &host).await;
    if ended.code == close::NORMAL {
        tracing::info!(%remote, host, "connection closed: {}", ended.reason);
    } else {
        tracing::warn!(%remote, host, code = ended.code, "connection closed: {}", ended.reason);
    }
    conn.close(ended.code.into(), ended.reason.as_bytes());
}

async fn session(daemon: &Arc<Daemon>, conn: &quinn::Connection, host: &str) -> Ended {
    let (send, mut recv) =
        match tokio::time::timeout(std::time::Duration::from_secs(10), conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Ended::new(close::NORMAL, format!("before opening a stream: {e}"));
            }
            Err(_) => return Ended::new(close::PROTOCOL, "no stream opened within 10 s"),
        };
    let hello: AgentMsg = match read_frame(&mut recv).await {
        Ok(m) => m,
        Err(e) => return read_ended(e),
    };
    if let Err(e) = check_hello(&hello) {
        let code = match e {
            backstop_common::wire::FrameError::Version { .. } => close::VERSION,
            _ => close::PROTOCOL,
        };
        return Ended::new(code, e.to_string());
    }
    let AgentMsg::Hello {
        facts,
        dropped_windows,
        ..
    } = hello
    else {
        unreachable!("check_hello accepts only Hello")
    };
    let (tx, rx) = mpsc::channel::<ControllerMsg>(256);
    let id = daemon.next_session.fetch_add(1, Ordering::Relaxed);
    let mine = Session {
        id,
        tx: tx.clone(),
        conn: conn.clone(),
    };
    if let Err(e) = super::identity::claim(daemon, host, mine).await {
        return e;
    }
    daemon
        .last_session
        .lock()
        .await
        .insert(host.to_string(), id);
    let ended = session_claimed(
        daemon,
        host,
        (send, recv),
        (tx, rx),
        &facts,
        dropped_windows,
    )
    .await;
    {
        let mut sessions = daemon.sessions.lock().await;
        // A newer connection of the same host may have replaced this one
        // (when this one had gone silent).
        if sessions.get(host).is_some_and(|s| s.id == id) {
            sessions.remove(host);
            drop(sessions);
            if let Err(e) = daemon.store.host_disconnected(host).await {
                tracing::error!(host, "marking the host disconnected: {e}");
            }
            daemon.watch_gone(host, id);
        }
    }
    ended
}

/// The session once it holds the host's slot: welcome, then frames until
/// the connection ends.
async fn session_claimed(
    daemon: &Arc<Daemon>,
    host: &str,
    (mut send, mut recv): (quinn::SendStream, quinn::RecvStream),
    (tx, mut rx): (mpsc::Sender<ControllerMsg>, mpsc::Receiver<ControllerMsg>),
    facts: &backstop_common::wire::HostFacts,
    dropped_windows: u64,
) -> Ended {
    if let Err(e) = daemon
        .store
        .host_connected(host, facts, dropped_windows)
        .await
    {
        return Ended::new(close::INTERNAL, format!("storing the host: {e}"));
    }
    if let Err(e) = write_frame(
        &mut send,
        &ControllerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
        },
    )
    .await
    {
        return Ended::new(close::NORMAL, format!("sending welcome: {e}"));
    }
    tracing::info!(host, kernel = %facts.kernel, "agent connected");
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if write_frame(&mut send, &msg).await.is_err() {
                break;
            }
        }
    });

    // Deployments this session has shown to be its host's: each is
    // checked against the store once, not once per frame.
    let mut owned = super::identity::Owned::default();
    let mut last_seen = tokio::time::Instant::now();
    let ended = loop {
        let msg: AgentMsg = match read_frame(&mut recv).await {
            Ok(m) => m,
            Err(e) => break read_ended(e),
        };
        if let Err(e) = owned.check(daemon, host, &msg).await {
            break e;
        }
        if let Err(e) = handle(daemon, host, msg, &tx).await {
            break e;
        }
        // last_seen is for humans: once every few seconds is enough, and a
        // write per frame would cost a commit per window.
        if last_seen.elapsed() >= std::time::Duration::from_secs(5) {
            last_seen = tokio::time::Instant::now();
            let _ = daemon.store.host_seen(host).await;
        }
    };
    writer.abort();
    ended
}

fn read_ended(e: ReadError) -> Ended {
    match e {
        ReadError::Finished => Ended::new(close::NORMAL, "agent finished its stream"),
        ReadError::Connection(reason) => Ended::new(close::NORMAL, reason),
        ReadError::Frame(f) => Ended::new(close::PROTOCOL, f.to_string()),
    }
}

async fn handle(
    daemon: &Arc<Daemon>,
    host: &str,
    msg: AgentMsg,
    tx: &mpsc::Sender<ControllerMsg>,
) -> Result<(), Ended> {
    let store_err =
        |e: crate::store::StoreError| Ended::new(close::INTERNAL, format!("store: {e}"));
    match msg {
        AgentMsg::Hello { .. } => return Err(Ended::new(close::PROTOCOL, "Hello sent twice")),
        AgentMsg::Windows {
            deployment,
            windows,
        } => {
            crate::metrics::windows_received(host, &deployment, &windows);
            let through = windows.iter().map(|w| w.seq).max();
            let count = windows.len();
            let new = daemon
                .write_windows(deployment.clone(), windows)
                .await
                .map_err(store_err)?;
            tracing::debug!(host, deployment, received = count, new, "windows stored");
            super::decider::after_windows(daemon, &deployment).await;
            let _ = tx
                .send(ControllerMsg::Ack {
                    deployment,
                    through_seq: through,
                    finished: false,
                })
                .await;
        }
        AgentMsg::Finished {
            deployment,
            exit_code,
            windows,
            lost_events,
        } => {
            tracing::info!(host, deployment, exit_code, windows, "deployment finished");
            let outcome = ExecEnd::Finished {
                exit_code,
                windows,
                lost_events,
            };
            ended(daemon, tx, deployment, outcome)
                .await
                .map_err(store_err)?;
        }
        AgentMsg::Events { deployment, events } => {
            for e in &events {
                let detail = serde_json::json!({
                    "pid": e.pid, "tgid": e.tgid, "ts_ns": e.ts_ns, "comm": e.comm,
                    "filename": e.filename, "exit_code": e.exit_code, "signal": e.signal,
                });
                daemon
                    .store
                    .add_event(&deployment, &e.kind, &detail)
                    .await
                    .map_err(store_err)?;
            }
        }
        AgentMsg::Dropped { dropped_windows } => {
            tracing::warn!(host, dropped_windows, "agent dropped windows");
            daemon
                .store
                .host_dropped(host, dropped_windows)
                .await
                .map_err(store_err)?;
        }
        AgentMsg::Deployment {
            deployment,
            seq,
            event,
        } => super::deploy::on_event(daemon, host, deployment, seq, *event, tx)
            .await
            .map_err(store_err)?,
        AgentMsg::Failed { deployment, reason } => {
            tracing::warn!(host, deployment, reason, "deployment failed to start");
            ended(daemon, tx, deployment, ExecEnd::Failed { reason })
                .await
                .map_err(store_err)?;
        }
    }
    Ok(())
}

/// A deployment ended: store how, let the agent forget it, and tell whoever
/// waits for it.
async fn ended(
    daemon: &Arc<Daemon>,
    tx: &mpsc::Sender<ControllerMsg>,
    deployment: String,
    outcome: ExecEnd,
) -> Result<(), crate::store::StoreError> {
    use DeploymentState::{Failed, Finished, Interrupted};
    let (state, exit_code, windows, lost_events, reason) = match &outcome {
        ExecEnd::Finished {
            exit_code,
            windows,
            lost_events,
        } => (
            Finished,
            Some(*exit_code),
            Some(*windows),
            Some(*lost_events),
            None,
        ),
        ExecEnd::Failed { reason } => (Failed, None, None, None, Some(reason.as_str())),
        ExecEnd::Interrupted { reason } => (Interrupted, None, None, None, Some(reason.as_str())),
    };
    daemon
        .store
        .finish_deployment(&deployment, state, exit_code, windows, lost_events, reason)
        .await?;
    let _ = tx
        .send(ControllerMsg::Ack {
            deployment: deployment.clone(),
            through_seq: None,
            finished: true,
        })
        .await;
    daemon.notify(&deployment, outcome).await;
    Ok(())
}
