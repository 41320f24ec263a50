//! An agent's start: the deployments a dead agent left unfinished are
//! rolled back and recorded as `interrupted`, and the empty cgroups of
//! finished ones are removed. Nothing an install did outlives the agent
//! that ran it without being either committed or undone.

use std::path::Path;

use serde::Serialize;

use super::DeployError;
use super::cgroup::{self, LiveCgroup};
use super::journal::{Journal, Phase, deployments_dir};
use super::rollback::{self, Host, RollbackReport};

/// What the recovery did for one deployment.
#[derive(Debug, Clone, Serialize)]
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
    let mut out = Vec::new();
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
        j.advance(data, Phase::Interrupted)?;
        out.push(Recovered {
            id: j.id.clone(),
            found: was,
            rollback,
        });
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
    // Only this data directory's finished deployments: another agent's
    // group (another data directory) is not ours to judge, and one just
    // made is empty for a moment before its runner moves in.
    let removed = cgroup::sweep(|id| Journal::load(data, id).map_or(true, |j| !j.phase.finished()));
    if !removed.is_empty() {
        tracing::info!(?removed, "removed empty deployment cgroups");
    }
    Ok(out)
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
