//! `backstop-agent watch`: run CMD as a tracked tree, windows to stdout.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use backstop_agent::probes::ProbeOptions;
use backstop_agent::watch::WatchOptions;
use backstop_common::window::{DEFAULT_WINDOW_MS, MIN_WINDOW_MS};

use super::Outcome;

#[derive(clap::Args)]
pub struct Args {
    /// Window length in milliseconds.
    #[arg(long, default_value_t = DEFAULT_WINDOW_MS, value_parser = clap::value_parser!(u32).range(i64::from(MIN_WINDOW_MS)..))]
    window_ms: u32,
    /// One JSON object per window on stdout, then a summary line; CMD's
    /// stdout goes to stderr so stdout stays machine-readable.
    #[arg(long)]
    json: bool,
    /// Also print exec, exit and OOM-kill records of the tree.
    #[arg(long)]
    events: bool,
    /// Path whose filesystem's free space `host_disk_free_bytes` reports.
    #[arg(long, default_value = "/")]
    scope: PathBuf,
    /// Forward the probes' own diagnostics (aya-log) to the log. Off by default.
    #[arg(long)]
    probe_log: bool,
    /// Seconds CMD gets after a forwarded SIGINT/SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    kill_grace_secs: u64,
    /// Record which paths the tree may change (opened for writing,
    /// created, renamed, linked, removed, chmod/chown, xattrs, times)
    /// into FILE, for `snapshot restore --changes FILE`. Each path is
    /// resolved as the process saw it (cwd, dirfd, chroot, symlinks);
    /// one that cannot be resolved marks the log incomplete, and a
    /// restore given an incomplete log walks the whole scope.
    #[arg(long, value_name = "FILE")]
    changes: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<OsString>,
}

/// Exits with CMD's own exit code.
pub async fn watch(args: Args) -> Outcome {
    let opts = WatchOptions {
        window: Duration::from_millis(u64::from(args.window_ms)),
        json: args.json,
        events: args.events,
        scope: args.scope,
        probes: ProbeOptions {
            probe_log: args.probe_log,
        },
        kill_grace: Duration::from_secs(args.kill_grace_secs),
        changes: args.changes,
    };
    let summary = backstop_agent::watch::watch(&args.cmd, &opts, &mut std::io::stdout()).await?;
    Ok(summary.exit_code)
}
