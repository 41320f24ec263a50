//! One deployment per root at a time: a second deployment on a root an
//! agent is already deploying to is refused before it snapshots or runs
//! anything. Two snapshots of one tree would each restore over the
//! other's changes, so a rollback of either would undo the other's
//! install; the refusal is what keeps a restore from being turned against
//! its host by a second, overlapping deployment. The real controller and
//! agent over QUIC, real steps chrooted into a copy of the cached Debian
//! rootfs. `run_deploy.rs` unit-tests which roots overlap (nested ones
//! included); this proves the agent acts on it.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::agents::{Fleet, Proc};
use support::deploys::{Scratch, chroot_manifest as manifest, ended, start, state};
use support::sentinel::{self, Walk};
use support::{ebpf_or_skip, eventually, rootfs};

/// Lets the holding step finish when dropped.
struct Hold(PathBuf);

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"");
    }
}

/// `cancel ID --force` while the agent cannot reach its controller
/// (`serve` stopped, one started where the agent does not look), then the
/// controller back where the agent finds it; returns that controller.
fn abandon_while_away(fleet: &Fleet, serve: Proc, agent: &Proc, id: &str) -> Proc {
    drop(serve);
    let elsewhere = fleet.serve_at(Fleet::free_addr(), &[]);
    let out = fleet.cli(&["cancel", id, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(fleet, id)["deployment"]["state"], "abandoned");
    drop(elsewhere);
    let serve = fleet.serve();
    fleet.wait_connected(agent);
    serve
}

/// Deploy `file` and wait for it to commit.
fn run_to_commit(fleet: &Fleet, file: &Path) {
    let id = start(fleet, file).unwrap();
    assert!(
        eventually(Duration::from_mins(1), || ended(&state(fleet, &id))),
        "{} never ended: {}",
        file.display(),
        state(fleet, &id)
    );
    let shown = state(fleet, &id);
    assert_eq!(shown["deployment"]["state"], "committed", "{shown}");
}

#[test]
fn a_second_deployment_on_a_busy_root_is_refused_and_touches_nothing() {
    let Some(_g) = ebpf_or_skip("a_second_deployment_on_a_busy_root_is_refused") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let scratch = Scratch::new(&cached, "overlap");
    let outside = scratch.base.join("sentinel");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"outside every root").unwrap();
    let outside_before: Walk = sentinel::walk(&outside);
    let fleet = Fleet::new("deploy-overlap");
    let serve = fleet.serve();
    let agent = Proc::spawn(&mut fleet.agent_cmd(&scratch.base.join("agent-data")));
    fleet.wait_connected(&agent);

    // The first's step holds the root until it is killed (or the test
    // ends); its rollback hook (after the restore) holds it until the test
    // lets it go. /tmp is outside the scope, so the restore leaves the
    // hook's files alone.
    let hold = Hold(scratch.root.join("tmp/hook-may-finish"));
    let first = manifest(
        &scratch.base,
        "first",
        &scratch.root,
        "echo first > /etc/first-was-here; while [ ! -e /tmp/hook-may-finish ]; do sleep 0.1; done",
        "touch /tmp/hook-runs; while [ ! -e /tmp/hook-may-finish ]; do sleep 0.1; done",
    );
    let second = manifest(
        &scratch.base,
        "second",
        &scratch.root,
        "echo second > /etc/second-was-here",
        "true",
    );
    let a = start(&fleet, &first).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || scratch
            .root
            .join("etc/first-was-here")
            .exists()),
        "the first deployment's step never ran: {}\nagent: {}",
        state(&fleet, &a),
        agent.log()
    );

    // Layer one: the controller refuses a deployment on a root one of its
    // deployments holds.
    let refused = start(&fleet, &second).unwrap_err();
    assert!(
        refused.contains("overlaps") && refused.contains(&a),
        "the controller's refusal names the running deployment: {refused}"
    );

    // An operator abandons the first (`cancel --force`) while its agent is
    // unreachable: the controller frees the root, the agent still runs it.
    let _serve = abandon_while_away(&fleet, serve, &agent, &a);
    // Back, the agent is ordered to roll the first back, and does, up to
    // its hook.
    assert!(
        eventually(Duration::from_secs(30), || scratch
            .root
            .join("tmp/hook-runs")
            .exists()),
        "the abandoned deployment was not rolled back when its agent came back: {}\nagent: {}",
        state(&fleet, &a),
        agent.log()
    );

    // Layer two: the controller lets the second through (the first is
    // abandoned there), and the agent, still rolling the first back,
    // refuses it before it snapshots or runs anything.
    let b = start(&fleet, &second)
        .unwrap_or_else(|e| panic!("the controller still held the root: {e}"));
    assert!(
        eventually(Duration::from_secs(30), || ended(&state(&fleet, &b))),
        "the agent never answered the second: {}\nagent: {}",
        state(&fleet, &b),
        agent.log()
    );
    let shown = state(&fleet, &b);
    let said = shown.to_string();
    let a_now = state(&fleet, &a);
    assert!(
        a_now["deployment"]["state"] == "abandoned" && !a_now.to_string().contains("rolled_back"),
        "the first was still rolling back (its hook holds it) when the second came: {a_now}"
    );
    assert_eq!(shown["deployment"]["state"], "refused", "{said}");
    assert!(
        said.contains("overlaps") && said.contains(&a),
        "the agent's refusal names the running deployment and the overlap: {said}"
    );
    assert!(
        !scratch.root.join("etc/second-was-here").exists(),
        "the refused deployment's step ran"
    );
    assert!(
        !(scratch.base.join("agent-data/agent/deployments"))
            .join(&b)
            .exists(),
        "the refused deployment left a journal or snapshot"
    );

    // The first's rollback ends, and its report moves it on from
    // `abandoned`; the root is as it was.
    drop(hold);
    assert!(
        eventually(
            Duration::from_mins(1),
            || state(&fleet, &a)["deployment"]["state"] == "rolled_back"
        ),
        "the first deployment's rollback never reached the controller: {}\nagent: {}",
        state(&fleet, &a),
        agent.log()
    );
    assert!(!scratch.root.join("etc/first-was-here").exists());

    // With the root free the same manifest runs: the refusal was the
    // overlap, not the manifest.
    run_to_commit(&fleet, &second);
    assert!(scratch.root.join("etc/second-was-here").exists());
    sentinel::assert_untouched(&outside, &outside_before, "two deployments on one root");
}
