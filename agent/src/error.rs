//! The agent's error type. Each variant names what failed (program, map,
//! path) so the one line an SRE sees is enough to act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("not root (euid {euid}): loading eBPF probes needs root (CAP_BPF, CAP_PERFMON)")]
    NotRoot { euid: u32 },
    #[error("BPF refused by the kernel: {what}: {reason}")]
    BpfRefused { what: String, reason: String },
    #[error("probes were not built into this agent: run `cargo xtask build-ebpf`, then rebuild")]
    ProbesMissing,
    #[error(transparent)]
    Btf(#[from] crate::btf::BtfError),
    #[error("probe map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error(
        "pid {pid} is beyond the tracked-pid map ({max} entries): raise it with kernel.pid_max at agent start"
    )]
    PidOutOfRange { pid: u32, max: u32 },
    #[error("all {max} stream slots are in use")]
    NoFreeSlot { max: u32 },
    #[error("starting {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Proc {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another agent holds {path}{}: one agent per data directory (stop it, or give this one another --data)",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error(
        "tracefs is not mounted and mounting it failed (tracefs at {}: {tracefs}; debugfs at {}: {debugfs}): run `mount -t tracefs tracefs {}` as root",
        crate::tracefs::TRACEFS,
        crate::tracefs::DEBUGFS,
        crate::tracefs::TRACEFS
    )]
    TracefsUnmountable { tracefs: String, debugfs: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl AgentError {
    /// Exit code for the binary: 2 for "cannot run here" (privilege, BPF,
    /// missing probes, another agent on the data directory, no tracefs), 127/126 for a command that cannot be started, 1 for
    /// everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::NotRoot { .. }
            | AgentError::BpfRefused { .. }
            | AgentError::ProbesMissing
            | AgentError::Locked { .. }
            | AgentError::TracefsUnmountable { .. } => 2,
            // As a shell reports a command it could not run.
            AgentError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                127
            }
            AgentError::Spawn { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                126
            }
            _ => 1,
        }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
