//! The service's cgroup (`monitor.service_cgroup`), read for the
//! performance check: its CPU time (cpu.stat `usage_usec`) and memory
//! (memory.current) with each baseline round, "before", and each
//! monitoring round, "during". The controller turns consecutive CPU
//! readings into a rate and judges both as it judges probe latency.
//!
//! The group is opened beneath the cgroup v2 root with openat2
//! (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), never by a path string: the
//! manifest names it, and an install running as root could plant a
//! symbolic link under the cgroup mount, so nothing on the way is
//! followed. A group that cannot be read sends no sample (no series, no
//! judgement) and says why in the log.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use backstop_common::deploy::ServiceSample;

use super::{DeployEvent, EventTx, Plan};
use crate::snapshot::beneath::Root;

/// The origin of the samples' clock: one per agent process, monotonic.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// `rel/file` beneath the v2 root, read whole.
fn read_beneath(root: &Root, rel: &Path, file: &str) -> std::io::Result<String> {
    let mut path = rel.as_os_str().as_bytes().to_vec();
    path.push(b'/');
    path.extend_from_slice(file.as_bytes());
    let fd = root.open_beneath(&path, libc::O_RDONLY)?;
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text)?;
    Ok(text)
}

fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == "usage_usec").then(|| w.next()?.parse().ok())?
    })
}

/// One reading of `rel` beneath the cgroup v2 root at `v2`.
fn read(v2: &Path, rel: &Path, baseline: bool) -> std::io::Result<ServiceSample> {
    let root = Root::open(v2)?;
    let at_ms = origin().elapsed().as_secs_f64() * 1e3;
    let cpu = read_beneath(&root, rel, "cpu.stat")?;
    let cpu_usage_usec = usage_usec(&cpu).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "cpu.stat has no usage_usec",
        )
    })?;
    let memory_bytes = read_beneath(&root, rel, "memory.current")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    Ok(ServiceSample {
        baseline,
        at_ms,
        cpu_usage_usec,
        memory_bytes,
    })
}

/// Send one `Service` sample of the plan's service cgroup, if it names one.
pub(super) fn sample(plan: &Plan, baseline: bool, tx: &EventTx) {
    let Some(rel) = &plan.service_cgroup else {
        return;
    };
    let got = super::cgroup::v2_root()
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|v2| read(&v2, rel, baseline));
    match got {
        Ok(sample) => {
            let _ = tx.send(DeployEvent::Service { sample });
        }
        Err(e) => tracing::warn!(
            cgroup = %rel.display(),
            "monitor.service_cgroup not read (no sample): {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_cpu_stat_and_links_are_not_followed() {
        let stat = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(usage_usec(stat), Some(1234));
        assert_eq!(usage_usec("user_usec 5\n"), None);
        let dir = std::env::temp_dir().join(format!("backstop-svc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("grp")).unwrap();
        std::fs::write(dir.join("grp/cpu.stat"), stat).unwrap();
        let s = read(&dir, Path::new("grp"), true).unwrap();
        assert_eq!(
            (s.cpu_usage_usec, s.memory_bytes, s.baseline),
            (1234, None, true)
        );
        std::os::unix::fs::symlink(dir.join("grp"), dir.join("link")).unwrap();
        assert!(read(&dir, Path::new("link"), true).is_err(), "a symlink");
        assert!(read(&dir, Path::new("../x"), true).is_err(), "climbing");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
