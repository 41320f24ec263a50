//! Stream slots: claiming and releasing them, attaching the tracking hooks
//! while any is in use, and marking a pid as tracked in one.

use aya::programs::RawTracePoint;
use backstop_common::MAX_SLOTS;

use super::{Probes, TRACKING_HOOKS, map_err, program, refused};
use crate::error::{AgentError, Result};

impl Probes {
    /// Claim a free stream slot (1..MAX_SLOTS). Its counters keep running
    /// totals, so readers start from [`Probes::totals`] at claim time.
    /// Slots are handed out round-robin: a tree's orphans (daemons it left
    /// running) keep counting into its slot, so a slot is reused as late as
    /// possible.
    pub fn claim_slot(&mut self) -> Result<u32> {
        let n = MAX_SLOTS as usize - 1;
        let free = (0..n)
            .map(|i| 1 + (self.last_slot + i) % n)
            .find(|&s| !self.slots[s])
            .ok_or(AgentError::NoFreeSlot { max: MAX_SLOTS - 1 })?;
        if self.tracking_links.is_empty() {
            self.attach_tracking_hooks()?;
        }
        self.slots[free] = true;
        self.last_slot = free;
        Ok(free as u32)
    }

    /// Give a slot back; with no slot left in use, the tracking hooks come
    /// off and the host's syscalls cost what they cost without us.
    pub fn release_slot(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = false;
        }
        if let Err(e) = self.record_changes(slot, false) {
            tracing::warn!(slot, "turning change recording off: {e}");
        }
        self.event_mail.clear(slot);
        self.change_mail.clear(slot);
        if !self.slots.iter().any(|&s| s) {
            self.detach_tracking_hooks();
        }
    }

    fn attach_tracking_hooks(&mut self) -> Result<()> {
        for (prog, tp) in TRACKING_HOOKS {
            let p: &mut RawTracePoint = program(&mut self.ebpf, prog)?;
            let link = p
                .attach(tp)
                .map_err(|e| refused(&format!("attaching {prog} to raw tracepoint {tp}"), e))?;
            self.tracking_links.push((prog, link));
        }
        Ok(())
    }

    fn detach_tracking_hooks(&mut self) {
        for (prog, link) in std::mem::take(&mut self.tracking_links) {
            if let Ok(p) = program::<RawTracePoint>(&mut self.ebpf, prog)
                && let Err(e) = p.detach(link)
            {
                tracing::warn!(prog, "detaching: {e}");
            }
        }
    }

    /// Track `pid` (and from then on everything it forks) as `slot`,
    /// counting from its first exec. `pid` is the tree's root: once it has
    /// exited, what it left alive and is SIGKILLed is not counted as a
    /// death (the probes' process.rs says why).
    pub fn track(&mut self, pid: u32, slot: u32) -> Result<()> {
        if pid >= self.tracked_len {
            return Err(AgentError::PidOutOfRange {
                pid,
                max: self.tracked_len,
            });
        }
        self.roots
            .set(slot, pid, 0)
            .map_err(|e| map_err("ROOTS", e))?;
        self.tracked
            .set(pid, slot | backstop_common::PENDING_EXEC, 0)
            .map_err(|e| map_err("TRACKED", e))
    }
}
