//! The deployment manifest: what an SRE writes (TOML) and what the
//! controller sends the agent (postcard, inside a wire message).
//!
//! One set of types serves both ends. They are parsed from TOML by a
//! walker of our own (`parse.rs`) rather than by serde's derive, for two
//! reasons: every error must name the field by its full dotted path
//! (`steps[2].timeout`), which serde's TOML errors do not, and the TOML
//! shape an SRE writes (`type = "http"` in a probe, `"30s"` for a
//! duration) differs from the wire's (an externally tagged enum, a
//! `Duration`). The serde derives below are for the wire and for storing a
//! manifest as JSON; they carry no `flatten`, no untagged or internally
//! tagged enum and no `skip_serializing_if`, because postcard cannot
//! decode those. A manifest that came from [`Manifest::from_toml`] has
//! passed every check in `check.rs`: consumers may rely on the
//! invariants each field's doc states.
//!
//! A manifest is refused before anything runs. Nothing here touches the
//! disk except [`Manifest::load`], which reads the one file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod check;
mod duration;
mod load;
mod parse;
mod probe;
mod read;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;

pub use duration::{format_duration, parse_duration};
pub use probe::split_http_url;

/// The largest manifest file read, in bytes: a manifest is a page of
/// text, and the parser holds all of it in memory.
pub const MAX_BYTES: usize = 256 * 1024;
/// At most this many install steps, shadow tests, probes or hooks each.
pub const MAX_COMMANDS: usize = 64;
/// At most this many argv elements in one command.
pub const MAX_ARGV: usize = 256;
/// At most this many bytes in one argv element, env value, name or path.
pub const MAX_STRING: usize = 4096;
/// At most this many .deb files, scope paths or excludes each.
pub const MAX_PATHS: usize = 256;
/// The longest timeout, interval or monitoring period accepted: a day. A
/// longer one is a typo (`"30h"` for `"30m"`), and a deployment that
/// holds a host's rollback open for longer is not what anyone meant.
pub const MAX_DURATION: Duration = Duration::from_hours(24);

/// A validated deployment manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The deployment's name: 1-64 of `[A-Za-z0-9._-]`, not starting
    /// with `.` or `-` (used in ids, alerts and file names).
    pub name: String,
    /// What is installed, for history ("this package and version's
    /// outcomes on other hosts") and alert labels. Optional: a deployment
    /// that is not one package has none.
    pub package: Option<PackageRef>,
    /// The target root: absolute, normalised (no `.`, `..` or trailing
    /// `/`). `/` (the default) is the host itself; a test points it at a
    /// Debian rootfs. Steps, hooks and command probes run chrooted into it
    /// when it is not `/`.
    pub root: PathBuf,
    /// Whether live waits for the shadow.
    pub mode: Mode,
    /// The files installed.
    pub artifact: Artifact,
    /// The install steps, run in order on the host (and in the shadow);
    /// at least one.
    pub steps: Vec<Step>,
    /// The state snapshotted before the install and restored on rollback.
    pub scope: Scope,
    /// The shadow install.
    pub shadow: ShadowPlan,
    /// Health probes, run during the install and the monitoring period,
    /// and again after a rollback.
    pub probes: Vec<Probe>,
    /// The post-install monitoring.
    pub monitor: Monitor,
    /// How the controller decides.
    pub policy: Policy,
    /// Run in order after a rollback has restored the scope (e.g.
    /// restarting a service so it reads the restored files).
    pub rollback_hooks: Vec<Hook>,
}

/// A package name and version, as dpkg spells them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    /// Non-empty, no whitespace or `/`.
    pub name: String,
    /// None: history matches the name alone.
    pub version: Option<String>,
}

/// Whether the live install waits for the shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    /// `concurrent` (the default): live and shadow start together; the
    /// shadow's evidence arrives while live runs.
    #[default]
    Concurrent,
    /// `shadow-first`: live starts only after the shadow finished clean.
    /// Slower, but a change the shadow rejects never touches the host.
    /// Requires `shadow.enabled`.
    ShadowFirst,
}

impl Mode {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Concurrent => "concurrent",
            Mode::ShadowFirst => "shadow-first",
        }
    }
}

/// The files installed: .deb files, or a directory; exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// .deb files on the agent's host: absolute, normalised, names ending
    /// in `.deb`. Empty when `dir` is set.
    pub debs: Vec<PathBuf>,
    /// A directory on the agent's host whose files are the artifact
    /// (absolute, normalised). None when `debs` is set.
    pub dir: Option<PathBuf>,
    /// Run on the agent's host (not chrooted) before the snapshot, to
    /// produce the files above from a configuration request; a failing
    /// build ends the deployment before anything changed.
    pub build: Option<Command>,
}

/// One command: an argv (no shell is implied; write `["sh", "-c", ...]`
/// for one), a timeout, and extra environment.
///
/// The argv element `{artifact}` (exactly that) stands for the artifact's
/// paths as the command sees them: one element per .deb, or the directory.
/// [`Step::argv`] expands it, so the host, the shadow and the hooks agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Unique among its list's names; same character rules as
    /// `Manifest::name`.
    pub name: String,
    /// Non-empty; no element empty or holding a NUL byte.
    pub run: Vec<String>,
    /// Killed (its whole tree) when it runs longer; over 0 and at most
    /// [`MAX_DURATION`]. Default 5 minutes.
    #[serde(with = "duration::serde_human")]
    pub timeout: Duration,
    /// Added to the command's environment; names are `[A-Za-z_][A-Za-z0-9_]*`.
    pub env: BTreeMap<String, String>,
}

/// A build command, shaped like a step.
pub type Command = Step;
/// A rollback hook, shaped like a step.
pub type Hook = Step;

/// The argv placeholder for the artifact's paths.
pub const ARTIFACT_PLACEHOLDER: &str = "{artifact}";

impl Step {
    /// The argv with every `{artifact}` element replaced by `artifact`'s
    /// paths (as the command will see them: inside the root or shadow).
    pub fn argv(&self, artifact: &[PathBuf]) -> Vec<String> {
        let mut out = Vec::with_capacity(self.run.len() + artifact.len());
        for a in &self.run {
            if a == ARTIFACT_PLACEHOLDER {
                out.extend(artifact.iter().map(|p| p.to_string_lossy().into_owned()));
            } else {
                out.push(a.clone());
            }
        }
        out
    }
}

/// The state scope: what is snapshotted and restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Paths as seen inside the root: absolute, normalised, at least one,
    /// none below another (a nested path is already covered).
    pub paths: Vec<PathBuf>,
    /// Globs (the snapshot's syntax: `*`, `**`, `?`, `[...]`) of paths
    /// left out, absolute, each starting under one of `paths`.
    pub exclude: Vec<String>,
}

/// The shadow install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowPlan {
    /// Default true. Off: no shadow evidence, and `mode` must be
    /// `concurrent`.
    pub enabled: bool,
    /// Run in the shadow after the steps succeeded; a failing test is a
    /// rollback ("shadow test").
    pub tests: Vec<Step>,
    /// The shadow container's resource limits.
    pub limits: Limits,
}

/// A shadow's resource limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit, MiB; default 1024, 16 to 1048576.
    pub memory_mb: u64,
    /// Process limit; default 1024, 16 to 1048576.
    pub pids: u64,
    /// CPU quota in percent of one CPU (1 to 100000); None: no quota.
    pub cpu_percent: Option<u32>,
    /// The shadow's writable layer, MiB (a tmpfs of that size); None: the
    /// agent's default.
    pub disk_mb: Option<u64>,
}

/// A health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Unique among the probes; same rules as `Manifest::name`.
    pub name: String,
    /// What is probed.
    pub kind: ProbeKind,
    /// Time between two probes; 100 ms to [`MAX_DURATION`], default 5 s.
    #[serde(with = "duration::serde_human")]
    pub interval: Duration,
    /// A probe that takes longer failed; over 0, at most `interval`,
    /// default 2 s (or `interval` when that is shorter).
    #[serde(with = "duration::serde_human")]
    pub timeout: Duration,
    /// A probe slower than this counts as a latency failure, though it
    /// answered; at most `timeout`. None: only `timeout` applies.
    #[serde(with = "duration::serde_human_opt")]
    pub latency_budget: Option<Duration>,
}

/// What a probe does. TOML: `type = "command" | "tcp" | "http"` beside the
/// kind's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeKind {
    /// Run `run` (chrooted like the steps); healthy when it exits 0.
    Command { run: Vec<String> },
    /// Connect to `addr` (`IP:PORT` or `[IPv6]:PORT`, from the agent's
    /// network namespace); healthy when the connection is accepted.
    Tcp { addr: String },
    /// `GET url`; healthy when the status is `expect_status` (default
    /// 200). Plain `http://` only (a health endpoint on the host or its
    /// loopback; no TLS client in the agent), no user info, no fragment.
    Http { url: String, expect_status: u16 },
}

impl ProbeKind {
    /// The TOML `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ProbeKind::Command { .. } => "command",
            ProbeKind::Tcp { .. } => "tcp",
            ProbeKind::Http { .. } => "http",
        }
    }
}

/// The post-install monitoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitor {
    /// How long the host is watched after the last step before the
    /// deployment may commit; default 30 s, 0 to [`MAX_DURATION`] (0: commit
    /// when the install and shadow are done).
    #[serde(with = "duration::serde_human")]
    pub period: Duration,
    /// Samples of each HTTP and TCP probe the agent takes just before the
    /// live install starts: the performance check's "before". Default
    /// [`DEFAULT_BASELINE_SAMPLES`], 0 (no baseline, no performance check)
    /// or [`MIN_BASELINE_SAMPLES`] to [`MAX_BASELINE_SAMPLES`].
    #[serde(default = "default_baseline_samples")]
    pub baseline_samples: u32,
    /// The live install's memory limit in MiB (memory.max of its cgroup),
    /// [`MIN_MEMORY_LIMIT_MB`] to [`MAX_MEMORY_LIMIT_MB`]; None (the
    /// default): no limit, and no memory-growth rule.
    #[serde(default)]
    pub memory_limit_mb: Option<u64>,
    /// The service's cgroup, relative to the cgroup v2 root (no `..`, no
    /// leading `/`): its CPU and memory join the performance check. None
    /// (the default): the check measures probe latency only.
    #[serde(default)]
    pub service_cgroup: Option<PathBuf>,
}

/// The smallest live memory limit: below it dpkg itself cannot run.
pub const MIN_MEMORY_LIMIT_MB: u64 = 16;
/// The largest (16 TiB): a typo, not a host.
pub const MAX_MEMORY_LIMIT_MB: u64 = 1 << 24;

/// The baseline's default size: enough for the Mann-Whitney test to
/// reach p < 0.001 on a clean separation from 5 samples during.
pub const DEFAULT_BASELINE_SAMPLES: u32 = 10;
/// Fewer than the performance check's 5 samples a side could never judge.
pub const MIN_BASELINE_SAMPLES: u32 = 5;
/// A baseline holds the live install back; 1000 samples at the shortest
/// spacing is already minutes.
pub const MAX_BASELINE_SAMPLES: u32 = 1000;

fn default_baseline_samples() -> u32 {
    DEFAULT_BASELINE_SAMPLES
}

/// How the controller decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// The model's alarm threshold on P(failure), in (0, 1); None (the
    /// default): the threshold the model was calibrated with.
    pub threshold: Option<f32>,
    /// The brakes on the model.
    pub guards: Guards,
}

/// The guards that keep one noisy signal from rolling a host back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guards {
    /// Consecutive live windows over the threshold before the model alone
    /// rolls back; default 2, 1 to 1000. Live and shadow over it together
    /// need one.
    pub min_windows: u32,
    /// The live-shadow divergence above which the two are said to
    /// disagree, in (0, 1]; None (the default): the engine's own.
    pub max_divergence: Option<f32>,
    /// Whether this package's outcomes on other hosts weigh in; default true.
    pub history: bool,
    /// The performance check's effect-size guard: the relative rise of a
    /// probe's median latency (0.2 = +20%) below which a statistically
    /// significant shift is still not a regression; default 0.2, in (0, 100].
    pub max_latency_increase: f32,
    /// Whether a projected exhaustion (the scope's filesystem filling, the
    /// live install's memory growing to its limit) rolls back by itself;
    /// default (and in manifests stored before it existed) true. Off, only
    /// the step's own failure (ENOSPC, the OOM kill) acts, as with
    /// exit-code-only rollback. On, the agent also refuses, before the
    /// snapshot, a .deb artifact whose files do not fit the filesystems
    /// they unpack to (the agent's `deploy/room/`).
    #[serde(default = "read::on")]
    pub exhaustion: bool,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            min_windows: 2,
            max_divergence: None,
            history: true,
            max_latency_increase: 0.2,
            exhaustion: true,
        }
    }
}

/// Why a manifest was refused. Display gives this level only; the cause
/// is `source()` (print the chain, as anyhow's `{:#}` does).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read (it is not judged).
    #[error("reading manifest {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// Not TOML at all; `line` is 1-based.
    #[error("not valid TOML (line {line}): {reason}")]
    Syntax { line: usize, reason: String },
    /// A field is missing, unknown, of the wrong type or fails a check;
    /// `field` is its full dotted path (`steps[2].timeout`).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// What was wrong with the file `path` (not `Read`, which names it).
    #[error("{path}")]
    File {
        path: PathBuf,
        source: Box<ManifestError>,
    },
}

impl ManifestError {
    /// The dotted path of the field at fault, when one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManifestError::Invalid { field, .. } => Some(field),
            ManifestError::File { source, .. } => source.field(),
            _ => None,
        }
    }
}
