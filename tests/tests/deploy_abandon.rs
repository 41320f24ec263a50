//! An agent that vanished mid-deployment must not block its root
//! forever: `backstop cancel ID --force` marks the deployment abandoned
//! and the next deployment to that root goes through. The real `backstop`
//! daemon and CLI over real QUIC with mutual TLS and a real SQLite store;
//! the agents are the common crate's QUIC client (fleet.rs), because the
//! test needs an agent that disappears for good and a reinstalled one
//! that knows nothing of the old deployment, which a real agent's
//! recovery would not give. Needs no root or eBPF.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::time::Duration;

use backstop_common::wire::ControllerMsg;
use support::eventually;
use support::fleet::{Ctl, Fake, connect, runtime};

fn hello_manifest() -> String {
    format!("{}/../examples/hello.toml", env!("CARGO_MANIFEST_DIR"))
}

async fn next_deploy(agent: &mut Fake) -> String {
    loop {
        if let ControllerMsg::Deploy { deployment, .. } = agent.next().await {
            return deployment;
        }
    }
}

fn connected(ctl: &Ctl, want: bool) -> bool {
    eventually(Duration::from_secs(15), || {
        ctl.host("web-1")["connected"] == want
    })
}

#[test]
fn a_vanished_agents_deployment_is_abandoned_by_cancel_force_and_frees_its_root() {
    let mut ctl = Ctl::new("deploy-abandon");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let bundle = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut first = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl, true), "the agent never showed as connected");
    ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1"]);
    let old = rt.block_on(next_deploy(&mut first));
    // The agent vanishes for good; a reinstalled one (same host, same
    // certificate, an empty data directory) comes up.
    drop(first);
    assert!(connected(&ctl, false), "the vanished agent still shows");
    let second = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl, true), "the reinstalled agent never showed");
    let refused = ctl.cli(&["deploy", &hello_manifest(), "--host", "web-1"]);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && text.contains(&old) && text.contains("overlaps"),
        "the old deployment should hold the root: {text}"
    );
    // A plain cancel orders a rollback nobody will report on: the root
    // stays held (rolling_back).
    ctl.ok(&["cancel", &old]);
    let again = ctl.cli(&["deploy", &hello_manifest(), "--host", "web-1"]);
    assert!(!again.status.success(), "a plain cancel freed the root");
    assert_eq!(
        ctl.json(&["show", &old, "--json"])["deployment"]["state"],
        "rolling_back"
    );
    // That agent goes too; --force with nobody connected abandons it.
    drop(second);
    assert!(connected(&ctl, false), "the second agent still shows");
    let forced = ctl.ok(&["cancel", &old, "--force"]);
    assert!(
        forced.contains("abandoned") && forced.contains("nothing was rolled back"),
        "{forced}"
    );
    let shown = ctl.json(&["show", &old, "--json"]);
    assert_eq!(shown["deployment"]["state"], "abandoned", "{shown}");
    let reason = shown["deployment"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("--force") && reason.contains("not connected"),
        "{shown}"
    );
    let twice = ctl.cli(&["cancel", &old, "--force"]);
    assert!(!twice.status.success(), "an abandoned one is ended");
    // The next agent gets the next deployment to the same root.
    let mut third = rt.block_on(connect(ctl.addr, &ca, &bundle)).unwrap();
    assert!(connected(&ctl, true), "the third agent never showed");
    let printed = ctl.ok(&["deploy", &hello_manifest(), "--host", "web-1"]);
    let new = rt.block_on(next_deploy(&mut third));
    assert_eq!(printed.trim(), new);
    assert_ne!(new, old);
    // No decision was ever made for the abandoned one, and replay says so.
    assert_eq!(shown["decisions"].as_array().unwrap().len(), 0, "{shown}");
    let replay = ctl.cli(&["replay", &old, "--json"]);
    assert_eq!(replay.status.code(), Some(0), "{replay:?}");
    assert!(replay.stdout.is_empty(), "{replay:?}");
}
