//! An agent's start: the deployments a dead agent left unfinished are
//! rolled back and recorded as `interrupted`, and the empty cgroups of
//! finished ones are removed. Nothing an install did outlives the agent
//! that ran it without being either committed or undone.
//!
//! The report of each recovery is written durably (`interrupted.json` in
//! the deployment's directory) before the journal says `interrupted`, and
//! is removed only once the outbox holds it on disk ([`reported`]): an
//! agent that dies again in between finds it at its next start and hands
//! it over again (the controller stores it once, by its seq).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::DeployError;
use super::cgroup::{self, LiveCgroup};
use super::journal::{Journal, Phase, deployments_dir, write_private};
use super::rollback::{self, Host, RollbackReport};

/// What the recovery did for one deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovered {
    pub id: String,
    /// The phase the dead agent left it in.
    pub found: Phase,
    /// None when the live install had not started: nothing to undo.
    pub rollback: Option<RollbackReport>,
}

/// Roll back every unfinished deployment under DATA, then sweep leftover
/// shadows and empty cgroups. Call it holding the data directory's lock.
pub async fn recover(data: &Path) -> Result<Vec<Recovered>, DeployError> {
    let (found, bad) = Journal::unfinished(data);
    for b in bad {
        tracing::error!("a deployment journal cannot be read, left as it is: {b}");
    }
    let mut out = unreported(data);
    for mut j in found {
        let was = j.phase;
        tracing::warn!(deployment = j.id, phase = ?was, "rolling back a deployment a stopped agent left unfinished");
        let rollback = match &j.cgroup {
            // The journal names the cgroup before the live install starts:
            // without one, the host was not touched.
            None => None,
            Some(path) => {
                let cg = path.is_dir().then(|| LiveCgroup { path: path.clone() });
                let changes = deployments_dir(data).join(&j.id).join("changes");
                let plan = j.plan.clone();
                let mut host = Host {
                    data,
                    plan: &plan,
                    cgroup: cg,
                    snapshot: j.snapshot.clone(),
                    changes: changes.exists().then_some(changes),
                };
                let reason = format!("interrupted: the agent stopped while {}", phase_text(was));
                Some(rollback::rollback(&mut host, &plan, &reason).await)
            }
        };
        j.note = Some(match &rollback {
            Some(r) => r.reason.clone(),
            None => "interrupted before the live install started; nothing to undo".into(),
        });
        let r = Recovered {
            id: j.id.clone(),
            found: was,
            rollback,
        };
        let report = serde_json::to_vec_pretty(&r).map_err(|e| DeployError::Io {
            context: format!("encoding the recovery report of {}", j.id),
            source: std::io::Error::other(e),
        })?;
        write_private(&report_path(data, &j.id), &report)?;
        j.advance(data, Phase::Interrupted)?;
        out.push(r);
    }
    let shadows = crate::shadow::shadows_dir(data);
    if shadows.is_dir() {
        let (swept, problems) = crate::shadow::container::sweep(&shadows);
        if !swept.is_empty() {
            tracing::warn!(?swept, "swept shadows a stopped agent left behind");
        }
        for p in problems {
            tracing::warn!("shadow sweep: {p}");
        }
    }
    sweep_cgroups(data);
    Ok(out)
}

/// Remove the empty live cgroups of DATA's finished deployments: at the
/// start, and from then on by the running agent (`run.rs`), so a
/// committed install's group goes once the daemons it started end.
/// Only this data directory's finished deployments: another agent's group
/// (another data directory) is not ours to judge, and one just made is
/// empty for a moment before its runner moves in.
pub fn sweep_cgroups(data: &Path) -> Vec<std::path::PathBuf> {
    let removed = cgroup::sweep(|id| Journal::load(data, id).map_or(true, |j| !j.phase.finished()));
    if !removed.is_empty() {
        tracing::info!(?removed, "removed empty deployment cgroups");
    }
    removed
}

fn report_path(data: &Path, id: &str) -> std::path::PathBuf {
    deployments_dir(data).join(id).join("interrupted.json")
}

/// Recovery reports an earlier start wrote but did not see into the
/// outbox (it died first).
fn unreported(data: &Path) -> Vec<Recovered> {
    let Ok(rd) = std::fs::read_dir(deployments_dir(data)) else {
        return Vec::new();
    };
    let mut out: Vec<Recovered> = rd
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            // Only a finished journal: an unfinished one is recovered anew.
            Journal::load(data, &id)
                .ok()
                .filter(|j| j.phase.finished())?;
            let bytes = std::fs::read(report_path(data, &id)).ok()?;
            match serde_json::from_slice(&bytes) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(
                        deployment = id,
                        "an unreported recovery cannot be read: {e}"
                    );
                    None
                }
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    for r in &out {
        tracing::warn!(
            deployment = r.id,
            "a recovery an earlier start did not report"
        );
    }
    out
}

/// The outbox holds `id`'s recovery report on disk: it need not be
/// handed over again.
pub fn reported(data: &Path, id: &str) {
    let path = report_path(data, id);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), "removing a delivered recovery report: {e}");
    }
}

fn phase_text(p: Phase) -> &'static str {
    match p {
        Phase::Snapshotting => "taking the snapshot",
        Phase::Shadowing => "running the shadow",
        Phase::Installing => "installing",
        Phase::Monitoring => "monitoring",
        Phase::RollingBack => "rolling back",
        Phase::Committed | Phase::RolledBack | Phase::Interrupted => "finishing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent that dies after recovering but before its outbox took the
    /// report hands the same report over at its next start.
    #[test]
    fn a_recovery_is_reported_again_until_the_outbox_holds_it() {
        let data = std::env::temp_dir().join(format!("backstop-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let j = Journal {
            id: "d1".into(),
            plan: super::super::tests::plan(),
            snapshot: Some("s1".into()),
            cgroup: None,
            phase: Phase::Snapshotting,
            note: None,
        };
        j.save(&data).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = rt.block_on(recover(&data)).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].found, Phase::Snapshotting);
        assert_eq!(
            Journal::load(&data, "d1").unwrap().phase,
            Phase::Interrupted
        );
        // Died before the outbox had it: the next start finds it again.
        let again = rt.block_on(recover(&data)).unwrap();
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(
            (again[0].id.as_str(), again[0].found),
            ("d1", Phase::Snapshotting)
        );
        reported(&data, "d1");
        assert!(rt.block_on(recover(&data)).unwrap().is_empty());
        std::fs::remove_dir_all(&data).unwrap();
    }
}
