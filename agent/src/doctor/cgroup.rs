//! cgroup v2: the live install runs in `backstop.deploy/<id>` under the v2
//! hierarchy so a rollback's cgroup.kill reaches everything it started.
//! The parent is created (and removed again if the doctor made it) to prove
//! the agent may, and to see that a group there has cgroup.kill.

use std::path::Path;

use super::{Check, euid};
use crate::deploy::cgroup::{PARENT, v2_root};

pub fn checks() -> Vec<Check> {
    let root = match v2_root() {
        Ok(r) => r,
        Err(e) => {
            return vec![
                Check::fail(
                    "cgroup.v2",
                    e.to_string(),
                    "boot with systemd.unified_cgroup_hierarchy=1 (Debian 12's default), or mount cgroup2",
                ),
                Check::fail(
                    "cgroup.live_parent",
                    "no cgroup v2 hierarchy",
                    "see cgroup.v2",
                ),
            ];
        }
    };
    let v2 = Check::ok("cgroup.v2", format!("mounted at {}", root.display()));
    vec![v2, live_parent(&root)]
}

/// Create the parent (a probe child under it when it already exists), then
/// remove what was created.
fn live_parent(root: &Path) -> Check {
    let parent = root.join(PARENT);
    let existed = parent.is_dir();
    let probe = if existed {
        parent.join(format!("doctor-{}", std::process::id()))
    } else {
        parent.clone()
    };
    let fix = "run the agent as root (CAP_SYS_ADMIN), with write access to the cgroup v2 root";
    if let Err(e) = std::fs::create_dir(&probe) {
        return Check::fail(
            "cgroup.live_parent",
            format!("creating {} as uid {}: {e}", probe.display(), euid()),
            fix,
        );
    }
    // The root group has no cgroup.kill; a child has it from Linux 5.14.
    let kill = probe.join("cgroup.kill").exists();
    match std::fs::remove_dir(&probe) {
        Ok(()) if kill => Check::ok(
            "cgroup.live_parent",
            format!(
                "{} can be created and removed, with cgroup.kill",
                probe.display()
            ),
        ),
        Ok(()) => Check::fail(
            "cgroup.live_parent",
            format!(
                "{} has no cgroup.kill (Linux 5.14+): a rollback could not kill the install",
                probe.display()
            ),
            "upgrade the kernel to 5.14 or later",
        ),
        Err(e) => Check::warn(
            "cgroup.live_parent",
            format!("created {} but removing it failed: {e}", probe.display()),
            &format!("rmdir {}", probe.display()),
        ),
    }
}
