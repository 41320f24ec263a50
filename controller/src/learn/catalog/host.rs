//! Host conditions a scenario can run under (issue 16, item 2): a fuller
//! disk, less free memory, a CPU-heavy neighbour. A model that reads the
//! install and not the machine must decide the same under each; part of
//! the corpus is recorded this way so that training sees them too.
//!
//! Each condition is made by something the runner starts before the
//! install and removes after it (on every path: [`Drop`]), only ever the
//! process and the file it made itself. A runner killed mid-scenario
//! cannot drop anything: its processes die with it (`PR_SET_PDEATHSIG`),
//! the file is in the scenario's work directory, which its next run
//! removes first, and a busy neighbour's cgroup is named by the runner's
//! pid, so [`sweep_stale`] can tell a dead runner's from a live one's
//! (two runners on one host are how the corpus is recorded).

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
    let (base, v2) = cpu_hierarchy();
    let dir = base.join(name);
    if v2 {
        let _ = std::fs::write(base.join("cgroup.subtree_control"), "+cpu");
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("cpu.max"), "50000 100000").ok()?;
        return Some((dir, "cgroup.procs"));
    }
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("cpu.cfs_period_us"), "100000").ok()?;
    std::fs::write(dir.join("cpu.cfs_quota_us"), "50000").ok()?;
    Some((dir, "tasks"))
}

/// Where busy neighbours' cgroups go, and whether it is cgroup v2: the
/// unified root where its cpu controller is, v1's cpu hierarchy else.
fn cpu_hierarchy() -> (PathBuf, bool) {
    let v2 = Path::new("/sys/fs/cgroup");
    let has_v2_cpu = std::fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"));
    if has_v2_cpu {
        (v2.to_path_buf(), true)
    } else {
        (v2.join("cpu"), false)
    }
}

/// The prefix of a busy neighbour's cgroup; `PID-SCENARIO` follows.
const CGROUP_PREFIX: &str = "backstop-neighbour-";

/// Remove the busy-neighbour cgroups of runners that are gone (their
/// pid no longer runs), killing anything still in them: what a runner
/// killed mid-scenario left. The names of those removed.
pub fn sweep_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let (base, _) = cpu_hierarchy();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
                continue;
            };
            // Named before the pid was: from a runner long gone.
            let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if owner.is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists()) {
                continue;
            }
            if remove_cgroup(&e.path()) {
                removed.push(name);
            }
        }
    }
    removed
}

/// Kill every process in cgroup `dir` and remove it; whether it is gone.
fn remove_cgroup(dir: &Path) -> bool {
    for _ in 0..50 {
        if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
            for procs in ["cgroup.procs", "tasks"] {
                let pids = std::fs::read_to_string(dir.join(procs)).unwrap_or_default();
                for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) with a pid read from the cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
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
                if let Some((dir, procs)) =
                    half_cpu_cgroup(&format!("{CGROUP_PREFIX}{}-{id}", std::process::id()))
                {
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

/// A perl that dies with the runner, however the runner dies.
fn spawn(perl: &str) -> Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id().cast_signed();
    let mut c = Command::new("perl");
    c.args(["-e", perl])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the child calls only prctl, getppid
    // and _exit, which are async-signal-safe. A runner that died before
    // the prctl is caught by getppid.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
                || libc::getppid() != parent
            {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    c.spawn().map_err(io("starting the host condition's perl"))
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
