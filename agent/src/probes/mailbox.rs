//! The ring buffers of lifecycle and change records, and the per-slot
//! mailboxes that let concurrent trees share them.

use std::os::fd::{AsFd, BorrowedFd};

use backstop_common::{ChangeEvent, ProcRecord};

use super::{Probes, map_err};
use crate::error::Result;

impl Probes {
    /// Hand `slot`'s queued lifecycle records to `f`, in order; other
    /// slots' records wait in their mailboxes.
    pub fn drain_events(&mut self, slot: u32, mut f: impl FnMut(ProcRecord)) {
        self.event_mail.take(slot).into_iter().for_each(&mut f);
        while let Some(item) = self.events.next() {
            if item.len() >= std::mem::size_of::<ProcRecord>() {
                // SAFETY: the probes write whole ProcRecords (repr(C), Pod);
                // read_unaligned copes with the ring buffer's 8-byte alignment.
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ProcRecord>()) };
                if ev.slot == slot {
                    f(ev);
                } else if self.slots.get(ev.slot as usize) == Some(&true) {
                    self.event_mail.put(ev.slot, ev);
                }
            }
        }
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// The ring buffer's fd, to wait on for new records.
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Whether the probes record `slot`'s filesystem changes.
    pub fn record_changes(&mut self, slot: u32, on: bool) -> Result<()> {
        self.change_slots
            .set(slot, u32::from(on), 0)
            .map_err(|e| map_err("CHANGE_SLOTS", e))
    }

    /// Hand `slot`'s queued change records to `f`, in order; other
    /// slots' records wait in their mailboxes.
    pub fn drain_changes(&mut self, slot: u32, mut f: impl FnMut(&ChangeEvent)) {
        self.change_mail.take(slot).iter().for_each(&mut f);
        while let Some(item) = self.changes.next() {
            if item.len() >= std::mem::size_of::<ChangeEvent>() {
                // SAFETY: the probes write whole ChangeEvents (repr(C), Pod).
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ChangeEvent>()) };
                if ev.slot == slot {
                    f(&ev);
                } else if self.slots.get(ev.slot as usize) == Some(&true) {
                    self.change_mail.put(ev.slot, ev);
                }
            }
        }
    }

    /// Change records of `slot` dropped because its mailbox was full: lost
    /// as surely as those the kernel could not queue.
    pub fn changes_dropped(&self, slot: u32) -> u64 {
        self.change_mail.dropped(slot)
    }

    /// The change ring buffer's fd, to wait on for new records.
    pub fn changes_fd(&self) -> BorrowedFd<'_> {
        self.changes.as_fd()
    }
}

/// The event ring buffers are shared by every tree the agent watches, and
/// whichever tree reads first takes all queued records. What it reads for
/// another tree waits here until that tree drains, so concurrent trees
/// each get every record of their own. A mailbox is bounded; a record that
/// does not fit is dropped and counted against its slot.
pub(super) struct Mailboxes<T> {
    by_slot: std::collections::BTreeMap<u32, (std::collections::VecDeque<T>, u64)>,
    max: usize,
}

impl<T> Mailboxes<T> {
    pub(super) fn new(max: usize) -> Self {
        Mailboxes {
            by_slot: std::collections::BTreeMap::new(),
            max,
        }
    }

    fn put(&mut self, slot: u32, item: T) {
        let (q, dropped) = self.by_slot.entry(slot).or_default();
        if q.len() < self.max {
            q.push_back(item);
        } else {
            *dropped += 1;
        }
    }

    /// The slot's waiting records; its dropped count stays.
    fn take(&mut self, slot: u32) -> std::collections::VecDeque<T> {
        self.by_slot
            .get_mut(&slot)
            .map(|(q, _)| std::mem::take(q))
            .unwrap_or_default()
    }

    fn dropped(&self, slot: u32) -> u64 {
        self.by_slot.get(&slot).map_or(0, |(_, d)| *d)
    }

    pub(super) fn clear(&mut self, slot: u32) {
        self.by_slot.remove(&slot);
    }
}
