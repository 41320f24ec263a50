//! The live install's cgroup: a cgroup v2 group of its own under
//! `backstop.deploy/<id>`, so that killing it reaches everything the
//! install started, including what it daemonised (setsid, double fork):
//! those leave the process tree but never the cgroup.
//!
//! cgroup v2 only: `cgroup.kill` (Linux 5.14) kills every member at once
//! without racing forks, and `cgroup.events` says when the last one is
//! gone. A pure v2 host (Debian 12) has the hierarchy at /sys/fs/cgroup; a
//! hybrid one (this build machine) at /sys/fs/cgroup/unified. The v1
//! hierarchies are not used: they have neither file.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::DeployError;

/// The parent of every deployment's group, under the v2 root.
pub const PARENT: &str = "backstop.deploy";

/// Where cgroup v2 may be mounted, in the order tried.
pub const CANDIDATES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// How long `kill` waits for the kernel to empty the group: killed tasks
/// leave it only once they have exited, which a task in uninterruptible
/// I/O delays.
const EMPTY_WAIT: Duration = Duration::from_secs(30);

fn cg_err(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> DeployError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source| DeployError::Cgroup { path, what, source }
}

/// The mount point of the cgroup v2 hierarchy, from /proc/self/mounts.
pub fn v2_root() -> Result<PathBuf, DeployError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    v2_root_in(&mounts)
}

fn v2_root_in(mounts: &str) -> Result<PathBuf, DeployError> {
    let v2: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then_some(f[1])
        })
        .collect();
    CANDIDATES
        .iter()
        .find(|c| v2.contains(c))
        .map(PathBuf::from)
        .ok_or_else(|| DeployError::NoCgroup2 {
            tried: CANDIDATES.join(" and "),
        })
}

/// One deployment's live cgroup.
#[derive(Debug, Clone)]
pub struct LiveCgroup {
    pub path: PathBuf,
}

impl LiveCgroup {
    /// Make `backstop.deploy/<id>` (and the parent), 0700: only root may
    /// move tasks into it or read who is in it.
    pub fn create(id: &str) -> Result<LiveCgroup, DeployError> {
        let parent = v2_root()?.join(PARENT);
        for dir in [parent.clone(), parent.join(id)] {
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir == parent => {}
                Err(e) => return Err(cg_err(&dir, "creating")(e)),
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(cg_err(&dir, "chmod 0700"))?;
        }
        Ok(LiveCgroup {
            path: parent.join(id),
        })
    }

    /// The group of deployment `id` if it exists (after a crash).
    pub fn existing(id: &str) -> Option<LiveCgroup> {
        let path = v2_root().ok()?.join(PARENT).join(id);
        path.is_dir().then_some(LiveCgroup { path })
    }

    /// Move `pid` in; done while the process is stopped before its exec,
    /// so nothing of the install runs outside the group.
    pub fn add(&self, pid: u32) -> Result<(), DeployError> {
        let procs = self.path.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .and_then(|mut f| f.write_all(format!("{pid}\n").as_bytes()))
            .map_err(cg_err(&procs, "adding a task to"))?;
        super::memory::add_v1(&self.path, pid)
    }

    /// Whether any task is still in the group.
    pub fn populated(&self) -> Result<bool, DeployError> {
        let events = self.path.join("cgroup.events");
        let text = std::fs::read_to_string(&events).map_err(cg_err(&events, "reading"))?;
        Ok(text.lines().any(|l| l.trim() == "populated 1"))
    }

    /// The pids in the group now.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kill every task in the group and wait until it is empty. Blocking:
    /// call it from a blocking thread.
    pub fn kill(&self) -> Result<(), DeployError> {
        let kill = self.path.join("cgroup.kill");
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(&kill)
            .and_then(|mut f| f.write_all(b"1"));
        let fallback = matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if !fallback {
            r.map_err(cg_err(&kill, "writing 1 to"))?;
        }
        let start = Instant::now();
        while self.populated()? {
            if fallback {
                // Before Linux 5.14: no cgroup.kill. Kill members one by
                // one until none is left; a fork racing us is caught on
                // the next round because its child lands in the group.
                for pid in self.pids() {
                    // SAFETY: plain kill(2).
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
            if start.elapsed() > EMPTY_WAIT {
                return Err(DeployError::CgroupStuck {
                    path: self.path.clone(),
                    pids: self.pids(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Remove the (empty) group.
    pub fn remove(&self) -> Result<(), DeployError> {
        super::memory::remove_v1(&self.path);
        match std::fs::remove_dir(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(cg_err(&self.path, "removing")(e))
            }
            _ => Ok(()),
        }
    }

    /// Kill, then remove.
    pub fn kill_and_remove(&self) -> Result<(), DeployError> {
        self.kill()?;
        self.remove()
    }
}

/// Remove the empty groups under `backstop.deploy/` that `keep` does not
/// claim; a populated one is left to its deployment's recovery (a
/// committed install's daemons live on in theirs). Returns what was
/// removed.
pub fn sweep(keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(root) = v2_root() else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(root.join(PARENT)) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let cg = LiveCgroup { path: e.path() };
        // Populated first: it is one small read, where `keep` may read a
        // journal, and the running agent sweeps every few seconds.
        if !e.path().is_dir() || cg.populated().unwrap_or(true) || keep(&name) {
            continue;
        }
        if cg.remove().is_ok() {
            removed.push(cg.path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_mount_is_found_on_pure_and_hybrid_hosts_and_named_when_absent() {
        let pure = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        assert_eq!(v2_root_in(pure).unwrap(), Path::new("/sys/fs/cgroup"));
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            v2_root_in(hybrid).unwrap(),
            Path::new("/sys/fs/cgroup/unified")
        );
        let e = v2_root_in("cgroup /sys/fs/cgroup/memory cgroup rw 0 0\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/sys/fs/cgroup") && text.contains("/sys/fs/cgroup/unified"),
            "{text}"
        );
    }
}
