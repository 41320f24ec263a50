//! The youki (libcontainer) side of a shadow: create/start/delete,
//! loopback, and the teardown. The overlay root lives in `overlay`, the
//! OCI spec in `spec`, cgroups in `cgroups`, and the sweep of what a dead
//! agent left behind in `sweep`; this module re-exports them so callers
//! keep one path.
//!
//! Facts that shaped this (checked on these hosts, cgroups hybrid, the v1
//! manager): `build()` reads the spec from the bundle on disk; the init's
//! pid is known when `build()` returns and the init is then blocked before
//! its exec until `start()`, so it can be tracked from its first
//! instruction; a new network namespace has `lo` down and nothing in the
//! container may bring it up after the capabilities are dropped; without
//! an explicit deny-all device rule the v1 devices cgroup allows every
//! device; libcontainer makes the calling process non-dumpable (one more
//! reason it is a short-lived child, not the agent, that calls it).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;

pub use super::cgroups::{oom_kills, remove_cgroups};
pub use super::creator::Creator;
pub use super::overlay::{mount_overlay, mounts_under, umount};
pub use super::spec::{DEFAULT_PIDS, Limits, spec};
pub use super::sweep::{Owner, sweep};
use crate::error::{AgentError, Result};

/// Parent of every shadow's cgroup, in each hierarchy.
pub const CGROUP_PARENT: &str = "backstop-shadow";

/// Inside the shadow: where the step runner and the step outputs live (a
/// bind mount of the shadow's `io` dir; not part of the diff).
pub const IO_MOUNT: &str = "/.backstop-shadow";

/// A shadow's directories under DATA/agent/shadows/<id>.
#[derive(Debug, Clone)]
pub struct Layout {
    pub id: String,
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub bundle: PathBuf,
    pub io: PathBuf,
}

impl Layout {
    pub fn new(shadows: &Path, id: &str) -> Self {
        let dir = shadows.join(id);
        Layout {
            id: id.to_string(),
            upper: dir.join("rw/upper"),
            work: dir.join("rw/work"),
            merged: dir.join("merged"),
            bundle: dir.join("bundle"),
            io: dir.join("io"),
            dir,
        }
    }
}

pub fn youki_root(shadows: &Path) -> PathBuf {
    shadows.join("youki")
}

pub(super) fn err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

pub(super) fn other(
    context: impl Into<String>,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> AgentError {
    AgentError::Failed {
        context: context.into(),
        source: e.into(),
    }
}

/// Create the container (its init blocked before exec, stdio to the
/// shadow's init log) in a single-threaded child of the agent, never in
/// the agent itself (see `creator.rs` for why); the child holds it until
/// it is started, waited for or dropped.
pub fn create(shadows: &Path, l: &Layout, spec: &Spec) -> Result<Creator> {
    let config = l.bundle.join("config.json");
    spec.save(&config)
        .map_err(|e| other(format!("writing {}", config.display()), e))?;
    let youki = youki_root(shadows);
    std::fs::create_dir_all(&youki).map_err(err(format!("creating {}", youki.display())))?;
    let c = Creator::create(shadows, &l.id)?;
    tracing::info!(
        shadow = %l.id,
        creator = c.pid(),
        threads = c.threads,
        init = c.init_pid,
        agent = std::process::id(),
        "shadow container created by a single-threaded child"
    );
    Ok(c)
}

/// Bring `lo` up in the network namespace of `pid`, from a short-lived
/// thread (setns is per thread).
pub fn loopback_up(pid: i32) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(err(format!("opening /proc/{pid}/ns/net")))?;
    std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: setns on this thread only; the fd is valid.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: plain socket/ioctl calls with a zeroed ifreq naming "lo".
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                ifr.ifr_name[i] = *b as libc::c_char;
            }
            let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr);
            if r == 0 {
                ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
            }
            let e = std::io::Error::last_os_error();
            libc::close(s);
            if r != 0 {
                return Err(e);
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| other("bringing up the shadow's loopback", "thread panicked"))?
    .map_err(err("bringing up the shadow's loopback"))
}

/// The container whose state youki keeps in `dir`, if it has any. A
/// shadow torn down before its container was created has none, and
/// libcontainer logs an ERROR for every load of one: the sweep printed
/// one per such leftover, though removing it succeeded.
pub fn load(dir: &Path) -> Option<Container> {
    if !dir.join("state.json").exists() {
        return None;
    }
    Container::load(dir.to_path_buf()).ok()
}

/// Delete the container (killing what runs in it), unmount, remove the
/// cgroups and the shadow's directory. Best effort, every step tried;
/// what could not be done is returned. Deleting clones nothing, so the
/// agent does it itself, from the state the creator left on disk.
pub fn teardown(shadows: &Path, l: &Layout) -> Vec<String> {
    let mut problems = Vec::new();
    let youki = youki_root(shadows).join(&l.id);
    let container = load(&youki);
    // A delete that fails on the cgroups (killed tasks not yet reaped by
    // whoever inherited them) is finished below; only what stays counts.
    if let Some(mut c) = container
        && let Err(e) = c.delete(true)
    {
        tracing::debug!(id = %l.id, "libcontainer delete: {e}; finishing by hand");
    }
    if youki.exists()
        && let Err(e) = std::fs::remove_dir_all(&youki)
    {
        problems.push(format!("removing {}: {e}", youki.display()));
    }
    problems.extend(remove_cgroups(&l.id));
    for m in mounts_under(&l.dir) {
        if let Err(e) = umount(&m, libc::MNT_DETACH) {
            problems.push(format!("unmounting {}: {e}", m.display()));
        }
    }
    if l.dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&l.dir)
    {
        problems.push(format!("removing {}: {e}", l.dir.display()));
    }
    // The parents, when no other shadow uses them (rmdir refuses then).
    let _ = std::fs::remove_dir(youki_root(shadows));
    for parent in super::cgroups::cgroup_dirs("") {
        let _ = std::fs::remove_dir(parent);
    }
    problems
}
