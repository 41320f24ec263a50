//! An agent certificate speaks for one host only: the real `backstop`
//! daemon and CLI, attacked by agents built from the common crate's QUIC
//! client.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backstop_common::wire::{AgentMsg, ControllerMsg};
use support::fleet::{
    Ctl, DUPLICATE_SESSION, FOREIGN_DEPLOYMENT, REVOKED, connect, relay, runtime, windows,
};

#[test]
fn a_certificate_speaks_only_for_its_own_host() {
    let mut ctl = Ctl::new("foreign");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let a = ctl.data.join("pki/agents/web-1.bundle");
    let b = ctl.enroll("web-2");
    let rt = runtime();
    // B runs a deployment that never ends; it has three windows stored.
    let mut host_b = rt.block_on(connect(ctl.addr, &ca, &b)).unwrap();
    let mut exec = ctl.exec(&["--host", "web-2", "--", "sleep", "60"]);
    let victim = rt.block_on(async {
        let id = host_b.exec().await;
        host_b.send(&windows(&id, 0..3, 1.0)).await;
        while !matches!(
            host_b.next().await,
            ControllerMsg::Ack {
                through_seq: Some(2),
                ..
            }
        ) {}
        id
    });
    assert_eq!(victim.len(), 33, "d and 128 bits in hex: {victim}");
    let before = ctl.deployment(&victim);
    assert_eq!(before.0["state"], "running");
    assert_eq!(before.1.as_array().unwrap().len(), 3);

    // A, with its own valid certificate, writes B's deployment: windows
    // (new and overwriting seqs), a finish record, events, a failure.
    let attacks: Vec<(&str, AgentMsg)> = vec![
        ("windows", windows(&victim, 0..10, 666.0)),
        (
            "finish",
            AgentMsg::Finished {
                deployment: victim.clone(),
                exit_code: 0,
                windows: 10,
                lost_events: 0,
            },
        ),
        (
            "failure",
            AgentMsg::Failed {
                deployment: victim.clone(),
                reason: "forged".into(),
            },
        ),
        (
            "events",
            AgentMsg::Events {
                deployment: victim.clone(),
                events: vec![],
            },
        ),
        ("a made-up deployment", windows("d-nonexistent", 0..1, 1.0)),
    ];
    let count = attacks.len();
    for (i, (what, msg)) in attacks.into_iter().enumerate() {
        let (code, reason) = rt.block_on(async {
            let mut host_a = connect(ctl.addr, &ca, &a).await.unwrap();
            host_a.send(&msg).await;
            host_a.closed().await
        });
        assert_eq!(
            code, FOREIGN_DEPLOYMENT,
            "{what}: closed with {code}: {reason}"
        );
        assert!(
            reason.contains("web-1"),
            "{what}: the reason names the host: {reason}"
        );
        assert_eq!(
            ctl.host("web-1")["identity_violations"],
            i as u64 + 1,
            "{what}: counted"
        );
    }
    assert_eq!(
        ctl.deployment(&victim),
        before,
        "B's deployment was changed"
    );
    let log = ctl.log();
    assert!(
        log.matches("identity violation").count() >= count && log.contains(&victim),
        "logged with host and deployment: {log}"
    );
    assert_eq!(ctl.host("web-2")["identity_violations"], 0);
    // B itself goes on: its own finish ends its own deployment.
    rt.block_on(host_b.send(&AgentMsg::Finished {
        deployment: victim.clone(),
        exit_code: 3,
        windows: 3,
        lost_events: 0,
    }));
    let status = exec.wait().unwrap();
    assert_eq!(status.code(), Some(3), "exec reports B's own outcome");
    assert_eq!(ctl.deployment(&victim).0["state"], "finished");
}

/// A UDP relay between a client and the controller that can go silent:
/// a connection through it dies without a close, as when an agent's host

#[test]
fn a_second_session_is_refused_while_the_first_lives() {
    let mut ctl = Ctl::new("dup");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let a = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut first = rt.block_on(connect(ctl.addr, &ca, &a)).unwrap();
    let started = Instant::now();
    let second = rt.block_on(connect(ctl.addr, &ca, &a));
    let err = second.err().expect("a second live session was accepted");
    assert!(
        err.contains(&format!("code {DUPLICATE_SESSION}"))
            && err.contains("already has a live session"),
        "refused with the reason: {err}"
    );
    eprintln!("second session refused after {:?}", started.elapsed());
    // The first still holds the host: it gets the host's commands.
    let mut exec = ctl.exec(&["--host", "web-1", "--", "true"]);
    rt.block_on(async {
        let id = first.exec().await;
        first
            .send(&AgentMsg::Finished {
                deployment: id,
                exit_code: 0,
                windows: 0,
                lost_events: 0,
            })
            .await;
    });
    assert_eq!(
        exec.wait().unwrap().code(),
        Some(0),
        "the first session works"
    );
    drop(first);

    // An agent whose connection died silently (not yet timed out) gets
    // back in within seconds.
    let r = relay(ctl.addr);
    let silent = rt.block_on(connect(r.addr, &ca, &a)).unwrap();
    r.cut.store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    let back = rt.block_on(connect(ctl.addr, &ca, &a));
    let took = cut_at.elapsed();
    assert!(
        back.is_ok(),
        "the reconnecting agent was refused: {:?}",
        back.err()
    );
    assert!(
        took < Duration::from_secs(3),
        "reconnect took {took:?}, beyond the 1.5 s liveness probe"
    );
    eprintln!("reconnect after a silent death took {took:?}");
    drop(silent);
}

#[test]
fn a_revoked_certificate_fails_its_next_handshake() {
    let mut ctl = Ctl::new("revoke");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let rt = runtime();
    let old = ctl.enroll("web-2");
    let live = rt.block_on(connect(ctl.addr, &ca, &old)).unwrap();

    let again = ctl.data.join("again.bundle");
    let out = ctl.cli(&[
        "enroll",
        "--host",
        "web-2",
        "--out",
        again.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a second enroll was accepted: {stderr}"
    );
    assert!(
        stderr.contains("live certificate") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!again.exists(), "no bundle was written");

    ctl.ok(&["revoke", "web-2"]);
    let (code, reason) = rt.block_on(live.closed());
    assert_eq!(code, REVOKED, "the live session is closed: {reason}");
    let err = rt
        .block_on(connect(ctl.addr, &ca, &old))
        .err()
        .expect("a revoked certificate was accepted");
    assert!(
        err.contains(&format!("code {REVOKED}")) && err.contains("revoked"),
        "the refusal says why: {err}"
    );

    // --force issues a new one; the old stays refused.
    let new = ctl.data.join("new.bundle");
    ctl.ok(&[
        "enroll",
        "--host",
        "web-2",
        "--force",
        "--out",
        new.to_str().unwrap(),
    ]);
    rt.block_on(connect(ctl.addr, &ca, &new))
        .expect("the new certificate works");
    assert!(rt.block_on(connect(ctl.addr, &ca, &old)).is_err());

    // A certificate signed by the CA but never recorded (as a thief with
    // the CA key, or an old backup, would have) is refused for a recorded host.
    let (ca_cert, ca_key) = backstop_controller::pki::load_ca(&ctl.data).unwrap();
    let minted = ctl.data.join("minted.bundle");
    let now = time::OffsetDateTime::now_utc();
    backstop_controller::pki::enroll_with(
        &ca_cert,
        &ca_key,
        "web-1",
        &minted,
        now,
        now + time::Duration::days(1),
    )
    .unwrap();
    let err = rt
        .block_on(connect(ctl.addr, &ca, &minted))
        .err()
        .expect("an unrecorded certificate was accepted");
    assert!(err.contains("not on record"), "{err}");
}

#[test]
fn exec_timeout_returns_and_waiters_end_when_the_host_is_gone() {
    let mut ctl = Ctl::new("timeout");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let a = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &a)).unwrap();

    // The host takes the command and never finishes it.
    let started = Instant::now();
    let exec = ctl.exec(&["--timeout", "5", "--host", "web-1", "--", "sleep", "60"]);
    let id = rt.block_on(agent.exec());
    let out = exec.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains(&id), "names the deployment: {stderr}");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "returned after {took:?}"
    );

    // Without a timeout, the waiter ends when the host is gone for good.
    let exec = ctl.exec(&["--host", "web-1", "--", "sleep", "60"]);
    let id = rt.block_on(agent.exec());
    let gone = Instant::now();
    agent.conn.close(0u32.into(), b"agent going away");
    drop(agent);
    let out = exec.wait_with_output().unwrap();
    let took = gone.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&id) && stderr.contains("interrupted"),
        "{stderr}"
    );
    assert!(
        took < Duration::from_secs(12),
        "the waiter ended {took:?} after the host left (grace 6 s)"
    );
    eprintln!("waiter ended {took:?} after the host left");
    assert_eq!(ctl.deployment(&id).0["state"], "interrupted");
}
