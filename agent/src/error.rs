//! The agent's error type. Each variant names what failed (program, map,
//! path) so the one line an SRE sees is enough to act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Probes and shadows need root; the check is `common`'s, shared with
    /// the controller.
    #[error(transparent)]
    NotRoot(#[from] backstop_common::root::NotRoot),
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
    /// A library error that is not an io::Error (libcontainer, the OCI
    /// spec, TLS), kept whole so `source()` still reaches it.
    #[error("{context}: {source}")]
    Failed {
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Snapshot and restore: the store, the scope, the objects.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// Validation: a window shorter than the probes can fold.
    #[error("--window-ms must be at least 10 ms, got {ms} ms")]
    WindowTooShort { ms: u128 },
    /// A change log that is not one this agent wrote: no header, another
    /// format, a bad line after the trailer.
    #[error("reading the change log {} line {line}: {reason}", path.display())]
    BadChangeLog {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// `--metrics` refused (not loopback and no token) or not bindable.
    #[error(transparent)]
    Http(#[from] backstop_common::http::HttpError),
    /// Validation: nothing to run.
    #[error("no command given: put CMD after `--`")]
    NoCommand,
}

impl AgentError {
    /// Exit code for the binary: 2 for "cannot run here" (privilege, BPF,
    /// missing probes, another agent on the data directory, no tracefs),
    /// 127/126 for a command that cannot be started, 1 for everything else:
    /// snapshot errors (the README promises 1 for any of them), validation,
    /// I/O.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::NotRoot { .. }
            | AgentError::BpfRefused { .. }
            | AgentError::ProbesMissing
            | AgentError::Locked { .. }
            | AgentError::TracefsUnmountable { .. }
            | AgentError::Http(_) => 2,
            // As a shell reports a command it could not run.
            AgentError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                127
            }
            AgentError::Spawn { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                126
            }
            AgentError::Snapshot(_)
            | AgentError::WindowTooShort { .. }
            | AgentError::NoCommand
            | AgentError::BadChangeLog { .. }
            | AgentError::Spawn { .. }
            | AgentError::Btf(_)
            | AgentError::Map { .. }
            | AgentError::PidOutOfRange { .. }
            | AgentError::NoFreeSlot { .. }
            | AgentError::Proc { .. }
            | AgentError::Io { .. }
            | AgentError::Failed { .. } => 1,
        }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// An error and every source under it, on one line ("a: b: c"): for a
/// reason that travels as text (an event, a journal) and must not lose
/// the cause a `#[error(transparent)]` or `{context}` layer hides.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(inner) = next {
        let text = inner.to_string();
        // A layer that prints its source already (`{context}: {source}`).
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        next = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn exit_codes_follow_the_kind() {
        let not_root = backstop_common::root::NotRoot {
            euid: 1000,
            needs: "shadows need root",
        };
        assert_eq!(AgentError::from(not_root).exit_code(), 2);
        // The README: any snapshot error exits 1.
        let missing = crate::snapshot::SnapshotError::NotFound { id: "s1".into() };
        assert_eq!(AgentError::from(missing).exit_code(), 1);
        assert_eq!(AgentError::NoCommand.exit_code(), 1);
        assert_eq!(AgentError::WindowTooShort { ms: 5 }.exit_code(), 1);
        let spawn = |kind| AgentError::Spawn {
            program: "x".into(),
            source: std::io::Error::from(kind),
        };
        assert_eq!(spawn(std::io::ErrorKind::NotFound).exit_code(), 127);
        assert_eq!(spawn(std::io::ErrorKind::PermissionDenied).exit_code(), 126);
    }

    #[test]
    fn validation_errors_name_the_flag_and_are_not_io_errors() {
        let e = AgentError::WindowTooShort { ms: 5 };
        assert_eq!(
            e.to_string(),
            "--window-ms must be at least 10 ms, got 5 ms"
        );
        assert!(e.source().is_none());
        let e = AgentError::NoCommand;
        assert_eq!(e.to_string(), "no command given: put CMD after `--`");
        assert!(e.source().is_none());
    }

    #[test]
    fn failed_keeps_its_source() {
        let inner = crate::snapshot::SnapshotError::NotFound { id: "s1".into() };
        let e = AgentError::Failed {
            context: "starting shadow sh-1".into(),
            source: Box::new(inner),
        };
        assert_eq!(e.to_string(), "starting shadow sh-1: no snapshot s1");
        let source = e.source().expect("the source is kept");
        assert!(source.is::<crate::snapshot::SnapshotError>(), "{source:?}");
    }

    #[test]
    fn a_chain_names_every_cause_once() {
        let io = std::io::Error::other("EAGAIN");
        let e = crate::deploy::DeployError::Io {
            context: "creating the shadow".into(),
            source: io,
        };
        // The layer prints its source: it is not said twice.
        assert_eq!(chain(&e), "creating the shadow: EAGAIN");
        let boxed = crate::deploy::DeployError::from(AgentError::from(
            crate::snapshot::SnapshotError::NotFound { id: "s1".into() },
        ));
        let text = chain(&boxed);
        assert!(text.contains("s1"), "{text}");
    }
}
