//! `backstop deploy` end to end: the real controller and the real agent
//! over QUIC with mutual TLS, real probes, real dpkg in a copy of the
//! cached Debian rootfs as the target root, and a sentinel outside it.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;
#[allow(dead_code, reason = "shared with alerts.rs, which uses all of it")]
mod alerts {
    pub mod receiver;
}

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agents::{Fleet, Proc, Tmpfs};
use support::deploys::{
    Scratch, assert_replays, deploy_json, hello_manifest, kind, live_step, root_walk,
};
use support::leftovers::{ShadowWatch, assert_no_shadow_left};
use support::sentinel;
use support::{deb_file, ebpf_or_skip, eventually, failing_hello, rootfs};

#[test]
fn a_healthy_real_package_is_committed_through_the_controller() {
    let Some(_g) = ebpf_or_skip("deploy through the controller") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    run(&cached, "ok", None, false);
}

#[test]
fn a_failing_postinst_is_rolled_back_through_the_controller() {
    let Some(_g) = ebpf_or_skip("deploy rollback through the controller") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let scratch =
        PathBuf::from("/var/tmp").join(format!("backstop-e2e-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let bad = failing_hello(&scratch);
    run(&cached, "bad", Some(&bad), false);
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn a_dry_run_of_a_failing_install_rolls_nothing_back_and_stores_the_decision() {
    let Some(_g) = ebpf_or_skip("deploy dry run through the controller") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let scratch =
        PathBuf::from("/var/tmp").join(format!("backstop-e2e-debs-dry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let bad = failing_hello(&scratch);
    run(&cached, "dry", Some(&bad), true);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A dry run of hello on a root whose /usr/share/locale is a 64 KiB
/// tmpfs, too small for its translations. A real run would be refused by
/// the agent's room check before anything changed; a dry run never acts,
/// so the install runs, fails of ENOSPC and stays. What a real run would
/// have met is recorded: the would-be refusal as an event, and a decision
/// that rolls back on it, not acted on.
#[test]
fn a_dry_run_that_would_not_fit_runs_and_records_the_refusal() {
    let Some(_g) = ebpf_or_skip("dry run past the room check") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let s = Scratch::new(&cached, "dry-room");
    let _small = Tmpfs::with(s.root.join("usr/share/locale"), "size=64k");
    let manifest = hello_manifest(&s.base, &s.root, &deb_file("hello"));
    let fleet = Fleet::new("deploy-e2e-dry-room");
    let _serve = fleet.serve();
    let agent = Proc::spawn(&mut fleet.agent_cmd(&s.base.join("agent-data")));
    fleet.wait_connected(&agent);
    let (_, id) = deploy_json(&fleet, &agent, &manifest, &["--dry-run"]);
    let ended = eventually(Duration::from_mins(1), || {
        fleet.json(&["show", &id, "--json"])["deployment"]["state"] == "committed"
    });
    let shown = fleet.json(&["show", &id, "--json"]);
    assert!(
        ended,
        "a dry run ends committed: {shown}\nagent: {}",
        agent.log()
    );
    let events = shown["events"].as_array().unwrap();
    let would: Vec<&str> = events
        .iter()
        .filter(|e| kind(e) == "would_refuse")
        .map(|e| e["event"]["would_refuse"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(would.len(), 1, "{shown}");
    assert!(
        would[0].starts_with("no room") && would[0].contains("/usr/share/locale"),
        "{would:?}"
    );
    let (_, step) = live_step(&shown);
    assert!(
        step["output_tail"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "the install ran, and failed as the check said: {step}"
    );
    let decisions = shown["decisions"].as_array().unwrap();
    assert!(
        decisions.iter().all(|d| d["acted"] == false),
        "a dry run acts on nothing: {shown}"
    );
    let d = decisions
        .iter()
        .find(|d| d["reasons"][0]["kind"] == "no_room")
        .unwrap_or_else(|| panic!("no decision on the room: {shown}"));
    assert_eq!(d["verdict"], "rollback", "{d}");
    // (dpkg backs its own failed unpack out: no hello to look for.)
    assert!(
        !events.iter().any(|e| kind(e) == "rolled_back"),
        "nothing was rolled back: {shown}"
    );
    assert_replays(&fleet, &id);
}

/// Deploy hello (or `bad`, a failing build of it) through a real
/// controller and agent and check the outcome each should have.
#[expect(
    clippy::too_many_lines,
    reason = "one end-to-end deployment whose checks read in the order it runs"
)]
fn run(cached: &Path, name: &str, bad: Option<&Path>, dry: bool) {
    let fleet = Fleet::new(&format!("deploy-e2e-{name}"));
    let base =
        PathBuf::from("/var/tmp").join(format!("backstop-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let root = base.join("root");
    let copied = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(cached)
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the rootfs");
    let outside = base.join("sentinel");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"outside the root").unwrap();
    let before = sentinel::walk(&outside);
    let deb = bad.map_or(deb_file("hello"), Path::to_path_buf);
    // The shadow runs beside live, over the snapshot (never the live root).
    let manifest = support::deploys::hello_manifest_shadowed(&base, &root, &deb);
    let root_before = root_walk(&root);
    // Alertmanager on loopback, through the controller's config file.
    let rt = support::fleet::runtime();
    let rx = rt.block_on(alerts::receiver::Receiver::start(&[]));
    let config = base.join("controller.toml");
    let sink = format!(
        "[alerts]\ninitial_backoff = \"20ms\"\n[[alerts.sink]]\ntype = \"alertmanager\"\nname = \"am\"\nurl = \"{}\"\n",
        rx.url()
    );
    std::fs::write(&config, sink).unwrap();
    let _serve = fleet.serve_with(&["--config", config.to_str().unwrap()]);
    let agent = Proc::spawn(&mut fleet.agent_cmd(&base.join("agent-data")));
    fleet.wait_connected(&agent);
    let shadows = ShadowWatch::start(&base.join("agent-data"));
    let mut deploy = fleet.backstop();
    let target = manifest.to_str().unwrap();
    deploy.args(["deploy", target, "--host", "web-1", "--wait", "--json"]);
    if dry {
        deploy.arg("--dry-run");
    }
    let out = deploy.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A dry run never acts: the failing install stays, committed.
    let committed = bad.is_none() || dry;
    assert_eq!(
        out.status.code(),
        Some(i32::from(!committed)),
        "{stdout}\n{}\nagent: {}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let id = serde_json::from_str::<serde_json::Value>(stdout.lines().next().unwrap()).unwrap()
        ["deployment"]
        .as_str()
        .unwrap()
        .to_string();
    let want = if committed {
        "committed"
    } else {
        "rolled_back"
    };
    assert!(eventually(Duration::from_secs(10), || {
        fleet.json(&["show", &id, "--json"])["deployment"]["state"] == want
    }));
    let shown = fleet.json(&["show", &id, "--json"]);
    if dry {
        let d = &shown["decisions"][0];
        assert_eq!(
            (d["verdict"].as_str(), d["acted"].as_bool()),
            (Some("rollback"), Some(false)),
            "{shown}"
        );
        assert!(d["at_ms"].as_i64().unwrap() > 0, "stored with its time");
        assert!(
            root.join("usr/bin/hello").exists(),
            "nothing was rolled back"
        );
    } else if committed {
        assert_shadow_passed(&shown);
        let hello = Command::new("chroot")
            .arg(&root)
            .arg("hello")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&hello.stdout), "Hello, world!\n");
    } else {
        let d = &shown["decisions"][0];
        assert_eq!(
            (d["verdict"].as_str(), d["acted"].as_bool()),
            (Some("rollback"), Some(true)),
            "{shown}"
        );
        let after = root_walk(&root);
        let diffs: Vec<_> = root_before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(
                after
                    .keys()
                    .filter(|k| !root_before.contains_key(*k))
                    .cloned(),
            )
            .take(20)
            .collect();
        assert!(
            diffs.is_empty(),
            "the root differs after the rollback: {diffs:?}"
        );
        assert_bundle(&fleet, &id);
    }
    sentinel::assert_untouched(&outside, &before, "deploy");
    assert_replays(&fleet, &id);
    let ids = shadows.stop();
    assert!(!ids.is_empty(), "no shadow ran");
    for s in &ids {
        assert_no_shadow_left(&base.join("agent-data"), s);
    }
    alerted(&fleet, &rx, &id, !committed);
    drop(agent);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn an_agent_killed_mid_install_rolls_it_back_at_restart_and_reports_interrupted() {
    let Some(_g) = ebpf_or_skip("kill -9 of the agent mid-install") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let fleet = Fleet::new("deploy-e2e-kill");
    let base = PathBuf::from("/var/tmp").join(format!("backstop-e2e-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let root = base.join("root");
    let copied = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the rootfs");
    // A step that changes the root, then waits to be killed.
    let manifest = base.join("half.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "half"
root = {:?}
[artifact]
debs = [{:?}]
[[steps]]
name = "half"
run = ["sh", "-c", "echo half > /usr/bin/backstop-half; rm /usr/bin/touch; exec sleep 600"]
timeout = "15m"
[scope]
paths = ["/usr/bin"]
[shadow]
enabled = false
"#,
            root.display().to_string(),
            deb_file("hello").display().to_string()
        ),
    )
    .unwrap();
    let root_before = root_walk(&root);
    let _serve = fleet.serve();
    let data = base.join("agent-data");
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
    assert!(
        eventually(Duration::from_mins(1), || !root
            .join("usr/bin/touch")
            .exists()),
        "the step never ran: {}",
        agent.log()
    );
    agent.kill9();
    let restarted = Proc::spawn(&mut fleet.agent_cmd(&data));
    assert!(
        eventually(Duration::from_mins(1), || {
            fleet.json(&["show", &id, "--json"])["deployment"]["state"] == "interrupted"
        }),
        "never reported interrupted: {}\n{}",
        fleet.json(&["show", &id, "--json"]),
        restarted.log()
    );
    let shown = fleet.json(&["show", &id, "--json"]);
    let events = shown["events"].as_array().unwrap();
    let last = events.last().expect("events");
    assert_eq!(last["seq"], i64::MAX, "{shown}");
    let reason = last["event"]["interrupted"]["report"]["reason"].as_str();
    assert!(reason.is_some_and(|r| r.contains("interrupted")), "{shown}");
    let after = root_walk(&root);
    let diffs: Vec<_> = root_before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(
            after
                .keys()
                .filter(|k| !root_before.contains_key(*k))
                .cloned(),
        )
        .take(20)
        .collect();
    assert!(
        diffs.is_empty(),
        "the root differs after recovery: {diffs:?}"
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&base);
}

/// The shadow ran beside the committed install and its report is stored:
/// its dpkg and its `greets` test (the hello it installed) passed, and its
/// teardown left nothing it knew of.
fn assert_shadow_passed(shown: &serde_json::Value) {
    let events = shown["events"].as_array().unwrap();
    let report = events.iter().find(|e| kind(e) == "shadow").map_or_else(
        || panic!("no shadow report stored: {shown}"),
        |e| &e["event"]["shadow"]["report"],
    );
    let passed = |v: &serde_json::Value| {
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|s| s["exit_code"] == 0))
    };
    assert!(
        passed(&report["steps"]) && passed(&report["tests"]),
        "{report:#}"
    );
    assert_eq!(report["tests"][0]["name"], "greets", "{report:#}");
    assert_eq!(
        report["cleanup_problems"],
        serde_json::json!([]),
        "{report:#}"
    );
}

/// The Alertmanager receiver got exactly the rollback's alert, or (no
/// rollback) nothing: by the final state every alert is queued on disk.
fn alerted(fleet: &Fleet, rx: &alerts::receiver::Receiver, id: &str, rollback: bool) {
    let queue = fleet.data.join("alerts/queue/am");
    let firing =
        std::fs::read_dir(fleet.data.join("alerts/firing")).map_or(0, std::iter::Iterator::count);
    if !rollback {
        let queued = std::fs::read_dir(&queue).map_or(0, std::iter::Iterator::count);
        assert_eq!((queued, firing), (0, 0), "no alert fires");
        assert!(rx.got().is_empty(), "no alert fires: {:?}", rx.got());
        return;
    }
    assert_eq!(firing, 1, "the rollback's alert is firing");
    assert!(
        eventually(Duration::from_secs(30), || !rx.got().is_empty()),
        "the receiver never got the alert"
    );
    let got = &rx.got()[0];
    assert_eq!(
        (got.method.as_str(), got.path.as_str()),
        ("POST", "/api/v2/alerts")
    );
    let body = got.json();
    let alerts = body.as_array().expect("postableAlerts");
    assert_eq!(alerts.len(), 1, "{body}");
    let want = serde_json::json!({
        "alertname": "BackstopRollback", "host": "web-1", "deployment": id,
        "package": "hello", "decision": "rollback",
    });
    assert_eq!(alerts[0]["labels"], want, "{body}");
    let reasons = alerts[0]["annotations"]["reasons"].as_str().unwrap_or("");
    assert!(
        reasons.contains("install"),
        "the reasons name the step: {body}"
    );
}

/// The rolled-back deployment's diagnostics: a 0600 bundle holding the
/// real install's process tree and step output, and a report that names
/// the failing step and the decision.
fn assert_bundle(fleet: &Fleet, id: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = fleet.data.join(format!("bundles/{id}.tar.gz"));
    assert!(
        eventually(Duration::from_secs(30), || path.exists()),
        "no bundle at {}",
        path.display()
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let steps = Command::new("tar")
        .arg("-xzOf")
        .arg(&path)
        .arg(format!("{id}/steps.json"))
        .output()
        .unwrap();
    let steps = String::from_utf8_lossy(&steps.stdout);
    assert!(steps.contains("\"install\""), "{steps}");
    let tree = Command::new("tar")
        .arg("-xzOf")
        .arg(&path)
        .arg(format!("{id}/process_tree.json"))
        .output()
        .unwrap();
    let tree: serde_json::Value = serde_json::from_slice(&tree.stdout).unwrap();
    assert!(
        tree["processes"].as_array().is_some_and(|p| !p.is_empty()),
        "the real install's processes: {tree}"
    );
    let r = fleet.json(&["report", id, "--json"]);
    assert_eq!(r["first_failure"]["name"], "install", "{r}");
    assert_eq!(r["decision"]["verdict"], "rollback");
    assert_eq!(r["bundle"], path.display().to_string());
}
