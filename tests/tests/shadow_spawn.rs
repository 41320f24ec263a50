//! Who creates a shadow's container: never the multi-threaded agent (a raw
//! clone3 there could inherit a lock another thread held and hang
//! forever), but the agent's own single-threaded child, `backstop-agent
//! shadow-exec`; and that child, with the shadow, dies with the agent.
//! Real agent, real youki containers on the cached Debian rootfs; every
//! check looks at the processes, cgroups and mounts of this test's own
//! shadow only (other agents may run shadows beside it).
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{agent, children, ebpf_or_skip, eventually, rootfs};

/// A data directory of this test's own, removed at the end.
struct Data(PathBuf);

impl Data {
    fn new(name: &str) -> Data {
        let d =
            PathBuf::from("/var/tmp").join(format!("backstop-spawn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Data(d)
    }

    fn shadows(&self) -> PathBuf {
        self.0.join("agent/shadows")
    }

    /// The one shadow id under this data directory, once it exists.
    fn shadow_id(&self) -> Option<String> {
        std::fs::read_dir(self.shadows())
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("sh-"))
    }

    /// What of shadow `id` is left: its cgroups, mounts under this data
    /// directory, its state and directories.
    fn leftovers(&self, id: &str) -> Vec<String> {
        let mut left = Vec::new();
        for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            for d in [
                h.path().join("backstop-shadow").join(id),
                h.path().join("unified/backstop-shadow").join(id),
            ] {
                if d.exists() {
                    left.push(d.display().to_string());
                }
            }
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        left.extend(
            info.lines()
                .filter(|l| l.contains(self.0.to_str().unwrap()))
                .map(String::from),
        );
        if let Ok(rd) = std::fs::read_dir(self.shadows()) {
            left.extend(rd.flatten().map(|e| e.path().display().to_string()));
        }
        left
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `Name:`-style field of /proc/PID/status.
fn status_field(pid: u32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Gone, or a zombie nobody reaped yet (it runs nothing).
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

/// The agent's creator child and its child (the shadow's init once the
/// creation is done; libcontainer's intermediate process before).
fn creator_and_init(agent_pid: u32) -> Option<(u32, u32)> {
    let creator = children(agent_pid)
        .into_iter()
        .find(|c| cmdline(*c).contains("shadow-exec"))?;
    let init = children(creator).into_iter().next()?;
    Some((creator, init))
}

/// `backstop-agent shadow run` on the rootfs, held `hold_ms` between
/// creating the container and starting it; its stderr to `log`.
fn start_agent(data: &Data, root: &Path, hold_ms: &str, log: &Path, cmd: &[&str]) -> Child {
    Command::new(agent())
        .env("BACKSTOP_TEST_HOLD_BEFORE_START_MS", hold_ms)
        .args([
            "--log",
            "info,libcgroups=error",
            "shadow",
            "--json",
            "--data",
        ])
        .arg(&data.0)
        .args(["run", "--root", root.to_str().unwrap(), "--"])
        .args(cmd)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn a_shadow_is_created_by_a_single_threaded_child_never_by_the_agent() {
    let Some(_g) = ebpf_or_skip("a_shadow_is_created_by_a_single_threaded_child") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("creator");
    let log = data.0.with_extension("log");
    // Held 10 s between create and start: the init is then blocked before
    // its exec, and the chain of parents can be read.
    let child = start_agent(&data, &root, "10000", &log, &["true"]);
    let agent_pid = child.id();
    let mut seen = None;
    // Once the agent logged the creation, libcontainer's intermediate
    // process is gone and the creator's one child is the init.
    assert!(
        eventually(Duration::from_secs(10), || {
            let logged = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("created by a single-threaded child");
            seen = creator_and_init(agent_pid);
            logged && seen.is_some()
        }),
        "no shadow-exec child with a child of its own appeared under agent {agent_pid}"
    );
    let (creator, init) = seen.unwrap();
    assert_eq!(
        status_field(init, "PPid").as_deref(),
        Some(creator.to_string().as_str()),
        "the init's parent is the creator child"
    );
    assert_eq!(
        status_field(creator, "PPid").as_deref(),
        Some(agent_pid.to_string().as_str()),
        "the creator is the agent's child"
    );
    assert!(
        !children(agent_pid).contains(&init),
        "the init must not be the agent's own child"
    );
    assert_eq!(
        status_field(creator, "Threads").as_deref(),
        Some("1"),
        "the creator is single-threaded"
    );
    let out = child.wait_with_output().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(out.status.success(), "shadow run failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cmd"]["exit_code"], 0, "{v}");
    let id = v["id"].as_str().unwrap();
    // What the creator read from /proc/self/status the moment before it
    // called libcontainer, as the agent logged it.
    let line = stderr
        .lines()
        .find(|l| l.contains("created by a single-threaded child") && l.contains(id))
        .unwrap_or_else(|| panic!("no creation line for {id} in: {stderr}"));
    for (k, want) in [
        ("creator", creator.to_string()),
        ("threads", "1".to_string()),
        ("init", init.to_string()),
        ("agent", agent_pid.to_string()),
    ] {
        assert!(
            line.contains(&format!("{k}={want}")),
            "{k} should be {want} in: {line}"
        );
    }
    assert!(dead(creator), "the creator outlived its shadow");
    assert_eq!(data.leftovers(id), Vec::<String>::new(), "{id} left things");
}

#[test]
fn a_killed_agent_takes_its_creator_and_shadow_with_it_and_the_next_sweeps() {
    let Some(_g) = ebpf_or_skip("a_killed_agent_takes_its_creator_and_shadow") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    // Killed between create and start (the init blocked in libcontainer,
    // the creator waiting to be told), and while the command runs.
    for (hold, phase) in [("60000", "created"), ("0", "running")] {
        let data = Data::new(&format!("kill-{phase}"));
        let log = data.0.with_extension("log");
        let mut child = start_agent(&data, &root, hold, &log, &["sleep", "300"]);
        let agent_pid = child.id();
        let mut seen = None;
        assert!(
            eventually(Duration::from_secs(20), || {
                let logged = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("created by a single-threaded child");
                seen = creator_and_init(agent_pid);
                logged
                    && seen.is_some()
                    && (phase == "created" || !cmdline(seen.unwrap().1).contains("shadow-exec"))
            }),
            "{phase}: the shadow never got there"
        );
        let (creator, init) = seen.unwrap();
        let id = data.shadow_id().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            eventually(Duration::from_secs(20), || dead(creator) && dead(init)),
            "{phase}: creator {creator} or init {init} outlived the agent"
        );
        // The next agent's sweep (what `run` and every `shadow run` do
        // first) removes the rest: state, cgroups, overlay, directories.
        let out = support::shadow_sweep(&data.0);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["swept"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == id.as_str()),
            "{phase}: {id} not swept: {v}"
        );
        assert_eq!(
            data.leftovers(&id),
            Vec::<String>::new(),
            "{phase}: {id} left things after the sweep"
        );
        let _ = std::fs::remove_file(&log);
    }
}
