//! The controller's data is root's alone: modes of everything it stores,
//! read as `nobody`; loose modes fixed on start; the control socket's
//! accept loop under descriptor exhaustion.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::fleet::{Ctl, connect, runtime};
use support::is_root;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Whether `nobody` can read `p` (with cat, through setpriv).
fn nobody_reads(p: &Path) -> bool {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn controller_data_is_private_to_root() {
    if !is_root() {
        assert!(std::env::var("CI").is_err(), "under CI a skip is a failure");
        eprintln!("\n*** SKIPPED controller_data_is_private_to_root: needs root ***\n");
        return;
    }
    let mut ctl = Ctl::new("private");
    ctl.serve();
    let b = ctl.enroll("web-2");
    // Some traffic, so the WAL and its index exist and hold data.
    let rt = runtime();
    let _agent = rt
        .block_on(connect(ctl.addr, &ctl.data.join("pki/ca.pem"), &b))
        .unwrap();
    let d = &ctl.data.clone();
    let dirs = [d.clone(), d.join("pki"), d.join("pki/agents")];
    let files: Vec<PathBuf> = [
        "backstop.db",
        "backstop.db-wal",
        "backstop.db-shm",
        "pki/ca.key",
        "pki/server.key",
        "pki/agents/web-1.bundle",
    ]
    .iter()
    .map(|f| d.join(f))
    .chain([b.clone()])
    .collect();
    for p in &dirs {
        assert_eq!(mode(p), 0o700, "{}", p.display());
    }
    for p in &files {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&d.join("control.sock")) & 0o777, 0o600, "control.sock");
    let pid = ctl.serve.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == "Umask:\t0077"),
        "the daemon runs under umask 077, so nothing it creates is ever readable by others"
    );
    for p in &files {
        assert!(!nobody_reads(p), "nobody read {}", p.display());
    }
    // The files hold on their own, without the directories' help.
    for p in &dirs {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    for p in &files {
        assert!(
            !nobody_reads(p),
            "nobody read {} through a 0711 directory",
            p.display()
        );
    }
    assert!(
        nobody_reads(&d.join("pki/ca.pem")),
        "the check itself can succeed"
    );

    // Loose modes (an old version's, a restored backup's) are reported and fixed.
    ctl.stop();
    for p in &files[..3] {
        if p.exists() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    std::fs::set_permissions(d.join("pki/ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = ctl.cli(&["hosts"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for p in [d.join("backstop.db"), d.join("pki/ca.key"), d.clone()] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&p.display().to_string()) && l.contains("old_mode=")),
            "{} reported: {stderr}",
            p.display()
        );
    }
    for p in &dirs {
        assert_eq!(mode(p), 0o700, "{} fixed", p.display());
    }
    for p in files.iter().filter(|p| p.exists()) {
        assert_eq!(mode(p), 0o600, "{} fixed", p.display());
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn set_nofile(pid: u32, n: usize) {
    let ok = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        // The soft limit only: raising it back needs no privilege.
        .arg(format!("--nofile={n}:"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit --pid {pid} --nofile={n}:");
}

#[test]
fn control_accept_backs_off_when_descriptors_run_out() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let mut ctl = Ctl::new("emfile");
    ctl.serve();
    let pid = ctl.serve.as_ref().unwrap().id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // Room for two more descriptors: the third waiting client makes
    // accept(2) fail with EMFILE, and keep failing while it waits.
    set_nofile(pid, fds + 2);
    let sock = ctl.data.join("control.sock");
    let clients: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    eprintln!("daemon CPU while accept fails: {used} ticks in 3 s ({hz} Hz)");
    assert!(
        used < hz / 2,
        "the daemon spun: {used} ticks of CPU in 3 s while accept failed"
    );
    assert!(
        ctl.log().contains("accept failed") && ctl.log().contains("retrying in"),
        "the failure is logged: {}",
        ctl.log()
    );
    // Once descriptors are free again, the daemon answers.
    drop(clients);
    set_nofile(pid, 1024);
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"{\"op\":\"ping\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(
        line.contains("\"reply\":\"pong\""),
        "ping after recovery: {line:?}"
    );
}
