//! The root check every binary makes before work that needs root. One
//! copy, here, so the words an SRE sees ("not root (euid N): ...") and the
//! check itself cannot drift between the agent and the controller.

/// The caller is not root; `needs` says what for.
#[derive(Debug, thiserror::Error)]
#[error("not root (euid {euid}): {needs}")]
pub struct NotRoot {
    pub euid: u32,
    /// What needs root, e.g. "shadows need root (namespaces, mounts, cgroups)".
    pub needs: &'static str,
}

/// Ok when the effective uid is 0.
pub fn require_root(needs: &'static str) -> Result<(), NotRoot> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(NotRoot { euid, needs })
    }
}
