//! A freshly booted machine has tracefs unmounted; the agent mounts it
//! itself (as perf and bpftrace do), and says so. Each test runs the agent
//! in a private mount namespace where tracefs and debugfs are unmounted, so
//! the host's own mounts are never touched (and are checked not to be).
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::process::{Command, Output};

use support::{agent, ebpf_or_skip};

/// The host's tracefs and debugfs mounts (mount point and type).
fn trace_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let fstype = f.get(sep + 1)?;
            (*fstype == "tracefs" || *fstype == "debugfs").then(|| format!("{} {fstype}", f[4]))
        })
        .collect()
}

/// Run `agent_cmd` (shell words, after the agent binary) the way a fresh
/// VM sees the kernel: in a private mount namespace without tracefs or
/// debugfs. `prefix` goes before the agent (e.g. setpriv).
fn fresh(prefix: &str, agent_cmd: &str) -> Output {
    let script = format!(
        "for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do umount -l $m 2>/dev/null; done; \
         if [ -n \"$(ls -A /sys/kernel/tracing 2>/dev/null)\" ]; then echo 'tracefs still mounted' >&2; exit 99; fi; \
         exec {prefix} {} {agent_cmd}",
        agent().display()
    );
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)")
}

#[test]
fn the_agent_mounts_tracefs_when_a_fresh_machine_lacks_it() {
    let Some(_g) = ebpf_or_skip("the_agent_mounts_tracefs_when_a_fresh_machine_lacks_it") else {
        return;
    };
    let before = trace_mounts();
    let out = fresh("", "--log info watch --json -- true");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(99),
        "could not unmount tracefs in the namespace: {stderr}"
    );
    assert!(
        out.status.success(),
        "watch failed on a machine without tracefs: {stderr}"
    );
    assert!(
        stderr.contains("tracefs was not mounted; mounted it")
            || stderr.contains("mounted debugfs"),
        "the agent should say it mounted tracefs: {stderr}"
    );
    let w = support::parse(out);
    assert_eq!(w.summary["exit_code"], 0, "{}", w.summary);
    assert_eq!(
        trace_mounts(),
        before,
        "the host's tracefs/debugfs mounts changed"
    );
}

#[test]
fn tracefs_that_cannot_be_mounted_is_one_line_exit_2() {
    let Some(_g) = ebpf_or_skip("tracefs_that_cannot_be_mounted_is_one_line_exit_2") else {
        return;
    };
    let before = trace_mounts();
    // Root without CAP_SYS_ADMIN cannot mount.
    let out = fresh(
        "setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin",
        "watch -- true",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line, got: {stderr}");
    assert!(
        stderr.contains("mount -t tracefs tracefs /sys/kernel/tracing"),
        "should say what to run: {stderr}"
    );
    assert_eq!(
        trace_mounts(),
        before,
        "the host's tracefs/debugfs mounts changed"
    );
}
