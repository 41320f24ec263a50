//! Schema v3's tree levels with `backstop-agent watch` against a real
//! shell, as root, with the probes loaded: the tree's live processes and
//! open descriptors, read from /proc for the threads the probes track,
//! and the host's levels beside the features.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use support::{ebpf_or_skip, watch};

/// A shell that starts three sleeps, opens five descriptors and a file
/// ($1) it appends 3,000,000 bytes to, then kills the sleeps and waits a
/// while alone.
const SCRIPT: &str = "sleep 5 & a=$!; sleep 5 & b=$!; sleep 5 & c=$!; \
     exec 3</etc/hostname 4</etc/hostname 5</etc/hostname 6</etc/hostname 7>>\"$1\"; \
     sleep 0.6; head -c 3000000 /dev/zero >&7; sleep 0.9; kill $a $b $c; wait; sleep 1";

#[test]
fn the_trees_live_processes_and_open_descriptors_are_counted() {
    let Some(_g) = ebpf_or_skip("the_trees_live_processes_and_open_descriptors_are_counted") else {
        return;
    };
    let file = std::env::temp_dir().join(format!("watch-tree-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let w = watch(
        &["--window-ms", "250"],
        &["sh", "-c", SCRIPT, "sh", file.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(w.code(), 0, "{}", w.stderr());
    // The appended file, held open all along: its growth, window by
    // window, adds up to what was written.
    let growth = w.series("tree_top_file_growth_bytes");
    assert_eq!(growth.iter().sum::<f64>(), 3e6, "{growth:?}");
    let procs = w.series("tree_processes");
    let fds = w.series("tree_open_fds");
    // The shell, its three sleeps, and the `sleep 1.5` it waits on.
    let most = procs.iter().copied().fold(0.0, f64::max);
    assert_eq!(most, 5.0, "processes per window: {procs:?}");
    // Then the shell and its last sleep, then nobody.
    let last_five = procs.iter().rposition(|p| *p == 5.0).unwrap();
    assert!(
        procs[last_five..].contains(&2.0),
        "the killed sleeps never left the count: {procs:?}"
    );
    assert_eq!(
        procs.last(),
        Some(&0.0),
        "the tree is gone at the end: {procs:?}"
    );
    // Each process holds stdin, stdout and stderr; the shell five more.
    let fd_most = fds.iter().copied().fold(0.0, f64::max);
    assert!(
        fd_most >= 5.0 * 3.0 + 5.0,
        "descriptors per window: {fds:?}"
    );
    // The host's levels travel beside the features.
    let host = &w.windows[0]["host"];
    assert!(host["cpus"].as_f64().unwrap() >= 1.0, "{host}");
    assert!(host["disk_total_bytes"].as_f64().unwrap() > 0.0, "{host}");
    assert!(host["mem_total_bytes"].as_f64().unwrap() > 0.0, "{host}");
}
