//! `backstop-agent`: flags in, library call, exit code out.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use backstop_agent::probes::ProbeOptions;
use backstop_agent::watch::{WatchOptions, watch};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "backstop-agent",
    version,
    about = "backstop's host agent: watches installs in the kernel with eBPF",
    long_about = "backstop's host agent: loads eBPF probes, follows an install's process tree \
                  and folds what it does (syscalls, block I/O, scheduling, process life, network) \
                  into feature windows.\n\nNeeds root. Exit code 2 means it cannot run here \
                  (not root, BPF refused, probes not built)."
)]
struct Cli {
    /// Log filter for the agent's own diagnostics on stderr (e.g. info, debug, backstop_agent=trace).
    #[arg(
        long,
        global = true,
        env = "BACKSTOP_LOG",
        default_value = "warn,libcgroups=error"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run CMD as a tracked process tree and print one window per interval.
    ///
    /// Everything CMD and its descendants do is counted; nothing else on the
    /// host is. The agent exits with CMD's exit code (128+N if a signal N
    /// killed it). SIGINT and SIGTERM are passed on to CMD.
    ///
    /// Example: backstop-agent watch --json -- dpkg -i ./hello.deb
    Watch {
        /// Window length in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        window_ms: u64,
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
    },
    /// Shadows: run an install in a youki container whose root is an
    /// overlay over the target's root (DATA/agent/shadows).
    Shadow {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        action: ShadowAction,
    },
    /// Known-good state: content-addressed snapshots of a scope, and exact
    /// restore (DATA/agent/snapshots).
    Snapshot {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Run as the host's agent: keep a connection to the controller, run
    /// what it asks for under the probes, deliver every window.
    ///
    /// Windows go through an on-disk outbox (DATA/agent/outbox) first, so a
    /// controller that is away or restarts loses nothing below
    /// --outbox-max-bytes; above it the oldest are dropped and counted.
    Run {
        /// The controller's QUIC address (backstop serve --listen).
        #[arg(long)]
        controller: std::net::SocketAddr,
        /// This host's bundle from `backstop init` or `backstop enroll`.
        #[arg(long)]
        bundle: PathBuf,
        /// The name on the controller's certificate.
        #[arg(long, default_value = "backstop-controller")]
        server_name: String,
        /// Data directory (the outbox lives under DATA/agent/).
        #[arg(long, env = "BACKSTOP_DATA", default_value = "/var/lib/backstop")]
        data: PathBuf,
        #[arg(long, default_value_t = backstop_agent::spool::DEFAULT_MAX_BYTES)]
        outbox_max_bytes: u64,
        /// Forward the probes' own diagnostics (aya-log) to the log.
        #[arg(long)]
        probe_log: bool,
    },
}

/// Where a subcommand keeps its state, and how it prints.
#[derive(clap::Args)]
struct StoreArgs {
    /// Data directory.
    #[arg(
        long,
        env = "BACKSTOP_DATA",
        default_value = "/var/lib/backstop",
        global = true
    )]
    data: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum ShadowAction {
    /// Run CMD in a fresh shadow, then each --test in the same shadow, and
    /// report exit codes, output tails, what the install changed in the
    /// shadow's filesystem (added, changed, removed) and, with --json, its
    /// windows (stream `shadow`).
    ///
    /// The shadow has its own pid, mount, uts, ipc and network namespaces
    /// (loopback only), Docker's default capabilities less CAP_MKNOD, a
    /// seccomp filter (no mount, namespaces, modules, kexec, BPF,
    /// keyrings), nosuid,nodev mounts on the host side, and the limits
    /// given. The target's root is never written. Exit code 0 when
    /// CMD and every test exited 0 and nothing was OOM-killed, 1
    /// otherwise, 2 when shadows cannot run here.
    ///
    /// Example: backstop-agent shadow run --root /srv/rootfs --copy-in ./pkg.deb --memory 512M --test 'pkg --version' -- dpkg -i /.backstop-shadow/in/pkg.deb
    Run {
        /// The target's root, the overlay's read-only lower layer.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Memory limit (bytes; K, M, G suffixes). The OOM killer acts inside.
        #[arg(long, value_parser = parse_bytes)]
        memory: Option<i64>,
        /// Most processes and threads at once (default 2048).
        #[arg(long)]
        pids: Option<i64>,
        /// CPU quota in microseconds per 100 ms (50000 = half a core).
        #[arg(long)]
        cpu_quota_us: Option<i64>,
        /// A shell command run in the shadow after CMD (repeatable).
        #[arg(long = "test", value_name = "CMD")]
        tests: Vec<String>,
        /// A host file to make available at /.backstop-shadow/in/NAME (repeatable).
        #[arg(long = "copy-in", value_name = "FILE")]
        copy_in: Vec<PathBuf>,
        /// Window length in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        window_ms: u64,
        /// Kill the shadow after this many seconds (CMD and tests together);
        /// the report says timed_out.
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// Put the overlay's upper layer on a tmpfs of this size (K, M, G):
        /// what the install writes must fit, as on a nearly full disk.
        #[arg(long, value_parser = parse_bytes)]
        upper_size: Option<i64>,
        /// Let the shadow's sync calls reach the disk. By default the
        /// overlay is volatile: fsync inside the shadow returns at once and
        /// copy-ups are not synced (the upper layer is thrown away anyway),
        /// which makes installs fast and spares the host's disk. With
        /// --durable the shadow's I/O windows look like a live install's.
        #[arg(long)]
        durable: bool,
        /// The command and its arguments, run inside the shadow.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Benchmark (cargo xtask bench shadow): REPS runs of /bin/true in a
    /// shadow against unshare+chroot on the same overlay; JSON in ms.
    #[command(hide = true)]
    Bench {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long, default_value_t = 20)]
        reps: usize,
    },
    /// Remove what agents killed mid-run left behind: containers and their
    /// processes, overlay mounts, cgroups, directories. Shadows a running
    /// agent holds are left alone. `shadow run` does this first too.
    Sweep,
}

/// "512M" -> 536870912.
fn parse_bytes(s: &str) -> Result<i64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1i64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a size in bytes (e.g. 536870912, 512M, 2G)"))
}

async fn shadow_cmd(data: &std::path::Path, json: bool, action: ShadowAction) -> i32 {
    use backstop_agent::shadow;
    match action {
        ShadowAction::Bench { root, reps } => match shadow::bench_true(data, &root, reps) {
            Ok((s, u)) => {
                println!("{}", serde_json::json!({"shadow_ms": s, "unshare_ms": u}));
                0
            }
            Err(e) => {
                eprintln!("backstop-agent: {e}");
                1
            }
        },
        ShadowAction::Sweep => {
            if let Err(e) = require_root() {
                eprintln!("backstop-agent: {e}");
                return 2;
            }
            let (swept, problems) = shadow::container::sweep(&shadow::shadows_dir(data));
            if json {
                println!(
                    "{}",
                    serde_json::json!({"swept": swept, "problems": problems})
                );
            } else {
                println!(
                    "swept {} shadow(s){}",
                    swept.len(),
                    if swept.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", swept.join(" "))
                    }
                );
                for p in &problems {
                    eprintln!("backstop-agent: {p}");
                }
            }
            i32::from(!problems.is_empty())
        }
        ShadowAction::Run {
            root,
            memory,
            pids,
            cpu_quota_us,
            tests,
            copy_in,
            window_ms,
            timeout_secs,
            upper_size,
            durable,
            cmd,
        } => {
            let opts = shadow::ShadowOptions {
                root,
                limits: shadow::Limits {
                    memory_bytes: memory,
                    pids,
                    cpu_quota_us,
                },
                cmd,
                tests,
                copy_in,
                window: Duration::from_millis(window_ms),
                timeout: timeout_secs.map(Duration::from_secs),
                upper_size: upper_size.map(|b| b as u64),
                durable,
            };
            let probes =
                match backstop_agent::probes::Probes::load(&ProbeOptions { probe_log: false }) {
                    Ok(p) => std::sync::Arc::new(std::sync::Mutex::new(p)),
                    Err(e) => {
                        eprintln!("backstop-agent: {e}");
                        return e.exit_code();
                    }
                };
            let mut sink = shadow::Collect::default();
            match shadow::run(&probes, data, &opts, &mut sink).await {
                Ok(r) => {
                    if json {
                        let mut v = serde_json::to_value(&r).unwrap_or_default();
                        v["windows"] = serde_json::Value::Array(
                            sink.windows.iter().map(|w| w.to_json()).collect(),
                        );
                        v["events"] = serde_json::to_value(&sink.events).unwrap_or_default();
                        println!("{v}");
                    } else {
                        let code =
                            |c: Option<i32>| c.map_or("killed".to_string(), |c| c.to_string());
                        println!("shadow {} over {}", r.id, r.root.display());
                        println!(
                            "  cmd   exit {:>6}  {:>9.1} ms  {}",
                            code(r.cmd.exit_code),
                            r.cmd.duration_ms.unwrap_or(0.0),
                            r.cmd.command
                        );
                        for t in &r.tests {
                            println!(
                                "  test  exit {:>6}  {:>9.1} ms  {}",
                                code(t.exit_code),
                                t.duration_ms.unwrap_or(0.0),
                                t.command
                            );
                        }
                        if r.timed_out {
                            println!("  TIMED OUT: killed after the timeout");
                        }
                        if r.oom_killed {
                            println!("  OOM-killed {} time(s) (memory limit)", r.oom_kills);
                        }
                        println!(
                            "  filesystem: {} added, {} changed, {} removed",
                            r.diff.added.len(),
                            r.diff.changed.len(),
                            r.diff.removed.len()
                        );
                        for p in &r.diff.added {
                            println!("    + {p}");
                        }
                        for p in &r.diff.changed {
                            println!("    ~ {p}");
                        }
                        for p in &r.diff.removed {
                            println!("    - {p}");
                        }
                        println!("  {} windows, {} lost events", r.windows, r.lost_events);
                        if !r.cmd.output_tail.is_empty() && r.cmd.exit_code != Some(0) {
                            println!(
                                "  cmd output (tail):
{}",
                                r.cmd.output_tail
                            );
                        }
                    }
                    if r.passed() { 0 } else { 1 }
                }
                Err(e) => {
                    eprintln!("backstop-agent: {e}");
                    e.exit_code()
                }
            }
        }
    }
}

fn require_root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "not root (euid {euid}): shadows need root (namespaces, mounts, cgroups)"
        ));
    }
    Ok(())
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// Snapshot the scope: every path under --scope (as seen inside --root),
    /// minus --exclude globs. Prints the snapshot id. Refuses, before
    /// copying anything, when the store lacks room for the worst case.
    ///
    /// Example: backstop-agent snapshot create --root / --scope /etc --scope /usr --exclude '/usr/share/doc/**'
    Create {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long = "scope", required = true)]
        scopes: Vec<PathBuf>,
        #[arg(long = "exclude")]
        excludes: Vec<String>,
    },
    /// Put the scope back exactly as snapshot ID recorded it. Checks every
    /// object first; an interrupted restore finishes when run again.
    ///
    /// With --changes, only the paths in the change log (from `watch
    /// --changes`) and what lies under them are looked at, so the time
    /// follows what the install changed, not the scope's size. An
    /// incomplete log is not trusted: the whole scope is walked.
    ///
    /// Example: backstop-agent snapshot restore 1a2b3c --changes /var/tmp/install.changes --verify
    Restore {
        id: String,
        /// Compare the whole scope with the snapshot afterwards. After a
        /// --changes restore, a difference the change log did not name is
        /// listed and repaired by a full restore; exit 1 if any remains.
        #[arg(long)]
        verify: bool,
        /// Change log written by `backstop-agent watch --changes FILE`.
        #[arg(long, value_name = "FILE")]
        changes: Option<PathBuf>,
    },
    /// Snapshots, oldest first.
    List,
    /// One snapshot's root, scopes and entries.
    Show { id: String },
    /// What differs between snapshot ID and the tree now.
    Diff { id: String },
    /// Delete stored content no snapshot refers to.
    Gc,
}

fn snapshot_cmd(data: &std::path::Path, json: bool, action: SnapshotAction) -> Result<i32, String> {
    use backstop_agent::snapshot::{self, Scope, Store};
    let store = Store::open(data).map_err(|e| e.to_string())?;
    let print = |v: serde_json::Value, human: String| {
        if json {
            println!("{v}");
        } else {
            println!("{human}");
        }
    };
    match action {
        SnapshotAction::Create {
            root,
            scopes,
            excludes,
        } => {
            let r = snapshot::create(
                &store,
                &Scope {
                    root,
                    paths: scopes,
                    excludes,
                },
            )
            .map_err(|e| e.to_string())?;
            print(
                serde_json::to_value(&r).unwrap_or_default(),
                format!(
                    "{}\t{} entries, {} bytes; hashed {} files ({} bytes)",
                    r.id, r.entries, r.bytes, r.hashed_files, r.hashed_bytes
                ),
            );
        }
        SnapshotAction::Restore {
            id,
            verify,
            changes,
        } => {
            let changes = changes
                .map(|p| backstop_agent::changes::ChangeSet::read(&p))
                .transpose()
                .map_err(|e| e.to_string())?;
            let r = snapshot::restore(&store, &id, verify, changes.as_ref())
                .map_err(|e| e.to_string())?;
            if let Some(why) = &r.full_walk_reason {
                eprintln!("backstop-agent: walked the whole scope: {why}");
            }
            for p in &r.missed_by_changes {
                eprintln!("backstop-agent: the change log missed {p} (repaired)");
            }
            print(
                serde_json::to_value(&r).unwrap_or_default(),
                format!(
                    "restored {} ({}): {} removed, {} files rewritten, {} recreated, {} metadata reset{}{}",
                    r.id,
                    match r.looked_at {
                        Some(n) => format!("{n} entries looked at, from the change log"),
                        None => "whole scope".to_string(),
                    },
                    r.removed,
                    r.content_restored,
                    r.recreated,
                    r.metadata_reset,
                    if r.resumed {
                        " (finished an interrupted restore)"
                    } else {
                        ""
                    },
                    match r.verified {
                        Some(true) => "; verified identical",
                        Some(false) => "; VERIFY FOUND DIFFERENCES",
                        None => "",
                    }
                ),
            );
            if r.verified == Some(false) {
                return Ok(1);
            }
        }
        SnapshotAction::List => {
            let list = store.list().map_err(|e| e.to_string())?;
            let rows: Vec<_> = list
                .iter()
                .map(|s| serde_json::json!({"id": s.id, "root": s.root, "created_ms": s.created_ms, "entries": s.entries.len(), "bytes": s.bytes(),
                    "scopes": s.scopes.iter().map(|p| format!("/{}", String::from_utf8_lossy(p))).collect::<Vec<_>>()}))
                .collect();
            let human = list
                .iter()
                .map(|s| {
                    format!(
                        "{}\t{}\t{} entries\t{} bytes",
                        s.id,
                        s.root.display(),
                        s.entries.len(),
                        s.bytes()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(serde_json::Value::Array(rows), human);
        }
        SnapshotAction::Show { id } => {
            let s = store.load(&id).map_err(|e| e.to_string())?;
            let entries: Vec<_> = s
                .entries
                .iter()
                .map(|e| serde_json::json!({"path": format!("/{}", String::from_utf8_lossy(&e.path)), "kind": format!("{:?}", e.kind),
                    "mode": format!("{:o}", e.mode), "uid": e.uid, "gid": e.gid, "size": e.size, "hash": e.hash.map(hex::encode)}))
                .collect();
            let human = s
                .entries
                .iter()
                .map(|e| {
                    format!(
                        "{:>7o} {:>5}:{:<5} {:>10} /{}",
                        e.mode,
                        e.uid,
                        e.gid,
                        e.size,
                        String::from_utf8_lossy(&e.path)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(
                serde_json::json!({"id": s.id, "root": s.root, "entries": entries}),
                human,
            );
        }
        SnapshotAction::Diff { id } => {
            let s = store.load(&id).map_err(|e| e.to_string())?;
            let d = snapshot::diff(&s).map_err(|e| e.to_string())?;
            let mut human = Vec::new();
            human.extend(d.added.iter().map(|p| format!("+ {p}")));
            human.extend(d.changed.iter().map(|p| format!("~ {p}")));
            human.extend(d.removed.iter().map(|p| format!("- {p}")));
            print(
                serde_json::to_value(&d).unwrap_or_default(),
                human.join("\n"),
            );
        }
        SnapshotAction::Gc => {
            let (n, bytes) = store.gc().map_err(|e| e.to_string())?;
            print(
                serde_json::json!({"objects_freed": n, "bytes_freed": bytes}),
                format!("freed {n} objects, {bytes} bytes"),
            );
        }
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backstop-agent: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Watch {
                window_ms,
                json,
                events,
                scope,
                probe_log,
                kill_grace_secs,
                changes,
                cmd,
            } => {
                let opts = WatchOptions {
                    window: Duration::from_millis(window_ms),
                    json,
                    events,
                    scope,
                    probes: ProbeOptions { probe_log },
                    kill_grace: Duration::from_secs(kill_grace_secs),
                    changes,
                };
                let mut out = std::io::stdout();
                match watch(&cmd, &opts, &mut out).await {
                    Ok(summary) => summary.exit_code,
                    Err(e) => {
                        eprintln!("backstop-agent: {e}");
                        e.exit_code()
                    }
                }
            }
            Command::Shadow { store, action } => shadow_cmd(&store.data, store.json, action).await,
            Command::Snapshot { store, action } => {
                match snapshot_cmd(&store.data, store.json, action) {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("backstop-agent: {e}");
                        1
                    }
                }
            }
            Command::Run {
                controller,
                bundle,
                server_name,
                data,
                outbox_max_bytes,
                probe_log,
            } => {
                let opts = backstop_agent::run::RunOptions {
                    controller,
                    server_name,
                    bundle,
                    data,
                    spool_max_bytes: outbox_max_bytes,
                    probes: ProbeOptions { probe_log },
                };
                let shutdown = async {
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(t) => t,
                        Err(_) => return std::future::pending().await,
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                };
                match backstop_agent::run::run(opts, shutdown).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("backstop-agent: {e}");
                        e.exit_code()
                    }
                }
            }
        }
    });
    ExitCode::from(code.clamp(0, 255) as u8)
}
