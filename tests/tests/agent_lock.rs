//! One agent per data directory: a second `backstop-agent run` on the
//! same DATA is refused in one line naming the lock and its holder, and
//! the first loses nothing.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::time::Duration;

use support::agents::{Fleet, Proc, deployment_of};
use support::{ebpf_or_skip, eventually, workload};

#[test]
fn a_second_agent_on_the_same_data_is_refused_and_the_first_loses_nothing() {
    let Some(_g) =
        ebpf_or_skip("a_second_agent_on_the_same_data_is_refused_and_the_first_loses_nothing")
    else {
        return;
    };
    let fleet = Fleet::new("second");
    let _serve = fleet.serve();
    let data = fleet.data.join("agent-data");
    let mut first = Proc::spawn(&mut fleet.agent_cmd(&data));
    fleet.wait_connected(&first);
    let wl = workload().display().to_string();
    let exec = fleet.exec(&[&wl, "spin", "2000"]);
    let second = Proc::spawn(&mut fleet.agent_cmd(&data));
    let (code, _) = second.finish(Duration::from_secs(20));
    assert_eq!(code, 2, "the second agent is refused as 'cannot run here'");
    let (code, stdout) = exec.finish(Duration::from_mins(1));
    assert_eq!(code, 0);
    let id = deployment_of(&stdout);
    assert!(first.running(), "the first agent lives on: {}", first.log());
    let d = fleet.deployment(&id);
    let ws = fleet.windows(&id);
    let seqs: Vec<u64> = ws.iter().map(|w| w["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..d["windows"].as_u64().unwrap()).collect::<Vec<_>>(),
        "every window of {d} arrived once"
    );
    assert_eq!(fleet.host()["dropped_windows"], 0);
}

#[test]
fn a_second_agent_says_who_holds_the_lock_in_one_line() {
    let Some(_g) = ebpf_or_skip("a_second_agent_says_who_holds_the_lock_in_one_line") else {
        return;
    };
    let fleet = Fleet::new("lockline");
    let data = fleet.data.join("agent-data");
    // No controller needed: the lock comes before anything else.
    let first = Proc::spawn(&mut fleet.agent_cmd(&data));
    let lock = data.join("agent/lock");
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == first.child.id().to_string())
    }));
    let out = fleet.agent_cmd(&data).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&lock.display().to_string()),
        "names the lock file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.child.id())),
        "names the holder: {stderr}"
    );
}
