//! The deploy tables' queries against a real SQLite file.

use super::*;
use backstop_common::deploy::RollbackReport;

/// A store in a directory of its own: tests run beside each other.
async fn store() -> (Store, std::path::PathBuf) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("backstop-store-deploy-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("db.sqlite").display());
    (Store::open(&url, true).await.unwrap(), dir)
}

fn manifest() -> Manifest {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = std::fs::read_to_string(base.join("hello.toml")).unwrap();
    Manifest::from_toml_in(&text, Some(&base)).unwrap()
}

#[tokio::test]
async fn a_deployment_its_events_and_decisions_round_trip() {
    let (s, dir) = store().await;
    let m = manifest();
    s.new_deploy("d1", "web-1", &m, true).await.unwrap();
    assert_eq!(
        s.deployment_host("d1").await.unwrap().as_deref(),
        Some("web-1")
    );
    let ev = DeployEvent::RolledBack {
        report: RollbackReport::default(),
        local: false,
    };
    assert!(s.add_deploy_event("d1", 0, &ev).await.unwrap());
    assert!(
        !s.add_deploy_event("d1", 0, &ev).await.unwrap(),
        "redelivery"
    );
    s.set_deploy_state("d1", DeployState::RolledBack, Some("shadow test"))
        .await
        .unwrap();
    s.set_deploy_state("d1", DeployState::Committed, None)
        .await
        .unwrap();
    let (row, back) = s.deploy("d1").await.unwrap();
    assert_eq!(back, m, "the manifest comes back as sent");
    assert_eq!(row.state, DeployState::RolledBack, "an ended state stays");
    // In both tables: a late final event used to rewrite the summary
    // row's state, reason (to none) and end.
    let summary = s.deployment("d1").await.unwrap();
    assert_eq!(
        summary.reason.as_deref(),
        Some("shadow test"),
        "{summary:?}"
    );
    assert_eq!(summary.finished_ms, row.ended_ms, "{summary:?}");
    assert!(row.dry_run && row.ended_ms.is_some());
    assert_eq!(row.package.as_deref(), Some("hello"));
    let events = s.deploy_events("d1").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, ev);
    let d = DecisionRow {
        at_ms: 5,
        verdict: "rollback".into(),
        reasons: serde_json::json!(["step install exited 1"]),
        evidence: serde_json::json!({"phase": "installing"}),
        acted: false,
    };
    s.add_decision("d1", &d).await.unwrap();
    let got = s.decisions("d1").await.unwrap();
    assert_eq!((got[0].at_ms, got[0].acted), (5, false));
    assert_eq!(got[0].evidence, d.evidence);
    assert!(matches!(
        s.deploy("nope").await,
        Err(StoreError::NoDeployment { .. })
    ));
    let _ = std::fs::remove_dir_all(dir);
}

/// A reader that keeps what it read gets only the events stored since,
/// and the daemon's cache puts a late one (the outbox redelivers out of
/// order) where its seq says: the same events, in the same order, as
/// reading them all again.
#[tokio::test]
async fn events_are_read_since_where_a_reader_left_off() {
    let (s, dir) = store().await;
    s.new_deploy("d1", "web-1", &manifest(), false)
        .await
        .unwrap();
    let ev = |i: u64| DeployEvent::ShadowFailed {
        reason: format!("event {i}"),
    };
    for seq in [0, 1, 3] {
        s.add_deploy_event("d1", seq, &ev(seq)).await.unwrap();
    }
    let mut cache = crate::daemon::scoring::Cache::default();
    cache.refresh_events(&s, "d1").await.unwrap();
    let (first, after) = s.deploy_events_since("d1", 0).await.unwrap();
    assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 3]);
    for seq in [4, 2] {
        s.add_deploy_event("d1", seq, &ev(seq)).await.unwrap();
    }
    s.add_deploy_event("d1", 2, &ev(2)).await.unwrap();
    let (late, last) = s.deploy_events_since("d1", after).await.unwrap();
    assert_eq!(
        late.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [4, 2],
        "only the new rows, in the order stored"
    );
    let (none, same) = s.deploy_events_since("d1", last).await.unwrap();
    assert!(none.is_empty() && same == last, "nothing new");
    cache.refresh_events(&s, "d1").await.unwrap();
    cache.refresh_events(&s, "d1").await.unwrap();
    let all: Vec<DeployEvent> = (s.deploy_events("d1").await.unwrap())
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(all, (0..5).map(ev).collect::<Vec<_>>());
    assert_eq!(
        cache.events(),
        &all[..],
        "the cache reads what a full read does"
    );
    let _ = std::fs::remove_dir_all(dir);
}
