//! Ownership of a shadow by the agent running it, and the crash sweep:
//! removing every shadow that no running agent holds.

use std::path::Path;

use super::cgroups::remove_cgroups;
use super::container::{Layout, err, load, teardown, youki_root};
use crate::error::Result;

/// Shadows this process is running; a sweep in this process leaves them.
static LIVE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A process's start time (clock ticks since boot, /proc/PID/stat field
/// 22): with the pid, it names one process for good.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Ownership of a shadow by the agent process running it: an `owner` file
/// (pid and start time) in the shadow's directory, written before the
/// directory gets its name, and an entry in this process's registry.
/// Not a file lock: a container's init is forked from the agent and would
/// inherit (and keep) a lock the agent took.
pub struct Owner {
    id: String,
}

impl Owner {
    /// Create the shadow's directory, owned by this process.
    pub fn create(l: &Layout) -> Result<Owner> {
        let me = std::process::id();
        let tmp = l.dir.with_file_name(format!(".new-{}", l.id));
        std::fs::create_dir_all(&tmp).map_err(err(format!("creating {}", tmp.display())))?;
        let record = format!("{me} {}\n", start_time(me).unwrap_or(0));
        std::fs::write(tmp.join("owner"), record)
            .map_err(err(format!("writing {}", tmp.join("owner").display())))?;
        std::fs::rename(&tmp, &l.dir).map_err(err(format!("creating {}", l.dir.display())))?;
        LIVE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(l.id.clone());
        Ok(Owner { id: l.id.clone() })
    }

    /// Whether the agent that owns shadow directory `dir` still runs it.
    fn alive(dir: &Path, id: &str) -> bool {
        if LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|l| l == id)
        {
            return true;
        }
        let Ok(record) = std::fs::read_to_string(dir.join("owner")) else {
            return false;
        };
        let mut it = record.split_whitespace().map(|x| x.parse::<u64>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(pid), Some(t)) if pid != u64::from(std::process::id()) => {
                start_time(pid as u32) == Some(t)
            }
            _ => false,
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        LIVE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|l| l != &self.id);
    }
}

/// Remove every shadow under `shadows` that no running agent holds: what
/// an agent killed mid-run left (containers and their processes, mounts,
/// cgroups, directories). Returns the ids swept and any problems.
pub fn sweep(shadows: &Path) -> (Vec<String>, Vec<String>) {
    let mut swept = Vec::new();
    let mut problems = Vec::new();
    let Ok(rd) = std::fs::read_dir(shadows) else {
        return (swept, problems);
    };
    let youki = youki_root(shadows);
    for e in rd.flatten() {
        let dir = e.path();
        if dir == youki || !dir.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        // A directory still being made (".new-ID") by a live agent has its
        // owner record already; one whose maker died is swept the same way.
        let id = name.strip_prefix(".new-").unwrap_or(&name).to_string();
        if Owner::alive(&dir, &id) {
            continue;
        }
        let l = Layout {
            dir: dir.clone(),
            ..Layout::new(shadows, &id)
        };
        problems.extend(teardown(shadows, &l));
        swept.push(id);
    }
    // Container state without a shadow directory.
    if let Ok(rd) = std::fs::read_dir(&youki) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !shadows.join(&id).exists() {
                if let Some(mut c) = load(&e.path())
                    && let Err(err) = c.delete(true)
                {
                    tracing::debug!(%id, "libcontainer delete: {err}; finishing by hand");
                }
                if let Err(err) = std::fs::remove_dir_all(e.path())
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    problems.push(format!("removing {}: {err}", e.path().display()));
                }
                problems.extend(remove_cgroups(&id));
                swept.push(id);
            }
        }
    }
    (swept, problems)
}
