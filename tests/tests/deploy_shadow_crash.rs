//! kill -9 of the agent while a deployment's shadow runs, through the
//! real controller and the real agent on a copy of the cached Debian
//! rootfs: the shadow's creator child and its container die with the
//! agent, the restarted agent rolls the live install back and reports it
//! interrupted, and nothing of the shadow is left (processes, cgroups,
//! mounts, container state, directories). Checks look at this test's own
//! shadow id and data directory only.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::agents::{Fleet, Proc};
use support::deploys::{Scratch, differences, root_walk};
use support::{children, deb_file, ebpf_or_skip, eventually, rootfs};

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
}

/// The agent's shadow creator and the shadow's init, once the init runs
/// the step runner (it exec'd: its command line is no longer the agent's).
fn running_shadow(agent: u32) -> Option<(u32, u32)> {
    let creator = children(agent)
        .into_iter()
        .find(|c| cmdline(*c).contains("shadow-exec"))?;
    let init = children(creator)
        .into_iter()
        .find(|i| !cmdline(*i).contains("shadow-exec") && !cmdline(*i).is_empty())?;
    Some((creator, init))
}

/// What of shadow `id` run from agent data `data` is left.
fn leftovers(data: &Path, id: &str) -> Vec<String> {
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
    let shadows = data.join("agent/shadows");
    left.extend(
        info.lines()
            .filter(|l| l.contains(shadows.to_str().unwrap()))
            .map(String::from),
    );
    for p in [shadows.join(id), shadows.join("youki").join(id)] {
        if p.exists() {
            left.push(p.display().to_string());
        }
    }
    left
}

#[test]
fn an_agent_killed_mid_shadow_leaves_nothing_of_it_after_restart() {
    let Some(_g) = ebpf_or_skip("kill -9 of the agent mid-shadow") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let fleet = Fleet::new("deploy-shadow-kill");
    let s = Scratch::new(&cached, "shadow-kill");
    let manifest = s.base.join("half.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "half-shadowed"
root = {:?}
[artifact]
debs = [{:?}]
[[steps]]
name = "half"
run = ["sh", "-c", "echo half > /usr/bin/backstop-half; exec sleep 600"]
timeout = "15m"
[scope]
paths = ["/usr/bin"]
[shadow]
enabled = true
"#,
            s.root.display().to_string(),
            deb_file("hello").display().to_string()
        ),
    )
    .unwrap();
    let root_before = root_walk(&s.root);
    let _serve = fleet.serve();
    let data = s.base.join("agent-data");
    let mut agent = Proc::spawn(&mut fleet.agent_cmd(&data));
    fleet.wait_connected(&agent);
    let out = fleet
        .backstop()
        .args(["deploy", manifest.to_str().unwrap(), "--host", "web-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let agent_pid = agent.child.id();
    let mut seen = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            seen = running_shadow(agent_pid);
            seen.is_some() && s.root.join("usr/bin/backstop-half").exists()
        }),
        "the live step and the shadow never both ran: {}",
        agent.log()
    );
    let (creator, init) = seen.unwrap();
    let shadow_id = std::fs::read_dir(data.join("agent/shadows"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("sh-"))
        .unwrap();
    agent.kill9();
    assert!(
        eventually(Duration::from_secs(30), || dead(creator) && dead(init)),
        "the shadow's creator {creator} or init {init} outlived the agent"
    );
    let restarted = Proc::spawn(&mut fleet.agent_cmd(&data));
    assert!(
        eventually(Duration::from_mins(1), || {
            fleet.json(&["show", &id, "--json"])["deployment"]["state"] == "interrupted"
        }),
        "never reported interrupted: {}\n{}",
        fleet.json(&["show", &id, "--json"]),
        restarted.log()
    );
    assert!(
        eventually(Duration::from_secs(30), || leftovers(&data, &shadow_id)
            .is_empty()),
        "shadow {shadow_id} left: {:?}\n{}",
        leftovers(&data, &shadow_id),
        restarted.log()
    );
    let diffs = differences(&root_before, &root_walk(&s.root));
    assert!(
        diffs.is_empty(),
        "the root differs after recovery: {diffs:?}"
    );
    // No controller decision was made (the agent died first), and replay
    // says so: nothing to reproduce, exit 0, no verdict line.
    let shown = fleet.json(&["show", &id, "--json"]);
    assert_eq!(shown["decisions"].as_array().unwrap().len(), 0, "{shown}");
    let replay = fleet.cli(&["replay", &id, "--json"]);
    assert_eq!(replay.status.code(), Some(0), "{replay:?}");
    assert!(replay.stdout.is_empty(), "{replay:?}");
    assert!(
        String::from_utf8_lossy(&replay.stderr).contains("no controller decision"),
        "{replay:?}"
    );
    drop(restarted);
}
