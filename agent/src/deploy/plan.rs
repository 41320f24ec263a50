//! From a manifest to the agent's [`Plan`], and the artifact made visible
//! to the install.
//!
//! Where the install sees the artifact: with the root "/", at its own
//! paths. With another root, the steps run chrooted and cannot reach the
//! host's paths, so the files are copied into `ROOT/tmp/backstop-<id>/`
//! after the snapshot, and "/tmp" joins the snapshot's scope (unless a
//! scope path already covers it): a rollback's restore then removes the
//! copy and puts /tmp's own times back, and a commit removes it. The
//! shadow, an overlay over the same root started after the copy, sees the
//! same paths, so `{artifact}` expands to one thing for both.

use std::path::{Path, PathBuf};

use backstop_common::manifest::{Manifest, ProbeKind as MProbe, Step};

use super::health::{ProbeKind, ProbeSpec};
use super::{Cmd, DeployError, Plan, ShadowPlan};

/// The in-root directory the artifact is copied to (root other than "/").
pub fn staging(id: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/backstop-{id}"))
}

/// The artifact's paths as the install sees them.
fn artifact_paths(m: &Manifest, id: &str) -> Vec<PathBuf> {
    let host: Vec<PathBuf> = match &m.artifact.dir {
        Some(d) => vec![d.clone()],
        None => m.artifact.debs.clone(),
    };
    if m.root == Path::new("/") {
        return host;
    }
    host.iter()
        .map(|p| staging(id).join(p.file_name().unwrap_or_default()))
        .collect()
}

fn cmd(s: &Step, artifact: &[PathBuf]) -> Cmd {
    Cmd {
        name: s.name.clone(),
        argv: s.argv(artifact),
        timeout: s.timeout,
        env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

impl Plan {
    /// The agent's plan for deployment `id` of a validated manifest.
    pub fn from_manifest(m: &Manifest, id: &str) -> Plan {
        let art = artifact_paths(m, id);
        let mut scope = m.scope.paths.clone();
        let staged = m.root != Path::new("/");
        if staged && !scope.iter().any(|p| Path::new("/tmp").starts_with(p)) {
            scope.push("/tmp".into());
        }
        let l = &m.shadow.limits;
        // The artifact's paths on the host.
        let host: Vec<PathBuf> = m
            .artifact
            .dir
            .iter()
            .chain(&m.artifact.debs)
            .cloned()
            .collect();
        Plan {
            name: m.name.clone(),
            root: m.root.clone(),
            mode: m.mode,
            steps: m.steps.iter().map(|s| cmd(s, &art)).collect(),
            scope,
            excludes: m.scope.exclude.clone(),
            artifact: if staged { host.clone() } else { Vec::new() },
            staging: staged.then(|| staging(id)),
            build: m.artifact.build.as_ref().map(|b| cmd(b, &[])),
            shadow: m.shadow.enabled.then(|| ShadowPlan {
                tests: m.shadow.tests.iter().map(|s| cmd(s, &art)).collect(),
                memory_bytes: Some((l.memory_mb * 1024 * 1024) as i64),
                pids: Some(l.pids as i64),
                // Percent of one CPU, as microseconds per 100 ms period.
                cpu_quota_us: l.cpu_percent.map(|p| i64::from(p) * 1000),
                upper_bytes: l.disk_mb.map(|mb| mb * 1024 * 1024),
            }),
            probes: m.probes.iter().map(|p| probe(p, &art)).collect(),
            monitor: m.monitor.period,
            baseline_samples: m.monitor.baseline_samples,
            rollback_hooks: m.rollback_hooks.iter().map(|s| cmd(s, &art)).collect(),
            memory_limit: m.monitor.memory_limit_mb.map(|mb| mb * 1024 * 1024),
            service_cgroup: m.monitor.service_cgroup.clone(),
            room_check: if m.policy.guards.exhaustion {
                host
            } else {
                Vec::new()
            },
            dry_run: false,
        }
    }
}

fn probe(p: &backstop_common::manifest::Probe, art: &[PathBuf]) -> ProbeSpec {
    let kind = match &p.kind {
        MProbe::Command { run } => ProbeKind::Command(cmd(
            &Step {
                name: p.name.clone(),
                run: run.clone(),
                timeout: p.timeout,
                env: std::collections::BTreeMap::default(),
            },
            art,
        )),
        MProbe::Tcp { addr } => ProbeKind::Tcp { addr: addr.clone() },
        MProbe::Http { url, expect_status } => ProbeKind::Http {
            url: url.clone(),
            expect_status: *expect_status,
        },
    };
    ProbeSpec {
        name: p.name.clone(),
        kind,
        interval: p.interval,
        timeout: p.timeout,
        latency_budget: p.latency_budget,
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> DeployError {
    move |source| DeployError::Io { context, source }
}

/// Copy the artifact into the root's staging directory (0700), when the
/// plan has one. Files by content (`cp -a` keeps a directory's shape).
pub fn stage(plan: &Plan) -> Result<(), DeployError> {
    let Some(rel) = &plan.staging else {
        return Ok(());
    };
    let dir = plan.root.join(rel.strip_prefix("/").unwrap_or(rel));
    crate::datadir::private_dir(&dir)?;
    for src in &plan.artifact {
        let dst = dir.join(src.file_name().unwrap_or_default());
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg("--")
            .arg(src)
            .arg(&dst)
            .status()
            .map_err(io_err(format!("copying the artifact {}", src.display())))?;
        if !ok.success() {
            return Err(DeployError::Io {
                context: format!(
                    "copying the artifact {} to {}",
                    src.display(),
                    dst.display()
                ),
                source: std::io::Error::other(format!("cp exited {ok}")),
            });
        }
    }
    Ok(())
}

/// Remove the staged copy (after a commit; a rollback's restore does it).
pub fn unstage(plan: &Plan) {
    if let Some(rel) = &plan.staging {
        let dir = plan.root.join(rel.strip_prefix("/").unwrap_or(rel));
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("removing the staged artifact {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chrooted_plan_stages_the_artifact_under_tmp_and_snapshots_tmp() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/hello.toml"
        ))
        .unwrap();
        let base = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
        let m = Manifest::from_toml_in(&text, Some(base)).unwrap();
        let p = Plan::from_manifest(&m, "d1");
        assert_eq!(
            p.steps[0].argv,
            ["dpkg", "-i", "/tmp/backstop-d1/hello_2.10-3_amd64.deb"]
        );
        assert!(p.scope.contains(&PathBuf::from("/tmp")), "{:?}", p.scope);
        assert_eq!(p.staging.as_deref(), Some(Path::new("/tmp/backstop-d1")));
        assert_eq!(
            p.steps[0].env,
            [("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string())]
        );
        let shadow = p.shadow.expect("hello has a shadow");
        assert_eq!(shadow.tests[0].argv, ["hello", "--greeting=backstop"]);
    }
}
