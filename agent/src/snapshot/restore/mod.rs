//! Putting a scope back exactly as a snapshot recorded it.
//!
//! Order matters, and is the reason for this file's shape:
//! 1. Every object the snapshot needs is checked (present, and its content
//!    hashes to its name) before anything is touched: a damaged snapshot is
//!    refused and the scope left as it is.
//! 2. A marker file says a restore has begun (it is not a journal of
//!    planned actions). Every step after it is idempotent (it compares the
//!    tree with the snapshot and acts only on a difference), so an
//!    interrupted restore finishes when run again and gives the same
//!    result; the marker goes when it is done.
//! 3. What the snapshot does not know is removed, children first.
//! 4. Entries are recreated parents first. File content is written to a
//!    temporary name next to its target, given its owner, mode, xattrs and
//!    mtime there, and renamed into place: a file is never half-restored.
//!    Owner before mode before xattrs, because chown clears setuid bits
//!    and file capabilities.
//! 5. Directory metadata last, deepest first, so restoring children does
//!    not disturb a parent's mtime afterwards.
//!
//! Every change goes through [`HostOps`], whose one real implementation
//! ([`Beneath`]) acts through `beneath.rs`: paths are resolved by the kernel
//! beneath the root's descriptor with no symlink followed, and acted on
//! through the parent's or the node's descriptor. A file whose inode is
//! linked from elsewhere (more links than its hardlink group) is replaced
//! by a fresh file, never fixed in place, so no inode outside the scope is
//! changed.
//!
//! Files: `mod.rs` the entry point and its report, `focus.rs` the part of
//! the scope a change log points at, `apply.rs` the ordered steps,
//! `host.rs` the [`HostOps`] seam they act through and its real
//! implementation, `fake.rs` a recording fake of it and `order_tests.rs` the order pinned
//! with it (both only in unit tests).

mod apply;
#[cfg(test)]
mod fake;
mod focus;
mod host;
#[cfg(test)]
mod order_tests;

use serde::Serialize;

use super::{Result, Store, check_scope_ancestors, diff, io};
use crate::changes::ChangeSet;
use apply::apply;
use focus::Focus;
use host::Beneath;
pub use host::{HostOps, ObjectState};

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub id: String,
    /// Paths removed because the snapshot did not have them.
    pub removed: u64,
    /// Files whose content was put back.
    pub content_restored: u64,
    /// Entries recreated (dirs, links, symlinks, special files).
    pub recreated: u64,
    /// Entries whose owner, mode, xattrs or mtime were reset.
    pub metadata_reset: u64,
    /// A previous restore of this snapshot had been interrupted.
    pub resumed: bool,
    /// With --verify: the scope compared equal to the snapshot afterwards.
    pub verified: Option<bool>,
    /// With a change log: the entries looked at (the rest of the scope was
    /// not).
    pub looked_at: Option<u64>,
    /// Why a change log given was not used.
    pub full_walk_reason: Option<String>,
    /// With a change log and --verify: differences the log did not name,
    /// found by the full compare and repaired by a full restore.
    pub missed_by_changes: Vec<String>,
}

/// A test seam: crash (SIGKILL ourselves) after this many changes, to prove
/// that an interrupted restore finishes when run again. Compiled only with
/// the `test-seams` feature: a release binary never reads it.
#[cfg(feature = "test-seams")]
fn crash_point() -> Option<u64> {
    std::env::var("BACKSTOP_TEST_KILL_RESTORE_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
}

#[cfg(not(feature = "test-seams"))]
fn crash_point() -> Option<u64> {
    None
}

/// Restore snapshot `id`; with a complete change log, looking only at the
/// paths it names (see [`Focus`]).
pub fn restore(
    store: &Store,
    id: &str,
    verify: bool,
    changes: Option<&ChangeSet>,
) -> Result<RestoreReport> {
    let t0 = std::time::Instant::now();
    let snap = store.load(id)?;
    check_scope_ancestors(&snap.root, &snap.scopes)?;
    let (focus, full_walk_reason) = match changes.map(|c| focus_of(&snap, c)) {
        Some(Ok(f)) => (Some(f), None),
        Some(Err(why)) => (None, Some(why)),
        None => (None, None),
    };
    let mut report = match &focus {
        Some(f) => {
            tracing::debug!(
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "restore: manifest loaded, focus built"
            );
            let (part, current) = f.view(&snap)?;
            let looked_at = current.len() as u64;
            tracing::debug!(
                ms = t0.elapsed().as_secs_f64() * 1e3,
                entries = looked_at,
                "restore: focus walked"
            );
            let mut r = apply_beneath(store, &part, &current)?;
            r.looked_at = Some(looked_at);
            r
        }
        // One walk of the scope as it is now serves the plan and every step.
        None => apply_beneath(store, &snap, &snap.walk_now()?)?,
    };
    report.full_walk_reason = full_walk_reason;
    if verify {
        verify_after(store, &snap, focus.is_some(), &mut report)?;
    }
    Ok(report)
}

/// The focus a change log gives, or why it gives none.
fn focus_of(snap: &super::Snapshot, c: &ChangeSet) -> std::result::Result<Focus, String> {
    match &c.incomplete {
        Some(why) => Err(format!("the change log is incomplete: {why}")),
        None => Focus::new(snap, c).map_err(|why| format!("the change log is not trusted: {why}")),
    }
}

/// One pass over the real tree, beneath the snapshot's root.
fn apply_beneath(
    store: &Store,
    snap: &super::Snapshot,
    current: &[(super::Entry, libc::stat)],
) -> Result<RestoreReport> {
    let ops = Beneath::open(store, &snap.root).map_err(io(&snap.root))?;
    apply(&ops, store, snap, current)
}

/// `--verify`: compare the whole scope. After a focused restore, a
/// difference is something the log did not name (a write through an fd
/// inherited from outside the tree, io_uring, a process outside the
/// tree): say what, and repair it the slow way.
fn verify_after(
    store: &Store,
    snap: &super::Snapshot,
    focused: bool,
    report: &mut RestoreReport,
) -> Result<()> {
    let d = diff(snap)?;
    if d.is_empty() || !focused {
        report.verified = Some(d.is_empty());
        return Ok(());
    }
    report.missed_by_changes = d
        .added
        .iter()
        .chain(&d.changed)
        .chain(&d.removed)
        .cloned()
        .collect();
    let again = apply_beneath(store, snap, &snap.walk_now()?)?;
    report.removed += again.removed;
    report.content_restored += again.content_restored;
    report.recreated += again.recreated;
    report.metadata_reset += again.metadata_reset;
    report.verified = Some(diff(snap)?.is_empty());
    Ok(())
}
