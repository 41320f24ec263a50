//! What a tracked tree holds at one moment, read from /proc: its live
//! processes, their open descriptors, their resident memory, and the
//! sizes of the regular files they hold open.
//!
//! Why /proc and not a probe: these are levels, not events, and failures
//! build up through them (a fork storm, a descriptor leak, a memory leak)
//! over many windows; one read of a few files per process per window is
//! cheap next to counting every open and close in the kernel. A process
//! that exits between the listing and the read is skipped, not an error.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The tree's levels at one reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeStat {
    pub processes: u64,
    pub open_fds: u64,
    pub rss_bytes: u64,
    /// (device, inode, size) of each regular file held open, by file.
    pub files: BTreeMap<(u64, u64), u64>,
}

impl TreeStat {
    /// The largest growth, since `prev`, of a file held open at both
    /// readings (0 when none grew).
    pub fn top_file_growth(&self, prev: &TreeStat) -> u64 {
        self.files
            .iter()
            .filter_map(|(k, size)| Some(size.saturating_sub(*prev.files.get(k)?)))
            .max()
            .unwrap_or(0)
    }
}

/// Read the levels of the processes the threads `tids` belong to.
pub fn read(proc: &Path, tids: &[u32]) -> TreeStat {
    let mut seen = BTreeSet::new();
    let mut out = TreeStat::default();
    for tid in tids {
        let Ok(status) = std::fs::read_to_string(proc.join(tid.to_string()).join("status")) else {
            continue;
        };
        let Some(tgid) = field(&status, "Tgid") else {
            continue;
        };
        if !seen.insert(tgid) {
            continue;
        }
        // A zombie has no memory and no descriptors; it is no longer alive.
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
        {
            continue;
        }
        out.processes += 1;
        out.rss_bytes += field(&status, "VmRSS").unwrap_or(0) * 1024;
        let fds = proc.join(tgid.to_string()).join("fd");
        let Ok(dir) = std::fs::read_dir(fds) else {
            continue;
        };
        for fd in dir.flatten() {
            out.open_fds += 1;
            // The file the descriptor points to (metadata follows the
            // magic link); a socket, pipe or device is not a file that fills.
            if let Ok(m) = std::fs::metadata(fd.path())
                && m.is_file()
            {
                out.files.insert((m.dev(), m.ino()), m.size());
            }
        }
    }
    out
}

/// The first number of `/proc/PID/status`'s line `key:` (kB for sizes).
fn field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_once_per_thread_group() {
        let me = std::process::id();
        let held: Vec<std::fs::File> = (0..5)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let s = read(Path::new("/proc"), &[me, me, u32::MAX - 1]);
        assert_eq!(s.processes, 1, "one process, an absent tid skipped");
        assert!(s.open_fds >= held.len() as u64, "{s:?}");
        assert!(s.rss_bytes > 0, "{s:?}");
        drop(held);
    }

    #[test]
    fn the_fastest_growing_open_file_is_the_one_measured() {
        let dir = std::env::temp_dir().join(format!("treestat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, [0u8; 100]).unwrap();
        std::fs::write(&b, [0u8; 100]).unwrap();
        let held = (
            std::fs::File::open(&a).unwrap(),
            std::fs::File::open(&b).unwrap(),
        );
        let me = [std::process::id()];
        let before = read(Path::new("/proc"), &me);
        std::fs::write(&a, [0u8; 300]).unwrap();
        std::fs::write(&b, [0u8; 4196]).unwrap();
        let after = read(Path::new("/proc"), &me);
        assert_eq!(after.top_file_growth(&before), 4096);
        assert_eq!(before.top_file_growth(&after), 0, "shrinking is not growth");
        drop(held);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_status_fields() {
        let st = "Name:\tx\nTgid:\t42\nVmRSS:\t   1200 kB\n";
        assert_eq!(field(st, "Tgid"), Some(42));
        assert_eq!(field(st, "VmRSS"), Some(1200));
        assert_eq!(field(st, "VmSwap"), None);
    }
}
