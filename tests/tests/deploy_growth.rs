//! Memory growing, end to end (issue 15's "a fault that builds up"): a
//! postinst whose working set grows steadily towards the live install's
//! memory limit (`monitor.memory_limit_mb = 64`) is decided on before the
//! kernel's OOM killer ends the step, and the stored timeline shows the
//! lead. Real controller and agent over QUIC, real probes, real dpkg in a
//! scratch copy of the cached Debian rootfs, the real memory cgroup (v2
//! memory.max, or on a hybrid host the v1 memory group the agent makes).
//!
//! The growth is anonymous memory, not page cache: dash sets one more
//! 1 MiB shell variable every half second (python3 is not in minbase, and
//! a file written to a tmpfs is page cache, which the limit reclaims
//! rather than kills for). One variable each, not one growing variable:
//! dash copies a variable it appends to, so a single one briefly takes
//! twice its size and is OOM-killed at half the limit, sooner than its
//! sampled working set says. The test checks the agent's samples did rise and that
//! the limit was in force (the OOM kill counted in the last sample).
//!
//! No model is installed, as in deploy_buildup.rs: the decision must come
//! from the memory trend alone, and the control, growing 12 MiB and
//! stopping with the same manifest, must commit.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::agents::{Fleet, Proc};
use support::deploys::{
    Scratch, assert_exhaustion, assert_replays, build_deb, deploy_json, differences, kind,
    live_step, root_walk,
};
use support::{ebpf_or_skip, eventually, rootfs};

const MIB: f64 = 1024.0 * 1024.0;
const LIMIT_MB: u64 = 64;

/// The postinst: one more 1 MiB shell variable every half second, `grow`
/// times (None: until the OOM killer ends it).
fn postinst(grow: Option<u32>) -> String {
    let cond = grow.map_or_else(|| "true".to_string(), |n| format!("[ $n -lt {n} ]"));
    format!(
        "#!/bin/sh\ns=0123456789abcdef\ni=0\nwhile [ $i -lt 16 ]; do s=\"$s$s\"; i=$((i+1)); done\nn=0\nwhile {cond}; do\n  eval \"v$n=\\$s\"\n  n=$((n+1))\n  sleep 0.5\ndone\necho \"grew $n MiB\"\n"
    )
}

fn manifest(root: &Path, deb: &Path) -> String {
    format!(
        r#"name = "growpkg"
root = {root:?}
[artifact]
debs = [{deb:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "3m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}
[scope]
paths = ["/usr/share/doc", "/var/lib/dpkg", "/var/log"]
[shadow]
enabled = false
[monitor]
period = "3s"
memory_limit_mb = {LIMIT_MB}
"#,
        root = root.display().to_string(),
        deb = deb.display().to_string(),
    )
}

struct Deployed {
    shown: Value,
    report: Value,
    text: String,
    unchanged: bool,
}

fn deploy(cached: &Path, name: &str, grow: Option<u32>, dry: bool) -> Deployed {
    let s = Scratch::new(cached, &format!("growth-{name}"));
    let deb = build_deb(
        &s.base,
        "growpkg",
        "1.0",
        &[("/usr/share/doc/growpkg/README", "grows\n")],
        Some(&postinst(grow)),
    );
    let path = s.base.join("grow.toml");
    std::fs::write(&path, manifest(&s.root, &deb)).unwrap();
    let fleet = Fleet::new(&format!("growth-{name}"));
    let _serve = fleet.serve();
    assert!(!fleet.data.join("models/current").exists(), "no model");
    let agent = Proc::spawn(&mut fleet.agent_cmd(&s.base.join("agent-data")));
    fleet.wait_connected(&agent);
    let before = root_walk(&s.root);
    let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
    let (_, id) = deploy_json(&fleet, &agent, &path, extra);
    let ended = eventually(Duration::from_mins(1), || {
        let st = fleet.json(&["show", &id, "--json"])["deployment"]["state"].clone();
        st == "committed" || st == "rolled_back"
    });
    assert!(ended, "{id} never ended: {}", agent.log());
    assert_replays(&fleet, &id);
    Deployed {
        shown: fleet.json(&["show", &id, "--json"]),
        report: fleet.json(&["report", &id, "--json"]),
        text: String::from_utf8_lossy(&fleet.cli(&["show", &id]).stdout).into_owned(),
        unchanged: differences(&before, &root_walk(&s.root)).is_empty(),
    }
}

/// The agent's `LiveMemory` samples: (working set, limit, OOM kills).
fn samples(shown: &Value) -> Vec<(f64, f64, u64)> {
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| kind(e) == "live_memory")
        .map(|e| {
            let s = &e["event"]["live_memory"]["sample"];
            (
                s["current_bytes"].as_f64().unwrap(),
                s["limit_bytes"].as_f64().unwrap(),
                s["oom_kills"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_dry_run_of_a_leaking_postinst_decides_before_the_oom_kill() {
    let Some(_g) = ebpf_or_skip("growth dry run") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let d = deploy(&cached, "dry", None, true);
    let shown = &d.shown;
    assert_eq!(
        shown["deployment"]["state"], "committed",
        "a dry run never acts"
    );
    let decision = &shown["decisions"][0];
    assert_exhaustion(decision, "memory", (0.3, 3.0));
    assert_eq!(decision["acted"], false);
    // The step ended on its own: dpkg reports its postinst killed.
    let (ended, step) = live_step(shown);
    assert_eq!(step["exit_code"], 1, "{step}");
    let tail = step["output_tail"].as_str().unwrap();
    assert!(tail.contains("signal"), "killed by the OOM killer: {tail}");
    let mem = samples(shown);
    let last = mem
        .last()
        .copied()
        .unwrap_or_else(|| panic!("no samples: {shown}"));
    assert_eq!(last.1, (LIMIT_MB << 20) as f64, "the limit in force");
    assert!(last.2 >= 1, "the limit's OOM killer ended it: {mem:?}");
    let peak = mem.iter().map(|m| m.0).fold(0.0, f64::max);
    assert!(peak > 40.0 * MIB, "it grew towards the limit: {mem:?}");
    let at = decision["at_ms"].as_i64().unwrap();
    assert!(at < ended, "decision at {at}, step failed at {ended}");
    let lead = &shown["lead"];
    assert_eq!(lead["step_end"], "recorded", "{lead}");
    assert_eq!(lead["lead_ms"], ended - at, "{lead}");
    assert!(d.text.contains("lead time"), "{}", d.text);
    let moments: Vec<&str> = d.report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["what"].as_str().unwrap())
        .collect();
    assert!(moments.contains(&"decision"), "{moments:?}");
    eprintln!(
        "memory dry run: decided {} ms before the OOM-killed step ended",
        ended - at
    );
}

#[test]
fn a_leaking_postinst_is_rolled_back_before_the_oom_kill() {
    let Some(_g) = ebpf_or_skip("growth rollback") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let d = deploy(&cached, "real", None, false);
    let shown = &d.shown;
    assert_eq!(shown["deployment"]["state"], "rolled_back", "{shown}");
    let decision = &shown["decisions"][0];
    assert_exhaustion(decision, "memory", (0.3, 3.0));
    assert_eq!(decision["acted"], true);
    let (_, step) = live_step(shown);
    assert_eq!(
        step["exit_code"],
        Value::Null,
        "killed by the rollback: {step}"
    );
    let mem = samples(shown);
    assert!(
        mem.iter().all(|m| m.2 == 0),
        "rolled back before any OOM kill: {mem:?}"
    );
    let lead = &shown["lead"];
    assert_eq!(lead["step_end"], "projected", "{lead}");
    assert!(lead["lead_ms"].as_i64().unwrap() > 0, "{lead}");
    assert!(d.text.contains("projected end"), "{}", d.text);
    assert!(d.unchanged, "the root differs after the rollback");
    eprintln!("memory rollback: {lead}; reason {}", decision["reasons"][0]);
}

#[test]
fn a_postinst_that_grows_to_a_plateau_under_the_limit_is_committed() {
    let Some(_g) = ebpf_or_skip("growth control") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let d = deploy(&cached, "control", Some(12), false);
    let shown = &d.shown;
    assert_eq!(shown["deployment"]["state"], "committed", "{shown}");
    let decisions = shown["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{shown}");
    assert_eq!(decisions[0]["verdict"], "commit", "{shown}");
    let (_, step) = live_step(shown);
    assert_eq!(step["exit_code"], 0, "{step}");
    let mem = samples(shown);
    let (lo, hi) = mem.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), m| {
        (lo.min(m.0), hi.max(m.0))
    });
    assert!(hi - lo > 8.0 * MIB, "the control did grow: {mem:?}");
    assert!(mem.iter().all(|m| m.2 == 0), "{mem:?}");
}
