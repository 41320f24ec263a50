//! The snapshot store as an attacker meets it: another local user trying
//! to read what it holds, a store an older agent left open, and `gc`
//! running while `create` stores objects. Real binaries, as root.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use support::{agent, is_root};

/// Root is needed to make files other users cannot read and to become
/// `nobody`; without it the test is skipped loudly, and under CI fails.
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{test}: needs root, and under CI a skip is a failure");
    eprintln!("\n*** SKIPPED {test}: needs root ***\n");
    false
}

/// A scratch directory whose path `nobody` can walk down to DATA/agent:
/// the store's own modes, and nothing above them, must keep it out.
struct Scratch {
    base: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let base =
            PathBuf::from("/var/tmp").join(format!("backstop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for d in ["", "data", "data/agent", "root"] {
            let p = base.join(d);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Scratch { base }
    }

    fn root(&self) -> PathBuf {
        self.base.join("root")
    }

    fn data(&self) -> PathBuf {
        self.base.join("data")
    }

    fn store(&self) -> PathBuf {
        self.data().join("agent/snapshots")
    }

    fn snapshot(&self, args: &[&str]) -> Output {
        Command::new(agent())
            .args(["snapshot", "--data"])
            .arg(self.data())
            .args(args)
            .output()
            .unwrap()
    }

    /// `snapshot create --json` of /etc and /opt; the snapshot id.
    fn create(&self) -> String {
        self.create_logged().0
    }

    /// [`Self::create`], and what it said on stderr.
    fn create_logged(&self) -> (String, String) {
        let root = self.root();
        let out = self.snapshot(&[
            "create",
            "--json",
            "--root",
            root.to_str().unwrap(),
            "--scope",
            "/etc",
            "--scope",
            "/opt",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "create: {stderr}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["id"].as_str().unwrap().to_string(), stderr)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Every path under `dir` (itself included), split into (dirs, files).
fn walk(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files) = (vec![dir.to_path_buf()], Vec::new());
    let mut i = 0;
    while i < dirs.len() {
        for e in std::fs::read_dir(&dirs[i]).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
        i += 1;
    }
    (dirs, files)
}

/// `cmd args` run as nobody:nogroup with no supplementary groups.
fn as_nobody(cmd: &str, path: &Path) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            cmd,
            "--",
        ])
        .arg(path)
        .output()
        .unwrap()
}

/// A scope with a secret: /etc/shadow 0600 and ordinary files.
fn scope_with_a_secret(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("opt/app/lib")).unwrap();
    std::fs::write(root.join("etc/shadow"), "root:$6$secret-hash:19000::::::\n").unwrap();
    std::fs::set_permissions(
        root.join("etc/shadow"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("etc/motd"), "hello\n").unwrap();
    std::fs::write(root.join("opt/app/lib/libx.so"), vec![7u8; 70_000]).unwrap();
}

/// Every file and directory of the store is refused to nobody: reading
/// each file, listing each directory. Returns how many files there were.
fn assert_nobody_reads_nothing(s: &Scratch) -> usize {
    // The check itself can fail: nobody reads a world-readable file
    // beside the store, on the same path.
    let control = s.data().join("agent/control");
    std::fs::write(&control, "readable").unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = as_nobody("cat", &control);
    assert!(
        out.status.success(),
        "nobody cannot read a 0644 file in DATA/agent, so this test proves nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&control).unwrap();
    let (dirs, files) = walk(&s.store());
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "snap"))
            && files
                .iter()
                .any(|f| f.starts_with(s.store().join("objects"))),
        "nothing to read: no manifest or no object in {files:?}"
    );
    for (list, cmd) in [(&files, "cat"), (&dirs, "ls")] {
        for p in list {
            let out = as_nobody(cmd, p);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("Permission denied"),
                "nobody ran `{cmd} {}`: exit {:?}, stdout {:?}, stderr {err:?}",
                p.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    // And by mode, not only because a parent is shut: every directory
    // 0700, every file 0600 or narrower, all root's.
    for (list, want) in [(&dirs, 0o700), (&files, 0o600)] {
        for p in list {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert!(
                m.mode() & 0o7777 == want && m.uid() == 0,
                "{} is mode {:o} owner {}, want {want:o} root",
                p.display(),
                m.mode() & 0o7777,
                m.uid()
            );
        }
    }
    files.len()
}

#[test]
fn nobody_can_read_any_object_or_manifest_of_a_snapshot() {
    if !root_or_skip("nobody_can_read_any_object_or_manifest_of_a_snapshot") {
        return;
    }
    let s = Scratch::new("store-nobody");
    scope_with_a_secret(&s.root());
    s.create();
    // A second snapshot after a change: more objects, a second manifest.
    std::fs::write(s.root().join("etc/motd"), "changed\n").unwrap();
    s.create();
    let n = assert_nobody_reads_nothing(&s);
    eprintln!("nobody was refused all {n} files of the store");
}

#[test]
fn a_store_left_open_by_an_older_agent_is_reported_and_made_private() {
    if !root_or_skip("a_store_left_open_by_an_older_agent_is_reported_and_made_private") {
        return;
    }
    let s = Scratch::new("store-loose");
    scope_with_a_secret(&s.root());
    let id = s.create();
    // What the agent before this change left: 0755 directories, 0644 files.
    let (dirs, files) = walk(&s.store());
    for d in &dirs {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let manifest = s.store().join(format!("{id}.snap"));
    assert!(
        as_nobody("cat", &manifest).status.success(),
        "the loosened store must be readable before it is opened again"
    );
    let out = s.snapshot(&["list"]);
    assert!(out.status.success(), "list: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for (p, mode) in [
        (s.store(), "755"),
        (s.store().join("objects"), "755"),
        (manifest.clone(), "644"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&p.display().to_string()) && l.contains(mode)),
            "no warning naming {} and its old mode {mode}: {err}",
            p.display()
        );
    }
    assert_nobody_reads_nothing(&s);
}

/// Path -> (mode, content) of every file under the scope's directories.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for top in ["etc", "opt"] {
        for f in walk(&root.join(top)).1 {
            let m = std::fs::symlink_metadata(&f).unwrap();
            out.insert(f.clone(), (m.mode(), std::fs::read(&f).unwrap()));
        }
    }
    out
}

/// Round `i` of changes: 40 files rewritten with new content (new
/// objects), a few removed and added.
fn change(root: &Path, i: usize) {
    let dir = root.join("opt/app/data");
    std::fs::create_dir_all(&dir).unwrap();
    for j in 0..40 {
        let body: Vec<u8> = format!("round {i} file {j} ")
            .bytes()
            .cycle()
            .take(8_000 + 1_000 * j)
            .collect();
        std::fs::write(dir.join(format!("f{j}")), body).unwrap();
    }
    let _ = std::fs::remove_file(dir.join(format!("extra{}", i.wrapping_sub(2))));
    std::fs::write(dir.join(format!("extra{i}")), format!("extra {i}")).unwrap();
}

#[test]
fn gc_racing_create_never_takes_what_a_snapshot_needs() {
    if !root_or_skip("gc_racing_create_never_takes_what_a_snapshot_needs") {
        return;
    }
    let s = Arc::new(Scratch::new("store-gc-race"));
    scope_with_a_secret(&s.root());
    // gc in a loop, each a separate process, as an operator's cron would.
    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut runs, mut waited) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let out = s.snapshot(&["gc"]);
                assert!(out.status.success(), "gc: {out:?}");
                runs += 1;
                waited += usize::from(String::from_utf8_lossy(&out.stderr).contains("waiting"));
            }
            (runs, waited)
        })
    };
    let mut made = Vec::new();
    let mut create_waited = 0;
    for i in 0..12 {
        change(&s.root(), i);
        let want = tree(&s.root());
        let (id, stderr) = s.create_logged();
        create_waited += usize::from(stderr.contains("waiting"));
        made.push((id, want));
    }
    stop.store(true, Ordering::Relaxed);
    let (gc_runs, gc_waited) = gc.join().unwrap();
    eprintln!(
        "{} creates, {gc_runs} gc runs; gc waited for a create {gc_waited} times, a create for gc {create_waited} times",
        made.len()
    );
    assert!(
        gc_runs >= 3 && gc_waited + create_waited > 0,
        "gc and create never overlapped ({gc_runs} gc runs): the race was not tried"
    );
    // A last gc with nothing running, then every snapshot, oldest first
    // and newest first, restores exactly.
    assert!(s.snapshot(&["gc"]).status.success());
    for (id, want) in made.iter().chain(made.iter().rev()) {
        let out = s.snapshot(&["restore", id, "--verify", "--json"]);
        assert!(
            out.status.success(),
            "restore {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verified"], true, "restore {id}: {v}");
        let now = tree(&s.root());
        assert!(
            &now == want,
            "snapshot {id} restored a different tree: {:?}",
            want.keys()
                .chain(now.keys())
                .filter(|k| want.get(*k) != now.get(*k))
                .collect::<Vec<_>>()
        );
    }
}
