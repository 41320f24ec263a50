//! The fleet queries against a real SQLite file: what counts as history,
//! and the one-deployment-per-root refusal.

use std::path::PathBuf;

use backstop_common::manifest::{Manifest, PackageRef};

use super::*;
use crate::store::now_ms;

async fn store(name: &str) -> (Store, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "backstop-store-fleet-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("db.sqlite").display());
    (Store::open(&url, true).await.unwrap(), dir)
}

fn manifest(root: &str, version: &str) -> Manifest {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = std::fs::read_to_string(base.join("hello.toml")).unwrap();
    let mut m = Manifest::from_toml_in(&text, Some(&base)).unwrap();
    m.root = PathBuf::from(root);
    m.package = Some(PackageRef {
        name: "hello".into(),
        version: Some(version.into()),
    });
    m
}

/// Store `id` on `host` (its own root, so none is refused) and end it.
async fn ended(s: &Store, id: &str, host: &str, version: &str, state: DeployState, dry: bool) {
    let m = manifest(&format!("/roots/{id}"), version);
    s.new_deploy(id, host, &m, dry).await.unwrap();
    if state != DeployState::Running {
        s.set_deploy_state(id, state, None).await.unwrap();
    }
}

fn of<'a>(id: &'a str, host: &'a str, version: Option<&'a str>) -> HistoryOf<'a> {
    HistoryOf {
        id,
        host,
        package: "hello",
        version,
        now_ms: now_ms(),
    }
}

#[tokio::test]
async fn history_counts_other_hosts_per_version_and_recent_rollbacks_fleet_wide() {
    use DeployState::{Committed, Failed, Interrupted, Refused, RolledBack, RollingBack};
    let (s, dir) = store("history").await;
    ended(&s, "a1", "web-a", "1.0", RolledBack, false).await;
    ended(&s, "a2", "web-a", "1.0", RolledBack, false).await; // same host: one
    ended(&s, "c1", "web-c", "1.0", Refused, false).await;
    ended(&s, "d1", "web-d", "1.0", Committed, false).await;
    ended(&s, "e1", "web-e", "1.0", RollingBack, false).await;
    ended(&s, "f1", "web-f", "1.0", Interrupted, false).await; // not the package's fault
    ended(&s, "g1", "web-g", "1.0", Failed, false).await;
    ended(&s, "h1", "web-h", "1.0", RolledBack, true).await; // dry run: left out
    ended(&s, "b0", "web-b", "1.0", RolledBack, false).await; // this host
    ended(&s, "o1", "web-a", "0.9", RolledBack, false).await; // other version
    ended(&s, "me", "web-b", "1.0", DeployState::Running, false).await;
    let h = s.history(of("me", "web-b", Some("1.0"))).await.unwrap();
    assert_eq!(
        (h.version_rolled_back, h.version_committed),
        (3, 1),
        "web-a, web-c, web-e rolled 1.0 back; web-d committed it: {h:?}"
    );
    assert_eq!(
        h.package_recent_rollbacks, 6,
        "a1 a2 c1 e1 b0 o1, any version, this host too: {h:?}"
    );
    let any = s.history(of("me", "web-b", None)).await.unwrap();
    assert_eq!(any.version_rolled_back, 3, "no version: the name alone");
    let later = HistoryOf {
        now_ms: now_ms() + HISTORY_RECENT_MS + 60_000,
        ..of("me", "web-b", Some("1.0"))
    };
    let h = s.history(later).await.unwrap();
    assert_eq!(h.package_recent_rollbacks, 0, "a day later none is recent");
    assert_eq!(h.version_rolled_back, 3, "outcomes do not age");
    let other = HistoryOf {
        package: "less",
        ..of("me", "web-b", Some("1.0"))
    };
    assert_eq!(
        s.history(other).await.unwrap(),
        crate::decide::History::default()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_second_deployment_to_a_running_root_is_refused_naming_the_first() {
    let (s, dir) = store("root").await;
    let m = manifest("/srv/root-1", "1.0");
    s.new_deploy("first", "web-1", &m, false).await.unwrap();
    let err = s
        .new_deploy("second", "web-1", &m, false)
        .await
        .unwrap_err();
    match &err {
        StoreError::RootBusy {
            host,
            root,
            running,
            running_root,
        } => assert_eq!(
            (
                host.as_str(),
                root.as_str(),
                running.as_str(),
                running_root.as_str()
            ),
            ("web-1", "/srv/root-1", "first", "/srv/root-1")
        ),
        other => panic!("not RootBusy: {other}"),
    }
    assert!(err.to_string().contains("backstop cancel first"), "{err}");
    assert!(
        matches!(
            s.deploy("second").await,
            Err(StoreError::NoDeployment { .. })
        ),
        "nothing of the refused one is stored"
    );
    assert_eq!(s.deployment_host("second").await.unwrap(), None);
    // Another root, or another host's same path, runs beside it.
    s.new_deploy("beside", "web-1", &manifest("/srv/root-2", "1.0"), false)
        .await
        .unwrap();
    s.new_deploy("elsewhere", "web-2", &m, false).await.unwrap();
    // Rolling back still holds the root; once ended, it is free.
    s.set_deploy_state("first", DeployState::RollingBack, None)
        .await
        .unwrap();
    assert!(s.new_deploy("third", "web-1", &m, false).await.is_err());
    s.set_deploy_state("first", DeployState::RolledBack, None)
        .await
        .unwrap();
    s.new_deploy("third", "web-1", &m, false).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn nested_roots_on_one_host_are_one_root_busy_naming_both() {
    let (s, dir) = store("nested").await;
    s.new_deploy("outer", "web-1", &manifest("/srv/app", "1.0"), false)
        .await
        .unwrap();
    // Inside the running one's root, and around it ("/" holds everything).
    for (id, root) in [
        ("inner", "/srv/app/chroot"),
        ("around", "/srv"),
        ("all", "/"),
    ] {
        let err = s
            .new_deploy(id, "web-1", &manifest(root, "1.0"), false)
            .await
            .unwrap_err();
        match &err {
            StoreError::RootBusy {
                root: r,
                running,
                running_root,
                ..
            } => assert_eq!(
                (r.as_str(), running.as_str(), running_root.as_str()),
                (root, "outer", "/srv/app"),
                "{err}"
            ),
            other => panic!("{root}: not RootBusy: {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("/srv/app") && text.contains(root) && text.contains("outer"),
            "{text}"
        );
    }
    // A sibling that only shares a prefix of its name is another tree,
    // and so is the same path on another host.
    s.new_deploy("sibling", "web-1", &manifest("/srv/app2", "1.0"), false)
        .await
        .unwrap();
    s.new_deploy(
        "other-host",
        "web-2",
        &manifest("/srv/app/chroot", "1.0"),
        false,
    )
    .await
    .unwrap();
    // A running inner root blocks the outer one the same way.
    let err = s
        .new_deploy("outer-2", "web-2", &manifest("/srv", "1.0"), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::RootBusy { running, .. } if running == "other-host"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
