//! The kernel: its version, its BTF, and every tracepoint the probes
//! attach to (the list is the probe loader's own, `probes::hooks`).

use std::path::Path;

use super::Check;
use crate::btf::{self, Btf};
use crate::probes::{self, HookKind};

/// cgroup.kill, which the live install's rollback relies on, came in 5.14;
/// the probes' BPF ring buffers (5.8) and tp_btf are older.
const MIN: (u32, u32) = (5, 14);

pub fn version() -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let fix = "upgrade to Linux 5.14 or later (Debian 12's 6.1 is fine)";
    match parse(release) {
        Some(v) if v >= MIN => Check::ok("kernel.version", format!("Linux {release}")),
        Some(_) => Check::fail(
            "kernel.version",
            format!(
                "Linux {release} is older than {}.{}: no cgroup.kill",
                MIN.0, MIN.1
            ),
            fix,
        ),
        None => Check::warn(
            "kernel.version",
            format!("cannot read the version from {release:?}"),
            "check /proc/sys/kernel/osrelease",
        ),
    }
}

fn parse(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// BTF, which the probes read the kernel's struct layouts from. Pushes its
/// check and hands the parsed BTF on for the hook checks.
pub fn btf(checks: &mut Vec<Check>) -> Option<Btf> {
    let fix = "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's are)";
    let path = "/sys/kernel/btf/vmlinux";
    let parsed = match Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            checks.push(Check::fail("kernel.btf", e.to_string(), fix));
            return None;
        }
    };
    match btf::kernel_offsets(&parsed) {
        Ok((_, warnings)) if warnings.is_empty() => {
            checks.push(Check::ok(
                "kernel.btf",
                format!("{path}: every layout the probes need"),
            ));
        }
        Ok((_, warnings)) => checks.push(Check::warn(
            "kernel.btf",
            format!("{path}: {}", warnings.join("; ")),
            "the probes run with these features off; a newer kernel has them",
        )),
        Err(e) => checks.push(Check::fail("kernel.btf", e.to_string(), fix)),
    }
    Some(parsed)
}

/// One check per hook: the kernel's BTF has `btf_trace_<event>` for every
/// tracepoint it has (no tracefs needed, so this holds on a fresh
/// machine), and a classic tracepoint also needs its tracefs id, checked
/// when tracefs is readable.
pub fn hooks(btf: Option<&Btf>) -> Vec<Check> {
    let tracefs = [crate::tracefs::TRACEFS, crate::tracefs::DEBUGFS_TRACING]
        .into_iter()
        .find(|d| Path::new(d).join("events").is_dir());
    probes::hooks()
        .into_iter()
        .map(|h| {
            let name = format!("hook.{}", h.tracepoint);
            let Some(btf) = btf else {
                return Check::warn(name, "not checked: no BTF", "see kernel.btf");
            };
            let what = match h.kind {
                HookKind::Raw => format!("raw tracepoint {} ({})", h.tracepoint, h.program),
                HookKind::Classic { category } => {
                    format!("tracepoint {category}/{} ({})", h.tracepoint, h.program)
                }
            };
            if !btf.has_typedef(&format!("btf_trace_{}", h.tracepoint)) {
                return Check::fail(
                    name,
                    format!("{what}: this kernel has no such tracepoint"),
                    "use a kernel with it (Linux 5.14+ with the usual tracepoints)",
                );
            }
            match (h.kind, tracefs) {
                (HookKind::Classic { category }, Some(dir)) => {
                    let id = Path::new(dir)
                        .join("events")
                        .join(category)
                        .join(h.tracepoint)
                        .join("id");
                    if id.exists() {
                        Check::ok(name, what)
                    } else {
                        Check::fail(
                            name,
                            format!("{what}: {} is missing", id.display()),
                            "enable CONFIG_FTRACE/event tracing in the kernel",
                        )
                    }
                }
                _ => Check::ok(name, what),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_the_kernel_writes_them() {
        assert_eq!(parse("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse("5.14.21"), Some((5, 14)));
        assert_eq!(parse("garbage"), None);
        assert!(parse("5.10.0").unwrap() < MIN && parse("6.1.0").unwrap() >= MIN);
    }
}
