//! The live install's memory limit (`monitor.memory_limit_mb`) and its
//! readings: the limit bounds what the install may use, so memory growing
//! towards it is a fault with an end the controller can project
//! (`controller/src/decide/trend.rs`), as the disk's free space is.
//! MemAvailable is host-wide and bounded by nothing the install owns.
//!
//! Where the limit lives: in the live cgroup itself (memory.max) when the
//! cgroup v2 hierarchy has the memory controller (a pure v2 host, Debian
//! 12); on a hybrid host, whose memory controller is bound to the v1
//! hierarchy (this build machine), in a v1 memory group of the same name
//! (`<memory mount>/backstop.deploy/<id>`, memory.limit_in_bytes) that the
//! runner joins beside its v2 group. Killing stays cgroup.kill on the v2
//! group, which reaches every member of both.
//!
//! What is read: the working set, usage minus inactive file cache (as the
//! kubelet measures it), because a v1 group's usage counts the page cache
//! dpkg's writes leave behind, which the kernel reclaims at the limit
//! instead of killing anything; anonymous memory that keeps growing is
//! what ends in the OOM killer.

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backstop_common::deploy::MemorySample;

use super::cgroup::{LiveCgroup, PARENT, v2_root};
use super::{DeployError, DeployEvent, EventTx};

/// Where a deployment's memory limit is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Group {
    /// The live v2 group itself.
    V2(PathBuf),
    /// A v1 memory group named like the live group.
    V1(PathBuf),
}

fn err(path: &Path, what: &str, source: std::io::Error) -> DeployError {
    DeployError::Cgroup {
        path: path.to_path_buf(),
        what: what.into(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<(), DeployError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| err(path, &format!("writing {text:?} to"), e))
}

/// The mount point of the v1 memory hierarchy, from /proc/self/mounts.
fn v1_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(f[1]))
    })
}

/// The v1 memory group of the live group at `live` (named by its id).
fn v1_dir(live: &Path) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    Some(v1_mount_in(&mounts)?.join(PARENT).join(live.file_name()?))
}

fn v2_has_memory(root: &Path) -> bool {
    std::fs::read_to_string(root.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
}

fn no_controller() -> DeployError {
    DeployError::Plan {
        field: "monitor.memory_limit_mb".into(),
        reason: "this host has no memory cgroup controller (neither v2 nor v1)".into(),
    }
}

/// A limit this host can set, checked before the snapshot: refused then,
/// with the field, rather than after anything was taken.
pub(super) fn check(plan: &super::Plan) -> Result<(), DeployError> {
    if plan.memory_limit.is_none() {
        return Ok(());
    }
    let v2 = v2_root()?;
    let v1 = std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|m| v1_mount_in(&m));
    if v2_has_memory(&v2) || v1.is_some() {
        Ok(())
    } else {
        Err(no_controller())
    }
}

/// Set the live install's limit (`None`: no limit, nothing done). Called
/// once the live group exists and before anything runs in it.
pub(super) fn limit(cg: &LiveCgroup, bytes: Option<u64>) -> Result<(), DeployError> {
    let Some(bytes) = bytes else { return Ok(()) };
    let root = v2_root()?;
    if v2_has_memory(&root) {
        for dir in [root.clone(), root.join(PARENT)] {
            let control = dir.join("cgroup.subtree_control");
            let on = std::fs::read_to_string(&control).unwrap_or_default();
            if !on.split_whitespace().any(|w| w == "memory") {
                write(&control, "+memory")?;
            }
        }
        write(&cg.path.join("memory.max"), &bytes.to_string())?;
        // Swap would stretch the growth out instead of ending it at the
        // limit; a host without swap has no such file.
        let _ = write(&cg.path.join("memory.swap.max"), "0");
        tracing::info!(cgroup = %cg.path.display(), bytes, "live memory limit (v2)");
        return Ok(());
    }
    let Some(dir) = v1_dir(&cg.path) else {
        return Err(no_controller());
    };
    let parent = dir.parent().unwrap_or(&dir).to_path_buf();
    for d in [&parent, &dir] {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Err(e) if !(e.kind() == std::io::ErrorKind::AlreadyExists && *d == parent) => {
                return Err(err(d, "creating", e));
            }
            _ => {}
        }
    }
    write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
    let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &bytes.to_string());
    tracing::info!(cgroup = %dir.display(), bytes, "live memory limit (v1)");
    Ok(())
}

/// Hook of [`LiveCgroup::add`]: `pid` joins the v1 memory group too, when
/// the deployment has one.
pub(super) fn add_v1(live: &Path, pid: u32) -> Result<(), DeployError> {
    match v1_dir(live) {
        Some(dir) if dir.is_dir() => write(&dir.join("cgroup.procs"), &format!("{pid}\n")),
        _ => Ok(()),
    }
}

/// Hook of [`LiveCgroup::remove`]: the (empty) v1 memory group goes too.
pub(super) fn remove_v1(live: &Path) {
    if let Some(dir) = v1_dir(live)
        && let Err(e) = std::fs::remove_dir(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

/// The group holding the live install's limit, when it has one.
fn group(live: &Path) -> Option<Group> {
    if let Some(dir) = v1_dir(live).filter(|d| d.is_dir()) {
        return Some(Group::V1(dir));
    }
    let max = std::fs::read_to_string(live.join("memory.max")).ok()?;
    (max.trim() != "max").then(|| Group::V2(live.to_path_buf()))
}

/// `key N` in a flat-keyed cgroup file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == key).then(|| w.next()?.parse().ok())?
    })
}

fn number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// (working set, limit, OOM kills) of the group now.
fn read(g: &Group) -> Option<(u64, u64, u64)> {
    let (dir, usage, max, events, inactive) = match g {
        Group::V2(d) => (
            d,
            "memory.current",
            "memory.max",
            "memory.events",
            "inactive_file",
        ),
        Group::V1(d) => (
            d,
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "memory.oom_control",
            "total_inactive_file",
        ),
    };
    let usage = number(&dir.join(usage))?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let working = usage.saturating_sub(keyed(&stat, inactive).unwrap_or(0));
    let events = std::fs::read_to_string(dir.join(events)).unwrap_or_default();
    Some((
        working,
        number(&dir.join(max))?,
        keyed(&events, "oom_kill").unwrap_or(0),
    ))
}

/// Run `work` (the live install) and, when the live group has a limit,
/// send a `LiveMemory` sample every `every` until it ends (and one at its
/// end), timed from now: the install's start.
pub(super) async fn sampled<F: Future>(
    cg: &LiveCgroup,
    every: Duration,
    tx: &EventTx,
    work: F,
) -> F::Output {
    let Some(g) = group(&cg.path) else {
        return work.await;
    };
    let start = Instant::now();
    let mut index = 0;
    let mut sample = || {
        if let Some((current_bytes, limit_bytes, oom_kills)) = read(&g) {
            let _ = tx.send(DeployEvent::LiveMemory {
                sample: MemorySample {
                    index,
                    at_ms: start.elapsed().as_secs_f64() * 1e3,
                    current_bytes,
                    limit_bytes,
                    oom_kills,
                },
            });
            index += 1;
        }
    };
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => {
                sample();
                return out;
            }
            _ = tick.tick() => sample(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_memory_mount_is_found_by_its_option_not_its_path() {
        let hybrid = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup /mnt/mem cgroup rw,relatime,memory 0 0\n";
        assert_eq!(v1_mount_in(hybrid), Some(PathBuf::from("/mnt/mem")));
        let memsw = "cgroup /x cgroup rw,memory_recursiveprot 0 0\n";
        assert_eq!(v1_mount_in(memsw), None, "an option is matched whole");
        assert_eq!(v1_mount_in("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"), None);
    }

    #[test]
    fn flat_keyed_files_are_read_by_whole_key() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(2));
        assert_eq!(keyed(events, "oom"), Some(3));
        assert_eq!(keyed(events, "absent"), None);
    }
}
