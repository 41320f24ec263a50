//! Host counters from /proc: what the whole machine is doing while an
//! install runs (a slow install on a saturated host is not the install's
//! fault, and the model needs to tell the two apart).

use std::path::{Path, PathBuf};

use backstop_common::hostlevels::HostLevels;

use crate::error::{AgentError, Result};

/// A reading of the host; CPU is cumulative, the rest are levels.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostSample {
    pub cpu_busy: u64,
    pub cpu_total: u64,
    pub mem_available_bytes: u64,
    pub mem_total_bytes: u64,
    pub load1: f64,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    /// Online CPUs (the `cpuN` lines of /proc/stat).
    pub cpus: u64,
}

impl HostSample {
    /// The levels a window carries beside its features, CPU busy over the
    /// interval since `prev`.
    pub fn levels(&self, prev: &HostSample) -> HostLevels {
        HostLevels {
            disk_free_bytes: self.disk_free_bytes as f64,
            disk_total_bytes: self.disk_total_bytes as f64,
            mem_available_bytes: self.mem_available_bytes as f64,
            mem_total_bytes: self.mem_total_bytes as f64,
            load1: self.load1,
            cpus: self.cpus as f64,
            cpu_util: cpu_util(prev, self),
        }
    }
}

/// Reads host counters; `scope` is the path whose filesystem's free space
/// is reported.
pub struct HostSampler {
    proc: PathBuf,
    scope: PathBuf,
}

impl HostSampler {
    pub fn new(scope: &Path) -> Self {
        HostSampler {
            proc: PathBuf::from("/proc"),
            scope: scope.to_path_buf(),
        }
    }

    pub fn sample(&self) -> Result<HostSample> {
        let stat = self.read("stat")?;
        let (cpu_busy, cpu_total) = parse_cpu(&stat).ok_or_else(|| bad(self.proc.join("stat")))?;
        let meminfo = self.read("meminfo")?;
        let mem = |key| parse_meminfo(&meminfo, key).ok_or_else(|| bad(self.proc.join("meminfo")));
        let (mem_available_bytes, mem_total_bytes) = (mem("MemAvailable")?, mem("MemTotal")?);
        let loadavg = self.read("loadavg")?;
        let load1 = loadavg
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(self.proc.join("loadavg")))?;
        let (disk_free_bytes, disk_total_bytes) = disk_space(&self.scope)?;
        Ok(HostSample {
            cpu_busy,
            cpu_total,
            mem_available_bytes,
            mem_total_bytes,
            load1,
            disk_free_bytes,
            disk_total_bytes,
            cpus: count_cpus(&stat),
        })
    }

    fn read(&self, name: &str) -> Result<String> {
        let path = self.proc.join(name);
        std::fs::read_to_string(&path).map_err(|source| AgentError::Proc { path, source })
    }
}

fn bad(path: PathBuf) -> AgentError {
    AgentError::Proc {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"),
    }
}

/// Busy fraction of all CPUs between two samples.
pub fn cpu_util(prev: &HostSample, now: &HostSample) -> f64 {
    let total = now.cpu_total.saturating_sub(prev.cpu_total);
    if total == 0 {
        return 0.0;
    }
    now.cpu_busy.saturating_sub(prev.cpu_busy) as f64 / total as f64
}

/// (busy, total) jiffies from the aggregate `cpu` line. Idle and iowait are
/// not busy; guest time is already inside user and nice.
fn parse_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

/// The per-CPU lines of /proc/stat: the CPUs online now.
fn count_cpus(stat: &str) -> u64 {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64
}

fn parse_meminfo(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

pub fn disk_free(path: &Path) -> Result<u64> {
    disk_space(path).map(|(free, _)| free)
}

/// (bytes free to unprivileged users, size) of `path`'s filesystem.
pub fn disk_space(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| AgentError::Proc {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL byte"),
    })?;
    // SAFETY: zeroed statvfs is a valid out-parameter; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(AgentError::Proc {
            path: path.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// What the agent tells the controller about this host when it connects.
pub fn facts() -> backstop_common::wire::HostFacts {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    backstop_common::wire::HostFacts {
        kernel,
        os,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let stat = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_cpu(stat), Some((161, 981)));
        assert_eq!(count_cpus(stat), 1);
        let mem = "MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n";
        assert_eq!(parse_meminfo(mem, "MemAvailable"), Some(1_024_000));
        assert_eq!(parse_meminfo(mem, "MemFree"), None);
        let a = HostSample {
            cpu_busy: 10,
            cpu_total: 100,
            ..Default::default()
        };
        let b = HostSample {
            cpu_busy: 60,
            cpu_total: 200,
            ..Default::default()
        };
        assert_eq!(cpu_util(&a, &b), 0.5);
    }

    #[test]
    fn samples_this_host() {
        let s = HostSampler::new(Path::new("/")).sample().unwrap();
        assert!(
            s.cpu_total > 0
                && s.mem_available_bytes > 0
                && s.mem_total_bytes >= s.mem_available_bytes
                && s.disk_total_bytes >= s.disk_free_bytes
                && s.cpus > 0,
            "{s:?}"
        );
    }
}
