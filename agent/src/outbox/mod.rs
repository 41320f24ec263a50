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

mod files;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use backstop_common::wire::{self, AgentMsg};

use crate::datadir::{FILE_MODE, private_dir, tighten};
use crate::error::{AgentError, Result};
use files::write_atomic;

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
    /// Written to disk.
    Written,
    /// An outcome record the disk would not take, kept in memory.
    InMemory,
    /// Windows or events the disk would not take; windows are counted.
    Dropped,
}

pub struct Outbox {
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

impl Outbox {
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
            } else if path.extension().is_some_and(|e| e == "tmp") {
                // A write that never completed.
                let _ = std::fs::remove_file(&path);
            } else if name == "dropped" || name == "reserve" {
                tighten(&path, FILE_MODE)?;
            }
        }
        found.sort();
        let mut outbox = Outbox {
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
            if let Some(Ok(msg)) = frame.get(4..).map(wire::decode::<AgentMsg>) {
                outbox.remember(id, &msg, frame.len() as u64, None);
            } else {
                tracing::warn!(path = %path.display(), "dropping an unreadable outbox message");
                let _ = std::fs::remove_file(&path);
                outbox.dropped += 1;
            }
        }
        outbox.hold_reserve();
        if !outbox.reserve_held {
            tracing::warn!(
                dir = %dir.display(),
                bytes = RESERVE_BYTES,
                "cannot reserve room for outcome records in the outbox (disk full?); \
                 they will be kept in memory when the disk refuses them"
            );
        }
        Ok(outbox)
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
                Pushed::Written
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

    /// Windows lost before they reached the outbox (shed by its writer).
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
mod tests;
