//! The agent's outbox: every message for the controller is written to disk
//! before it is sent, and deleted only when the controller acknowledges it.
//! A controller that is away, or restarts, or an agent that restarts, loses
//! nothing below the bound; above it the oldest messages are dropped, and
//! the number dropped is kept and reported in every Hello.
//!
//! One file per message, named by a sequence number, written to a temporary
//! name, fsynced and renamed: a crash leaves either the whole message or
//! none of it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use backstop_common::wire::{self, AgentMsg};

use crate::error::{AgentError, Result};

/// Default bound on the outbox.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone)]
struct Item {
    id: u64,
    deployment: String,
    /// Highest window seq in a Windows message.
    last_seq: Option<u64>,
    /// Finished or Failed: acknowledged as a whole.
    terminal: bool,
    bytes: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    items: VecDeque<Item>,
    bytes: u64,
    next_id: u64,
    dropped: u64,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> AgentError {
    move |source| AgentError::Io { context, source }
}

impl Spool {
    /// Open the outbox in `dir`, picking up what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
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
                found.push((id, path));
            } else if name.ends_with(".tmp") {
                // A write that never completed.
                let _ = std::fs::remove_file(&path);
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
        };
        for (id, path) in found {
            let frame = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            match frame.get(4..).map(wire::decode::<AgentMsg>) {
                Some(Ok(msg)) => spool.remember(id, &msg, frame.len() as u64),
                _ => {
                    tracing::warn!(path = %path.display(), "dropping an unreadable spooled message");
                    let _ = std::fs::remove_file(&path);
                    spool.dropped += 1;
                }
            }
        }
        Ok(spool)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.msg"))
    }

    fn remember(&mut self, id: u64, msg: &AgentMsg, bytes: u64) {
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
            AgentMsg::Hello { .. } => return,
        };
        self.bytes += bytes;
        self.items.push_back(Item {
            id,
            deployment,
            last_seq,
            terminal,
            bytes,
        });
    }

    /// Write `msg` durably; drop the oldest messages if over the bound.
    pub fn push(&mut self, msg: &AgentMsg) -> Result<()> {
        let frame = wire::encode(msg);
        let id = self.next_id;
        self.next_id += 1;
        let path = self.path(id);
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&frame)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(io(format!("spooling to {}", path.display())))?;
        self.remember(id, msg, frame.len() as u64);
        while self.bytes > self.max_bytes && self.items.len() > 1 {
            let old = self.items.pop_front().expect("non-empty");
            let _ = std::fs::remove_file(self.path(old.id));
            self.bytes -= old.bytes;
            self.dropped += 1;
            tracing::warn!(
                dropped = self.dropped,
                "outbox over its bound; dropped the oldest message"
            );
            let _ = std::fs::write(self.dir.join("dropped"), self.dropped.to_string());
        }
        Ok(())
    }

    /// Messages after `after` (an id; None for all), oldest first, as frames.
    pub fn pending(&self, after: Option<u64>, limit: usize) -> Vec<(u64, Vec<u8>)> {
        self.items
            .iter()
            .filter(|i| after.is_none_or(|a| i.id > a))
            .take(limit)
            .filter_map(|i| std::fs::read(self.path(i.id)).ok().map(|f| (i.id, f)))
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
            let _ = std::fs::remove_file(self.path(i.id));
            self.bytes -= i.bytes;
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

    #[test]
    fn survives_restart_acks_and_bounds() {
        let dir = std::env::temp_dir().join(format!("backstop-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, DEFAULT_MAX_BYTES).unwrap();
        for seq in 0..5 {
            s.push(&windows("d1", seq)).unwrap();
        }
        s.push(&AgentMsg::Finished {
            deployment: "d1".into(),
            exit_code: 0,
            windows: 5,
            lost_events: 0,
        })
        .unwrap();
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
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "acknowledged files are gone"
        );

        let one = wire::encode(&windows("d2", 0)).len() as u64;
        let mut s = Spool::open(&dir, one * 3).unwrap();
        for seq in 0..5 {
            s.push(&windows("d2", seq)).unwrap();
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
