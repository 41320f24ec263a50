//! The steps of one tracked tree: start (first reading, change log),
//! each window's tick, draining the ring buffers, and the finish that
//! yields its [`Summary`]. The loop that drives them is in the parent.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;

use tokio::io::unix::AsyncFd;

use super::{
    SharedProbes, Summary, TrackOptions, WindowSink, lock, monotonic_ns, survive, survive_log,
};
use crate::changes::ChangeLog;
use crate::error::{AgentError, Result};
use crate::fold::{Folder, Reading};
use crate::host::HostSampler;

/// One tracked tree's state from its start to its summary.
pub(super) struct Session<'a> {
    probes: &'a SharedProbes,
    slot: u32,
    sampler: HostSampler,
    folder: Folder,
    change_log: Option<ChangeLog>,
    changes_lost_at_start: u64,
    lost: u64,
    sink_failures: u64,
}

impl<'a> Session<'a> {
    /// The first reading, and the change log when asked for, before the
    /// tree is launched.
    pub(super) fn start(probes: &'a SharedProbes, slot: u32, opts: &TrackOptions) -> Result<Self> {
        let sampler = HostSampler::new(&opts.scope);
        let folder = Folder::new(opts.stream, read(probes, slot, &sampler)?);
        let change_log = match &opts.changes {
            Some(path) => {
                let log = ChangeLog::create(path)?;
                lock(probes).record_changes(slot, true)?;
                Some(log)
            }
            None => None,
        };
        let changes_lost_at_start =
            lock(probes).totals(slot)?.c[backstop_common::counter::CHANGES_LOST];
        Ok(Session {
            probes,
            slot,
            sampler,
            folder,
            change_log,
            changes_lost_at_start,
            lost: 0,
            sink_failures: 0,
        })
    }

    /// Fold the window that just ended and hand it to the sink.
    fn fold_window(&mut self, sink: &mut dyn WindowSink) -> Result<()> {
        let w = self
            .folder
            .fold(read(self.probes, self.slot, &self.sampler)?);
        self.lost += w.lost_events;
        survive(sink.window(&w), &mut self.sink_failures);
        Ok(())
    }

    /// Per window: fold it, then drain what another tree may have read
    /// into our mailboxes (its reading woke nobody here).
    pub(super) fn tick(&mut self, sink: &mut dyn WindowSink) -> Result<()> {
        self.fold_window(sink)?;
        self.drain_events(sink);
        self.drain_changes();
        Ok(())
    }

    /// Hand the slot's lifecycle records to the sink.
    pub(super) fn drain_events(&mut self, sink: &mut dyn WindowSink) {
        let mut err = Ok(());
        lock(self.probes).drain_events(self.slot, |ev| {
            if err.is_ok() {
                err = sink.event(&ev);
            }
        });
        survive(err, &mut self.sink_failures);
    }

    /// Write the slot's change records to the change log, if any.
    pub(super) fn drain_changes(&mut self) {
        let mut err = Ok(());
        let log = &mut self.change_log;
        lock(self.probes).drain_changes(self.slot, |ev| {
            if err.is_ok()
                && let Some(log) = log.as_mut()
            {
                err = log.record(ev);
            }
        });
        survive_log(err, &mut self.change_log);
    }

    /// After the root exited: the last records, the change log's trailer,
    /// the last (partial) window, and the summary.
    pub(super) fn finish(
        mut self,
        status: std::process::ExitStatus,
        timed_out: bool,
        sink: &mut dyn WindowSink,
    ) -> Result<Summary> {
        self.drain_events(sink);
        self.drain_changes();
        let changes = match self.change_log.take() {
            Some(log) => {
                let p = lock(self.probes);
                let lost = p.totals(self.slot)?.c[backstop_common::counter::CHANGES_LOST]
                    - self.changes_lost_at_start
                    + p.changes_dropped(self.slot);
                drop(p);
                Some(log.finish(lost)?)
            }
            None => None,
        };
        tracing::debug!(misses = ?lock(self.probes).recursion_misses_by_program(), "skipped program runs since load");
        self.fold_window(sink)?;
        if self.sink_failures > 0 {
            tracing::warn!(
                sink_failures = self.sink_failures,
                "windows or records the sink could not take were lost"
            );
        }
        let exit_code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(Summary {
            exit_code,
            windows: self.folder.windows(),
            lost_events: self.lost,
            changes,
            timed_out,
        })
    }
}

/// One reading of the slot's counters, threads and host. The probes'
/// lock is held for the maps alone: /proc and statvfs are read after it
/// is released, since every tree's window timer, registration and ring
/// reader waits on that lock, and a big tree's /proc takes milliseconds.
fn read(probes: &SharedProbes, slot: u32, sampler: &HostSampler) -> Result<Reading> {
    let (totals, threads, anon_peak_bytes, tids, at_ns, recursion_misses) = {
        let mut p = lock(probes);
        let at_ns = monotonic_ns();
        (
            p.totals(slot)?,
            p.threads_now(slot, at_ns),
            p.take_anon_peak(slot)?,
            p.tree_tids(slot),
            at_ns,
            p.recursion_misses(),
        )
    };
    Ok(Reading {
        totals,
        threads,
        anon_peak_bytes,
        host: sampler.sample()?,
        tree: crate::treestat::read(std::path::Path::new("/proc"), &tids),
        at_ns,
        recursion_misses,
    })
}

/// The probes' two ring buffers, to wait on for new records.
pub(super) struct Rings {
    pub(super) events: AsyncFd<OwnedFd>,
    pub(super) changes: AsyncFd<OwnedFd>,
}

impl Rings {
    pub(super) fn watch(probes: &SharedProbes) -> Result<Self> {
        let ring_err = |source| AgentError::Io {
            context: "watching the probes' ring buffer".into(),
            source,
        };
        let ring_fd = lock(probes)
            .events_fd()
            .try_clone_to_owned()
            .map_err(ring_err)?;
        // SAFETY: we own this duplicate; it stays open for the AsyncFd's life.
        let events =
            unsafe { AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE) }
                .map_err(|e| ring_err(e.into()))?;
        let changes_fd = lock(probes)
            .changes_fd()
            .try_clone_to_owned()
            .map_err(ring_err)?;
        // SAFETY: as above.
        let changes =
            unsafe { AsyncFd::register_with_interest(changes_fd, tokio::io::Interest::READABLE) }
                .map_err(|e| ring_err(e.into()))?;
        Ok(Rings { events, changes })
    }
}
