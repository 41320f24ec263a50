//! The change log: which paths a tracked tree may have changed, so a
//! restore can look only there instead of walking the whole scope.
//!
//! The probes record a modifying syscall's path arguments as the process
//! passed them: relative to its cwd or a dirfd, through symlinks, inside
//! its chroot. Only the process can say what they meant, so each record is
//! resolved on arrival, through /proc/PID/{root,cwd,fd}, into a host path
//! whose parent directories are real (symlinks followed inside the
//! process's root, as the kernel did). A path that cannot be resolved (the
//! process already gone, a relative path, an fd closed, a path too long)
//! is not guessed at: the log says it is incomplete, and a restore given
//! an incomplete log walks the whole scope.
//!
//! The log is JSON lines, written as records arrive: a header, one line
//! per path, and a trailer written only when the tree is done and every
//! record was read. A log without its trailer (the agent died) is
//! incomplete too.//!
//! Files: `mod.rs` writing the log, `read.rs` reading it back for a
//! restore, `resolve.rs` turning one record into host paths.

mod read;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use backstop_common::ChangeEvent;
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};
pub use read::{ChangeSet, normalise};
use resolve::resolve;

pub const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Header {
        backstop_changes: u32,
    },
    Path {
        path: String,
        nr: u32,
        pid: u32,
    },
    /// A path as written, with the inode number of what it starts from as
    /// the kernel saw it at the call: the process's root (absolute name),
    /// its cwd or dirfd (relative name), or the fd's file (empty name).
    Anchored {
        ino: u64,
        name: String,
        nr: u32,
        pid: u32,
    },
    Unresolved {
        unresolved: String,
        nr: u32,
        pid: u32,
    },
    Trailer {
        end: Trailer,
    },
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trailer {
    /// Change records the probes delivered.
    pub records: u64,
    /// Records the probes could not deliver or read whole.
    pub lost: u64,
    /// Records whose paths could not be resolved.
    pub unresolved: u64,
}

/// Writes a change log as a tracked tree runs.
pub struct ChangeLog {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    seen: HashSet<PathBuf>,
    /// Each process's root, as last read: a process that exits before its
    /// record is read still resolves absolute paths.
    roots: HashMap<u32, PathBuf>,
    counts: Trailer,
}

impl ChangeLog {
    pub fn create(path: &Path) -> Result<Self> {
        let err = |source| AgentError::Io {
            context: format!("creating the change log {}", path.display()),
            source,
        };
        let file = std::fs::File::create(path).map_err(err)?;
        let mut log = ChangeLog {
            file: std::io::BufWriter::new(file),
            path: path.to_path_buf(),
            seen: HashSet::new(),
            roots: HashMap::new(),
            counts: Trailer::default(),
        };
        log.line(&Line::Header {
            backstop_changes: FORMAT,
        })?;
        Ok(log)
    }

    fn line(&mut self, l: &Line) -> Result<()> {
        let mut s = serde_json::to_string(l).expect("plain data serializes");
        s.push('\n');
        self.file
            .write_all(s.as_bytes())
            .map_err(|source| AgentError::Io {
                context: format!("writing the change log {}", self.path.display()),
                source,
            })
    }

    /// Resolve one record and log its paths (each once).
    pub fn record(&mut self, ev: &ChangeEvent) -> Result<()> {
        self.counts.records += 1;
        match resolve(ev, &mut self.roots) {
            Ok(found) => {
                for (ino, name) in found.anchored {
                    let Some(name) = name.to_str() else {
                        self.unresolved(ev, "the path is not UTF-8")?;
                        continue;
                    };
                    let l = Line::Anchored {
                        ino,
                        name: name.to_string(),
                        nr: ev.nr,
                        pid: ev.tid,
                    };
                    self.line(&l)?;
                }
                for p in found.paths {
                    if !self.seen.insert(p.clone()) {
                        continue;
                    }
                    let Some(s) = p.to_str() else {
                        self.unresolved(ev, "the path is not UTF-8")?;
                        continue;
                    };
                    let l = Line::Path {
                        path: s.to_string(),
                        nr: ev.nr,
                        pid: ev.tid,
                    };
                    self.line(&l)?;
                }
                Ok(())
            }
            Err(why) => self.unresolved(ev, &why),
        }
    }

    fn unresolved(&mut self, ev: &ChangeEvent, why: &str) -> Result<()> {
        tracing::debug!(nr = ev.nr, pid = ev.tid, "change not resolved: {why}");
        self.counts.unresolved += 1;
        self.line(&Line::Unresolved {
            unresolved: why.to_string(),
            nr: ev.nr,
            pid: ev.tid,
        })
    }

    /// Write the trailer and make the log durable. `lost`: records the
    /// probes counted as lost for this tree.
    pub fn finish(mut self, lost: u64) -> Result<Trailer> {
        self.counts.lost = lost;
        let end = self.counts;
        self.line(&Line::Trailer { end })?;
        let err = |source| AgentError::Io {
            context: format!("writing the change log {}", self.path.display()),
            source,
        };
        self.file.flush().map_err(err)?;
        self.file.get_ref().sync_all().map_err(err)?;
        Ok(end)
    }
}
