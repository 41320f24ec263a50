//! The agent's outbox: every message for the controller is written to disk
//! before it is sent, and deleted only when the controller acknowledges it.
//! A controller that is away, or restarts, or an agent that restarts, loses
//! nothing below the bound; above it the oldest messages are dropped, and
//! the number dropped is kept and reported in every Hello.
//!
//! One file per message, named by a sequence number, created 0600 under a
//! temporary name (O_EXCL, never chmodded later), fsynced and renamed: a
//! crash leaves either the whole message or none of it, and no other user
//! can read a deployment's argv or events from it.
//!
//! A full or failing disk loses windows, never an outcome: a window that
//! cannot be written is dropped and counted (as over the bound), while a
//! Finished or Failed record first gets the room of a reserve file
//! pre-allocated in the outbox and, when even that fails, is kept in memory
//! and sent from there (it is then lost only if the agent also restarts
//! before the controller acknowledges it).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use backstop_common::wire::{self, AgentMsg};

use crate::datadir::{FILE_MODE, private_dir, tighten};
use crate::error::{AgentError, Result};

/// Default bound on the outbox.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Room kept for outcome records: an outcome is a few hundred bytes, so
/// this holds hundreds even on a filesystem with 4 KiB blocks.
pub const RESERVE_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone)]
struct Item {
    id: u64,
    deployment: String,
    /// Highest window seq in a Windows message.
    last_seq: Option<u64>,
    /// Windows it carries, for the drop count.
    windows: u64,
    /// Finished or Failed: acknowledged as a whole.
    terminal: bool,
    bytes: u64,
    /// The frame, when it could not be written to disk.
    in_memory: Option<Vec<u8>>,
}

/// What became of a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Spooled,
    /// An outcome record the disk would not take, kept in memory.
    InMemory,
    /// Windows or events the disk would not take; windows are counted.
    Dropped,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    items: VecDeque<Item>,
    bytes: u64,
    next_id: u64,
    dropped: u64,
    /// Whether the reserve file holds its room now.
    reserve_held: bool,
    /// The last write failed: log the next failure at debug, not warn.
    failing: bool,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> AgentError {
    move |source| AgentError::Io { context, source }
}

/// Create `path` 0600 (never wider, even for an instant), write, fsync.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let r = f.write_all(bytes).and_then(|()| f.sync_data());
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// Write `bytes` to `path` through a temporary name: all or nothing.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl Spool {
    /// Open the outbox in `dir`, picking up what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        private_dir(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))? {
            let path = entry
                .map_err(io(format!("listing {}", dir.display())))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(id) = name
                .strip_suffix(".msg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                tighten(&path, FILE_MODE)?;
                found.push((id, path));
            } else if name.ends_with(".tmp") {
                // A write that never completed.
                let _ = std::fs::remove_file(&path);
            } else if name == "dropped" || name == "reserve" {
                tighten(&path, FILE_MODE)?;
            }
        }
        found.sort();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            items: VecDeque::new(),
            bytes: 0,
            next_id: found.last().map_or(0, |(id, _)| id + 1),
            dropped: std::fs::read_to_string(dir.join("dropped"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            reserve_held: false,
            failing: false,
        };
        for (id, path) in found {
            let frame = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            match frame.get(4..).map(wire::decode::<AgentMsg>) {
                Some(Ok(msg)) => spool.remember(id, &msg, frame.len() as u64, None),
                _ => {
                    tracing::warn!(path = %path.display(), "dropping an unreadable spooled message");
                    let _ = std::fs::remove_file(&path);
                    spool.dropped += 1;
                }
            }
        }
        spool.hold_reserve();
        if !spool.reserve_held {
            tracing::warn!(
                dir = %dir.display(),
                bytes = RESERVE_BYTES,
                "cannot reserve room for outcome records in the outbox (disk full?); \
                 they will be kept in memory when the disk refuses them"
            );
        }
        Ok(spool)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.msg"))
    }

    fn reserve_path(&self) -> PathBuf {
        self.dir.join("reserve")
    }

    /// Allocate the reserve file's blocks (fallocate, so the filesystem
    /// really sets them aside; a sparse file would hold nothing).
    fn hold_reserve(&mut self) {
        if self.reserve_held {
            return;
        }
        let path = self.reserve_path();
        let open = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        let Ok(f) = open else { return };
        // SAFETY: fallocate on a descriptor we own.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, RESERVE_BYTES as libc::off_t) };
        self.reserve_held = rc == 0;
        if rc != 0 {
            let _ = f.set_len(0);
        }
    }

    /// Give the reserve's room back to the filesystem, for an outcome.
    fn release_reserve(&mut self) {
        if let Ok(f) = File::options()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.reserve_path())
        {
            let _ = f.set_len(0);
        }
        self.reserve_held = false;
    }

    fn remember(&mut self, id: u64, msg: &AgentMsg, bytes: u64, in_memory: Option<Vec<u8>>) {
        let (deployment, last_seq, terminal) = match msg {
            AgentMsg::Windows {
                deployment,
                windows,
            } => (
                deployment.clone(),
                windows.iter().map(|w| w.seq).max(),
                false,
            ),
            AgentMsg::Finished { deployment, .. } | AgentMsg::Failed { deployment, .. } => {
                (deployment.clone(), None, true)
            }
            // Acknowledged with the deployment's end.
            AgentMsg::Events { deployment, .. } => (deployment.clone(), None, false),
            // A deploy's events: acknowledged with its end; the final one
            // is an outcome (kept when over the bound).
            AgentMsg::Deployment {
                deployment, event, ..
            } => (deployment.clone(), None, event.is_final()),
            AgentMsg::Hello { .. } | AgentMsg::Dropped { .. } => return,
        };
        self.bytes += bytes;
        self.items.push_back(Item {
            id,
            deployment,
            last_seq,
            terminal,
            bytes,
            in_memory,
            windows: Self::windows_in(msg),
        });
    }

    /// Windows a message carries, for the drop count.
    fn windows_in(msg: &AgentMsg) -> u64 {
        match msg {
            AgentMsg::Windows { windows, .. } => windows.len() as u64,
            _ => 0,
        }
    }

    /// Write `msg` durably; drop the oldest windows if over the bound. A
    /// disk that refuses the write drops windows and events (counted) and
    /// never an outcome (see the module's note): this never fails.
    pub fn push(&mut self, msg: &AgentMsg) -> Pushed {
        let frame = wire::encode(msg);
        let id = self.next_id;
        self.next_id += 1;
        let path = self.path(id);
        let terminal = match msg {
            AgentMsg::Finished { .. } | AgentMsg::Failed { .. } => true,
            AgentMsg::Deployment { event, .. } => event.is_final(),
            _ => false,
        };
        let mut written = write_atomic(&path, &frame);
        if written.is_err() && terminal && self.reserve_held {
            self.release_reserve();
            written = write_atomic(&path, &frame);
        }
        let pushed = match written {
            Ok(()) => {
                self.failing = false;
                self.remember(id, msg, frame.len() as u64, None);
                self.hold_reserve();
                Pushed::Spooled
            }
            Err(e) if terminal => {
                tracing::warn!(path = %path.display(), "outbox refused an outcome record ({e}); keeping it in memory");
                self.remember(id, msg, frame.len() as u64, Some(frame));
                Pushed::InMemory
            }
            Err(e) => {
                let n = Self::windows_in(msg);
                self.dropped += n;
                if self.failing {
                    tracing::debug!(dropped = self.dropped, "outbox still refuses writes: {e}");
                } else {
                    tracing::warn!(
                        path = %path.display(),
                        dropped = self.dropped,
                        "outbox refused a write ({e}); dropping windows (counted) until it takes them again"
                    );
                }
                self.failing = true;
                if n > 0 {
                    self.save_dropped();
                }
                return Pushed::Dropped;
            }
        };
        self.evict();
        pushed
    }

    /// Over the bound, the oldest windows and events go; outcomes stay.
    fn evict(&mut self) {
        while self.bytes > self.max_bytes {
            let Some(at) = self.items.iter().position(|i| !i.terminal) else {
                return;
            };
            if at + 1 == self.items.len() {
                return; // the newest message always stays
            }
            let old = self.items.remove(at).expect("in range");
            let _ = std::fs::remove_file(self.path(old.id));
            self.bytes -= old.bytes;
            self.dropped += old.windows;
            tracing::warn!(
                dropped = self.dropped,
                "outbox over its bound; dropped the oldest message"
            );
            self.save_dropped();
        }
    }

    /// Keep the drop count across restarts (best effort: on a full disk
    /// only memory has it, and the next Hello still carries it).
    fn save_dropped(&self) {
        let _ = write_atomic(
            &self.dir.join("dropped"),
            self.dropped.to_string().as_bytes(),
        );
    }

    /// Messages after `after` (an id; None for all), oldest first, as frames.
    pub fn pending(&self, after: Option<u64>, limit: usize) -> Vec<(u64, Vec<u8>)> {
        self.items
            .iter()
            .filter(|i| after.is_none_or(|a| i.id > a))
            .take(limit)
            .filter_map(|i| match &i.in_memory {
                Some(frame) => Some((i.id, frame.clone())),
                None => std::fs::read(self.path(i.id)).ok().map(|f| (i.id, f)),
            })
            .collect()
    }

    /// The controller stored `deployment` through `through_seq`, or all of
    /// it when `finished`.
    pub fn ack(&mut self, deployment: &str, through_seq: Option<u64>, finished: bool) {
        let done = |i: &Item| {
            i.deployment == deployment
                && if i.terminal {
                    finished
                } else {
                    finished || i.last_seq.zip(through_seq).is_some_and(|(l, t)| l <= t)
                }
        };
        let (gone, keep): (Vec<Item>, Vec<Item>) = self.items.drain(..).partition(done);
        self.items = keep.into();
        for i in gone {
            if i.in_memory.is_none() {
                let _ = std::fs::remove_file(self.path(i.id));
            }
            self.bytes -= i.bytes;
        }
    }

    /// Windows lost before they reached the spool (shed by its writer).
    pub fn add_dropped(&mut self, n: u64) {
        if n > 0 {
            self.dropped += n;
            self.save_dropped();
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_common::window::{Stream, Window};

    fn windows(d: &str, seq: u64) -> AgentMsg {
        AgentMsg::Windows {
            deployment: d.into(),
            windows: vec![Window::new(Stream::Live, seq, seq, seq + 1)],
        }
    }

    fn msgs(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "msg"))
            .collect()
    }

    fn finished(d: &str) -> AgentMsg {
        AgentMsg::Finished {
            deployment: d.into(),
            exit_code: 0,
            windows: 1,
            lost_events: 0,
        }
    }

    #[test]
    fn private_from_creation_and_reserved() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!("backstop-spool-modes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, DEFAULT_MAX_BYTES).unwrap();
        s.push(&windows("d", 0));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "outbox directory");
        for m in msgs(&dir) {
            assert_eq!(mode(&m), 0o600, "{}", m.display());
        }
        let reserve = std::fs::metadata(dir.join("reserve")).unwrap();
        assert!(
            reserve.blocks() * 512 >= RESERVE_BYTES,
            "the reserve's blocks are allocated, not sparse: {} blocks",
            reserve.blocks()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_bound_drops_windows_never_outcomes() {
        let dir = std::env::temp_dir().join(format!("backstop-spool-bound-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let one = wire::encode(&windows("d", 0)).len() as u64;
        let mut s = Spool::open(&dir, one * 2).unwrap();
        s.push(&finished("a"));
        for seq in 0..5 {
            s.push(&windows("d", seq));
        }
        let left = s.pending(None, 100);
        let first = wire::decode::<AgentMsg>(&left[0].1[4..]).unwrap();
        assert_eq!(first, finished("a"), "the outcome outlives newer windows");
        assert!(s.dropped() >= 3, "windows were dropped: {}", s.dropped());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn survives_restart_acks_and_bounds() {
        let dir = std::env::temp_dir().join(format!("backstop-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, DEFAULT_MAX_BYTES).unwrap();
        for seq in 0..5 {
            assert_eq!(s.push(&windows("d1", seq)), Pushed::Spooled);
        }
        s.push(&AgentMsg::Finished {
            deployment: "d1".into(),
            exit_code: 0,
            windows: 5,
            lost_events: 0,
        });
        drop(s);
        let mut s = Spool::open(&dir, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(s.len(), 6, "everything survives a restart");
        let first = s.pending(None, 2);
        assert_eq!(first.len(), 2);
        assert_eq!(
            s.pending(Some(first[1].0), 100).len(),
            4,
            "pending after a cursor"
        );
        s.ack("d1", Some(2), false);
        assert_eq!(s.len(), 3, "seq 0..=2 acknowledged");
        s.ack("d1", None, true);
        assert!(s.is_empty());
        assert_eq!(msgs(&dir).len(), 0, "acknowledged files are gone");

        let one = wire::encode(&windows("d2", 0)).len() as u64;
        let mut s = Spool::open(&dir, one * 3).unwrap();
        for seq in 0..5 {
            s.push(&windows("d2", seq));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.dropped(), 2, "the oldest two were dropped and counted");
        drop(s);
        assert_eq!(
            Spool::open(&dir, one * 3).unwrap().dropped(),
            2,
            "the drop count survives a restart"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
