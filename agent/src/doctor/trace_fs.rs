//! tracefs: classic tracepoints are attached through it. A freshly booted
//! host often has it unmounted; the agent then mounts it itself at start
//! (`crate::tracefs::ensure`, as perf and bpftrace do), so "not mounted
//! but mountable" is fine. Whether it is mountable is tried for real, in a
//! child process with a private mount namespace, so the host's mounts are
//! never touched.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::{Check, euid};
use crate::tracefs::{DEBUGFS, DEBUGFS_TRACING, TRACEFS};

const NAME: &str = "tracefs";

pub fn tracefs() -> Check {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        match std::fs::read_dir(dir).map(|mut d| d.next().is_some()) {
            Ok(true) => {
                return Check::ok(NAME, format!("mounted at {dir}"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Check::fail(
                    NAME,
                    format!("{dir} is not readable by uid {}: {e}", euid()),
                    "run the agent (and doctor) as root, or with the unit's capabilities",
                );
            }
            _ => {}
        }
    }
    match try_mount() {
        Ok(how) => Check::ok(
            NAME,
            format!("not mounted, but mountable ({how}): the agent mounts it itself at start"),
        ),
        Err(e) => Check::fail(
            NAME,
            format!(
                "not mounted at {TRACEFS}, and mounting it failed as uid {}: {e}",
                euid()
            ),
            &format!("run as root (CAP_SYS_ADMIN), or `mount -t tracefs tracefs {TRACEFS}`"),
        ),
    }
}

/// Mount tracefs (else debugfs, which carries it) in a child's private
/// mount namespace, where the mount dies with the child.
fn try_mount() -> std::io::Result<&'static str> {
    let cstr = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let (tracefs, tracefs_at) = (cstr("tracefs")?, cstr(TRACEFS)?);
    let (debugfs, debugfs_at) = (cstr("debugfs")?, cstr(DEBUGFS)?);
    let events = cstr(&format!("{TRACEFS}/events"))?;
    let debug_events = cstr(&format!("{DEBUGFS_TRACING}/events"))?;
    let root = cstr("/")?;
    // `true` when tracefs mounted, `false` when only debugfs did: the exit
    // status says which.
    let mut cmd = Command::new("true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let probe = move || -> std::io::Result<()> {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: only async-signal-safe calls on C strings made before the
        // fork; this child runs no Rust code that allocates.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let rc = libc::mount(
                tracefs.as_ptr(),
                tracefs_at.as_ptr(),
                tracefs.as_ptr(),
                flags,
                std::ptr::null(),
            );
            if rc == 0 && libc::access(events.as_ptr(), libc::F_OK) == 0 {
                return Ok(());
            }
            let tracefs_err = std::io::Error::last_os_error();
            let rc = libc::mount(
                debugfs.as_ptr(),
                debugfs_at.as_ptr(),
                debugfs.as_ptr(),
                flags,
                std::ptr::null(),
            );
            if rc == 0 && libc::access(debug_events.as_ptr(), libc::F_OK) == 0 {
                // Run `false` instead: debugfs, not tracefs, did it.
                let f = c"false";
                libc::execlp(f.as_ptr(), f.as_ptr(), std::ptr::null::<libc::c_char>());
            }
            Err(tracefs_err)
        }
    };
    // SAFETY: the closure makes only async-signal-safe calls (see above).
    unsafe { cmd.pre_exec(probe) };
    let status = cmd.status()?;
    Ok(if status.success() {
        "tracefs at /sys/kernel/tracing"
    } else {
        "debugfs at /sys/kernel/debug"
    })
}
