//! A concurrent shadow sees the scope as the deployment's snapshot
//! recorded it, never the live tree (issue 15): the real controller and
//! agent over QUIC, real dpkg in a copy of the cached Debian rootfs, a
//! real youki shadow beside the live install.
//!
//! The attack: one package whose postinst behaves differently in the two
//! universes. Live rewrites a scope file in place (`/etc/frozen/conf`),
//! creates a new one in a scope directory (`/etc/frozen/live-only`), then
//! flips a flag outside the scope (`/opt/frozen-signal`, rewritten in
//! place). The shadow waits for that flag (outside the scope it still sees
//! the live root, so the flag is how it knows live has written), then
//! fails if it can see either of live's changes. So the deployment commits
//! only if the shadow's view of the scope held still while live changed
//! it.
//!
//! Checked to fail without the fix: run against the agent before
//! `agent/src/shadow/frozen.rs` (the overlay's lower layer the live
//! root), the shadow's postinst printed "shadow sees conf: rewritten" and
//! "LEAK: live's new file /etc/frozen/live-only is visible in the
//! shadow", its dpkg exited 1, and the deployment was rolled back for a
//! failed shadow step.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::agents::{Fleet, Proc};
use support::deploys::{Scratch, assert_replays, build_deb, differences, kind, root_walk};
use support::leftovers::{ShadowWatch, assert_no_shadow_left};
use support::{ebpf_or_skip, eventually, rootfs, sentinel};

/// Run by dpkg in both universes; `/.backstop-shadow` exists only in the
/// shadow.
const POSTINST: &str = r#"#!/bin/sh
if [ -d /.backstop-shadow ]; then
  i=0
  while [ "$(cat /opt/frozen-signal)" != go ]; do
    i=$((i+1))
    if [ $i -gt 1200 ]; then echo "shadow: never saw live's signal"; exit 3; fi
    sleep 0.1
  done
  echo "shadow sees conf: $(cat /etc/frozen/conf)"
  if [ -e /etc/frozen/live-only ]; then
    echo "LEAK: live's new file /etc/frozen/live-only is visible in the shadow"; exit 1
  fi
  if [ "$(cat /etc/frozen/conf)" != original ]; then
    echo "LEAK: live's rewrite of /etc/frozen/conf is visible in the shadow"; exit 1
  fi
else
  echo rewritten > /etc/frozen/conf
  echo live > /etc/frozen/live-only
  echo go > /opt/frozen-signal
fi
"#;

fn manifest(root: &Path, deb: &Path, run: &str) -> String {
    format!(
        r#"name = "frozen-probe"
root = {root:?}
mode = "concurrent"
[artifact]
debs = [{deb:?}]
[[steps]]
name = "install"
run = {run}
timeout = "3m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}
[scope]
paths = ["/etc/frozen", "/usr/share/doc", "/var/lib/dpkg", "/var/log"]
[shadow]
enabled = true
[monitor]
period = "0s"
"#,
        root = root.display().to_string(),
        deb = deb.display().to_string(),
    )
}

const DPKG: &str = r#"["dpkg", "-i", "{artifact}"]"#;

/// A scratch root with the scope file and the flag, the probe package, a
/// manifest whose step is `run`, a sentinel outside the root, and a
/// controller with a connected agent.
struct Setup {
    scratch: Scratch,
    outside: std::path::PathBuf,
    before: sentinel::Walk,
    manifest: std::path::PathBuf,
    data: std::path::PathBuf,
    fleet: Fleet,
    _serve: Proc,
    agent: Proc,
}

fn setup(cached: &Path, name: &str, run: &str) -> Setup {
    let scratch = Scratch::new(cached, name);
    let root = &scratch.root;
    std::fs::create_dir_all(root.join("etc/frozen")).unwrap();
    std::fs::write(root.join("etc/frozen/conf"), "original\n").unwrap();
    std::fs::write(root.join("opt/frozen-signal"), "wait\n").unwrap();
    let outside = scratch.base.join("sentinel");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"outside the root").unwrap();
    let before = sentinel::walk(&outside);
    let debs = scratch.base.join("debs");
    std::fs::create_dir_all(&debs).unwrap();
    let files = [("/usr/share/doc/frozen-probe/README", "a probe\n")];
    let deb = build_deb(&debs, "frozen-probe", "1.0", &files, Some(POSTINST));
    let path = scratch.base.join("frozen.toml");
    std::fs::write(&path, manifest(root, &deb, run)).unwrap();
    let fleet = Fleet::new(&format!("deploy-{name}"));
    let serve = fleet.serve();
    let data = scratch.base.join("agent-data");
    let agent = Proc::spawn(&mut fleet.agent_cmd(&data));
    fleet.wait_connected(&agent);
    Setup {
        outside,
        before,
        manifest: path,
        data,
        fleet,
        _serve: serve,
        agent,
        scratch,
    }
}

#[test]
fn a_concurrent_shadow_never_sees_what_live_changes_in_the_scope() {
    let Some(_g) = ebpf_or_skip("a frozen shadow beside a live install") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let Setup {
        scratch,
        outside,
        before,
        manifest: path,
        data,
        fleet,
        agent,
        _serve,
    } = setup(&cached, "frozen", DPKG);
    let root = &scratch.root;
    let watch = ShadowWatch::start(&data);
    let out = fleet.cli(&[
        "deploy",
        path.to_str().unwrap(),
        "--host",
        "web-1",
        "--wait",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let first: serde_json::Value =
        serde_json::from_str(stdout.lines().next().unwrap_or("null")).unwrap();
    let id = first["deployment"].as_str().unwrap().to_string();
    let committed = eventually(Duration::from_secs(30), || {
        fleet.json(&["show", &id, "--json"])["deployment"]["state"] == "committed"
    });
    let shown = fleet.json(&["show", &id, "--json"]);
    let events = shown["events"].as_array().unwrap();
    let shadow = events
        .iter()
        .find(|e| kind(e) == "shadow")
        .map(|e| e["event"]["shadow"]["report"].clone());
    assert!(
        committed && out.status.success(),
        "not committed: the shadow saw live's changes?\nshadow: {shadow:#?}\n{stdout}\nagent: {}",
        agent.log()
    );
    let shadow = shadow.unwrap_or_else(|| {
        panic!(
            "committed without the shadow's report: {shown}\nagent: {}",
            agent.log()
        )
    });
    let step = &shadow["steps"][0];
    assert_eq!(step["exit_code"], 0, "{shadow:#}");
    assert!(
        step["output_tail"]
            .as_str()
            .unwrap()
            .contains("shadow sees conf: original"),
        "the shadow read the snapshot's content: {shadow:#}"
    );
    assert_eq!(
        shadow["cleanup_problems"],
        serde_json::json!([]),
        "{shadow:#}"
    );
    // Live's changes are the host's: committed, they stay.
    assert_eq!(
        std::fs::read_to_string(root.join("etc/frozen/conf")).unwrap(),
        "rewritten\n"
    );
    assert!(root.join("etc/frozen/live-only").exists());
    assert!(root.join("usr/share/doc/frozen-probe/README").exists());
    sentinel::assert_untouched(&outside, &before, "a frozen shadow's deployment");
    let decisions = assert_replays(&fleet, &id);
    assert_eq!(decisions[0]["verdict"], "commit", "{decisions:?}");
    let ids = watch.stop();
    assert!(!ids.is_empty(), "no shadow ran under {}", data.display());
    for s in &ids {
        assert_no_shadow_left(&data, s);
    }
    drop(agent);
}

/// Live changes the scope and waits to be killed; the shadow, over its
/// frozen layer, waits too.
const HOLD: &str = r#"["sh", "-c", "if [ ! -d /.backstop-shadow ]; then echo half > /etc/frozen/conf; fi; exec sleep 600"]"#;

#[test]
fn a_killed_agent_leaves_a_frozen_shadow_the_next_one_removes() {
    let Some(_g) = ebpf_or_skip("kill -9 of an agent running a frozen shadow") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let s = setup(&cached, "frozen-kill", HOLD);
    let root_before = root_walk(&s.scratch.root);
    let watch = ShadowWatch::start(&s.data);
    let out = s
        .fleet
        .cli(&["deploy", s.manifest.to_str().unwrap(), "--host", "web-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let data = std::fs::canonicalize(&s.data).unwrap();
    let frozen_mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .any(|m| Path::new(m).starts_with(&data) && m.ends_with("/frozen"))
    };
    // The shadow runs its step (its init has exec'd): an agent killed
    // between a container's create and start leaves an init that is still
    // a clone of the agent, holding the agent's lock (see the README).
    let shadow_runs = || {
        let hierarchies: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|h| h.path())
            .chain([std::path::PathBuf::from("/sys/fs/cgroup")])
            .collect();
        watch.seen().iter().any(|id| {
            hierarchies.iter().any(|h| {
                let procs = h.join("backstop-shadow").join(id).join("cgroup.procs");
                std::fs::read_to_string(procs)
                    .unwrap_or_default()
                    .lines()
                    .any(|p| {
                        std::fs::read(format!("/proc/{p}/cmdline"))
                            .is_ok_and(|c| c.starts_with(b"sleep\0"))
                    })
            })
        })
    };
    let changed =
        || std::fs::read_to_string(s.scratch.root.join("etc/frozen/conf")).unwrap() == "half\n";
    assert!(
        eventually(Duration::from_mins(1), || frozen_mounted()
            && changed()
            && shadow_runs()),
        "live never changed the scope beside a mounted frozen layer: {}",
        s.agent.log()
    );
    let mut agent = s.agent;
    agent.kill9();
    let restarted = Proc::spawn(&mut s.fleet.agent_cmd(&s.data));
    assert!(
        eventually(Duration::from_mins(1), || {
            s.fleet.json(&["show", &id, "--json"])["deployment"]["state"] == "interrupted"
        }),
        "never reported interrupted: {}\n{}",
        s.fleet.json(&["show", &id, "--json"]),
        restarted.log()
    );
    let ids = watch.stop();
    assert!(!ids.is_empty(), "no shadow ran");
    for shadow in &ids {
        assert_no_shadow_left(&s.data, shadow);
    }
    let diffs = differences(&root_before, &root_walk(&s.scratch.root));
    assert!(
        diffs.is_empty(),
        "the root differs after recovery: {diffs:?}"
    );
    sentinel::assert_untouched(&s.outside, &s.before, "a killed frozen shadow");
    drop(restarted);
}
