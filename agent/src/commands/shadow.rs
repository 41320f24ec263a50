//! `backstop-agent shadow`: run an install in a shadow, or sweep what dead
//! agents left behind.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_agent::probes::{ProbeOptions, Probes};
use backstop_agent::shadow;
use backstop_common::root::require_root;
use backstop_common::window::{DEFAULT_WINDOW_MS, MIN_WINDOW_MS};

use super::{Outcome, StoreArgs};
use crate::render;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
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
    Run(RunArgs),
    /// Benchmark (cargo xtask bench shadow): REPS runs of /bin/true in a
    /// shadow against unshare+chroot on the same overlay; JSON in ms.
    #[cfg(feature = "test-seams")]
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

#[derive(clap::Args)]
struct RunArgs {
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
    #[arg(long, default_value_t = DEFAULT_WINDOW_MS, value_parser = clap::value_parser!(u32).range(i64::from(MIN_WINDOW_MS)..))]
    window_ms: u32,
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

pub async fn shadow(args: Args) -> Outcome {
    let StoreArgs { data, json } = args.store;
    match args.action {
        Action::Run(run) => run_shadow(&data, json, run).await,
        #[cfg(feature = "test-seams")]
        Action::Bench { root, reps } => {
            let (s, u) = shadow::bench_true(&data, &root, reps)?;
            println!("{}", render::bench(&s, &u));
            Ok(0)
        }
        Action::Sweep => sweep(&data, json),
    }
}

/// 1 when something could not be swept, each problem on stderr.
fn sweep(data: &Path, json: bool) -> Outcome {
    require_root("shadows need root (namespaces, mounts, cgroups)")?;
    let (swept, problems) = shadow::container::sweep(&shadow::shadows_dir(data));
    print!("{}", render::sweep(&swept, &problems, json));
    if !json {
        for p in &problems {
            eprintln!("backstop-agent: {p}");
        }
    }
    Ok(i32::from(!problems.is_empty()))
}

/// 0 when the shadow passed (CMD and every test exited 0, no OOM kill, no
/// timeout), 1 when it did not.
async fn run_shadow(data: &Path, json: bool, a: RunArgs) -> Outcome {
    let opts = shadow::ShadowOptions {
        root: a.root,
        limits: shadow::Limits {
            memory_bytes: a.memory,
            pids: a.pids,
            cpu_quota_us: a.cpu_quota_us,
        },
        cmd: a.cmd,
        tests: a.tests,
        copy_in: a.copy_in,
        window: Duration::from_millis(u64::from(a.window_ms)),
        timeout: a.timeout_secs.map(Duration::from_secs),
        upper_size: a.upper_size.map(|b| b as u64),
        durable: a.durable,
        frozen: None,
    };
    let probes = Arc::new(Mutex::new(Probes::load(&ProbeOptions {
        probe_log: false,
    })?));
    let mut sink = shadow::Collect::default();
    let report = shadow::run(&probes, data, &opts, &mut sink).await?;
    let report = sink.into_report(report);
    if json {
        println!("{}", render::json(&report));
    } else {
        print!("{}", render::shadow_text(&report));
    }
    Ok(i32::from(!report.verdict().passed()))
}
