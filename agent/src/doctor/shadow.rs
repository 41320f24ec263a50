//! What the shadows (youki/libcontainer containers) need: overlayfs for a
//! root that mirrors the target without changing it, the pid, mount, uts,
//! ipc and network namespaces their spec asks for, and a target root that
//! looks like one (dpkg's database, /usr).

use std::path::Path;

use super::Check;

pub fn checks(_data: &Path, target: &Path) -> Vec<Check> {
    vec![overlayfs(), namespaces(), target_root(target)]
}

fn overlayfs() -> Check {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Check::ok("shadow.overlayfs", "overlay is in /proc/filesystems");
    }
    // A module not loaded yet still works: the kernel loads it on the
    // first overlay mount when the module is installed.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let module = Path::new("/lib/modules")
        .join(release.trim())
        .join("kernel/fs/overlayfs");
    if module.is_dir() {
        Check::ok(
            "shadow.overlayfs",
            format!(
                "overlay module at {} (loaded on first use)",
                module.display()
            ),
        )
    } else {
        Check::fail(
            "shadow.overlayfs",
            "no overlay filesystem in this kernel",
            "`modprobe overlay`, or use a kernel with CONFIG_OVERLAY_FS",
        )
    }
}

/// The namespaces a shadow's spec creates (shadow/spec.rs).
const NAMESPACES: [&str; 5] = ["pid", "mnt", "uts", "ipc", "net"];

fn namespaces() -> Check {
    let missing: Vec<&str> = NAMESPACES
        .iter()
        .copied()
        .filter(|ns| !Path::new("/proc/self/ns").join(ns).exists())
        .collect();
    if missing.is_empty() {
        Check::ok(
            "shadow.namespaces",
            format!("{} namespaces available", NAMESPACES.join(", ")),
        )
    } else {
        Check::fail(
            "shadow.namespaces",
            format!("this kernel lacks the {} namespace(s)", missing.join(", ")),
            "use a kernel with CONFIG_PID_NS, CONFIG_NET_NS, CONFIG_UTS_NS, CONFIG_IPC_NS",
        )
    }
}

fn target_root(target: &Path) -> Check {
    let name = "shadow.target";
    let dpkg = target.join("var/lib/dpkg/status");
    if !target.join("usr").is_dir() {
        return Check::fail(
            name,
            format!("{} has no usr/: not a root filesystem", target.display()),
            "give --target the root the shadows mirror (/ on a host)",
        );
    }
    if dpkg.is_file() {
        Check::ok(
            name,
            format!("{} is a Debian root (dpkg status found)", target.display()),
        )
    } else {
        Check::warn(
            name,
            format!(
                "{} has no {}: dpkg installs cannot run there",
                target.display(),
                dpkg.display()
            ),
            "shadows of dpkg installs need a Debian/Ubuntu target",
        )
    }
}
