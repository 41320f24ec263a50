//! The measures a deployment reports besides its steps: health probe runs,
//! the live install's memory cgroup (the memory-growth rule's levels) and
//! the service's cgroup (the performance check's CPU and memory). Raw
//! readings, so the controller's evidence is a function of stored events
//! and `backstop replay` derives the same.

use serde::{Deserialize, Serialize};

/// One run of a health probe, judged by the agent against the manifest's
/// expectation (exit 0, a connect, the status, the latency budget).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub name: String,
    pub ok: bool,
    pub latency_ms: f64,
    /// What it saw: the status, the exit code, or the error.
    pub detail: String,
    /// The seq of the last live window the agent sent before the probe ran
    /// (0: none yet), so the engine can tell whether a failed probe and a
    /// live alarm are about the same behaviour (within the model's K
    /// windows). Stamped by the agent's forwarder, which sees both in the
    /// order they happened; absent (0) in events stored before protocol 7.
    #[serde(default)]
    pub window: u64,
}

/// The live install's memory cgroup at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Counts from 0 for the deployment.
    pub index: u64,
    /// ms since the live install started (the agent's monotonic clock).
    pub at_ms: f64,
    /// memory.current (v2) or memory.usage_in_bytes (v1).
    pub current_bytes: u64,
    /// The limit in force (memory.max).
    pub limit_bytes: u64,
    /// Processes the limit's OOM killer killed so far (memory.events
    /// `oom_kill`).
    pub oom_kills: u64,
}

/// The service's cgroup at one moment: raw counters, so the controller
/// derives the CPU rate from consecutive samples and replay does the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSample {
    /// Taken with the baseline ("before"), not during monitoring.
    pub baseline: bool,
    /// ms on the agent's monotonic clock (only differences mean anything).
    pub at_ms: f64,
    /// cpu.stat `usage_usec`: CPU time the group used so far.
    pub cpu_usage_usec: u64,
    /// memory.current; None where the group has no memory controller.
    pub memory_bytes: Option<u64>,
}
