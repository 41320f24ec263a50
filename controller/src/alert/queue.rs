//! The alert queue on disk, under DATA/alerts/ (0700 directories, 0600
//! files from creation, through `common::private`):
//! `queue/SINK/NAME.json` waits for delivery to SINK, `dead/SINK/` is what
//! outlived `max_age`, `firing/FINGERPRINT.json` is every alert fired and
//! not yet resolved. A file appears whole (written aside, fsynced, renamed,
//! directory fsynced) or not at all, so a crash leaves either the alert or
//! nothing, never half of one. NAMEs sort in the order alerts were queued.
//! Everything here blocks: call it from a blocking task.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use backstop_common::private::{self, DIR_MODE, FILE_MODE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Alert;

/// One queued delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// When it was queued: its age, for `max_age`, counts from here, across
    /// restarts.
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: OffsetDateTime,
    pub alert: Alert,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(data: &Path) -> Layout {
        Layout {
            root: data.join("alerts"),
        }
    }

    pub fn queue(&self, sink: &str) -> PathBuf {
        self.root.join("queue").join(sink)
    }

    pub fn dead(&self, sink: &str) -> PathBuf {
        self.root.join("dead").join(sink)
    }

    pub fn firing(&self) -> PathBuf {
        self.root.join("firing")
    }

    /// Make (or narrow) every directory, drop leftovers of writes a crash
    /// interrupted, and name queues no configured sink will drain.
    pub fn open(&self, sinks: &[String]) -> io::Result<()> {
        let mut dirs = vec![self.root.clone(), self.firing()];
        for s in sinks {
            dirs.push(self.queue(s));
            dirs.push(self.dead(s));
        }
        for d in &dirs {
            private::make_dirs(d).map_err(|e| named(d, &e))?;
            crate::private::fix_mode(d, DIR_MODE)?;
            for e in fs::read_dir(d).map_err(|e| named(d, &e))?.flatten() {
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with('.') {
                    let _ = fs::remove_file(&p);
                } else if p.is_file() {
                    crate::private::fix_mode(&p, FILE_MODE)?;
                }
            }
        }
        if let Ok(entries) = fs::read_dir(self.root.join("queue")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !sinks.contains(&name) {
                    tracing::warn!(sink = %name, dir = %e.path().display(),
                        "alerts queued for a sink the config no longer has: left in place");
                }
            }
        }
        Ok(())
    }

    pub fn enqueue(&self, sink: &str, entry: &Entry) -> io::Result<PathBuf> {
        let body = serde_json::to_vec(entry).map_err(io::Error::other)?;
        write_whole(&self.queue(sink), &next_name(), &body)
    }

    /// The oldest queued delivery of `sink`.
    pub fn head(&self, sink: &str) -> io::Result<Option<PathBuf>> {
        Ok(Self::list(&self.queue(sink))?.into_iter().next())
    }

    pub fn depth(&self, sink: &str) -> io::Result<usize> {
        Ok(Self::list(&self.queue(sink))?.len())
    }

    fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| named(dir, &e))?
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                !n.starts_with('.') && n.ends_with(".json")
            })
            .map(|e| e.path())
            .collect();
        v.sort();
        Ok(v)
    }

    /// Move a queued delivery to `dead/SINK/`, keeping its name.
    pub fn bury(&self, sink: &str, path: &Path) -> io::Result<PathBuf> {
        let to = self.dead(sink).join(path.file_name().unwrap_or_default());
        fs::rename(path, &to).map_err(|e| named(path, &e))?;
        sync_dir(&self.dead(sink))?;
        Ok(to)
    }

    #[expect(
        clippy::unused_self,
        reason = "a queue operation like bury and head, called through the Layout that owns the queue"
    )]
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(named(path, &e)),
            _ => Ok(()),
        }
    }

    /// Remember a firing alert until it is resolved.
    pub fn keep_firing(&self, alert: &Alert) -> io::Result<()> {
        let body = serde_json::to_vec(alert).map_err(io::Error::other)?;
        write_whole(
            &self.firing(),
            &format!("{}.json", fingerprint(alert)),
            &body,
        )
        .map(|_| ())
    }

    /// Every firing alert about `package`, with its file.
    pub fn firing_of(&self, package: &str) -> io::Result<Vec<(PathBuf, Alert)>> {
        let mut out = Vec::new();
        for p in Self::list(&self.firing())? {
            match read_json::<Alert>(&p) {
                Ok(a) if a.package == package => out.push((p, a)),
                Ok(_) => {}
                Err(e) => tracing::warn!(path = %p.display(), error = %e,
                    "an unreadable firing-alert record: skipped"),
            }
        }
        Ok(out)
    }
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path).map_err(|e| named(path, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// What identifies an alert in Alertmanager: its labels (the deployment
/// names one), hashed into a file name.
fn fingerprint(a: &Alert) -> String {
    let mut h = Sha256::new();
    for part in [&a.host, &a.deployment, &a.package, &a.decision] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Unique and sorting in queue order within this process, and by wall
/// clock across restarts.
fn next_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{now:020}-{n:010}.json")
}

fn write_whole(dir: &Path, name: &str, body: &[u8]) -> io::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let to = dir.join(name);
    let mut f: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(|e| named(&tmp, &e))?;
    f.write_all(body)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, &to))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            named(&to, &e)
        })?;
    sync_dir(dir)?;
    Ok(to)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| named(dir, &e))
}

fn named(path: &Path, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
