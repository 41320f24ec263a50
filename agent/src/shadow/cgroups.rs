//! A shadow's cgroups: where they are, whether they saw an OOM kill, and
//! killing what is left in them before removing them.

use std::path::{Path, PathBuf};

use super::container::CGROUP_PARENT;

/// Whether the memory cgroup of shadow `id` saw an OOM kill (v1
/// `memory.oom_control`, or v2 `memory.events`). Read before delete.
pub fn oom_kills(id: &str) -> u64 {
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(CGROUP_PARENT)
        .join(id)
        .join("memory.oom_control");
    let v2 = Path::new("/sys/fs/cgroup")
        .join(CGROUP_PARENT)
        .join(id)
        .join("memory.events");
    [v1, v2]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

/// The cgroup directories of shadow `id` in every hierarchy.
pub(super) fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let base = Path::new("/sys/fs/cgroup");
    let direct = base.join(CGROUP_PARENT).join(id);
    if direct.is_dir() {
        out.push(direct);
    }
    if let Ok(rd) = std::fs::read_dir(base) {
        for h in rd.flatten() {
            let d = h.path().join(CGROUP_PARENT).join(id);
            if d.is_dir() {
                out.push(d);
            }
        }
    }
    out
}

/// Kill whatever is left in shadow `id`'s cgroups and remove them.
pub fn remove_cgroups(id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for d in cgroup_dirs(id) {
        // Up to 5 s: killed tasks leave the cgroup only once reaped.
        for _ in 0..500 {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|s| s.trim().parse::<i32>().ok()) {
                    // SAFETY: plain kill(2).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if std::fs::remove_dir(&d).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if d.exists() {
            problems.push(format!("cgroup {} could not be removed", d.display()));
        }
    }
    problems
}
