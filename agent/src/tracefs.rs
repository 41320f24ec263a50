//! tracefs, which attaching a tracepoint needs (aya reads
//! events/<category>/<name>/id there). A freshly booted machine often has
//! it unmounted; perf and bpftrace then mount it themselves, and so do we.

use std::ffi::CString;
use std::path::Path;

use crate::error::{AgentError, Result};

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const DEBUGFS: &str = "/sys/kernel/debug";
/// Where tracefs appears (automounted by the kernel) once debugfs is.
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// What [`ensure`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracefs {
    /// Already there.
    Present,
    /// We mounted tracefs at /sys/kernel/tracing.
    MountedTracefs,
    /// We mounted debugfs at /sys/kernel/debug; tracefs came with it.
    MountedDebugfs,
}

/// The test aya applies: the directory exists and is not empty (the kernel
/// creates /sys/kernel/tracing as an empty mount point).
fn usable(dir: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn mount(fstype: &str, target: &str) -> std::io::Result<()> {
    let src = CString::new(fstype).expect("no NUL");
    let dst = CString::new(target).expect("no NUL");
    // The flags tracefs and debugfs carry when systemd mounts them.
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Make tracefs reachable where aya looks for it, mounting it when absent
/// (falling back to debugfs, whose tracing/ directory is tracefs). The
/// mount is left in place, as perf and bpftrace leave theirs: other tools
/// on the host expect it, and unmounting could pull it from under them.
pub fn ensure() -> Result<Tracefs> {
    if usable(TRACEFS) || usable(DEBUGFS_TRACING) {
        return Ok(Tracefs::Present);
    }
    let tracefs_err = match mount("tracefs", TRACEFS) {
        Ok(()) if usable(TRACEFS) => {
            tracing::warn!(path = TRACEFS, "tracefs was not mounted; mounted it");
            return Ok(Tracefs::MountedTracefs);
        }
        Ok(()) => "mounted but empty".to_string(),
        Err(e) => e.to_string(),
    };
    let debugfs_err = if Path::new(DEBUGFS).is_dir() {
        match mount("debugfs", DEBUGFS) {
            Ok(()) if usable(DEBUGFS_TRACING) => {
                tracing::warn!(
                    path = DEBUGFS,
                    tracefs_err,
                    "tracefs could not be mounted at {TRACEFS}; mounted debugfs, which carries it"
                );
                return Ok(Tracefs::MountedDebugfs);
            }
            Ok(()) => format!("mounted, but {DEBUGFS_TRACING} is empty"),
            Err(e) => e.to_string(),
        }
    } else {
        format!("{DEBUGFS} does not exist")
    };
    Err(AgentError::TracefsUnmountable {
        tracefs: tracefs_err,
        debugfs: debugfs_err,
    })
}
