//! `backstop-agent run`: the long-running agent. It keeps one QUIC
//! connection to the controller (reconnecting with backoff), runs what the
//! controller asks for as tracked trees, and delivers their windows through
//! the on-disk outbox, so a controller that goes away loses nothing.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_common::quic::{self, ReadError, read_frame};
use backstop_common::window::{Stream, Window};
use backstop_common::wire::{AgentMsg, ControllerMsg, HostFacts, PROTOCOL_VERSION};
use tokio::sync::Notify;

use crate::error::{AgentError, Result};
use crate::probes::{ProbeOptions, Probes};
use crate::spool::Spool;
use crate::track::{SharedProbes, TrackOptions, WindowSink, track};
use crate::tree::Stdout;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub controller: SocketAddr,
    /// The name the controller's certificate is checked against.
    pub server_name: String,
    pub bundle: PathBuf,
    pub data: PathBuf,
    pub spool_max_bytes: u64,
    pub probes: ProbeOptions,
}

/// The outbox and a bell that rings when something is added.
#[derive(Clone)]
struct Outbox {
    spool: Arc<Mutex<Spool>>,
    bell: Arc<Notify>,
}

impl Outbox {
    fn push(&self, msg: &AgentMsg) -> Result<()> {
        self.spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg)?;
        self.bell.notify_one();
        Ok(())
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct OutboxSink {
    outbox: Outbox,
    deployment: String,
    /// Records wait for the next window, so a fork storm is one message.
    events: Vec<backstop_common::wire::ProcEvent>,
}

impl WindowSink for OutboxSink {
    fn window(&mut self, w: &Window) -> Result<()> {
        if !self.events.is_empty() {
            self.outbox.push(&AgentMsg::Events {
                deployment: self.deployment.clone(),
                events: std::mem::take(&mut self.events),
            })?;
        }
        self.outbox.push(&AgentMsg::Windows {
            deployment: self.deployment.clone(),
            windows: vec![w.clone()],
        })
    }

    fn event(&mut self, ev: &backstop_common::ProcEvent) -> Result<()> {
        self.events.push(crate::track::to_wire(ev));
        Ok(())
    }
}

pub fn host_facts() -> HostFacts {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    HostFacts {
        kernel,
        os,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Run until `shutdown` resolves.
pub async fn run(opts: RunOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let bundle = quic::read_bundle(&opts.bundle).map_err(|e| AgentError::Io {
        context: format!("agent bundle {}", opts.bundle.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    let client = quic::client_config(bundle.ca, Some((bundle.cert, bundle.key))).map_err(|e| {
        AgentError::Io {
            context: "TLS configuration".into(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let spool = Spool::open(
        &opts.data.join("agent").join("outbox"),
        opts.spool_max_bytes,
    )?;
    let probes = Probes::load(&opts.probes)?;
    for w in &probes.warnings {
        tracing::warn!("{w}");
    }
    let probes: SharedProbes = Arc::new(Mutex::new(probes));
    let outbox = Outbox {
        spool: Arc::new(Mutex::new(spool)),
        bell: Arc::new(Notify::new()),
    };
    let bind: SocketAddr = if opts.controller.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|source| AgentError::Io {
        context: format!("binding a UDP socket on {bind}"),
        source,
    })?;
    let facts = host_facts();
    let connect_loop = async {
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = tokio::time::Instant::now();
            match session(&endpoint, &client, &opts, &facts, &outbox, &probes).await {
                Ok(()) => tracing::info!("controller closed the connection"),
                Err(e) => tracing::warn!(controller = %opts.controller, "{e}"),
            }
            // A session that lasted resets the backoff; quick failures grow it.
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(200);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    };
    tokio::select! {
        _ = connect_loop => {}
        _ = shutdown => tracing::info!("shutting down"),
    }
    endpoint.close(0u32.into(), b"agent shutting down");
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("{0}")]
    Closed(String),
}

async fn session(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    opts: &RunOptions,
    facts: &HostFacts,
    outbox: &Outbox,
    probes: &SharedProbes,
) -> std::result::Result<(), SessionError> {
    let hello = AgentMsg::Hello {
        protocol: PROTOCOL_VERSION,
        facts: facts.clone(),
        dropped_windows: outbox.lock().dropped(),
    };
    let (conn, send, mut recv) = quic::open_session(
        endpoint,
        client.clone(),
        opts.controller,
        &opts.server_name,
        &hello,
    )
    .await
    .map_err(|e| SessionError::Connect(e.to_string()))?;
    let closed = |e: &dyn std::fmt::Display| SessionError::Closed(e.to_string());
    tracing::info!(controller = %opts.controller, pending = outbox.lock().len(), "connected");

    let sender = send_loop(outbox.clone(), send);
    let receiver = async {
        loop {
            match read_frame::<ControllerMsg>(&mut recv).await {
                Ok(ControllerMsg::Ack {
                    deployment,
                    through_seq,
                    finished,
                }) => outbox.lock().ack(&deployment, through_seq, finished),
                Ok(ControllerMsg::Exec {
                    deployment,
                    argv,
                    window_ms,
                }) => start_deployment(probes.clone(), outbox.clone(), deployment, argv, window_ms),
                Ok(ControllerMsg::Welcome { .. }) => {}
                Err(ReadError::Finished) => return Ok(()),
                Err(e) => return Err(closed(&read_reason(e, &conn))),
            }
        }
    };
    tokio::select! {
        r = sender => r,
        r = receiver => r,
    }
}

/// Everything in the outbox, oldest first, then whatever is added.
/// Unacknowledged messages are sent again on the next connection, and the
/// controller stores each window once however often it arrives.
async fn send_loop(
    outbox: Outbox,
    mut send: quinn::SendStream,
) -> std::result::Result<(), SessionError> {
    let mut cursor = None;
    loop {
        let notified = outbox.bell.notified();
        let batch = outbox.lock().pending(cursor, 64);
        if batch.is_empty() {
            notified.await;
            continue;
        }
        for (id, frame) in batch {
            send.write_all(&frame)
                .await
                .map_err(|e| SessionError::Closed(e.to_string()))?;
            cursor = Some(id);
        }
    }
}

/// The controller's close reason, when it closed the connection on us.
fn read_reason(e: ReadError, conn: &quinn::Connection) -> String {
    quic::close_reason(conn).unwrap_or_else(|| e.to_string())
}

/// Run one deployment in the background; it outlives the connection.
fn start_deployment(
    probes: SharedProbes,
    outbox: Outbox,
    deployment: String,
    argv: Vec<String>,
    window_ms: u32,
) {
    tracing::info!(deployment, ?argv, "exec");
    tokio::spawn(async move {
        let opts = TrackOptions {
            stream: Stream::Live,
            window: Duration::from_millis(window_ms.max(10) as u64),
            scope: PathBuf::from("/"),
            stdout: Stdout::Stderr,
            kill_grace: Duration::from_secs(10),
            changes: None,
            timeout: None,
        };
        let argv: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
        let mut sink = OutboxSink {
            outbox: outbox.clone(),
            deployment: deployment.clone(),
            events: Vec::new(),
        };
        let end = match track(&probes, &argv, &opts, None, &mut sink).await {
            Ok(s) => AgentMsg::Finished {
                deployment: deployment.clone(),
                exit_code: s.exit_code,
                windows: s.windows,
                lost_events: s.lost_events,
            },
            Err(e) => AgentMsg::Failed {
                deployment: deployment.clone(),
                reason: e.to_string(),
            },
        };
        if let Err(e) = outbox.push(&end) {
            tracing::error!(deployment, "spooling the end of the deployment: {e}");
        }
    });
}
