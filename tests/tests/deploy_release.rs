//! Nothing a committed install leaves runs on in a group nobody removes:
//! its daemon keeps the deployment's live cgroup (`backstop.deploy/<id>`)
//! while it runs, and once it ends the running agent removes the group,
//! with no restart (before, only the next agent's start swept it, so a
//! long-running agent collected one empty group per such install). A
//! group beside it that this agent's data directory has no journal for
//! (another agent's) is never touched. The real controller and agent
//! over QUIC, real probes, the step chrooted into a copy of the cached
//! Debian rootfs.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::agents::{Fleet, Proc};
use support::deploys::{Scratch, chroot_manifest, ended, start, state, v2_root};
use support::{ebpf_or_skip, eventually, rootfs};

/// Lets the daemon end, and removes the foreign group, when dropped
/// (a panic included).
struct Cleanup {
    may_exit: PathBuf,
    foreign: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.may_exit, b"");
        let _ = eventually(Duration::from_secs(10), || {
            std::fs::remove_dir(&self.foreign).is_ok() || !self.foreign.exists()
        });
    }
}

fn populated(group: &std::path::Path) -> bool {
    std::fs::read_to_string(group.join("cgroup.events"))
        .is_ok_and(|e| e.lines().any(|l| l == "populated 1"))
}

#[test]
fn a_committed_installs_group_goes_when_its_daemon_ends_and_a_foreign_one_stays() {
    let Some(_g) = ebpf_or_skip("a_committed_installs_group_goes_when_its_daemon_ends") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let scratch = Scratch::new(&cached, "release");
    let parent = v2_root().join("backstop.deploy");
    let cleanup = Cleanup {
        may_exit: scratch.root.join("tmp/daemon-may-exit"),
        foreign: parent.join(format!("foreign-{}", std::process::id())),
    };
    std::fs::create_dir_all(&cleanup.foreign).unwrap();
    let fleet = Fleet::new("deploy-release");
    let _serve = fleet.serve();
    let agent = Proc::spawn(&mut fleet.agent_cmd(&scratch.base.join("agent-data")));
    fleet.wait_connected(&agent);

    // The install starts a daemon (detached, its own session, as a
    // service's postinst would) that runs until the test lets it end.
    let file = chroot_manifest(
        &scratch.base,
        "daemon",
        &scratch.root,
        "setsid sh -c 'while [ ! -e /tmp/daemon-may-exit ]; do sleep 0.1; done' \
         </dev/null >/dev/null 2>&1 & echo up > /etc/daemon-started",
        "true",
    );
    let id = start(&fleet, &file).unwrap();
    assert!(
        eventually(Duration::from_mins(1), || ended(&state(&fleet, &id))),
        "never ended: {}\nagent: {}",
        state(&fleet, &id),
        agent.log()
    );
    assert_eq!(state(&fleet, &id)["deployment"]["state"], "committed");
    assert!(scratch.root.join("etc/daemon-started").exists());
    let group = parent.join(&id);
    assert!(
        populated(&group),
        "the committed install's daemon runs in its group {}",
        group.display()
    );

    std::fs::write(&cleanup.may_exit, b"").unwrap();
    assert!(
        eventually(Duration::from_secs(30), || !group.exists()),
        "the running agent never removed {} after its daemon ended\nagent: {}",
        group.display(),
        agent.log()
    );
    let mut agent = agent;
    assert!(agent.running(), "the agent was restarted or died");
    assert!(
        cleanup.foreign.exists(),
        "the sweep removed a group this agent has no journal for"
    );
    drop(cleanup);
}
