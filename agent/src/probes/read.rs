//! Reading what the probes count: a slot's totals, its threads at one
//! moment, its anonymous-memory peak, and the runs the kernel skipped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::{Probes, ThreadsNow, Totals, map_err};
use crate::error::Result;

impl Probes {
    /// Running totals of a slot, summed over CPUs.
    pub fn totals(&self, slot: u32) -> Result<Box<Totals>> {
        let mut t = Totals::zero();
        let per_cpu = self
            .counters
            .get(&slot, 0)
            .map_err(|e| map_err("COUNTERS", e))?;
        for cpu in per_cpu.iter() {
            for (acc, v) in t.c.iter_mut().zip(cpu.c.iter()) {
                *acc += v;
            }
            for (acc_h, h) in t.hist.iter_mut().zip(cpu.hist.iter()) {
                for (acc, v) in acc_h.iter_mut().zip(h.iter()) {
                    *acc += v;
                }
            }
        }
        let per_cpu = self
            .syscalls
            .get(&slot, 0)
            .map_err(|e| map_err("SYSCALL_COUNTS", e))?;
        for cpu in per_cpu.iter() {
            for (acc, v) in t.syscalls.iter_mut().zip(cpu.n.iter()) {
                *acc += v;
            }
        }
        Ok(t)
    }

    /// What the slot's threads are doing at `now_ns`, from one pass over
    /// the thread table.
    pub fn threads_now(&self, slot: u32, now_ns: u64) -> ThreadsNow {
        let mut now = ThreadsNow::default();
        for (tid, state) in self.threads.iter().flatten() {
            let running = state.on_cpu_since_ns != 0 && state.on_cpu_since_ns <= now_ns;
            // Asleep inside a syscall: neither on a CPU nor waiting for one.
            let blocked = state.syscall_start_ns != 0
                && state.syscall_start_ns <= now_ns
                && state.on_cpu_since_ns == 0
                && state.runnable_since_ns == 0
                && !crate::syscall_class::waits_on_others(state.syscall_nr as usize);
            if !(running || blocked) || self.tracked.get(&tid, 0).ok() != Some(slot) {
                continue;
            }
            if running {
                now.running_on_cpu_ns += now_ns - state.on_cpu_since_ns;
            }
            if blocked {
                now.longest_blocked_ns =
                    now.longest_blocked_ns.max(now_ns - state.syscall_start_ns);
            }
        }
        now
    }

    /// The threads of the slot the thread table holds now (every tracked
    /// thread that ran since it was registered), for /proc reads of the
    /// tree (`crate::treestat`).
    pub fn tree_tids(&self, slot: u32) -> Vec<u32> {
        self.threads
            .keys()
            .flatten()
            .filter(|tid| self.tracked.get(tid, 0).ok() == Some(slot))
            .collect()
    }

    /// The largest anonymous RSS a process of the slot reached since the
    /// last call (0 when none changed), and start over.
    pub fn take_anon_peak(&mut self, slot: u32) -> Result<u64> {
        let per_cpu = self
            .anon_peak
            .get(&slot, 0)
            .map_err(|e| map_err("ANON_PEAK", e))?;
        let peak = per_cpu.iter().copied().max().unwrap_or(0);
        if peak != 0 {
            let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; per_cpu.len()])
                .map_err(|e| map_err("ANON_PEAK", e))?;
            self.anon_peak
                .set(slot, zeros, 0)
                .map_err(|e| map_err("ANON_PEAK", e))?;
        }
        Ok(peak)
    }

    /// Runs of our programs the kernel skipped since load. A tracepoint
    /// program does not run while another tracing program is running on the
    /// same CPU (an interrupt's block completion during a syscall hook, say);
    /// the kernel counts each skip per program. Which tree a skipped event
    /// belonged to is unknowable, so callers report these as lost for every
    /// stream rather than hide them.
    pub fn recursion_misses(&self) -> u64 {
        self.recursion_misses_by_program()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// Skipped runs per program, for diagnosis.
    pub fn recursion_misses_by_program(&self) -> Vec<(&'static str, u64)> {
        self.prog_fds
            .iter()
            .map(|(name, fd)| (*name, prog_recursion_misses(fd.as_fd())))
            .collect()
    }
}

fn prog_recursion_misses(fd: BorrowedFd<'_>) -> u64 {
    prog_info(fd).map_or(0, |i| i.recursion_misses)
}

/// The kernel's `bpf_prog_info` of one of our programs (BPF_OBJ_GET_INFO_BY_FD).
pub(super) fn prog_info(fd: BorrowedFd<'_>) -> Option<aya_obj::generated::bpf_prog_info> {
    use aya_obj::generated::bpf_prog_info;
    /// The `info` member of `union bpf_attr` (BPF_OBJ_GET_INFO_BY_FD).
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: all-zero is a valid bpf_prog_info (plain integers and pointers).
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &raw mut info as u64,
    };
    // SAFETY: attr and info outlive the call; the kernel accepts an attr
    // shorter than union bpf_attr and writes at most info_len bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    (r == 0).then_some(info)
}
