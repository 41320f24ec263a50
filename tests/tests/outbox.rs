//! The long-running agent's outbox under attack: a full disk never kills an
//! install nor loses its outcome, and no other local user can read what
//! the outbox holds.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agents::{Fleet, Proc, Tmpfs, deployment_of, plain};
use support::{ebpf_or_skip, eventually};

/// outcome takes the reserve's room).
fn full_disk(name: &str, fill_first: bool) {
    let fleet = Fleet::new(name);
    let _serve = fleet.serve();
    let tmpfs = Tmpfs::mount(fleet.data.join("agent-data"));
    if fill_first {
        tmpfs.fill();
    }
    let agent = Proc::spawn(&mut fleet.agent_cmd(&tmpfs.0));
    fleet.wait_connected(&agent);
    if !fill_first {
        tmpfs.fill();
    }
    let marker = fleet.data.join("marker");
    let script = format!("sleep 3; echo done > {}; exit 7", marker.display());
    let (code, stdout) = fleet
        .exec(&["sh", "-c", &script])
        .finish(Duration::from_mins(1));
    let log = agent.log();
    assert_eq!(
        code, 7,
        "the command's exit code comes back; agent log:\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default(),
        "done\n",
        "the command ran to its end (was it killed?); agent log:\n{log}"
    );
    let id = deployment_of(&stdout);
    let d = fleet.deployment(&id);
    assert_eq!(d["state"], "finished", "{d}");
    assert_eq!(d["exit_code"], 7, "{d}");
    let total = d["windows"].as_u64().unwrap();
    assert!(total >= 25, "3 s at 100 ms windows: {d}");
    let stored = fleet.windows(&id).len() as u64;
    let mut dropped = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            dropped = fleet.host()["dropped_windows"].as_u64().unwrap_or(0);
            dropped + stored >= total
        }),
        "every window is stored or counted as dropped: {stored} stored + {dropped} dropped < {total}\n{log}"
    );
    eprintln!(
        "full disk (filled {}): {stored} of {total} windows stored, {dropped} counted as dropped",
        if fill_first {
            "before start"
        } else {
            "after connect"
        }
    );
    assert!(
        dropped > 0,
        "the full disk dropped windows: {}",
        fleet.host()
    );
    assert!(
        log.contains("outbox refused a write"),
        "the agent said why: {log}"
    );
    drop(agent);
}

#[test]
fn a_full_disk_drops_windows_but_never_the_install_or_its_outcome() {
    let Some(_g) = ebpf_or_skip("a_full_disk_drops_windows_but_never_the_install_or_its_outcome")
    else {
        return;
    };
    full_disk("full-late", false);
}

#[test]
fn a_disk_full_from_the_start_still_delivers_the_outcome() {
    let Some(_g) = ebpf_or_skip("a_disk_full_from_the_start_still_delivers_the_outcome") else {
        return;
    };
    full_disk("full-early", true);
}

/// Modes under DATA/agent, as (path, mode) for every entry.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(
        dir.to_path_buf(),
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777,
    )];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(modes(&p));
        } else {
            out.push((p, e.metadata().unwrap().permissions().mode() & 0o7777));
        }
    }
    out
}

#[test]
fn no_other_user_can_read_the_outbox() {
    let Some(_g) = ebpf_or_skip("no_other_user_can_read_the_outbox") else {
        return;
    };
    let fleet = Fleet::new("private");
    let mut serve = fleet.serve();
    let data = fleet.data.join("agent-data");
    let mut agent = Proc::spawn(&mut fleet.agent_cmd(&data));
    fleet.wait_connected(&agent);
    // The controller goes away mid-deployment, so its windows and outcome
    // stay in the outbox.
    let exec = fleet.exec(&["sleep", "1.5"]);
    assert!(eventually(Duration::from_secs(10), || {
        fleet
            .json(&["deployments", "--json"])
            .as_array()
            .is_some_and(|a| !a.is_empty())
    }));
    drop(serve);
    drop(exec);
    let outbox = data.join("agent/outbox");
    let msgs = || -> Vec<PathBuf> {
        std::fs::read_dir(&outbox)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "msg"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(15), || msgs().len() >= 10),
        "windows in the outbox: {:?}",
        msgs()
    );

    // An older agent left looser modes: the next one reports and fixes them.
    drop(agent);
    for (p, mode) in [
        (data.join("agent"), 0o755),
        (outbox.clone(), 0o777),
        (msgs()[0].clone(), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    serve = fleet.serve();
    agent = Proc::spawn(&mut fleet.agent_cmd(&data));
    assert!(
        eventually(Duration::from_secs(10), || agent
            .log()
            .matches("tightened its mode")
            .count()
            >= 3),
        "the agent reports the three loose modes: {}",
        agent.log()
    );
    let log = plain(&agent.log());
    assert!(
        log.contains(&format!("path={} old_mode=\"777\"", outbox.display())),
        "names the path and its old mode: {log}"
    );
    // Keep the messages in the outbox for the read attempts below.
    drop(serve);
    drop(agent);
    let in_outbox = msgs();
    assert!(!in_outbox.is_empty());
    for (p, mode) in modes(&data.join("agent")) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
    }
    for p in in_outbox.iter().chain([&outbox]) {
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
            .arg(p)
            .output()
            .expect("setpriv (util-linux)");
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "nobody read {}",
            p.display()
        );
    }
}

/// The same guarantee for `watch`, whose sink is stdout: a reader that goes
/// away (EPIPE on every window) costs the windows, not the command.
#[test]
fn a_closed_stdout_does_not_kill_the_watched_command() {
    let Some(_g) = ebpf_or_skip("a_closed_stdout_does_not_kill_the_watched_command") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("backstop-epipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("marker");
    let _ = std::fs::remove_file(&marker);
    let script = format!("sleep 1; echo done > {}", marker.display());
    let mut child = Command::new(support::agent())
        .args([
            "watch",
            "--json",
            "--window-ms",
            "100",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("watch did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let done = std::fs::read_to_string(&marker).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        done,
        "done\n",
        "the command was killed when stdout closed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
