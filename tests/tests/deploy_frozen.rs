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
//! Checked to fail without the fix: with the overlay's lower layer the
//! live root (the agent before `agent/src/shadow/frozen.rs`), this test
//! fails: the shadow's postinst prints "LEAK: live's rewrite of
//! /etc/frozen/conf is visible in the shadow", its step exits 1, and the
//! deployment is rolled back for a failed shadow step.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::agents::{Fleet, Proc};
use support::deploys::{Scratch, assert_replays, build_deb, kind};
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

fn manifest(root: &Path, deb: &Path) -> String {
    format!(
        r#"name = "frozen-probe"
root = {root:?}
mode = "concurrent"
[artifact]
debs = [{deb:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
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

#[test]
fn a_concurrent_shadow_never_sees_what_live_changes_in_the_scope() {
    let Some(_g) = ebpf_or_skip("a frozen shadow beside a live install") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let scratch = Scratch::new(&cached, "frozen");
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
    std::fs::write(&path, manifest(root, &deb)).unwrap();

    let fleet = Fleet::new("deploy-frozen");
    let _serve = fleet.serve();
    let data = scratch.base.join("agent-data");
    let agent = Proc::spawn(&mut fleet.agent_cmd(&data));
    fleet.wait_connected(&agent);
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
    let shadow = shadow.expect("the shadow's report is stored");
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
