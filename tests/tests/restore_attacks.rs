//! Restore under attack, as root: a hostile change log, a symlinked scope
//! ancestor, a daemon swapping directories for symlinks during the
//! restore, and a hard link out of the scope. Each test keeps a sentinel
//! directory outside the root whose full walk (content, mode, owner, inode,
//! link count, mtime) must be identical before and after.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::Value;
use support::sentinel::{self, assert_untouched};
use support::{agent, is_root};

/// base/{root,sentinel,data}, removed on drop.
struct Lab {
    base: PathBuf,
    root: PathBuf,
    sentinel: PathBuf,
    data: PathBuf,
}

impl Lab {
    fn new(name: &str) -> Option<Lab> {
        if !is_root() {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "{name}: needs root, and under CI a skip is a failure");
            eprintln!("\n*** SKIPPED {name}: needs root (ownership, setuid) ***\n");
            return None;
        }
        // /var/tmp: one filesystem for root and sentinel, so hard links work.
        let base = PathBuf::from(format!(
            "/var/tmp/backstop-attack-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        let lab = Lab {
            root: base.join("root"),
            sentinel: base.join("sentinel"),
            data: base.join("data"),
            base,
        };
        for d in [&lab.root, &lab.sentinel, &lab.data] {
            std::fs::create_dir_all(d).unwrap();
        }
        Some(lab)
    }

    fn r(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn agent(&self, args: &[&str]) -> Output {
        Command::new(agent())
            .args(["snapshot", "--json", "--data"])
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap()
    }

    fn create(&self, scope: &str) -> String {
        let out = self.agent(&[
            "create",
            "--root",
            self.root.to_str().unwrap(),
            "--scope",
            scope,
        ]);
        assert!(out.status.success(), "create: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// `restore ID --verify [args]`, which must succeed and verify.
    fn restore_ok(&self, id: &str, args: &[&str]) -> Value {
        let mut a = vec!["restore", id, "--verify"];
        a.extend(args);
        let out = self.agent(&a);
        assert!(out.status.success(), "restore {args:?}: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verified"], true, "the agent's own verify: {v}");
        v
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(p: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A sentinel with files a confused restore would overwrite, delete or
/// chmod: names like the scope's, other content and modes, another owner.
fn fill_sentinel(dir: &Path) {
    write(&dir.join("victim"), b"precious", 0o600);
    write(&dir.join("app/file1"), b"sentinel's file1", 0o640);
    write(&dir.join("app/a/b/c"), b"sentinel's c", 0o600);
    for i in 0..20 {
        write(&dir.join(format!("f{i}")), b"sentinel data", 0o600);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let c = std::ffi::CString::new(dir.join("victim").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 1000, 1000) }, 0);
}

/// The scope as an independent walk sees it (the sentinel walker, whose
/// inode numbers are left out: a restore may give a file a new inode).
fn scope_walk(dir: &Path) -> sentinel::Walk {
    let mut w = sentinel::walk(dir);
    for n in w.values_mut() {
        n.ino = 0;
    }
    w
}

fn assert_scope_is(dir: &Path, want: &sentinel::Walk, what: &str) {
    let got = scope_walk(dir);
    let mut diffs: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("~ {k}: want {v:?}, got {:?}", got.get(k)))
        .collect();
    diffs.extend(
        got.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("+ {k}")),
    );
    assert!(
        diffs.is_empty(),
        "{what}: scope differs:\n{}",
        diffs.join("\n")
    );
}

/// Lines of a change log as `watch --changes` writes it, trailer included.
fn change_log(path: &Path, paths: &[String]) {
    let mut s = String::from("{\"backstop_changes\":1}\n");
    for p in paths {
        s.push_str(&serde_json::json!({"path": p, "nr": 257, "pid": 1}).to_string());
        s.push('\n');
    }
    s.push_str("{\"end\":{\"records\":1,\"lost\":0,\"unresolved\":0}}\n");
    std::fs::write(path, s).unwrap();
}

fn app_tree(lab: &Lab) {
    write(&lab.r("opt/app/file1"), b"one", 0o644);
    write(&lab.r("opt/app/a/b/c"), b"cee", 0o600);
    write(&lab.r("opt/app/keep"), b"keep", 0o644);
    // A sibling whose name has the scope's as a text prefix.
    write(&lab.r("opt/app2/x"), b"not in the scope", 0o644);
}

#[test]
fn a_hostile_change_log_is_normalised_or_refused_and_the_sentinel_is_untouched() {
    let Some(lab) = Lab::new("log") else { return };
    app_tree(&lab);
    fill_sentinel(&lab.sentinel);
    let id = lab.create("/opt/app");
    let want = scope_walk(&lab.r("opt/app"));
    let guard = sentinel::walk(&lab.sentinel);
    let app2 = sentinel::walk(&lab.r("opt/app2"));
    let root = lab.root.display().to_string();
    let attack = |lab: &Lab| {
        write(&lab.r("opt/app/file1"), b"changed", 0o777);
        write(&lab.r("opt/app/new"), b"new", 0o644);
        std::fs::remove_file(lab.r("opt/app/a/b/c")).unwrap();
        let _ = std::fs::remove_file(lab.r("opt/app/link"));
        std::os::unix::fs::symlink(&lab.sentinel, lab.r("opt/app/link")).unwrap();
    };
    let honest = [
        format!("{root}/opt/app/file1"),
        format!("{root}/opt/app/new"),
        format!("{root}/opt/app/a/b/c"),
        format!("{root}/opt/app/link"),
    ];
    let log = lab.base.join("changes");

    // 1. `..` climbing out of the scope and the root: the log is not
    // trusted, the reason is printed, the whole scope is walked.
    attack(&lab);
    let mut lines = honest.to_vec();
    lines.push(format!("{root}/opt/app/../../../sentinel/victim"));
    lines.push(format!("{root}/opt/app/../../../sentinel"));
    change_log(&log, &lines);
    let out = lab.agent(&[
        "restore",
        &id,
        "--verify",
        "--changes",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = v["full_walk_reason"].as_str().unwrap_or_default();
    assert!(why.contains(".."), "the reason names the `..` path: {v}");
    assert!(
        stderr(&out).contains("walked the whole scope"),
        "{}",
        stderr(&out)
    );
    assert_eq!(v["verified"], true, "{v}");
    assert_scope_is(&lab.r("opt/app"), &want, "after a log with ..");
    assert_untouched(&lab.sentinel, &guard, "a log with ..");

    // 2. A relative path: not trusted either.
    attack(&lab);
    let mut lines = honest.to_vec();
    lines.push("sentinel/victim".into());
    change_log(&log, &lines);
    let v = lab.restore_ok(&id, &["--changes", log.to_str().unwrap()]);
    let why = v["full_walk_reason"].as_str().unwrap_or_default();
    assert!(why.contains("not absolute"), "{v}");
    assert_scope_is(&lab.r("opt/app"), &want, "after a relative path");

    // 3. Paths outside the root, in a sibling sharing the scope's text
    // prefix, and through a symlinked component inside the scope: the log
    // is used, those paths lead nowhere, the scope comes back exact.
    attack(&lab);
    let mut lines = honest.to_vec();
    lines.push(format!("{}/victim", lab.sentinel.display()));
    lines.push(format!("{root}/opt/app2/x"));
    lines.push(format!("{root}/opt/app/link/victim"));
    lines.push(format!("{root}/opt/app/link/app/file1"));
    change_log(&log, &lines);
    let v = lab.restore_ok(&id, &["--changes", log.to_str().unwrap()]);
    assert!(v["full_walk_reason"].is_null(), "the log is trusted: {v}");
    assert!(v["looked_at"].as_u64().is_some(), "{v}");
    assert_eq!(v["missed_by_changes"], serde_json::json!([]), "{v}");
    assert_scope_is(
        &lab.r("opt/app"),
        &want,
        "after outside and symlinked paths",
    );
    assert_untouched(&lab.sentinel, &guard, "outside and symlinked paths");
    assert_untouched(&lab.r("opt/app2"), &app2, "the text-prefix sibling");
}

#[test]
fn a_scope_whose_ancestor_is_a_symlink_is_refused_at_create_and_restore() {
    let Some(lab) = Lab::new("ancestor") else {
        return;
    };
    app_tree(&lab);
    fill_sentinel(&lab.sentinel);
    let id = lab.create("/opt/app");
    let guard = sentinel::walk(&lab.sentinel);
    // <root>/opt -> sentinel, which has an app/ of its own.
    std::fs::rename(lab.r("opt"), lab.base.join("opt.real")).unwrap();
    std::os::unix::fs::symlink(&lab.sentinel, lab.r("opt")).unwrap();

    let out = lab.agent(&[
        "create",
        "--root",
        lab.root.to_str().unwrap(),
        "--scope",
        "/opt/app",
    ]);
    assert!(!out.status.success(), "create followed the symlink");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}/opt", lab.root.display())) && err.contains("symlink"),
        "the error names the symlink: {err}"
    );
    for args in [vec!["restore", &id], vec!["restore", &id, "--verify"]] {
        let out = lab.agent(&args);
        assert!(!out.status.success(), "restore followed the symlink");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}/opt", lab.root.display())) && err.contains("symlink"),
            "the error names the symlink: {err}"
        );
    }
    let out = lab.agent(&["diff", &id]);
    assert!(!out.status.success(), "diff compared through the symlink");
    assert_untouched(&lab.sentinel, &guard, "a symlinked scope ancestor");
}

/// 2000 small files in 20 directories and four 2 MB files.
fn big_tree(app: &Path) {
    for d in 0..20 {
        for f in 0..100 {
            write(
                &app.join(format!("d{d}/f{f}")),
                format!("{d}/{f}").as_bytes(),
                0o644,
            );
        }
    }
    let mb = vec![7u8; 2 << 20];
    for d in [3, 7, 11, 15] {
        write(&app.join(format!("d{d}/big")), &mb, 0o600);
    }
}

/// Swap `dir` for a symlink to `to`, and back, until told to stop; then
/// leave the real directory in place. Returns the number of swaps. The
/// symlink stays most of the time, so a restore that follows it is caught.
/// It starts once `begun` exists (the restore's marker, written after its
/// walk and plan), as a daemon left by the install would strike.
fn swapper(
    dir: PathBuf,
    to: PathBuf,
    begun: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let aside = dir.with_extension("real");
        let mut n = 0;
        while !begun.exists() && !stop.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        while !stop.load(Ordering::Relaxed) {
            if std::fs::rename(&dir, &aside).is_ok() {
                if std::os::unix::fs::symlink(&to, &dir).is_ok() {
                    n += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    let _ = std::fs::remove_file(&dir);
                }
                let _ = std::fs::rename(&aside, &dir);
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&dir);
        }
        let _ = std::fs::rename(&aside, &dir);
        n
    })
}

#[test]
fn a_directory_swapped_for_a_symlink_during_restore_never_leads_outside() {
    let Some(lab) = Lab::new("race") else { return };
    let app = lab.r("opt/app");
    big_tree(&app);
    fill_sentinel(&lab.sentinel);
    for d in [3, 7] {
        for f in 0..20 {
            write(&lab.sentinel.join(format!("d{d}/f{f}")), b"sentinel", 0o600);
        }
    }
    let id = lab.create("/opt/app");
    let want = scope_walk(&app);
    let guard = sentinel::walk(&lab.sentinel);
    let swaps = AtomicU64::new(0);
    let begun = lab
        .data
        .join(format!("agent/snapshots/restore-{id}.journal"));
    for round in 0..3 {
        // Every file changed, so the restore rewrites all of them.
        for d in 0..20 {
            for f in (0..100).step_by(2) {
                write(
                    &app.join(format!("d{d}/f{f}")),
                    b"changed by the install",
                    0o777,
                );
            }
            std::fs::set_permissions(
                app.join(format!("d{d}")),
                std::fs::Permissions::from_mode(0o757),
            )
            .unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let attackers: Vec<_> = [
            (app.join("d3"), lab.sentinel.clone()),
            (app.join("d7"), lab.sentinel.join("d7")),
            (app.join("d11"), lab.sentinel.join("app")),
        ]
        .into_iter()
        .map(|(d, to)| swapper(d, to, begun.clone(), stop.clone()))
        .collect();
        let out = lab.agent(&["restore", &id, "--verify"]);
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "round {round}: restore under attack: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            stderr(&out).trim()
        );
        for a in attackers {
            swaps.fetch_add(a.join().unwrap(), Ordering::Relaxed);
        }
        assert_untouched(&lab.sentinel, &guard, &format!("race round {round}"));
        if !out.status.success() {
            // A clean failure names the path it refused, or is the agent's
            // own verify finding the tree still moving under it.
            let err = stderr(&out);
            let verify_said_so =
                serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| v["verified"] == false);
            assert!(
                verify_said_so || err.contains(&app.display().to_string()),
                "round {round}: a failure must name the path: {err}"
            );
            eprintln!("round {round}: restore failed cleanly: {}", err.trim());
        }
        // Without the attacker, a rerun ends exact.
        lab.restore_ok(&id, &[]);
        assert_scope_is(&app, &want, &format!("race round {round}, after a rerun"));
    }
    assert!(
        swaps.load(Ordering::Relaxed) > 0,
        "the attackers never swapped a directory during the restores"
    );
    assert_untouched(&lab.sentinel, &guard, "the race, at the end");
}

#[test]
fn a_hard_link_out_of_the_scope_is_replaced_by_a_fresh_file() {
    let Some(lab) = Lab::new("hardlink") else {
        return;
    };
    write(
        &lab.r("opt/app/bin/tool"),
        b"#!/bin/sh\necho tool\n",
        0o4755,
    );
    write(&lab.r("opt/app/lib/pair1"), b"paired", 0o644);
    std::fs::hard_link(lab.r("opt/app/lib/pair1"), lab.r("opt/app/lib/pair2")).unwrap();
    fill_sentinel(&lab.sentinel);
    // Same content as the in-scope setuid file, but harmless: 0644, user 1000.
    let outside = lab.sentinel.join("tool-copy");
    write(&outside, b"#!/bin/sh\necho tool\n", 0o644);
    let c = std::ffi::CString::new(outside.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 1000, 1000) }, 0);
    write(&lab.sentinel.join("pair-copy"), b"paired", 0o644);
    let id = lab.create("/opt/app");
    let want = scope_walk(&lab.r("opt/app"));
    // Before the attack: the links it adds to sentinel inodes must be gone.
    let guard = sentinel::walk(&lab.sentinel);

    // The attack: the setuid file and one member of the pair become hard
    // links to sentinel files with the same content.
    std::fs::remove_file(lab.r("opt/app/bin/tool")).unwrap();
    std::fs::hard_link(&outside, lab.r("opt/app/bin/tool")).unwrap();
    std::fs::remove_file(lab.r("opt/app/lib/pair2")).unwrap();
    std::fs::hard_link(lab.sentinel.join("pair-copy"), lab.r("opt/app/lib/pair2")).unwrap();

    // diff (what --verify runs) sees the attack.
    let out = lab.agent(&["diff", &id]);
    assert!(out.status.success(), "diff: {}", stderr(&out));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changed = d["changed"].to_string();
    assert!(
        changed.contains("/opt/app/bin/tool"),
        "diff missed the hard link: {d}"
    );
    assert!(
        changed.contains("/opt/app/lib/pair2"),
        "diff missed the group member: {d}"
    );

    lab.restore_ok(&id, &[]);
    assert_untouched(&lab.sentinel, &guard, "hard links out of the scope");
    let tool = std::fs::symlink_metadata(lab.r("opt/app/bin/tool")).unwrap();
    let out_m = std::fs::symlink_metadata(&outside).unwrap();
    assert_ne!(tool.ino(), out_m.ino(), "the in-scope path is a fresh file");
    assert_eq!(
        (tool.mode() & 0o7777, tool.uid(), tool.nlink()),
        (0o4755, 0, 1)
    );
    assert_eq!(
        (out_m.mode() & 0o7777, out_m.uid(), out_m.nlink()),
        (0o644, 1000, 1)
    );
    assert_eq!(
        std::fs::read(lab.r("opt/app/bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    let (p1, p2) = (
        std::fs::symlink_metadata(lab.r("opt/app/lib/pair1")).unwrap(),
        std::fs::symlink_metadata(lab.r("opt/app/lib/pair2")).unwrap(),
    );
    assert_eq!(
        (p1.ino(), p1.nlink()),
        (p2.ino(), 2),
        "the pair is one inode again"
    );
    assert_scope_is(&lab.r("opt/app"), &want, "after the hard-link attack");
}
