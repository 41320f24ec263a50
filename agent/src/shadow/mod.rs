//! Shadows: the same install, at the same time, in a youki container whose
//! root is an overlay over the target's root. It sees the host's exact
//! configuration and changes nothing: every write lands in the overlay's
//! upper directory, which is also the record of what the install did.
//!
//! A shadow runs one step runner as its init: CMD, then each test, in the
//! same container, so a service CMD started is still there for the tests.
//! The init is tracked by the probes from its first instruction (it is
//! blocked before its exec until start), as stream `shadow`.
//!
//! Nothing is left behind: a finished shadow is torn down (container,
//! processes, cgroups, mounts, directories); one whose agent died is
//! swept by the next agent that starts a shadow or by `shadow sweep`.

#[cfg(feature = "test-seams")]
mod bench;
mod cgroups;
pub mod container;
mod creator;
mod diff;
mod frozen;
mod helper;
mod lower;
mod overlay;
mod spec;
mod steps;
mod sweep;

pub(crate) use steps::sh_quote;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backstop_common::window::{Stream, Window};

use crate::error::{AgentError, Result};
use crate::track::{SharedProbes, Summary, TrackOptions, WindowSink, track_with};
use crate::tree::{Exit, Stdout, Tracked};
pub use backstop_common::fsdiff::FsDiff;
pub use backstop_common::shadow::{ShadowReport, StepResult, Verdict};
#[cfg(feature = "test-seams")]
pub use bench::bench_true;
pub use container::Limits;
pub use frozen::FrozenScope;
pub use helper::shadow_exec;
use lower::Lower;
use steps::{read_step, runner_script};

#[derive(Debug, Clone)]
pub struct ShadowOptions {
    /// The lower layer: the target's root (read-only).
    pub root: PathBuf,
    pub limits: Limits,
    pub cmd: Vec<OsString>,
    /// Shell commands run after CMD, in the same shadow.
    pub tests: Vec<String>,
    /// Host files made available inside at /.backstop-shadow/in/NAME.
    pub copy_in: Vec<PathBuf>,
    pub window: Duration,
    /// Kill the shadow when it runs longer (CMD and tests together).
    pub timeout: Option<Duration>,
    /// Put the overlay's upper layer on a tmpfs of this many bytes: what
    /// the install writes must fit (a full disk, on purpose).
    pub upper_size: Option<u64>,
    /// Let sync calls reach the disk. Off by default: the upper layer is
    /// thrown away, so its durability buys nothing, and since Linux 6.12
    /// overlayfs fsyncs after every copy-up, directories included, which
    /// roughly doubled a small `dpkg -i` and loads the host's disk while
    /// the live install runs. On, the shadow's I/O windows look like a
    /// live install's (the corpus runner turns it on).
    pub durable: bool,
    /// See the scope as this snapshot recorded it, not as the root is now
    /// (`frozen.rs`): a deployment's shadow, beside a live install that
    /// changes the root. None: the root itself is the lower layer.
    pub frozen: Option<FrozenScope>,
}

/// Where shadows live under the data directory, as an absolute path: the
/// kernel reports mounts by absolute path, and a teardown that looked for
/// a relative one would miss the shadow's overlay and leave it mounted.
pub fn shadows_dir(data: &Path) -> PathBuf {
    let dir = data.join("agent").join("shadows");
    std::path::absolute(&dir).unwrap_or(dir)
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

fn new_id() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    format!("sh-{}", hex::encode(b))
}

/// What a shadow cannot run without, checked before anything is made: a
/// command, a root with a shell for the step runner, the copy-in files.
/// Returns the canonical root.
fn check_inputs(opts: &ShadowOptions) -> Result<PathBuf> {
    if opts.cmd.is_empty() {
        return Err(AgentError::NoCommand);
    }
    let root = std::fs::canonicalize(&opts.root)
        .map_err(io_err(format!("--root {}", opts.root.display())))?;
    if !root.join("bin/sh").exists() {
        return Err(AgentError::Io {
            context: format!(
                "--root {}: no /bin/sh in it to run the steps",
                root.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    for f in &opts.copy_in {
        if !f.is_file() {
            return Err(AgentError::Io {
                context: format!("--copy-in {}: not a readable file", f.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
    }
    Ok(root)
}

/// Run CMD and the tests in a fresh shadow, windows and lifecycle records
/// to `sink`. The report's `windows` and `events` are left empty: they are
/// the sink's (a [`Collect`] keeps them for the report).
pub async fn run(
    probes: &SharedProbes,
    data: &Path,
    opts: &ShadowOptions,
    sink: &mut dyn WindowSink,
) -> Result<ShadowReport> {
    let root = check_inputs(opts)?;
    let shadows = shadows_dir(data);
    std::fs::create_dir_all(&shadows).map_err(io_err(format!("creating {}", shadows.display())))?;
    let (swept, problems) = container::sweep(&shadows);
    if !swept.is_empty() {
        tracing::warn!(?swept, "swept shadows a dead agent left behind");
    }
    for p in problems {
        tracing::warn!("sweep: {p}");
    }

    let id = new_id();
    let l = container::Layout::new(&shadows, &id);
    let _owner = container::Owner::create(&l)?;
    // Held until the teardown: `snapshot gc` waits for this shadow.
    let mut _store_lock = None;
    let result = match frozen::lower_for(data, &root, &l.dir, opts.frozen.as_ref()) {
        Ok((lower, lock)) => {
            _store_lock = lock;
            let r = run_in(probes, &lower, &l, opts, sink).await;
            r.map(|s| (s, lower))
        }
        Err(e) => Err(e),
    };
    // The runner has exited (or never started): everything in the pid
    // namespace is dead, so the upper dir no longer moves.
    let diff = match &result {
        Ok((_, lower)) => diff::upper_diff(&l.upper, lower),
        Err(_) => Ok(FsDiff::default()),
    };
    let cmd_text = opts
        .cmd
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let cmd = read_step(&l.io, 0, cmd_text);
    let tests = opts
        .tests
        .iter()
        .enumerate()
        .map(|(i, t)| read_step(&l.io, i + 1, t.clone()))
        .collect();
    let oom_kills = container::oom_kills(&id);
    let cleanup_problems = container::teardown(&shadows, &l);
    for p in &cleanup_problems {
        tracing::error!("shadow {id} teardown: {p}");
    }
    let (summary, _) = result?;
    Ok(ShadowReport {
        id,
        root,
        cmd,
        tests,
        timed_out: summary.timed_out,
        oom_killed: oom_kills > 0,
        oom_kills,
        diff: diff?,
        windows: Vec::new(),
        events: Vec::new(),
        lost_events: summary.lost_events,
        cleanup_problems,
    })
}

async fn run_in(
    probes: &SharedProbes,
    lower: &Lower,
    l: &container::Layout,
    opts: &ShadowOptions,
    sink: &mut dyn WindowSink,
) -> Result<Summary> {
    container::mount_overlay(lower, l, opts.upper_size, opts.durable)?;
    let inputs = l.io.join("in");
    std::fs::create_dir_all(&inputs).map_err(io_err(format!("creating {}", inputs.display())))?;
    for f in &opts.copy_in {
        let name = f.file_name().unwrap_or_default();
        std::fs::copy(f, inputs.join(name))
            .map_err(io_err(format!("--copy-in {}", f.display())))?;
    }
    let script = l.io.join("run.sh");
    std::fs::write(&script, runner_script(&opts.cmd, &opts.tests))
        .map_err(io_err(format!("writing {}", script.display())))?;
    let spec = container::spec(
        l,
        vec!["/bin/sh".into(), format!("{}/run.sh", container::IO_MOUNT)],
        &opts.limits,
    )?;
    let shadows = l.dir.parent().unwrap_or(Path::new("/")).to_path_buf();
    let launch = |register: &mut dyn FnMut(u32) -> Result<()>| -> Result<Tracked> {
        let creator = start(&shadows, l, &spec, |pid| {
            register(pid as u32)?;
            hold_before_start();
            Ok(())
        })?;
        Ok(Tracked {
            pid: creator.init_pid as u32,
            exit: Exit::Waiter(tokio::task::spawn_blocking(move || creator.wait())),
        })
    };
    let track_opts = TrackOptions {
        stream: Stream::Shadow,
        window: opts.window,
        // The shadow's disk is its upper layer's filesystem: what the
        // install writes lands there, never on the root below. With a
        // tmpfs upper, the root's filesystem would show the host's other
        // work and none of the install's (a log flood filling the tmpfs
        // read as nothing at all).
        scope: l.upper.clone(),
        stdout: Stdout::Stderr,
        kill_grace: Duration::from_secs(2),
        changes: None,
        timeout: opts.timeout,
    };
    track_with(probes, launch, &track_opts, None, sink).await
}

/// A test seam, compiled only with the `test-seams` feature (the tests
/// crate turns it on; release builds never read the variable): stop here
/// (init created, not started) so a test can kill the agent at the worst
/// moment.
fn hold_before_start() {
    #[cfg(feature = "test-seams")]
    if let Some(ms) = std::env::var("BACKSTOP_TEST_HOLD_BEFORE_START_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Create the container (in the creator child), let `before_start` see
/// the init's pid while it is still blocked before its exec, bring up
/// loopback, start it. The creator is returned to wait for the init; on a
/// failure it is dropped here, which kills the init before the caller's
/// teardown.
fn start(
    shadows: &Path,
    l: &container::Layout,
    spec: &libcontainer::oci_spec::runtime::Spec,
    before_start: impl FnOnce(i32) -> Result<()>,
) -> Result<container::Creator> {
    let mut c = container::create(shadows, l, spec)?;
    before_start(c.init_pid)?;
    container::loopback_up(c.init_pid)?;
    c.start(&l.id)?;
    Ok(c)
}

/// A sink that keeps the windows and lifecycle records for the report.
#[derive(Default)]
pub struct Collect {
    pub windows: Vec<Window>,
    pub events: Vec<backstop_common::wire::ProcEvent>,
}

impl Collect {
    /// The report with what this sink kept.
    pub fn into_report(self, report: ShadowReport) -> ShadowReport {
        ShadowReport {
            windows: self.windows,
            events: self.events,
            ..report
        }
    }
}

impl WindowSink for Collect {
    fn window(&mut self, w: &Window) -> Result<()> {
        self.windows.push(w.clone());
        Ok(())
    }
    fn event(&mut self, ev: &backstop_common::ProcRecord) -> Result<()> {
        self.events.push(ev.into());
        Ok(())
    }
}
