//! The agent's life as an SRE sees it: refusing to run where it cannot, and
//! leaving nothing in the kernel when it stops, however it stops.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{agent, ebpf_or_skip, eventually};

/// Ids of the probe programs and maps the kernel holds right now (matched
/// by name; kernel names are cut to 15 bytes). Ids, not names, so another
/// agent on the host cannot be mistaken for this test's.
fn ours_in_kernel() -> Vec<(String, u32)> {
    const MAPS: [&str; 8] = [
        "TRACKED",
        "COUNTERS",
        "SYSCALL_COUNTS",
        "THREADS",
        "BIO_INFLIGHT",
        "BLOCK_DEVS",
        "SOCKS",
        "EVENTS",
    ];
    let progs = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.name_as_str()?.to_string(), p.id())))
        .filter(|(n, _)| n.starts_with("bs_"));
    let maps = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter_map(|m| Some((m.name_as_str()?.to_string(), m.id())))
        .filter(|(n, _)| {
            MAPS.iter()
                .any(|ours| ours.starts_with(n.as_str()) && n.len() >= 5)
        });
    progs.chain(maps).collect()
}

/// A duration no other process on the host will be sleeping for, so the
/// orphan of a SIGKILLed agent can be found and stopped.
const ORPHAN_SLEEP: &str = "30.4242";

fn orphan_running() -> bool {
    Command::new("pgrep")
        .args(["-f", &format!("^sleep {ORPHAN_SLEEP}$")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn stop_with(signal: i32) {
    let before = ours_in_kernel();
    let mut child = Command::new(agent())
        .args(["watch", "--json", "--", "sleep", ORPHAN_SLEEP])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut mine = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            mine = ours_in_kernel()
                .into_iter()
                .filter(|o| !before.contains(o))
                .collect();
            mine.iter().any(|(n, _)| n == "bs_sys_enter")
                && mine.iter().any(|(n, _)| n == "TRACKED")
        }),
        "the agent never loaded its probes (so this test could not see a leak)"
    );
    // Stop it while it watches a running command, the case that matters.
    assert!(
        eventually(Duration::from_secs(10), orphan_running),
        "the agent never started its command"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not stop after signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    if signal == libc::SIGKILL {
        // The command outlives a SIGKILLed agent, as under strace or time;
        // it holds the agent's stdout and stderr until it is gone.
        assert!(orphan_running(), "the command outlives a SIGKILLed agent");
        let _ = Command::new("pkill")
            .args(["-f", &format!("^sleep {ORPHAN_SLEEP}$")])
            .status();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if signal == libc::SIGKILL {
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    } else {
        // The signal went on to `sleep`, which died of it; the agent
        // reports that as the command's exit, after a final window.
        assert_eq!(status.code(), Some(128 + signal), "stderr: {stderr}");
        assert!(
            !orphan_running(),
            "the command died of the forwarded signal"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().last().unwrap_or("").contains("\"summary\""),
            "summary printed: {stdout}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let left = || {
        let now = ours_in_kernel();
        mine.iter()
            .filter(|o| now.contains(o))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || left().is_empty()),
        "left in the kernel after signal {signal}: {:?}",
        left()
    );
    let pinned: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        pinned
            .iter()
            .all(|n| !n.to_string_lossy().contains("backstop")),
        "pinned objects: {pinned:?}"
    );
}

#[test]
fn nothing_left_after_sigterm_sigint_or_sigkill() {
    let Some(_g) = ebpf_or_skip("nothing_left_after_sigterm_sigint_or_sigkill") else {
        return;
    };
    stop_with(libc::SIGTERM);
    stop_with(libc::SIGINT);
    stop_with(libc::SIGKILL);
}

fn assert_one_line_exit_2(out: &std::process::Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line, got: {stderr}");
    assert!(stderr.contains(expect), "should say {expect:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn not_root_is_exit_2_with_one_line() {
    if !support::is_root() {
        // Already unprivileged: the plain run is the test.
        let out = Command::new(agent())
            .args(["watch", "--", "true"])
            .output()
            .unwrap();
        assert_one_line_exit_2(&out, "not root");
        return;
    }
    let Some(_g) = ebpf_or_skip("not_root_is_exit_2_with_one_line") else {
        return;
    };
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(agent())
        .args(["watch", "--", "true"])
        .output()
        .expect("setpriv (util-linux)");
    assert_one_line_exit_2(&out, "not root");
}

#[test]
fn bpf_refused_is_exit_2_with_one_line() {
    let Some(_g) = ebpf_or_skip("bpf_refused_is_exit_2_with_one_line") else {
        return;
    };
    // Root without capabilities: euid 0, but the kernel refuses bpf(2).
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all"])
        .arg(agent())
        .args(["watch", "--", "true"])
        .output()
        .expect("setpriv (util-linux)");
    assert_one_line_exit_2(&out, "BPF refused");
}
