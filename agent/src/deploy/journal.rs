//! The journal of a deployment in progress: what an agent that dies
//! mid-install leaves for the next one to undo. It is written, fsynced and
//! renamed into place before the live install starts, and again at each
//! phase, so a crash at any moment leaves either the old record or the new
//! one, never half of one.
//!
//! Layout: DATA/agent/deployments/<id>/ (0700) holds `journal.json` (0600),
//! and the live install's `io/` (runner script, step outputs) and
//! `changes` (the change log the restore reads).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DeployError, Plan};

/// Where a deployment is. Every phase but the last three is unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Snapshotting,
    Shadowing,
    Installing,
    Monitoring,
    RollingBack,
    Committed,
    RolledBack,
    /// Found unfinished by a later agent, and rolled back by it.
    Interrupted,
}

impl Phase {
    pub fn finished(self) -> bool {
        matches!(
            self,
            Phase::Committed | Phase::RolledBack | Phase::Interrupted
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub plan: Plan,
    pub snapshot: Option<String>,
    pub cgroup: Option<PathBuf>,
    pub phase: Phase,
    /// Why it ended as it did (rollback reason, recovery note).
    #[serde(default)]
    pub note: Option<String>,
}

/// DATA/agent/deployments.
pub fn deployments_dir(data: &Path) -> PathBuf {
    data.join("agent").join("deployments")
}

/// DATA/agent/deployments/<id>, made 0700.
pub fn deployment_dir(data: &Path, id: &str) -> Result<PathBuf, DeployError> {
    let dir = deployments_dir(data).join(id);
    crate::datadir::agent_dir(data)?;
    crate::datadir::private_dir(&dir)?;
    Ok(dir)
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> DeployError {
    move |source| DeployError::Io { context, source }
}

/// Create `path` 0600 from the start (never through a symlink, never an
/// existing file), write `bytes` and fsync them.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::datadir::FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(format!("creating {}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("writing {}", path.display())))
}

impl Journal {
    fn path(data: &Path, id: &str) -> PathBuf {
        deployments_dir(data).join(id).join("journal.json")
    }

    /// Write it durably: a 0600 temporary file, fsync, rename, fsync the
    /// directory.
    pub fn save(&self, data: &Path) -> Result<(), DeployError> {
        let dir = deployment_dir(data, &self.id)?;
        let path = dir.join("journal.json");
        let tmp = dir.join("journal.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| DeployError::Io {
            context: format!("encoding {}", path.display()),
            source: std::io::Error::other(e),
        })?;
        write_private(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path).map_err(io_err(format!("renaming to {}", path.display())))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(format!("syncing {}", dir.display())))
    }

    /// Move to `phase` and save.
    pub fn advance(&mut self, data: &Path, phase: Phase) -> Result<(), DeployError> {
        self.phase = phase;
        self.save(data)
    }

    pub fn load(data: &Path, id: &str) -> Result<Journal, DeployError> {
        let path = Self::path(data, id);
        let bytes = std::fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| DeployError::Journal {
            path,
            reason: e.to_string(),
        })
    }

    /// Every deployment under DATA whose journal says it is unfinished;
    /// a journal that cannot be read is named in the second list.
    pub fn unfinished(data: &Path) -> (Vec<Journal>, Vec<String>) {
        let (mut found, mut bad) = (Vec::new(), Vec::new());
        let Ok(rd) = std::fs::read_dir(deployments_dir(data)) else {
            return (found, bad);
        };
        let mut ids: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        for id in ids {
            if !Self::path(data, &id).exists() {
                continue;
            }
            match Journal::load(data, &id) {
                Ok(j) if !j.phase.finished() => found.push(j),
                Ok(_) => {}
                Err(e) => bad.push(e.to_string()),
            }
        }
        (found, bad)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_journal_is_private_durable_and_found_while_unfinished() {
        let data = std::env::temp_dir().join(format!("backstop-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut j = Journal {
            id: "d1".into(),
            plan: super::super::tests::plan(),
            snapshot: Some("s1".into()),
            cgroup: None,
            phase: Phase::Installing,
            note: None,
        };
        j.save(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let file = deployments_dir(&data).join("d1/journal.json");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        let (found, bad) = Journal::unfinished(&data);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].snapshot.as_deref(), Some("s1"));
        j.advance(&data, Phase::Interrupted).unwrap();
        assert!(Journal::unfinished(&data).0.is_empty());
        std::fs::write(deployments_dir(&data).join("d1/journal.json"), b"{").unwrap();
        let (_, bad) = Journal::unfinished(&data);
        assert!(bad[0].contains("journal.json"), "{bad:?}");
        std::fs::remove_dir_all(&data).unwrap();
    }
}
