//! The corpus runner: each scenario of a catalog is a real `dpkg -i` of a
//! real package in a shadow on the Debian rootfs, watched by the probes,
//! with a fault injected or not. What it records (windows, outcome, onset)
//! is what the model learns from.
//!
//! Faults are injected the ways they happen: a maintainer script changed
//! by repacking the .deb (dpkg-deb -R / -b), a dependency left out, the
//! shadow's limits (memory, a small upper layer for a full disk), a
//! timeout. Every scenario is seeded: the same catalog gives the same
//! installs.

use std::path::Path;

use serde::Deserialize;

use super::corpus::{HEALTHY, Outcome, Record};

mod families;
mod host;
mod inject;
mod inject_more;
mod install;
mod room;
mod runner;
pub mod stop;

pub use families::{FamilyInfo, Group};
pub use host::{HostCondition, sweep_stale};

pub use room::{Recheck, recheck};
pub use runner::{RunOptions, record_from_report, run, run_scenario};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("scenario {scenario}: {reason}")]
    Scenario { scenario: String, reason: String },
    /// A signal asked the run to stop ([`stop`]); what it recorded is kept.
    #[error(
        "stopped by a signal; every install recorded so far is kept, and the same command resumes"
    )]
    Stopped,
}

type Result<T> = std::result::Result<T, CatalogError>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub defaults: Defaults,
    /// Each fault family's group, source and whether the default model
    /// trains on it (see [`FamilyInfo`]); a family missing here is in no
    /// group and trained on.
    #[serde(default)]
    pub families: std::collections::BTreeMap<String, FamilyInfo>,
    #[serde(rename = "scenario")]
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default = "default_window_ms")]
    pub window_ms: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Memory limit of every shadow, bytes.
    #[serde(default = "default_memory")]
    pub memory: u64,
}

fn default_window_ms() -> u32 {
    500
}
fn default_timeout() -> u64 {
    60
}
fn default_memory() -> u64 {
    1 << 30
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            window_ms: default_window_ms(),
            timeout_secs: default_timeout(),
            memory: default_memory(),
        }
    }
}

/// The fault families a scenario can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    None,
    /// The postinst does `work` seconds of its own work, then exits 1.
    FailingScript,
    /// Only the package's own .deb, none of the dependencies it needs.
    MissingDependency,
    /// The postinst writes a config with a syntax error and checks it.
    ConfigTypo,
    /// A service that answers, but slower with each request: the health
    /// probe's latency bound fails.
    SlowService,
    /// The upper layer is smaller than what the install writes.
    DiskFull,
    /// The postinst grows its memory until the limit.
    MemoryBlowup,
    /// The postinst waits on a lock a stray process holds, until the timeout.
    LockHang,
    /// The postinst spins on the CPU until the timeout.
    CpuRunaway,
    /// A service that crashes and is restarted, again and again; the
    /// health probe fails.
    CrashLoop,
    /// The postinst writes with O_DSYNC in small blocks for a long time.
    IoStall,
    /// The postinst retries a connection to an unreachable address, then fails.
    UnreachableNetwork,
    /// The postinst opens files and keeps them until it runs out (EMFILE).
    FdLeak,
    /// The postinst starts ever more children, then gives up.
    ForkStorm,
    /// The postinst appends to one log file until the disk is full.
    LogFlood,
    /// `useradd` of a system user whose name is taken with another uid.
    UserConflict,
    /// `update-alternatives --install` of a path that is not there.
    AlternativesConflict,
    /// The postinst waits for an answer that never comes (a prompt with no
    /// one to read it), until the timeout.
    PromptHang,
    /// The postinst migrates its data, reads all of it, and meets a record
    /// of a format it does not know.
    DataFormat,
    /// Nothing injected: the package fails on minbase by itself (its cause
    /// is the scenario's `cause`).
    Real,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::None => HEALTHY,
            Family::FailingScript => "failing-script",
            Family::MissingDependency => "missing-dependency",
            Family::ConfigTypo => "config-typo",
            Family::SlowService => "slow-service",
            Family::DiskFull => "disk-full",
            Family::MemoryBlowup => "memory-blowup",
            Family::LockHang => "lock-hang",
            Family::CpuRunaway => "cpu-runaway",
            Family::CrashLoop => "crash-loop",
            Family::IoStall => "io-stall",
            Family::UnreachableNetwork => "unreachable-network",
            Family::FdLeak => "fd-leak",
            Family::ForkStorm => "fork-storm",
            Family::LogFlood => "log-flood",
            Family::UserConflict => "user-conflict",
            Family::AlternativesConflict => "alternatives-conflict",
            Family::PromptHang => "prompt-hang",
            Family::DataFormat => "data-format",
            Family::Real => "real",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub package: String,
    #[serde(default = "none")]
    pub fault: Family,
    /// The fault's strength: seconds of work, MB of memory growth, delay
    /// steps; what it means is up to the family.
    #[serde(default = "one")]
    pub magnitude: u32,
    /// Seconds of normal work the postinst does before the fault starts.
    #[serde(default)]
    pub delay: u32,
    /// Idle seconds after that work (healthy and faulty alike).
    #[serde(default)]
    pub pause: u32,
    #[serde(default)]
    pub seed: u64,
    /// This scenario's timeout, for packages whose healthy install takes
    /// longer than the catalog's default allows.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// The host condition the install runs under (quiet when absent).
    #[serde(default)]
    pub host: Option<HostCondition>,
    /// A real failure's cause, as the package's own scripts said it.
    #[serde(default)]
    pub cause: Option<String>,
    /// On a healthy scenario: set up what this family sets up, without
    /// its fault ([`TWINNED`]). Only faulty scenarios started a service
    /// and were probed, ran in 64 MiB, or wrote to a tmpfs upper (no block
    /// I/O at all), so each of those marked a fault by itself; healthy
    /// twins take the marks away.
    #[serde(default)]
    pub twin: Option<Family>,
}

/// The families a healthy scenario can be the twin of: those whose fault
/// comes with a setting of its own (a service and its health probe, the
/// shadow's memory limit, a tmpfs upper of a given size).
pub const TWINNED: [Family; 5] = [
    Family::SlowService,
    Family::CrashLoop,
    Family::MemoryBlowup,
    Family::LogFlood,
    Family::DiskFull,
];

fn none() -> Family {
    Family::None
}
fn one() -> u32 {
    1
}

impl Scenario {
    /// The id of the deployment this scenario records.
    pub fn id(&self) -> String {
        format!("{}-{}", self.name, self.seed)
    }

    /// The fault variant: family, magnitude and timing (what a split keeps
    /// apart). Healthy installs have none.
    pub fn variant(&self) -> String {
        if self.fault == Family::None {
            HEALTHY.into()
        } else if self.fault == Family::Real {
            format!("real-{}", self.package)
        } else {
            format!("{}-m{}-d{}", self.fault.name(), self.magnitude, self.delay)
        }
    }
}

impl Catalog {
    /// Give a record of a faulty family that family's group and whether
    /// the default model trains on it, from the `[families]` table: one
    /// rule for `corpus run` and for `corpus pack --catalog`, which
    /// relabels a recorded corpus (a group is a judgement about the fault,
    /// not a measurement, and must not need a re-recording). A healthy
    /// record, or a family the table does not name, is left as it is.
    pub fn label(&self, r: &mut Record) {
        if r.family == HEALTHY {
            return;
        }
        if let Some(info) = self.families.get(&r.family) {
            r.group = info.group.name().into();
            r.held_out = info.held_out;
        }
    }
}

pub fn load(path: &Path) -> Result<Catalog> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
        context: format!("reading the catalog {}", path.display()),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// A catalog from its text (`source` names it in errors). Everything used
/// as a path component is checked here, before anything touches the disk:
/// a scenario name becomes OUT/work/NAME, which the runner empties with
/// remove_dir_all, and a package name DEBS/NAME and part of a postinst.
pub fn parse(text: &str, source: &str) -> Result<Catalog> {
    let bad = |reason: String| CatalogError::Bad {
        path: source.to_string(),
        reason,
    };
    let c: Catalog = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut seen = std::collections::HashSet::new();
    for (i, s) in c.scenarios.iter().enumerate() {
        for (field, value) in [("name", &s.name), ("package", &s.package)] {
            if !is_path_component(value) {
                return Err(bad(format!(
                    "scenario[{i}].{field} {value:?} is not a plain name: only letters, digits, '.', '_' and '-', and not '.' or '..'"
                )));
            }
        }
        if !seen.insert(&s.name) {
            return Err(bad(format!("scenario name {:?} appears twice", s.name)));
        }
        if let Some(f) = s.twin
            && (s.fault != Family::None || !TWINNED.contains(&f))
        {
            let names: Vec<&str> = TWINNED.iter().map(|f| f.name()).collect();
            return Err(bad(format!(
                "scenario[{i}].twin {:?}: only one of {names:?}, on a scenario with fault = \"none\"",
                f.name()
            )));
        }
    }
    families::check(&c).map_err(bad)?;
    Ok(c)
}

/// `[A-Za-z0-9._-]+`, and not `.` or `..`: a name that stays one path
/// component, and one word in a shell script.
fn is_path_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CatalogError {
    let context = context.into();
    move |source| CatalogError::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_parses_and_refuses_mistakes() {
        let dir = std::env::temp_dir().join(format!("backstop-cat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            "[defaults]\nwindow_ms = 250\n[[scenario]]\nname = \"a\"\npackage = \"hello\"\n[[scenario]]\nname = \"b\"\npackage = \"hello\"\nfault = \"memory-blowup\"\nmagnitude = 2\ndelay = 1\n",
        )
        .unwrap();
        let c = load(&p).unwrap();
        assert_eq!(c.defaults.window_ms, 250);
        assert_eq!(c.scenarios[0].variant(), "none");
        assert_eq!(c.scenarios[1].variant(), "memory-blowup-m2-d1");
        std::fs::write(
            &p,
            "[[scenario]]\nname = \"a\"\npackage = \"x\"\nfault = \"oops\"\n",
        )
        .unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("oops") && e.contains("c.toml"), "{e}");
        std::fs::write(&p, "[[scenario]]\nname = \"a\"\npackage = \"x\"\n[[scenario]]\nname = \"a\"\npackage = \"y\"\n").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("twice"));
        for (field, value) in [
            ("name", "../../../x"),
            ("name", ".."),
            ("name", "."),
            ("name", ""),
            ("name", "a/b"),
            ("package", "../p"),
            ("package", "p;rm"),
        ] {
            let (name, package) = if field == "name" {
                (value, "p")
            } else {
                ("ok", value)
            };
            let text = format!(
                "[[scenario]]\nname = \"fine\"\npackage = \"p\"\n[[scenario]]\nname = {name:?}\npackage = {package:?}\n"
            );
            let e = parse(&text, "c.toml").unwrap_err().to_string();
            assert!(
                e.contains(&format!("scenario[1].{field} {value:?}")) && e.contains("c.toml"),
                "{field} = {value:?}: {e}"
            );
        }
        assert!(
            parse(
                "[[scenario]]\nname = \"a-1.b_C\"\npackage = \"lib2.0-x\"\n",
                "c"
            )
            .is_ok()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
