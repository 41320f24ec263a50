//! `backstop-agent doctor`: can this host run the agent, and if not, what
//! is missing and the one line that fixes it. An SRE runs it first, before
//! a unit that fails at start says the same thing one error at a time.
//!
//! Each group of checks has its own file: `kernel` (version, BTF, the
//! probes' hooks), `trace_fs` (tracefs), `bpf` (a verifier load of the real
//! object), `cgroup` (v2 and the live cgroup's parent), `shadow` (overlayfs,
//! namespaces, the target root), `disk` (room for snapshots), `controller`
//! (a QUIC/TLS handshake with this host's identity). Every check looks and
//! leaves nothing behind: what it creates to try (a cgroup, a mount in a
//! private namespace) it removes, and nothing the host has is changed.

mod bpf;
mod cgroup;
mod controller;
mod disk;
mod kernel;
mod shadow;
mod trace_fs;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

/// A check's outcome. Any `Fail` makes the doctor exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check: a stable dotted name (tests and scripts match on it), what
/// was found, and for anything not ok the one-line fix.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(name: impl Into<String>, detail: impl Into<String>, fix: &str) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.to_string()),
        }
    }

    pub fn fail(name: impl Into<String>, detail: impl Into<String>, fix: &str) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.to_string()),
        }
    }
}

/// What to check against.
#[derive(Debug, Clone)]
pub struct Options {
    /// The agent's data directory (snapshots, shadows, outbox live under it).
    pub data: PathBuf,
    /// The root shadows mirror: `/` on a real host.
    pub target: PathBuf,
    /// The controller to reach, if any.
    pub controller: Option<SocketAddr>,
    /// This host's bundle (`backstop init` / `backstop enroll`) for mutual TLS.
    pub bundle: Option<PathBuf>,
    /// The name on the controller's certificate.
    pub server_name: String,
}

/// Every check's result, in a fixed order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The worst status of any check.
    pub verdict: Status,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.verdict == Status::Fail
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// One line per check, then the fixes; for a person at a terminal.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(out, "{:<4}  {:<28} {}", c.status.as_str(), c.name, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "      {:<28} fix: {fix}", "");
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let _ = writeln!(
            out,
            "verdict: {} ({} checks, {} failed, {} warnings)",
            self.verdict.as_str(),
            self.checks.len(),
            count(Status::Fail),
            count(Status::Warn)
        );
        out
    }
}

/// Run every check. The blocking ones run on a blocking thread; the
/// controller's handshake is the only async one.
pub async fn run(opts: &Options) -> Report {
    let o = opts.clone();
    let mut checks = tokio::task::spawn_blocking(move || local_checks(&o))
        .await
        .unwrap_or_else(|e| {
            vec![Check::fail(
                "doctor",
                format!("a check panicked: {e}"),
                "report this as a bug",
            )]
        });
    checks.push(controller::check(opts).await);
    let verdict = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    Report { verdict, checks }
}

fn local_checks(opts: &Options) -> Vec<Check> {
    let mut checks = vec![kernel::version()];
    let btf = kernel::btf(&mut checks);
    checks.push(trace_fs::tracefs());
    checks.extend(kernel::hooks(btf.as_ref()));
    checks.push(bpf::load());
    checks.extend(cgroup::checks());
    checks.extend(shadow::checks(&opts.data, &opts.target));
    checks.push(disk::room(&opts.data));
    checks.push(disk::dpkg_deb());
    checks
}

/// The effective uid, for details that say who ran the doctor.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}
