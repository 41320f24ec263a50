//! `backstop-agent run`: the long-running agent. It keeps one QUIC
//! connection to the controller (reconnecting with backoff), runs what the
//! controller asks for as tracked trees, and delivers their windows through
//! the on-disk outbox, so a controller that goes away loses nothing.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backstop_common::quic::{self, ReadError, read_frame};
use backstop_common::window::{MIN_WINDOW_MS, Stream, Window};
use backstop_common::wire::{self, AgentMsg, ControllerMsg, HostFacts, PROTOCOL_VERSION};
use tokio::sync::Notify;

use crate::datadir::DataLock;
use crate::error::{AgentError, Result};
use crate::outbox::Outbox;
use crate::probes::{ProbeOptions, Probes};
use crate::track::{SharedProbes, TrackOptions, WindowSink, track};

// `ControllerMsg::Deploy`: the executor, started from here.
#[path = "run_deploy.rs"]
mod run_deploy;
// What the controller sends during a session, acted on.
#[path = "run_messages.rs"]
mod run_messages;
// `--metrics`: what `/metrics` reads of this agent.
#[path = "run_metrics.rs"]
mod run_metrics;
use crate::tree::Stdout;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub controller: SocketAddr,
    /// The name the controller's certificate is checked against.
    pub server_name: String,
    pub bundle: PathBuf,
    pub data: PathBuf,
    pub outbox_max_bytes: u64,
    pub probes: ProbeOptions,
    /// Where `/metrics` is served (`--metrics`), if anywhere.
    pub metrics: Option<backstop_common::http::Access>,
}

/// Messages waiting for the writer thread; past this, windows are shed
/// (and counted) rather than queued without bound behind a slow disk.
const WRITER_QUEUE: usize = 1024;

/// The outbox, its writer thread, and a bell that rings when something is
/// added. Every disk access (the writer's fsync and rename, the sender's
/// reads, the acks' unlinks) runs off the async runtime: on the writer
/// thread or in `spawn_blocking`, so a slow or full disk never stalls the
/// QUIC session or a tree's window timer.
#[derive(Clone)]
struct OutboxHandle {
    outbox: Arc<Mutex<Outbox>>,
    bell: Arc<Notify>,
    writer: SyncSender<AgentMsg>,
    /// Windows shed because the writer's queue was full.
    shed: Arc<AtomicU64>,
}

impl OutboxHandle {
    fn start(outbox: Outbox) -> Result<OutboxHandle> {
        let (writer, queue) = std::sync::mpsc::sync_channel::<AgentMsg>(WRITER_QUEUE);
        let handle = OutboxHandle {
            outbox: Arc::new(Mutex::new(outbox)),
            bell: Arc::new(Notify::new()),
            writer,
            shed: Arc::new(AtomicU64::new(0)),
        };
        let (outbox, bell, shed) = (
            handle.outbox.clone(),
            handle.bell.clone(),
            handle.shed.clone(),
        );
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || {
                for msg in queue {
                    let mut s = outbox.lock().unwrap_or_else(PoisonError::into_inner);
                    s.add_dropped(shed.swap(0, Ordering::Relaxed));
                    s.push(&msg);
                    drop(s);
                    bell.notify_one();
                }
            })
            .map_err(|source| AgentError::Io {
                context: "starting the outbox writer thread".into(),
                source,
            })?;
        Ok(handle)
    }

    /// Queue windows or events; never waits. A full queue sheds them.
    fn push(&self, msg: AgentMsg) {
        if let AgentMsg::Windows { windows, .. } = &msg {
            crate::metrics::windows_queued(windows);
        }
        if let Err(TrySendError::Full(msg)) = self.writer.try_send(msg) {
            let n = match &msg {
                AgentMsg::Windows { windows, .. } => windows.len() as u64,
                _ => 0,
            };
            self.shed.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(windows = n, "outbox writer is behind; shedding a message");
        }
    }

    /// Queue an outcome record, waiting for room (off the runtime): it is
    /// never shed.
    async fn push_outcome(&self, msg: AgentMsg) {
        let writer = self.writer.clone();
        let _ = tokio::task::spawn_blocking(move || writer.send(msg)).await;
    }

    /// Run `f` on the outbox off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Outbox) -> T + Send + 'static,
    ) -> T {
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || {
            f(&mut outbox.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        .expect("outbox task panicked")
    }
}

struct OutboxSink {
    outbox: OutboxHandle,
    deployment: String,
    /// Records wait for the next window, so a fork storm is one message.
    events: Vec<backstop_common::wire::ProcEvent>,
}

/// Never fails: what the outbox cannot take is dropped and counted there,
/// and the tree goes on (see [`crate::outbox`]).
impl WindowSink for OutboxSink {
    fn window(&mut self, w: &Window) -> Result<()> {
        if !self.events.is_empty() {
            self.outbox.push(AgentMsg::Events {
                deployment: self.deployment.clone(),
                events: std::mem::take(&mut self.events),
            });
        }
        self.outbox.push(AgentMsg::Windows {
            deployment: self.deployment.clone(),
            windows: vec![w.clone()],
        });
        Ok(())
    }

    fn event(&mut self, ev: &backstop_common::ProcRecord) -> Result<()> {
        self.events.push(ev.into());
        Ok(())
    }
}

/// Run until `shutdown` resolves.
pub async fn run(opts: RunOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    // First: a second agent on this data directory stops here, having
    // touched nothing, and says who holds it.
    let _lock = DataLock::take(&opts.data)?;
    let bundle = quic::read_bundle(&opts.bundle).map_err(|e| AgentError::Failed {
        context: format!("agent bundle {}", opts.bundle.display()),
        source: Box::new(e),
    })?;
    let client = quic::client_config(bundle.ca, Some((bundle.cert, bundle.key))).map_err(|e| {
        AgentError::Failed {
            context: "TLS configuration".into(),
            source: Box::new(e),
        }
    })?;
    let disk = Outbox::open(
        &opts.data.join("agent").join("outbox"),
        opts.outbox_max_bytes,
    )?;
    let outbox = OutboxHandle::start(disk)?;
    run_deploy::recover(&opts.data, &outbox).await;
    let probes = Probes::load(&opts.probes)?;
    for w in &probes.warnings {
        tracing::warn!("{w}");
    }
    let probes: SharedProbes = Arc::new(Mutex::new(probes));
    let bind: SocketAddr = if opts.controller.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|source| AgentError::Io {
        context: format!("binding a UDP socket on {bind}"),
        source,
    })?;
    let facts = crate::host::facts();
    let running = run_deploy::Running::default();
    let _metrics = run_metrics::start(&opts, &probes, &outbox, &running).await?;
    let connect_loop = async {
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = tokio::time::Instant::now();
            match session(
                &endpoint, &client, &opts, &facts, &outbox, &probes, &running,
            )
            .await
            {
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
        () = tidy(&opts.data) => {}
        () = shutdown => tracing::info!("shutting down"),
    }
    endpoint.close(0u32.into(), b"agent shutting down");
    sweep_cgroups(&opts.data).await;
    Ok(())
}

/// How often the running agent removes the empty cgroups of finished
/// deployments (a committed install's, once the daemons it started end).
const TIDY: Duration = Duration::from_secs(5);

async fn tidy(data: &std::path::Path) {
    let mut tick = tokio::time::interval(TIDY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep_cgroups(data).await;
    }
}

async fn sweep_cgroups(data: &std::path::Path) {
    let data = data.to_path_buf();
    let swept =
        tokio::task::spawn_blocking(move || crate::deploy::recover::sweep_cgroups(&data)).await;
    if let Err(e) = swept {
        tracing::warn!("sweeping deployment cgroups: {e}");
    }
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
    outbox: &OutboxHandle,
    probes: &SharedProbes,
    running: &run_deploy::Running,
) -> std::result::Result<(), SessionError> {
    let (dropped, pending) = outbox.with(|s| (s.dropped(), s.len())).await;
    let hello = AgentMsg::Hello {
        protocol: PROTOCOL_VERSION,
        facts: facts.clone(),
        dropped_windows: dropped,
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
    tracing::info!(controller = %opts.controller, pending, "connected");
    running.session(true);
    // Down again however the session ends (an error, the controller's
    // close, or this future dropped at shutdown).
    let _down = run_messages::SessionDown(running);

    let sender = send_loop(outbox.clone(), send, dropped);
    let receiver = async {
        loop {
            match read_frame::<ControllerMsg>(&mut recv).await {
                Ok(msg) => run_messages::on_message(msg, opts, outbox, probes, running).await,
                Err(ReadError::Finished) => return Ok(()),
                Err(e) => return Err(closed(&read_reason(&e, &conn))),
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
/// A rise in the drop count is reported as it happens, so `backstop hosts`
/// shows it while the agent stays connected.
async fn send_loop(
    outbox: OutboxHandle,
    mut send: quinn::SendStream,
    mut reported: u64,
) -> std::result::Result<(), SessionError> {
    let closed = |e: quinn::WriteError| SessionError::Closed(e.to_string());
    let mut cursor = None;
    loop {
        let notified = outbox.bell.notified();
        let (batch, dropped) = outbox
            .with(move |s| (s.pending(cursor, 64), s.dropped()))
            .await;
        if dropped > reported {
            let msg = AgentMsg::Dropped {
                dropped_windows: dropped,
            };
            send.write_all(&wire::encode(&msg)).await.map_err(closed)?;
            reported = dropped;
        }
        if batch.is_empty() {
            notified.await;
            continue;
        }
        for (id, frame) in batch {
            send.write_all(&frame).await.map_err(closed)?;
            cursor = Some(id);
        }
    }
}

/// The controller's close reason, when it closed the connection on us.
fn read_reason(e: &ReadError, conn: &quinn::Connection) -> String {
    quic::close_reason(conn).unwrap_or_else(|| e.to_string())
}

/// Run one deployment in the background; it outlives the connection.
fn start_deployment(
    probes: SharedProbes,
    outbox: OutboxHandle,
    deployment: String,
    argv: Vec<String>,
    window_ms: u32,
) {
    tracing::info!(deployment, ?argv, "exec");
    tokio::spawn(async move {
        let opts = TrackOptions {
            stream: Stream::Live,
            window: Duration::from_millis(u64::from(window_ms.max(MIN_WINDOW_MS))),
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
        outbox.push_outcome(end).await;
    });
}
