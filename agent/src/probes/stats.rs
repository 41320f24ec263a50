//! The probes' own cost, as the kernel counts it: each program's run count
//! and run time (`bpf_prog_info.run_cnt` / `run_time_ns`), which the kernel
//! keeps only while BPF statistics are enabled.
//!
//! They are enabled with BPF_ENABLE_STATS (Linux 5.8), not by writing the
//! `kernel.bpf_stats_enabled` sysctl: the syscall's fd is a reference the
//! kernel counts, so several agents (or bpftool) enabling stats at once do
//! not turn them off under each other, and a killed agent restores the old
//! state as its fd closes. A sysctl saved and written back on exit would do
//! neither. Stats cost a clock read per program run, so they are on only
//! while `--metrics` serves.

use std::os::fd::{AsFd, OwnedFd};

use super::Probes;
use super::read::prog_info;
use crate::error::{AgentError, Result};

/// Run statistics are on while this lives.
#[derive(Debug)]
pub struct RunStats {
    _fd: OwnedFd,
}

impl RunStats {
    pub fn enable() -> Result<RunStats> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| {
            AgentError::BpfRefused {
                what: "BPF_ENABLE_STATS (the probes' run counts for --metrics)".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(RunStats { _fd: fd })
    }
}

/// One program's counts since it was loaded (runs while stats were off
/// are not counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

impl Probes {
    /// Every program's run count and time, in load order.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.prog_fds
            .iter()
            .filter_map(|(name, fd)| {
                prog_info(fd.as_fd()).map(|i| ProgramStats {
                    program: name,
                    run_count: i.run_cnt,
                    run_time_ns: i.run_time_ns,
                })
            })
            .collect()
    }
}
