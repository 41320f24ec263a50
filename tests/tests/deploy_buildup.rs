//! A fault that builds up, end to end: a postinst that fills the scope's
//! filesystem steadily until ENOSPC is rolled back on the projected
//! exhaustion, before the step would have failed on its own, and the
//! stored timeline shows the lead time. Real controller and agent over
//! QUIC, real probes, real dpkg in a copy of the cached Debian rootfs.
//!
//! The filesystem that fills is a 64 MiB tmpfs of its own at
//! `<root>/var/lib/bsfill` (unmounted when the test ends, even on a
//! panic), so the fill never touches the host's disks. No model is
//! installed: the default model alarms on nearly every window on other
//! hosts (issue 16), so "the model said so" would prove nothing; the
//! decision must come from the free-space trend alone, and a healthy
//! control with the same manifest, writing a quarter of the space at the
//! same rate and stopping, must commit.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::agents::{Fleet, Proc};
use support::deploys::{assert_exhaustion, assert_replays, deploy_json, live_step, root_walk};
use support::{deb_file, ebpf_or_skip, eventually, rootfs};

const MIB: f64 = 1024.0 * 1024.0;
/// Where the fill goes, inside the root.
const FILL: &str = "var/lib/bsfill";

/// The postinst: 1 MiB every half second into the tmpfs, to `limit` MiB
/// (none: until a write fails, then exit 1 as a real install would).
fn postinst(limit: Option<u32>) -> String {
    let cond = limit.map_or_else(|| "true".to_string(), |l| format!("[ $i -lt {l} ]"));
    format!(
        "#!/bin/sh\ni=0\nwhile {cond}; do\n  if ! yes 0123456789abcdef | head -c 1048576 > /{FILL}/chunk.$i; then\n    echo \"disk full after $i MiB\" >&2\n    exit 1\n  fi\n  i=$((i+1))\n  sleep 0.5\ndone\necho \"wrote $i MiB\"\n"
    )
}

/// hello repacked with `postinst(limit)`.
fn filling_hello(dir: &Path, limit: Option<u32>) -> PathBuf {
    let work = dir.join(format!("repack-{limit:?}"));
    let ok = Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb_file("hello"))
        .arg(&work)
        .status()
        .unwrap();
    assert!(ok.success(), "unpacking hello");
    let script = work.join("DEBIAN/postinst");
    std::fs::write(&script, postinst(limit)).unwrap();
    std::fs::set_permissions(
        &script,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let deb = dir.join(format!("hello-fill-{limit:?}.deb"));
    let built = Command::new("dpkg-deb")
        .arg("-b")
        .arg(&work)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    deb
}

/// A scratch root with a 64 MiB tmpfs at [`FILL`]; unmounted and removed
/// when dropped.
struct Scratch {
    base: PathBuf,
    root: PathBuf,
}

impl Scratch {
    fn new(cached: &Path, name: &str) -> Scratch {
        let base = PathBuf::from("/var/tmp").join(format!(
            "backstop-e2e-buildup-{name}-{}",
            std::process::id()
        ));
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
        let s = Scratch { base, root };
        let fill = s.root.join(FILL);
        std::fs::create_dir_all(&fill).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs"])
            .arg(&fill)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", fill.display());
        s
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.root.join(FILL))
            .status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// The outcome of one deployment of `deb` into `s`.
struct Deployed {
    id: String,
    shown: Value,
    fleet: Fleet,
    _agent: Proc,
    _serve: Proc,
}

fn deploy(s: &Scratch, name: &str, deb: &Path, dry: bool) -> Deployed {
    let fleet = Fleet::new(&format!("buildup-{name}"));
    let manifest = s.base.join("fill.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "hello"
root = {:?}
[artifact]
debs = [{:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "3m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}
[scope]
paths = ["/usr/bin", "/usr/share/doc", "/usr/share/info", "/usr/share/locale", "/usr/share/man", "/var/lib/dpkg", "/var/log", "/{FILL}"]
[shadow]
enabled = false
[monitor]
period = "5s"
"#,
            s.root.display().to_string(),
            deb.display().to_string()
        ),
    )
    .unwrap();
    let serve = fleet.serve();
    // No model under DATA/models: see the module doc.
    assert!(!fleet.data.join("models/current").exists());
    let agent = Proc::spawn(&mut fleet.agent_cmd(&s.base.join(format!("agent-{name}"))));
    fleet.wait_connected(&agent);
    let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
    let (_, id) = deploy_json(&fleet, &agent, &manifest, extra);
    let ended = eventually(Duration::from_secs(30), || {
        let st = fleet.json(&["show", &id, "--json"])["deployment"]["state"].clone();
        st == "committed" || st == "rolled_back"
    });
    assert!(ended, "{id} never ended: {}", agent.log());
    let shown = fleet.json(&["show", &id, "--json"]);
    assert_replays(&fleet, &id);
    Deployed {
        id,
        shown,
        fleet,
        _agent: agent,
        _serve: serve,
    }
}

/// The live windows' free space: the agent measured the tmpfs (64 MiB),
/// not the root's filesystem.
fn free_space(fleet: &Fleet, id: &str) -> Vec<f64> {
    let free: Vec<f64> = fleet
        .windows(id)
        .iter()
        .filter(|w| w["stream"] == "live")
        .map(|w| w["host"]["disk_free_bytes"].as_f64().unwrap())
        .collect();
    assert!(
        free.iter().all(|f| *f <= 64.0 * MIB),
        "the host's disk_free_bytes is not the scope's 64 MiB tmpfs: {free:?}"
    );
    free
}

#[test]
fn a_dry_run_of_a_disk_filling_postinst_decides_before_the_step_fails() {
    let Some(_g) = ebpf_or_skip("buildup dry run") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let s = Scratch::new(&cached, "dry");
    let deb = filling_hello(&s.base, None);
    let d = deploy(&s, "dry", &deb, true);
    let shown = &d.shown;
    assert_eq!(
        shown["deployment"]["state"], "committed",
        "a dry run never acts"
    );
    let decision = &shown["decisions"][0];
    assert_exhaustion(decision, "disk", (0.2, 2.5));
    assert_eq!(decision["acted"], false);
    let (ended, step) = live_step(shown);
    assert_eq!(step["exit_code"], 1, "the step failed on its own: {shown}");
    assert!(
        step["output_tail"].as_str().unwrap().contains("disk full"),
        "{step}"
    );
    let at = decision["at_ms"].as_i64().unwrap();
    assert!(at < ended, "decision at {at}, step failed at {ended}");
    let lead = &shown["lead"];
    assert_eq!(lead["step_end"], "recorded", "{lead}");
    assert_eq!(lead["step_end_ms"], ended);
    assert_eq!(lead["lead_ms"], ended - at);
    assert_eq!(lead["decision_ms"], at);
    assert!(lead["first_alarm_ms"].as_i64().unwrap() <= at, "{lead}");
    let free = free_space(&d.fleet, &d.id);
    assert!(free.iter().any(|f| *f < MIB), "filled to the end: {free:?}");
    eprintln!(
        "dry run: decided {} ms after the step began, {} ms before it failed",
        at - (ended - step["duration_ms"].as_f64().unwrap().round() as i64),
        ended - at
    );
}

#[test]
fn a_disk_filling_postinst_is_rolled_back_before_it_fails_with_the_lead_time_stored() {
    let Some(_g) = ebpf_or_skip("buildup rollback") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let s = Scratch::new(&cached, "real");
    let deb = filling_hello(&s.base, None);
    let before = root_walk(&s.root);
    let d = deploy(&s, "real", &deb, false);
    let shown = &d.shown;
    assert_eq!(shown["deployment"]["state"], "rolled_back", "{shown}");
    let decision = &shown["decisions"][0];
    assert_exhaustion(decision, "disk", (0.2, 2.5));
    assert_eq!(decision["acted"], true);
    let at = decision["at_ms"].as_i64().unwrap();
    // Ended by the rollback: killed, no exit code, no ENOSPC seen.
    let (ended, step) = live_step(shown);
    assert_eq!(step["exit_code"], Value::Null, "killed, not exited: {step}");
    assert_eq!(step["timed_out"], false);
    assert!(
        !step["output_tail"].as_str().unwrap().contains("disk full"),
        "{step}"
    );
    assert!(ended >= at, "the step ended after the decision");
    let free = free_space(&d.fleet, &d.id);
    let last = free.last().copied().unwrap();
    assert!(last > MIB, "room was left when it was killed: {free:?}");
    assert!(
        free.first().unwrap() - last > 8.0 * MIB,
        "it did fill: {free:?}"
    );
    // The timeline: first alarm <= decision < restored, and the lead to
    // the projected end of the step.
    let lead = &shown["lead"];
    let restored = lead["restored_ms"].as_i64().unwrap();
    assert!(lead["first_alarm_ms"].as_i64().unwrap() <= at, "{lead}");
    assert!(at < restored, "{lead}");
    assert_eq!(lead["step_end"], "projected", "{lead}");
    assert!(lead["lead_ms"].as_i64().unwrap() > 0, "{lead}");
    eprintln!("rollback: {lead}; reason {}", decision["reasons"][0]);
    let text = String::from_utf8_lossy(&d.fleet.cli(&["show", &d.id]).stdout).into_owned();
    assert!(
        text.contains("lead time") && text.contains("projected end"),
        "{text}"
    );
    let report = d.fleet.json(&["report", &d.id, "--json"]);
    let moments: Vec<&str> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["what"].as_str().unwrap())
        .collect();
    for want in ["decision", "restored", "step_would_end"] {
        assert!(moments.contains(&want), "{want} missing: {moments:?}");
    }
    // The root, the tmpfs included, is as before by a full walk.
    let after = root_walk(&s.root);
    let diffs: Vec<&String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k)
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .take(20)
        .collect();
    assert!(
        diffs.is_empty(),
        "the root differs after the rollback: {diffs:?}"
    );
}

#[test]
fn a_postinst_that_writes_a_quarter_of_the_disk_and_stops_is_committed() {
    let Some(_g) = ebpf_or_skip("buildup control") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let s = Scratch::new(&cached, "control");
    let deb = filling_hello(&s.base, Some(16));
    let d = deploy(&s, "control", &deb, false);
    let shown = &d.shown;
    assert_eq!(shown["deployment"]["state"], "committed", "{shown}");
    let decisions = shown["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{shown}");
    assert_eq!(decisions[0]["verdict"], "commit", "{shown}");
    let (_, step) = live_step(shown);
    assert_eq!(step["exit_code"], 0, "{step}");
    let free = free_space(&d.fleet, &d.id);
    let fell = free.first().unwrap() - free.last().unwrap();
    assert!(
        fell > 12.0 * MIB,
        "the control did write, the same way: {free:?}"
    );
    assert_eq!(
        std::fs::read_dir(s.root.join(FILL)).unwrap().count(),
        16,
        "its files stay"
    );
}
