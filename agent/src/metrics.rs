//! `backstop-agent run --metrics ADDR`: the agent's Prometheus metrics.
//! Counters live in process-wide atomics the outbox's `push` adds to; the
//! rest (the probes' run counts from the kernel, RSS, outbox depth,
//! deployments running) is read when scraped, from the sources `run.rs`
//! hands over. Names start with `backstop_agent_` and carry their unit;
//! the README's metrics table lists every one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use backstop_common::http::{Access, PROMETHEUS_TEXT, Reply, Router, Server};
use backstop_common::prom::{Kind, Text};
use backstop_common::window::{Stream, Window};

use crate::error::Result;
use crate::probes::{ProgramStats, RunStats};
use crate::track::SharedProbes;

/// The flags named in errors.
pub const ADDR_FLAG: &str = "--metrics";
pub const TOKEN_FLAG: &str = "--metrics-token-file";

static LIVE_WINDOWS: AtomicU64 = AtomicU64::new(0);
static SHADOW_WINDOWS: AtomicU64 = AtomicU64::new(0);
static LOST_EVENTS: AtomicU64 = AtomicU64::new(0);

/// Windows were queued for the controller (`run.rs`'s outbox push).
pub fn windows_queued(windows: &[Window]) {
    for w in windows {
        let c = match w.stream {
            Stream::Shadow => &SHADOW_WINDOWS,
            Stream::Live => &LIVE_WINDOWS,
        };
        c.fetch_add(1, Ordering::Relaxed);
        LOST_EVENTS.fetch_add(w.lost_events, Ordering::Relaxed);
    }
}

/// What is read at scrape time.
#[derive(Clone)]
pub struct Sources {
    pub probes: SharedProbes,
    /// (messages waiting in the outbox, windows it dropped so far).
    pub outbox: Arc<dyn Fn() -> (usize, u64) + Send + Sync>,
    pub deployments: Arc<dyn Fn() -> usize + Send + Sync>,
}

/// The running server and the stats it keeps enabled; both end when this
/// is dropped.
pub struct Serving {
    pub server: Server,
    _stats: RunStats,
}

/// Enable BPF run stats and serve `/metrics` on `access`.
pub async fn serve(access: Access, sources: Sources) -> Result<Serving> {
    access.check()?;
    let stats = RunStats::enable()?;
    let router = Router::new().get("/metrics", move |_| {
        let sources = sources.clone();
        async move {
            let body = tokio::task::spawn_blocking(move || render(&sources))
                .await
                .unwrap_or_default();
            Reply::ok(PROMETHEUS_TEXT, body)
        }
    });
    let server = Server::start(access, router).await?;
    tracing::info!(metrics = %server.local_addr(), "serving /metrics");
    // A line scripts and tests can wait for.
    eprintln!("backstop-agent: metrics on {}", server.local_addr());
    Ok(Serving {
        server,
        _stats: stats,
    })
}

/// The body (blocking: it takes the probes' lock and reads /proc).
fn render(s: &Sources) -> String {
    let programs: Vec<ProgramStats> = s
        .probes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .program_stats();
    let (depth, dropped) = (s.outbox)();
    let mut t = Text::new();
    let fam = "backstop_agent_probe_runs_total";
    t.family(fam, "Runs of each of the agent's eBPF programs, as the kernel counts them while BPF stats are enabled (while --metrics serves).", Kind::Counter);
    for p in &programs {
        t.sample(fam, &[("program", p.program)], p.run_count as f64);
    }
    let fam = "backstop_agent_probe_run_time_seconds_total";
    t.family(fam, "Time spent in each of the agent's eBPF programs, as the kernel counts it while BPF stats are enabled.", Kind::Counter);
    for p in &programs {
        t.sample(fam, &[("program", p.program)], p.run_time_ns as f64 / 1e9);
    }
    let fam = "backstop_agent_resident_memory_bytes";
    t.family(fam, "The agent's resident set size.", Kind::Gauge)
        .sample(fam, &[], rss_bytes() as f64);
    let fam = "backstop_agent_outbox_messages";
    t.family(
        fam,
        "Messages in the on-disk outbox not yet acknowledged by the controller.",
        Kind::Gauge,
    )
    .sample(fam, &[], depth as f64);
    let fam = "backstop_agent_outbox_dropped_windows_total";
    t.family(
        fam,
        "Windows the outbox dropped (over --outbox-max-bytes, or shed behind a slow disk).",
        Kind::Counter,
    )
    .sample(fam, &[], dropped as f64);
    let fam = "backstop_agent_windows_queued_total";
    t.family(
        fam,
        "Feature windows queued in the outbox for the controller, by stream.",
        Kind::Counter,
    )
    .sample(
        fam,
        &[("stream", "live")],
        LIVE_WINDOWS.load(Ordering::Relaxed) as f64,
    )
    .sample(
        fam,
        &[("stream", "shadow")],
        SHADOW_WINDOWS.load(Ordering::Relaxed) as f64,
    );
    let fam = "backstop_agent_lost_events_total";
    t.family(
        fam,
        "Events the probes could not record, as the queued windows report them.",
        Kind::Counter,
    )
    .sample(fam, &[], LOST_EVENTS.load(Ordering::Relaxed) as f64);
    let fam = "backstop_agent_deployments_running";
    t.family(fam, "Deployments this agent runs now.", Kind::Gauge)
        .sample(fam, &[], (s.deployments)() as f64);
    t.finish()
}

/// VmRSS from /proc/self/statm (pages), 0 if unreadable.
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}
