//! Resolving, normalising and reading change logs on scratch trees.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use backstop_common::{AT_FDCWD, ChangeEvent};

use super::resolve::in_root_paths;
use super::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("backstop-changes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn parents_resolve_through_symlinks_inside_the_root() {
    let root = tmp("root");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    // An absolute link target means the root's /usr/bin, not the host's.
    std::os::unix::fs::symlink("/usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/real", root.join("usr/bin/alias")).unwrap();
    let got = in_root_paths(&root, Path::new("/bin/tool")).unwrap();
    assert_eq!(got, vec![root.join("usr/bin/tool")]);
    // A removed directory: the missing part is kept as written.
    let got = in_root_paths(&root, Path::new("/usr/share/doc/x/y")).unwrap();
    assert_eq!(got, vec![root.join("usr/share/doc/x/y")]);
    // A symlink: the link and (when it resolves) its target.
    std::fs::write(root.join("usr/bin/real"), b"").unwrap();
    let got = in_root_paths(&root, Path::new("/bin/alias")).unwrap();
    assert_eq!(
        got,
        vec![root.join("usr/bin/alias"), root.join("usr/bin/real")]
    );
    // ".." cannot climb out of the root.
    let got = in_root_paths(&root, Path::new("/../../etc/passwd")).unwrap();
    assert_eq!(got, vec![root.join("etc/passwd")]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn paths_are_normalised_and_bad_ones_make_the_log_untrusted() {
    let n = |p: &str| normalise(p).map(|(c, d)| (c.display().to_string(), d));
    assert_eq!(n("/a/./b//c/"), Ok(("/a/b/c".into(), false)));
    assert_eq!(n("/r/opt/app/../../x"), Ok(("/r/x".into(), true)));
    assert_eq!(n("/"), Ok(("/".into(), false)));
    assert_eq!(n("/a/.."), Ok(("/".into(), true)));
    assert_eq!(n("/a/../../etc"), Err("climbs above / through `..`"));
    assert_eq!(n("a/b"), Err("is not absolute"));
    assert_eq!(n(""), Err("is not absolute"));
    assert_eq!(n("/a\0b"), Err("has a NUL byte"));

    let dir = tmp("norm");
    let p = dir.join("changes.jsonl");
    let log = |paths: &[&str]| {
        let mut s = String::from("{\"backstop_changes\":1}\n");
        for q in paths {
            writeln!(
                s,
                "{{\"path\":{},\"nr\":257,\"pid\":1}}",
                serde_json::json!(q)
            )
            .unwrap();
        }
        s += "{\"end\":{\"records\":1,\"lost\":0,\"unresolved\":0}}\n";
        std::fs::write(&p, s).unwrap();
        ChangeSet::read(&p).unwrap()
    };
    let set = log(&["/r/opt/app/../../../sentinel/v", "/r/opt/app/f"]);
    assert_eq!(set.incomplete, None);
    assert!(set.paths.contains(Path::new("/sentinel/v")));
    assert_eq!(
        set.climbs,
        vec![(
            PathBuf::from("/sentinel/v"),
            "/r/opt/app/../../../sentinel/v".to_string()
        )]
    );
    let set = log(&["/r/opt/app/f", "relative/x"]);
    assert!(set.incomplete.unwrap().contains("not absolute"));
    let set = log(&["/../../x"]);
    assert!(set.incomplete.unwrap().contains("climbs above /"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_log_without_its_trailer_is_incomplete() {
    let dir = tmp("log");
    let p = dir.join("changes.jsonl");
    std::fs::write(
        &p,
        "{\"backstop_changes\":1}\n{\"path\":\"/a/b\",\"nr\":257,\"pid\":1}\n{\"pa",
    )
    .unwrap();
    let set = ChangeSet::read(&p).unwrap();
    assert!(set.paths.contains(Path::new("/a/b")));
    assert!(set.incomplete.is_some());

    let mut ev: ChangeEvent = unsafe { std::mem::zeroed() };
    ev.tid = std::process::id();
    ev.tgid = ev.tid;
    ev.nr = 257;
    ev.dirfd0 = AT_FDCWD;
    ev.dirfd1 = AT_FDCWD;
    let target = dir.join("written");
    let b = target.as_os_str().as_bytes();
    ev.path0[..b.len()].copy_from_slice(b);
    let mut log = ChangeLog::create(&p).unwrap();
    log.record(&ev).unwrap();
    log.record(&ev).unwrap();
    let t = log.finish(0).unwrap();
    assert_eq!(t.records, 2);
    let set = ChangeSet::read(&p).unwrap();
    assert_eq!(set.incomplete, None);
    assert_eq!(set.paths.into_iter().collect::<Vec<_>>(), vec![target]);

    let mut log = ChangeLog::create(&p).unwrap();
    log.record(&ev).unwrap();
    log.finish(3).unwrap();
    let set = ChangeSet::read(&p).unwrap();
    assert!(set.incomplete.unwrap().contains("lost 3"));

    std::fs::write(&p, "not json\n").unwrap();
    assert!(ChangeSet::read(&p).is_err(), "no header must be refused");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_log_that_is_not_a_change_log_is_its_own_error() {
    let err = ChangeSet::parse(
        &b"{\"path\":\"/etc/x\",\"nr\":1,\"pid\":1}\n"[..],
        Path::new("/x"),
    )
    .expect_err("no header");
    match &err {
        AgentError::BadChangeLog { line, reason, .. } => {
            assert_eq!((*line, reason.as_str()), (1, "no change log header"));
        }
        other => panic!("expected BadChangeLog, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "reading the change log /x line 1: no change log header"
    );
    assert_eq!(err.exit_code(), 1);
}
