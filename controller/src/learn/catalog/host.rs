//! Host conditions a scenario can run under (issue 16, item 2): a fuller
//! disk, less free memory, a CPU-heavy neighbour. A model that reads the
//! install and not the machine must decide the same under each; part of
//! the corpus is recorded this way so that training sees them too.
//!
//! Each condition is made by something the runner starts before the
//! install and removes after it (on every path: [`Drop`]), only ever the
//! process and the file it made itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::Deserialize;

use super::{CatalogError, Result, io};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostCondition {
    /// A file takes half the free space of the corpus's filesystem (at
    /// most 4 GiB).
    FullerDisk,
    /// A process holds a fifth of the available memory (at most 1 GiB).
    LessMemory,
    /// A busy loop beside the install, limited to half a CPU by its
    /// cgroup.
    BusyNeighbour,
}

impl HostCondition {
    pub fn name(self) -> &'static str {
        match self {
            HostCondition::FullerDisk => "fuller-disk",
            HostCondition::LessMemory => "less-memory",
            HostCondition::BusyNeighbour => "busy-neighbour",
        }
    }
}

/// What makes a condition; undone when dropped.
pub struct Neighbour {
    child: Option<Child>,
    file: Option<PathBuf>,
    cgroup: Option<PathBuf>,
}

fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A cgroup that holds a process to half a CPU: cgroup v2's cpu.max where
/// the cpu controller is there, v1's CFS quota otherwise (hybrid hosts).
fn half_cpu_cgroup(name: &str) -> Option<(PathBuf, &'static str)> {
    let v2 = Path::new("/sys/fs/cgroup");
    let has_v2_cpu = std::fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"));
    if has_v2_cpu {
        let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
        let dir = v2.join(name);
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("cpu.max"), "50000 100000").ok()?;
        return Some((dir, "cgroup.procs"));
    }
    let dir = v2.join("cpu").join(name);
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("cpu.cfs_period_us"), "100000").ok()?;
    std::fs::write(dir.join("cpu.cfs_quota_us"), "50000").ok()?;
    Some((dir, "tasks"))
}

impl Neighbour {
    /// Make `c` true; `scratch` is a directory on the corpus's filesystem.
    pub fn start(c: HostCondition, scratch: &Path, id: &str) -> Result<Neighbour> {
        let mut n = Neighbour {
            child: None,
            file: None,
            cgroup: None,
        };
        match c {
            HostCondition::FullerDisk => {
                let f = scratch.join("backstop-fuller-disk");
                let df = Command::new("df")
                    .args(["--output=avail", "-B1"])
                    .arg(scratch)
                    .output()
                    .map_err(io("starting df"))?;
                let free: u64 = String::from_utf8_lossy(&df.stdout)
                    .lines()
                    .nth(1)
                    .and_then(|l| l.trim().parse().ok())
                    .ok_or_else(|| CatalogError::Io {
                        context: format!("df of {}", scratch.display()),
                        source: std::io::Error::other("no free space figure"),
                    })?;
                let size = (free / 2).min(4 << 30);
                let ok = Command::new("fallocate")
                    .args(["-l", &size.to_string()])
                    .arg(&f)
                    .status()
                    .map_err(io("starting fallocate"))?;
                n.file = Some(f);
                if !ok.success() {
                    return Err(CatalogError::Io {
                        context: format!("fallocate of {size} bytes in {}", scratch.display()),
                        source: std::io::Error::other("failed"),
                    });
                }
            }
            HostCondition::LessMemory => {
                let bytes = (mem_available() / 5).min(1 << 30);
                n.child = Some(spawn(&format!(
                    "$x = \"x\" x {bytes}; $| = 1; print \"held\\n\"; sleep 100000"
                ))?);
                // Held once the child says so: the install starts after.
                wait_line(n.child.as_mut());
            }
            HostCondition::BusyNeighbour => {
                let child = spawn("$| = 1; print \"busy\\n\"; while (1) { $i++ }")?;
                if let Some((dir, procs)) = half_cpu_cgroup(&format!("backstop-neighbour-{id}")) {
                    let _ = std::fs::write(dir.join(procs), child.id().to_string());
                    n.cgroup = Some(dir);
                }
                n.child = Some(child);
                wait_line(n.child.as_mut());
            }
        }
        Ok(n)
    }
}

fn spawn(perl: &str) -> Result<Child> {
    Command::new("perl")
        .args(["-e", perl])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("starting the host condition's perl"))
}

fn wait_line(child: Option<&mut Child>) {
    use std::io::BufRead;
    if let Some(out) = child.and_then(|c| c.stdout.take()) {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
        if let Some(d) = &self.cgroup {
            let _ = std::fs::remove_dir(d);
        }
    }
}
