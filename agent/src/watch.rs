//! `backstop-agent watch`: run one command as a tracked tree and print its
//! windows. The building block every other flow (exec, deploy, shadow)
//! reuses: probes loaded, one slot claimed, windows folded on a timer.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_common::ProcRecord;
use backstop_common::features::{FEATURES, SCHEMA_VERSION};
use backstop_common::window::{Stream, Window};

use crate::error::{AgentError, Result};
use crate::probes::{ProbeOptions, Probes};
use crate::track::{SharedProbes, StopSignals, Summary, TrackOptions, WindowSink, track};
use crate::tree::Stdout;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub window: Duration,
    pub json: bool,
    /// Also print exec/exit/OOM records.
    pub events: bool,
    /// Whose filesystem `host_disk_free_bytes` reports.
    pub scope: PathBuf,
    pub probes: ProbeOptions,
    /// After SIGINT/SIGTERM is forwarded, how long the command gets before SIGKILL.
    pub kill_grace: Duration,
    /// Write the tree's change log here.
    pub changes: Option<PathBuf>,
}

/// Load the probes, run `argv` tracked, and write its windows to `out`.
/// Returns when the command has exited and the summary is written.
pub async fn watch(
    argv: &[OsString],
    opts: &WatchOptions,
    out: &mut (dyn Write + Send),
) -> Result<Summary> {
    let mut signals = StopSignals::listen()?;
    let probes = Probes::load(&opts.probes)?;
    for w in &probes.warnings {
        tracing::warn!("{w}");
    }
    let probes: SharedProbes = Arc::new(Mutex::new(probes));
    let track_opts = TrackOptions {
        stream: Stream::Live,
        window: opts.window,
        scope: opts.scope.clone(),
        stdout: if opts.json {
            Stdout::Stderr
        } else {
            Stdout::Inherit
        },
        kill_grace: opts.kill_grace,
        changes: opts.changes.clone(),
        timeout: None,
    };
    let mut printer = Printer {
        json: opts.json,
        events: opts.events,
        header_done: false,
        out,
    };
    let summary = track(&probes, argv, &track_opts, Some(&mut signals), &mut printer).await?;
    printer.summary(&summary)?;
    Ok(summary)
}

struct Printer<'a> {
    json: bool,
    events: bool,
    header_done: bool,
    out: &'a mut (dyn Write + Send),
}

impl WindowSink for Printer<'_> {
    fn window(&mut self, w: &Window) -> Result<()> {
        let out = &mut *self.out;
        let res = if self.json {
            writeln!(out, "{}", w.to_json())
        } else {
            if self.header_done {
                Ok(())
            } else {
                self.header_done = true;
                writeln!(
                    out,
                    "{:>4} {:>7} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10} {:>8} {:>6} {:>5} {:>5} {:>5} {:>5}",
                    "seq", "secs", "syscalls", "errors", "enoent", "blk_read", "blk_write", "dirtied", "cpu_ms", "ctxsw", "forks", "execs", "exits", "lost"
                )
            }
            .and_then(|()| {
                let g = |n: &str| w.get(n).unwrap_or(0.0);
                writeln!(
                    out,
                    "{:>4} {:>7.3} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10} {:>8.1} {:>6} {:>5} {:>5} {:>5} {:>5}",
                    w.seq,
                    (w.end_ns - w.start_ns) as f64 / 1e9,
                    g("syscalls_total"),
                    g("syscall_errors_total"),
                    g("syscall_errors_enoent"),
                    human_bytes(g("block_read_bytes")),
                    human_bytes(g("block_write_bytes")),
                    human_bytes(g("page_dirtied_bytes")),
                    g("sched_on_cpu_ns") / 1e6,
                    g("sched_ctx_switches"),
                    g("proc_forks"),
                    g("proc_execs"),
                    format!("{}{}", g("proc_exits"), if g("proc_exits_nonzero") + g("proc_signal_deaths") > 0.0 { "!" } else { "" }),
                    w.lost_events,
                )
            })
        };
        res.and_then(|()| out.flush()).map_err(write_err)
    }

    fn event(&mut self, ev: &ProcRecord) -> Result<()> {
        if !self.events {
            return Ok(());
        }
        let out = &mut *self.out;
        let e = backstop_common::wire::ProcEvent::from(ev);
        let res = if self.json {
            let mut j = serde_json::json!({"kind": e.kind, "pid": e.pid, "tgid": e.tgid, "ts_ns": e.ts_ns, "comm": e.comm});
            if let Some(f) = &e.filename {
                j["filename"] = f.clone().into();
            }
            if let (Some(code), Some(sig)) = (e.exit_code, e.signal) {
                j["exit_code"] = code.into();
                j["signal"] = sig.into();
            }
            writeln!(out, "{}", serde_json::json!({ "event": j }))
        } else {
            match (&e.filename, e.exit_code, e.signal) {
                (Some(f), _, _) => writeln!(out, "  exec  pid {} {f}", e.pid),
                (_, Some(code), Some(sig)) => writeln!(
                    out,
                    "  exit  pid {} {} code {code} signal {sig}",
                    e.pid, e.comm
                ),
                _ => writeln!(out, "  {} pid {} {}", e.kind, e.pid, e.comm),
            }
        };
        res.map_err(write_err)
    }
}

impl Printer<'_> {
    fn summary(&mut self, s: &Summary) -> Result<()> {
        let out = &mut *self.out;
        let res = if self.json {
            writeln!(
                out,
                "{}",
                serde_json::json!({"summary": {"exit_code": s.exit_code, "windows": s.windows, "lost_events": s.lost_events, "schema": SCHEMA_VERSION, "features": FEATURES.len(), "changes": s.changes}})
            )
        } else {
            writeln!(
                out,
                "exit code {} after {} windows; lost events: {} (schema {}){}",
                s.exit_code,
                s.windows,
                s.lost_events,
                SCHEMA_VERSION,
                match s.changes {
                    Some(c) => format!(
                        "; change records: {}, lost {}, unresolved {}",
                        c.records, c.lost, c.unresolved
                    ),
                    None => String::new(),
                }
            )
        };
        res.and_then(|()| out.flush()).map_err(write_err)
    }
}

fn write_err(source: std::io::Error) -> AgentError {
    AgentError::Io {
        context: "writing windows to stdout".into(),
        source,
    }
}

fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}
