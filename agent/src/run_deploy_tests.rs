//! Admitting a deployment: one per root at a time.

use super::*;

fn entry(root: &str) -> Entry {
    Entry {
        orders: unbounded_channel().0,
        events: unbounded_channel().0,
        root: root.into(),
    }
}

#[test]
fn roots_overlap_when_one_holds_the_other_not_when_they_share_a_prefix() {
    let o = |a: &str, b: &str| roots_overlap(Path::new(a), Path::new(b));
    assert!(o("/", "/srv/app") && o("/srv/app", "/"));
    assert!(o("/srv/app", "/srv/app"));
    assert!(o("/srv/app/inner", "/srv/app"));
    assert!(!o("/srv/app", "/srv/application"));
    assert!(!o("/srv/a", "/srv/b"));
    // A root reached through a symlink is the tree it points into.
    let dir = std::env::temp_dir().join(format!("backstop-roots-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("real/inner")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    assert!(roots_overlap(&dir.join("link/inner"), &dir.join("real")));
    assert!(!roots_overlap(&dir.join("link"), &dir.join("other")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_deployment_on_a_running_ones_root_is_refused_naming_it_and_never_entered() {
    let running = Running::default();
    assert_eq!(running.admit("a", entry("/srv/app")), Admit::Started);
    // Nested either way, or the same id again: not entered.
    for (id, root) in [("b", "/srv/app/inner"), ("c", "/srv"), ("d", "/")] {
        let Admit::Refused(why) = running.admit(id, entry(root)) else {
            panic!("{id} on {root} was not refused");
        };
        assert!(
            why.contains("deployment a on root /srv/app")
                && why.contains(&format!("overlaps root {root}")),
            "{why}"
        );
    }
    assert_eq!(running.admit("a", entry("/opt")), Admit::AlreadyRunning);
    assert_eq!(running.len(), 1);
    // Beside it, on a tree of its own: entered; and once a ends, its
    // root is free again.
    assert_eq!(
        running.admit("e", entry("/srv/application")),
        Admit::Started
    );
    running.map.lock().unwrap().remove("a");
    assert_eq!(running.admit("b", entry("/srv/app/inner")), Admit::Started);
    assert_eq!(running.len(), 2);
}
