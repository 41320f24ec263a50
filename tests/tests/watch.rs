//! `backstop-agent watch` against real workloads, as root, with the probes
//! loaded into this kernel.
//!
//! Exactness is shown by difference: the same program run with N and with 0
//! iterations differs by exactly N events, whatever its start-up costs. Each
//! exactness test runs an untracked copy of the same workload at the same
//! time, which must not show up.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::process::{Child, Command, Stdio};

use support::{ebpf_or_skip, watch, workload};

/// Start an untracked workload that runs until killed, in a process group
/// of its own so that killing it leaves no loop iteration behind.
fn untracked(args: &[&str]) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while :; do {} >/dev/null 2>&1; done",
            args.join(" ")
        ))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting the untracked workload")
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling the process group we created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn wl() -> String {
    workload().display().to_string()
}

#[test]
fn missing_files_counted_exactly_and_untracked_excluded() {
    let Some(_g) = ebpf_or_skip("missing_files_counted_exactly_and_untracked_excluded") else {
        return;
    };
    let _noise = KillOnDrop(untracked(&[&wl(), "missing", "20000"]));
    let base = watch(&[], &[&wl(), "missing", "0"]);
    let run = watch(&[], &[&wl(), "missing", "1000"]);
    assert_eq!(
        (base.code(), run.code()),
        (0, 0),
        "stderr: {}{}",
        base.stderr(),
        run.stderr()
    );
    for (feature, want) in [
        ("syscall_errors_enoent", 1000.0),
        ("syscall_errors_total", 1000.0),
        ("syscalls_total", 1000.0),
        ("syscalls_file", 1000.0),
        ("syscall_errors_eacces", 0.0),
        ("proc_forks", 0.0),
    ] {
        assert_eq!(
            run.total(feature) - base.total(feature),
            want,
            "{feature}: run {} - baseline {} should be {want} (an untracked loop of the same workload ran beside it)",
            run.total(feature),
            base.total(feature)
        );
    }
    assert_eq!(run.summary["lost_events"], 0);
}

#[test]
fn fork_storm_counted_exactly() {
    let Some(_g) = ebpf_or_skip("fork_storm_counted_exactly") else {
        return;
    };
    let _noise = KillOnDrop(untracked(&[&wl(), "forks", "200"]));
    let base = watch(&[], &[&wl(), "forks", "0"]);
    let run = watch(&["--window-ms", "100"], &[&wl(), "forks", "2000"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (feature, want) in [
        ("proc_forks", 2000.0),
        ("proc_exits", 2000.0),
        ("proc_exits_nonzero", 0.0),
        ("proc_signal_deaths", 0.0),
        ("proc_execs", 0.0),
    ] {
        assert_eq!(run.total(feature) - base.total(feature), want, "{feature}");
    }
    assert_eq!(
        run.summary["lost_events"], 0,
        "a fork storm of 2000 lost events"
    );
}

#[test]
fn failing_and_killed_children() {
    let Some(_g) = ebpf_or_skip("failing_and_killed_children") else {
        return;
    };
    let ok = watch(&[], &[&wl(), "fail-child", "0"]);
    let failed = watch(&[], &[&wl(), "fail-child", "7"]);
    let killed = watch(&[], &[&wl(), "signal-child", "9"]);
    assert_eq!(ok.total("proc_exits_nonzero"), 0.0);
    assert_eq!(failed.total("proc_exits_nonzero"), 1.0, "child exiting 7");
    assert_eq!(failed.total("proc_signal_deaths"), 0.0);
    assert_eq!(
        killed.total("proc_signal_deaths"),
        1.0,
        "child killed by SIGKILL"
    );
    assert_eq!(killed.total("proc_exits_nonzero"), 0.0);
    for w in [&ok, &failed, &killed] {
        assert_eq!(w.total("proc_forks"), 1.0);
        assert_eq!(w.total("proc_exits"), 2.0, "the workload and its child");
    }
}

/// A pipeline's writer ended by SIGPIPE when its reader is done is how
/// `yes | head` always ends: a non-zero exit, not a death, so a healthy
/// script looping over pipelines piles up no deaths. SIGSEGV still is one.
#[test]
fn a_pipelines_sigpipe_is_a_non_zero_exit_and_a_segfault_a_death() {
    let Some(_g) = ebpf_or_skip("a_pipelines_sigpipe_is_a_non_zero_exit_and_a_segfault_a_death")
    else {
        return;
    };
    let piped = watch(
        &[],
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do yes | head -c 1 >/dev/null; done",
        ],
    );
    assert_eq!(piped.code(), 0, "{}", piped.stderr());
    assert_eq!(piped.total("proc_signal_deaths"), 0.0, "five SIGPIPEs");
    assert_eq!(piped.total("proc_exits_nonzero"), 5.0, "each yes, once");
    // From a shell: a Rust child's own SIGSEGV handler would catch a kill.
    let segv = watch(&[], &["sh", "-c", "sh -c 'kill -SEGV $$'; true"]);
    assert_eq!(
        segv.total("proc_signal_deaths"),
        1.0,
        "child killed by SIGSEGV"
    );
    assert_eq!(segv.total("proc_exits_nonzero"), 0.0);
}

#[test]
fn exit_code_is_the_commands() {
    let Some(_g) = ebpf_or_skip("exit_code_is_the_commands") else {
        return;
    };
    let w = watch(&[], &["sh", "-c", "exit 5"]);
    assert_eq!(w.code(), 5);
    assert_eq!(w.summary["exit_code"], 5);
    assert_eq!(w.total("proc_exits_nonzero"), 1.0);
    let w = watch(&[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(w.code(), 128 + 9, "killed by SIGKILL");
    assert_eq!(w.total("proc_signal_deaths"), 1.0);
}

#[test]
fn a_growing_process_shows_as_a_rising_anon_peak() {
    let Some(_g) = ebpf_or_skip("a_growing_process_shows_as_a_rising_anon_peak") else {
        return;
    };
    let w = watch(&["--window-ms", "100"], &[&wl(), "grow", "48"]);
    assert_eq!(w.code(), 0, "{}", w.stderr());
    let peaks: Vec<f64> = w
        .series("mem_anon_peak_bytes")
        .into_iter()
        .filter(|&p| p > 0.0)
        .collect();
    let mib = (1u64 << 20) as f64;
    // 48 MiB kept, grown over about a second: many windows, rising.
    assert!(
        peaks.len() >= 5,
        "too few windows saw the growth: {peaks:?}"
    );
    let last = peaks.iter().copied().fold(0.0, f64::max);
    assert!(last >= 48.0 * mib, "peak {last} below the 48 MiB kept");
    assert!(
        peaks[0] < last / 2.0,
        "the first windows should show a fraction of the final size: {peaks:?}"
    );
}

/// A thread stuck on something it needs (a FIFO's writer, here) shows its
/// age; a thread that waits on others does not: a parent on its children,
/// a sleep on its timer, a daemon on its clients (stop 25: a service a
/// postinst started, idle in accept, looked like a hang).
#[test]
fn a_blocked_syscall_shows_its_age_and_waiting_on_others_does_not() {
    let Some(_g) = ebpf_or_skip("a_blocked_syscall_shows_its_age") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("backstop-blocked-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // cat's open of the FIFO blocks until the writer comes, a second on.
    let fifo = dir.join("fifo");
    let script = format!(
        "mkfifo {f}; (sleep 1; echo x > {f}) & cat {f} >/dev/null; wait",
        f = fifo.display()
    );
    let w = watch(&["--window-ms", "100"], &["sh", "-c", &script]);
    assert_eq!(w.code(), 0, "{}", w.stderr());
    let longest = w.max("sched_blocked_longest_ms");
    assert!(
        (700.0..1500.0).contains(&longest),
        "a FIFO's open blocked for {longest} ms by the windows"
    );
    // The shell waits in wait4 while its child spins on a CPU; a sleep
    // waits for its timer; a listener waits in accept for a client that
    // never comes.
    let listen = "perl -MIO::Socket::INET -e '$l=IO::Socket::INET->new(LocalAddr=>\"127.0.0.1:0\",Listen=>1) or die; alarm 1; $l->accept'";
    for cmd in [
        format!("{} spin 800; true", wl()),
        "sleep 1".to_string(),
        format!("{listen}; true"),
    ] {
        let w = watch(&["--window-ms", "100"], &["sh", "-c", &cmd]);
        assert_eq!(w.code(), 0, "{cmd}: {}", w.stderr());
        let longest = w.max("sched_blocked_longest_ms");
        assert!(
            longest < 300.0,
            "{cmd}: waiting on others counted as blocked for {longest} ms"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Schema v4: a FIFO opened with no writer yet, then a thread joined a
/// second later, show as pipe and futex wait; sleeping shows as neither.
#[test]
fn waits_on_a_fifo_and_a_futex_are_counted_and_a_sleep_is_not() {
    let Some(_g) = ebpf_or_skip("waits_on_a_fifo_and_a_futex_are_counted") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("backstop-waits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let script = format!(
        "mkfifo {f}; (sleep 1; echo x > {f}) & read a < {f}; perl -Mthreads -e 'threads->create(sub {{ select(undef, undef, undef, 1.0) }})->join'",
        f = fifo.display()
    );
    let w = watch(&["--window-ms", "200"], &["sh", "-c", &script]);
    assert_eq!(w.code(), 0, "{}", w.stderr());
    let (pipe, futex) = (
        w.total("sched_pipe_wait_ms"),
        w.total("sched_futex_wait_ms"),
    );
    assert!(
        (800.0..1600.0).contains(&pipe),
        "FIFO open waited {pipe} ms"
    );
    assert!(
        (800.0..1600.0).contains(&futex),
        "thread join waited {futex} ms"
    );
    let w = watch(&["--window-ms", "200"], &["sh", "-c", "sleep 1"]);
    assert_eq!(w.code(), 0, "{}", w.stderr());
    let (pipe, futex) = (
        w.total("sched_pipe_wait_ms"),
        w.total("sched_futex_wait_ms"),
    );
    assert!(
        pipe < 50.0 && futex < 50.0,
        "sleep 1 counted as pipe {pipe} / futex {futex} ms"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Since stop 29 the latency histogram leaves out what the longest sleep
/// does, and a futex's and a pipe's waits: a wait on another task or on
/// time is as long as that task or the caller chose, not what the host
/// made the call take. A flock that waits a second for a lock another
/// process holds is still a second's syscall.
#[test]
fn latency_leaves_out_waits_on_others_and_keeps_a_held_lock() {
    let Some(_g) = ebpf_or_skip("latency_leaves_out_waits_on_others") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("backstop-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    // A sleep; a FIFO whose writer comes a second late; a thread that
    // selects for a second, joined; a shell waiting for a child that
    // spins. Each waits about a second in one call.
    for cmd in [
        "sleep 1".to_string(),
        format!(
            "mkfifo {f}; (sleep 1; echo x > {f}) & read a < {f}; wait",
            f = fifo.display()
        ),
        "perl -Mthreads -e 'threads->create(sub { select(undef, undef, undef, 1.0) })->join'"
            .to_string(),
        format!("{} spin 800; true", wl()),
    ] {
        let w = watch(&["--window-ms", "100"], &["sh", "-c", &cmd]);
        assert_eq!(w.code(), 0, "{cmd}: {}", w.stderr());
        // Each waits 0.8 s or more; counted, that puts the p99 at a
        // bucket floor of 671 ms or more (quarter octaves: 0.8 s is in
        // 671..805 ms). Below is room for a loaded host: stop 31's CI,
        // run beside a release build, saw a p99 of 402 ms (402..470) in
        // the perl case, which passes alone and under CPU load; which
        // call took it was not found.
        let p99 = w.max("syscall_latency_p99_us");
        assert!(
            p99 < 600_000.0,
            "{cmd}: a wait on others counted as a syscall of {p99} us"
        );
    }
    // The holder, untracked, takes the lock before the watched tree
    // starts, and lets it go a second after that tree says it started
    // (the agent loads its probes first, for as long as that takes), or
    // after 20 s if it never does, so a failed watch leaves no holder.
    let (lock, held, started) = (dir.join("lock"), dir.join("held"), dir.join("started"));
    let holder_script = format!(
        "touch {h}; n=0; while [ ! -e {s} ] && [ $n -lt 2000 ]; do sleep 0.01; n=$((n+1)); done; sleep 1",
        h = held.display(),
        s = started.display()
    );
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &holder_script])
        .spawn()
        .expect("starting flock (util-linux)");
    let t0 = std::time::Instant::now();
    while !held.exists() {
        assert!(
            t0.elapsed().as_secs() < 10,
            "the holder never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Then the flock's window holds little else (a p99 of many calls is
    // not their maximum): perl waits a moment, in a select, after it.
    let wait = format!(
        "touch {s}; perl -e 'open(my $f, \">\", shift) or die; flock($f, 2) or die; select(undef, undef, undef, 0.3)' {l}",
        s = started.display(),
        l = lock.display()
    );
    let w = watch(&["--window-ms", "100"], &["sh", "-c", &wait]);
    assert!(holder.wait().unwrap().success());
    assert_eq!(w.code(), 0, "{}", w.stderr());
    let p99 = w.max("syscall_latency_p99_us");
    assert!(
        p99 >= 500_000.0,
        "a flock that waited about a second for a held lock: p99 {p99} us"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A directory on a real block device (not tmpfs/overlay), or None.
fn block_backed_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::path::PathBuf::from(
        std::env::var("BACKSTOP_TEST_BLOCK_DIR").unwrap_or_else(|_| "/var/tmp".into()),
    );
    let dev = std::fs::metadata(&dir).ok()?.dev();
    // Device-less filesystems (tmpfs, overlay, proc) have major 0.
    (libc::major(dev) != 0).then_some(dir)
}

#[test]
fn direct_and_buffered_writes_attributed() {
    let Some(_g) = ebpf_or_skip("direct_and_buffered_writes_attributed") else {
        return;
    };
    let Some(dir) = block_backed_dir() else {
        assert!(
            std::env::var("CI").is_err(),
            "no block-backed directory for the I/O test under CI"
        );
        eprintln!(
            "*** SKIPPED direct_and_buffered_writes_attributed: /var/tmp is not on a block device (set BACKSTOP_TEST_BLOCK_DIR) ***"
        );
        return;
    };
    let tracked = dir.join(format!("backstop-test-direct-{}", std::process::id()));
    let noise_file = dir.join(format!("backstop-test-noise-{}", std::process::id()));
    let buffered = dir.join(format!("backstop-test-buffered-{}", std::process::id()));
    // Declared before the noise so it is dropped after it: the files go
    // once nothing can write them again, pass or fail.
    let _files = RemoveOnDrop(vec![tracked.clone(), noise_file.clone(), buffered.clone()]);
    let _noise = KillOnDrop(untracked(&[
        "dd",
        "if=/dev/zero",
        &format!("of={}", noise_file.display()),
        "bs=1M",
        "count=4",
        "oflag=direct",
    ]));
    let of = format!("of={}", tracked.display());
    let w = watch(
        &[],
        &[
            "dd",
            "if=/dev/zero",
            &of,
            "bs=1M",
            "count=8",
            "oflag=direct",
        ],
    );
    assert_eq!(w.code(), 0, "{}", w.stderr());
    assert_eq!(
        w.total("block_write_bytes"),
        8.0 * 1024.0 * 1024.0,
        "O_DIRECT write of 8 MiB, with an untracked O_DIRECT writer beside it"
    );
    assert!(w.total("block_ops") >= 1.0);
    assert!(
        w.total("block_latency_p99_us") > 0.0,
        "block latency was measured"
    );

    let of = format!("of={}", buffered.display());
    let w = watch(&[], &["dd", "if=/dev/zero", &of, "bs=1M", "count=8"]);
    assert_eq!(w.code(), 0, "{}", w.stderr());
    assert_eq!(
        w.total("page_dirtied_bytes"),
        8.0 * 1024.0 * 1024.0,
        "buffered write of 8 MiB into a new file dirties exactly 8 MiB of page cache"
    );
    assert_eq!(
        w.total("block_write_bytes"),
        0.0,
        "buffered writes reach the disk from the flusher, not the tree"
    );
}

struct RemoveOnDrop(Vec<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[test]
fn tcp_bytes_and_connects_counted_exactly() {
    let Some(_g) = ebpf_or_skip("tcp_bytes_and_connects_counted_exactly") else {
        return;
    };
    let _noise = KillOnDrop(untracked(&[&wl(), "tcp-send", "50000"]));
    let base = watch(&[], &[&wl(), "tcp-send", "0"]);
    let run = watch(&[], &[&wl(), "tcp-send", "300000"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    for (feature, want) in [("net_tx_bytes", 300_000.0), ("net_rx_bytes", 300_000.0)] {
        assert_eq!(run.total(feature) - base.total(feature), want, "{feature}");
    }
    assert_eq!(run.total("net_connect_attempts"), 1.0);
    assert_eq!(run.total("net_connect_failures"), 0.0);
    assert!(
        run.total("net_connect_latency_p99_us") > 0.0,
        "connect latency measured"
    );

    let refused = watch(&[], &[&wl(), "connect-refused"]);
    assert_eq!(refused.code(), 0, "{}", refused.stderr());
    assert_eq!(refused.total("net_connect_attempts"), 1.0);
    assert_eq!(refused.total("net_connect_failures"), 1.0, "RST to a SYN");
    assert_eq!(
        refused.total("syscall_errors_net"),
        1.0,
        "connect() returned ECONNREFUSED"
    );
}

#[test]
fn json_lines_are_consecutive_windows() {
    let Some(_g) = ebpf_or_skip("json_lines_are_consecutive_windows") else {
        return;
    };
    let w = watch(&["--window-ms", "200"], &[&wl(), "cpu", "900"]);
    assert_eq!(w.code(), 0);
    assert!(
        w.windows.len() >= 4,
        "at least 900 ms at 200 ms windows gave {} windows",
        w.windows.len()
    );
    assert_eq!(w.summary["windows"], w.windows.len());
    assert_eq!(
        w.summary["schema"],
        backstop_common::features::SCHEMA_VERSION
    );
    for (i, win) in w.windows.iter().enumerate() {
        assert_eq!(win["seq"], i, "seq numbers run 0..");
        assert_eq!(win["stream"], "live");
        assert!(win["end_ns"].as_u64() > win["start_ns"].as_u64());
        if i > 0 {
            assert_eq!(
                win["start_ns"],
                w.windows[i - 1]["end_ns"],
                "windows tile time without gaps"
            );
        }
        assert!(win["lost_events"].is_u64());
    }
    assert!(w.total("sched_ctx_switches") >= 1.0);
}

/// The windows' on-CPU time adds up to the kernel's own count of the
/// command's CPU time, with two fork loops beside it making the
/// scheduler switch often. Clean-clone CI lost 0.6 s of a 0.9 s spin: on this
/// Firecracker guest, switches away from the init's worker threads are
/// never traced (by our program or by the kernel's own sched_switch
/// event), so the command went back on its CPU unseen and the stretch
/// after it was never counted. The probes now take such a stretch from
/// the kernel's runtime. With two fork loops beside it, the old probes
/// missed by more than the slack in 8 of 40 runs (up to 132 ms), so six
/// runs catch them three times in four; the new ones were within 27 ms
/// in 25 runs.
#[test]
fn on_cpu_time_is_the_kernels_count_when_switches_go_unseen() {
    let Some(_g) = ebpf_or_skip("on_cpu_time_is_the_kernels_count_when_switches_go_unseen") else {
        return;
    };
    let _noise = [
        KillOnDrop(untracked(&["/bin/true"])),
        KillOnDrop(untracked(&["/bin/true"])),
    ];
    for run in 0..6 {
        let w = watch(&["--window-ms", "200"], &[&wl(), "cpu", "900"]);
        assert_eq!(w.code(), 0, "{}", w.stderr());
        let kernel: f64 = w
            .stderr()
            .lines()
            .find_map(|l| l.strip_prefix("cpu_ns="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("the workload printed no cpu_ns: {}", w.stderr()));
        let on_cpu = w.total("sched_on_cpu_ns");
        // The kernel's count includes the agent's fork before the exec,
        // and ours the exit after the last read of it, and stretches
        // timed by the clock include interrupts: a few ms either way.
        let slack = 0.05 * kernel + 20e6;
        assert!(
            (on_cpu - kernel).abs() <= slack,
            "run {run}: the windows count {on_cpu} ns on CPU, the kernel {kernel} ns; per window {:?}, switches {:?}; summary {}",
            w.series("sched_on_cpu_ns"),
            w.series("sched_ctx_switches"),
            w.summary,
        );
    }
}

#[test]
fn command_output_goes_to_stderr_with_json() {
    let Some(_g) = ebpf_or_skip("command_output_goes_to_stderr_with_json") else {
        return;
    };
    let w = watch(&[], &["echo", "hello-from-the-command"]);
    assert!(
        w.stderr().contains("hello-from-the-command"),
        "stderr: {}",
        w.stderr()
    );
    assert!(!String::from_utf8_lossy(&w.output.stdout).contains("hello-from-the-command"));
}

#[test]
fn missing_binary_is_a_clear_error() {
    let Some(_g) = ebpf_or_skip("missing_binary_is_a_clear_error") else {
        return;
    };
    let out = Command::new(support::agent())
        .args([
            "watch",
            "--json",
            "--",
            "/nonexistent/backstop-no-such-binary",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "stderr: {stderr}");
    assert!(
        stderr.contains("/nonexistent/backstop-no-such-binary"),
        "names the path: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "no windows for a command that never ran"
    );
}
