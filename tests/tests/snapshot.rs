//! Snapshots and restore on a real Debian root with real packages: the
//! tree after a restore must equal the tree before, by an independent walk
//! that compares content, mode, owner, mtime, symlink targets, device
//! numbers, xattrs and hardlinks.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{agent, bin_dir, deb_file, is_root};

const SCOPES: [&str; 4] = ["/etc", "/usr", "/var/lib/dpkg", "/opt"];

/// A copy of the cached rootfs, removed on drop.
struct Root {
    dir: PathBuf,
    data: PathBuf,
}

impl Root {
    fn new(name: &str) -> Option<Root> {
        let cached = bin_dir().join("../xtask/rootfs-bookworm-minbase");
        if !cached.join(".backstop-complete").exists() || !is_root() {
            assert!(
                std::env::var("CI").is_err(),
                "{name}: the Debian rootfs fixture is missing or not root under CI (cargo xtask test builds it)"
            );
            eprintln!(
                "*** SKIPPED {name}: needs root and the rootfs fixture (cargo xtask test makes it) ***"
            );
            return None;
        }
        let base =
            PathBuf::from("/var/tmp").join(format!("backstop-snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join("root");
        let ok = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&cached)
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "copying the rootfs");
        Some(Root {
            data: base.join("data"),
            dir,
        })
    }

    fn agent(&self, args: &[&str]) -> std::process::Output {
        Command::new(agent())
            .args(["snapshot", "--data"])
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap()
    }

    fn create(&self, scopes: &[&str]) -> String {
        let mut args = vec!["create", "--json", "--root", self.dir.to_str().unwrap()];
        for s in scopes {
            args.extend(["--scope", s]);
        }
        let out = self.agent(&args);
        assert!(
            out.status.success(),
            "create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn restore(&self, id: &str) -> Value {
        let out = self.agent(&["restore", id, "--verify", "--json"]);
        assert!(
            out.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verified"], true, "the agent's own verify: {v}");
        v
    }

    fn chroot(&self, args: &[&str]) -> std::process::Output {
        Command::new("chroot")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    fn deb(&self, pkg: &str) -> String {
        let src = deb_file(pkg);
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&src, self.dir.join("tmp").join(&name)).unwrap();
        format!("/tmp/{name}")
    }

    fn installed(&self, pkg: &str) -> bool {
        let out = self.chroot(&["dpkg-query", "-W", "-f=${Status}", pkg]);
        String::from_utf8_lossy(&out.stdout).contains("install ok installed")
    }

    fn walk(&self) -> Tree {
        walk(&self.dir, &SCOPES)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.dir.parent().unwrap());
    }
}

/// What the independent walk records of one path.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    rdev: u64,
    content: u64,
    target: Option<PathBuf>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first path (in walk order) with the same inode, for hardlinks.
    inode_twin: Option<String>,
}

type Tree = BTreeMap<String, Seen>;

fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: buffer and C string are valid.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let cn = CString::new(name).unwrap();
            let mut v = vec![0u8; 65536];
            // SAFETY: buffer and C strings are valid.
            let len =
                unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            v.truncate(len.max(0) as usize);
            (name.to_vec(), v)
        })
        .collect();
    out.sort();
    out
}

fn walk(root: &Path, scopes: &[&str]) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack: Vec<PathBuf> = scopes
        .iter()
        .map(|s| root.join(s.trim_start_matches('/')))
        .collect();
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
        let ft = m.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(e.path());
            }
        }
        let content = if ft.is_file() {
            let mut h = std::hash::DefaultHasher::new();
            let mut f = std::fs::File::open(&p).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                buf[..n].hash(&mut h);
            }
            h.finish()
        } else {
            0
        };
        let inode_twin = (ft.is_file() && m.nlink() > 1).then(|| {
            inodes
                .entry((m.dev(), m.ino()))
                .or_insert(rel.clone())
                .clone()
        });
        tree.insert(
            rel,
            Seen {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if ft.is_file() { m.len() } else { 0 },
                rdev: m.rdev(),
                content,
                target: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                xattrs: xattrs(&p),
                inode_twin,
            },
        );
    }
    tree
}

/// Where two trees differ, for a readable failure.
fn differences(a: &Tree, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("- {k}")),
            Some(w) if w != v => out.push(format!("~ {k}: {v:?} -> {w:?}")),
            _ => {}
        }
    }
    out.extend(
        b.keys()
            .filter(|k| !a.contains_key(*k))
            .map(|k| format!("+ {k}")),
    );
    out.truncate(20);
    out
}

fn assert_same(before: &Tree, after: &Tree, what: &str) {
    let d = differences(before, after);
    assert!(
        d.is_empty(),
        "{what}: the tree differs from before:\n{}",
        d.join("\n")
    );
}

#[test]
fn dpkg_install_then_restore_is_identical() {
    let Some(root) = Root::new("install") else {
        return;
    };
    let before = root.walk();
    let id = root.create(&SCOPES);
    let deb = root.deb("cpio");
    let out = root.chroot(&["dpkg", "-i", &deb]);
    assert!(
        out.status.success(),
        "dpkg -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.installed("cpio"));
    assert!(
        !differences(&before, &root.walk()).is_empty(),
        "the install changed nothing?"
    );
    let r = root.restore(&id);
    assert!(r["removed"].as_u64().unwrap() > 0, "{r}");
    assert_same(&before, &root.walk(), "after restoring an install");
    assert!(
        !root.installed("cpio"),
        "dpkg still thinks cpio is installed"
    );

    // A second snapshot of the unchanged scope hashes nothing again.
    let out = root.agent(&[
        "create",
        "--json",
        "--root",
        root.dir.to_str().unwrap(),
        "--scope",
        "/etc",
        "--scope",
        "/usr",
        "--scope",
        "/var/lib/dpkg",
        "--scope",
        "/opt",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["hashed_files"].as_u64().unwrap() < 10,
        "second snapshot re-hashed {v}"
    );
}

#[test]
fn failed_postinst_then_restore_is_identical() {
    let Some(root) = Root::new("postinst") else {
        return;
    };
    // Repack a real package with a postinst that fails.
    let work = root.dir.parent().unwrap().join("repack");
    let hello = deb_file("hello");
    assert!(
        Command::new("dpkg-deb")
            .arg("-R")
            .arg(&hello)
            .arg(&work)
            .status()
            .unwrap()
            .success()
    );
    let postinst = work.join("DEBIAN/postinst");
    std::fs::write(
        &postinst,
        "#!/bin/sh\necho failing on purpose >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&postinst, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bad = root.dir.join("tmp/hello-bad.deb");
    let built = Command::new("dpkg-deb")
        .arg("-b")
        .arg(&work)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let before = root.walk();
    let id = root.create(&SCOPES);
    let out = root.chroot(&["dpkg", "-i", "/tmp/hello-bad.deb"]);
    assert!(!out.status.success(), "the postinst was meant to fail");
    root.restore(&id);
    assert_same(&before, &root.walk(), "after restoring a failed install");
    assert!(!root.installed("hello"));
}

#[test]
fn removal_then_restore_is_identical() {
    let Some(root) = Root::new("removal") else {
        return;
    };
    let deb = root.deb("less");
    assert!(root.chroot(&["dpkg", "-i", &deb]).status.success());
    assert!(root.installed("less"));
    let before = root.walk();
    let id = root.create(&SCOPES);
    let out = root.chroot(&["dpkg", "--purge", "less"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.installed("less"));
    root.restore(&id);
    assert_same(&before, &root.walk(), "after restoring a removal");
    assert!(
        root.installed("less"),
        "dpkg should see less installed again"
    );
}

#[test]
fn killed_restore_finishes_when_run_again() {
    let Some(root) = Root::new("killed") else {
        return;
    };
    let before = root.walk();
    let id = root.create(&SCOPES);
    let deb = root.deb("cpio");
    assert!(root.chroot(&["dpkg", "-i", &deb]).status.success());
    let out = Command::new(agent())
        .args(["snapshot", "--data"])
        .arg(&root.data)
        .args(["restore", &id])
        .env("BACKSTOP_TEST_KILL_RESTORE_AFTER", "10")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGKILL),
        "the restore was killed midway"
    );
    let midway = root.walk();
    assert!(
        !differences(&before, &midway).is_empty(),
        "a killed restore should not have finished"
    );
    let r = root.restore(&id);
    assert_eq!(
        r["resumed"], true,
        "the second run knows the first was interrupted: {r}"
    );
    assert_same(
        &before,
        &root.walk(),
        "after finishing an interrupted restore",
    );
}

#[test]
fn corrupt_object_is_refused_and_nothing_changes() {
    let Some(root) = Root::new("corrupt") else {
        return;
    };
    let id = root.create(&SCOPES);
    let deb = root.deb("cpio");
    assert!(root.chroot(&["dpkg", "-i", &deb]).status.success());
    // The restore will need /var/lib/dpkg/status back: damage its object.
    let show: Value = serde_json::from_slice(&root.agent(&["show", &id, "--json"]).stdout).unwrap();
    let hash = show["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/var/lib/dpkg/status")
        .and_then(|e| e["hash"].as_str())
        .unwrap()
        .to_string();
    let obj = root
        .data
        .join("agent/snapshots/objects")
        .join(&hash[..2])
        .join(&hash[2..]);
    let mut bytes = std::fs::read(&obj).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&obj, bytes).unwrap();
    let installed = root.walk();
    let out = root.agent(&["restore", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&hash) && stderr.contains("/var/lib/dpkg/status"),
        "names the object and the path: {stderr}"
    );
    assert_same(&installed, &root.walk(), "a refused restore");
    assert!(root.installed("cpio"));
}

#[test]
fn hardlinks_fifos_capabilities_setuid_and_acls_round_trip() {
    let Some(root) = Root::new("special") else {
        return;
    };
    let opt = root.dir.join("opt/special");
    std::fs::create_dir_all(&opt).unwrap();
    std::fs::write(opt.join("a"), b"linked content").unwrap();
    std::fs::hard_link(opt.join("a"), opt.join("b")).unwrap();
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings.
    assert_eq!(
        unsafe { libc::mkfifo(c(&opt.join("fifo")).as_ptr(), 0o640) },
        0
    );
    assert_eq!(
        unsafe {
            libc::mknod(
                c(&opt.join("null")).as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3),
            )
        },
        0
    );
    std::fs::write(opt.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(opt.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(opt.join("capped"), b"binary").unwrap();
    // vfs_cap_data v2: effective, cap_net_bind_service permitted.
    let mut cap = Vec::new();
    for w in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    let set = |p: &Path, name: &str, v: &[u8]| {
        let n = CString::new(name).unwrap();
        // SAFETY: valid C strings and buffer.
        let r =
            unsafe { libc::lsetxattr(c(p).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
        assert_eq!(
            r,
            0,
            "setting {name} on {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    };
    set(&opt.join("capped"), "security.capability", &cap);
    // A POSIX ACL granting uid 1000 read: user_obj, user, group_obj, mask, other.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    std::fs::write(opt.join("acl"), b"shared").unwrap();
    set(&opt.join("acl"), "system.posix_acl_access", &acl);
    std::os::unix::fs::symlink("a", opt.join("link")).unwrap();
    std::os::unix::fs::chown(opt.join("b"), Some(1000), Some(1000)).unwrap();

    let before = root.walk();
    assert!(
        before["/opt/special/b"].inode_twin.as_deref()
            == before["/opt/special/a"].inode_twin.as_deref(),
        "the pair shares an inode"
    );
    let id = root.create(&["/opt"]);

    // Break everything.
    std::fs::remove_file(opt.join("b")).unwrap();
    std::fs::write(opt.join("b"), b"linked content").unwrap();
    std::fs::remove_file(opt.join("fifo")).unwrap();
    std::fs::remove_file(opt.join("null")).unwrap();
    std::fs::set_permissions(opt.join("suid"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: valid C strings.
    unsafe {
        libc::lremovexattr(
            c(&opt.join("capped")).as_ptr(),
            c"security.capability".as_ptr(),
        );
        libc::lremovexattr(
            c(&opt.join("acl")).as_ptr(),
            c"system.posix_acl_access".as_ptr(),
        );
    }
    std::fs::write(opt.join("a"), b"changed").unwrap();
    std::fs::remove_file(opt.join("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", opt.join("link")).unwrap();
    std::fs::write(opt.join("new"), b"not in the snapshot").unwrap();

    root.restore(&id);
    let after = root.walk();
    assert_same(&before, &after, "special files");
    assert_eq!(
        after["/opt/special/b"].inode_twin, after["/opt/special/a"].inode_twin,
        "the hardlink pair is one inode again"
    );
    assert_eq!(after["/opt/special/suid"].mode & 0o7777, 0o4755);
}

#[test]
fn bad_input_is_a_clear_error() {
    let Some(root) = Root::new("badinput") else {
        return;
    };
    let out = root.agent(&["restore", "s-no-such-snapshot"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no snapshot s-no-such-snapshot"));
    let out = root.agent(&[
        "create",
        "--root",
        root.dir.to_str().unwrap(),
        "--scope",
        "etc",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scope etc must be an absolute path"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A truncated manifest is refused, naming the snapshot.
    let id = root.create(&["/opt"]);
    let manifest = root.data.join(format!("agent/snapshots/{id}.snap"));
    let bytes = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &bytes[..bytes.len() / 2]).unwrap();
    let out = root.agent(&["restore", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&id) && stderr.contains("damaged"),
        "{stderr}"
    );
}

#[test]
fn no_room_is_refused_before_copying() {
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let Some(root) = Root::new("noroom") else {
        return;
    };
    // A data directory on a 4 MiB tmpfs: /usr does not fit.
    std::fs::create_dir_all(&root.data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&root.data)
        .status()
        .unwrap()
        .success();
    assert!(mounted, "mounting a small tmpfs");
    let _umount = Unmount(root.data.clone());
    let out = root.agent(&[
        "create",
        "--root",
        root.dir.to_str().unwrap(),
        "--scope",
        "/usr",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not enough room"), "{stderr}");
    let objects = root.data.join("agent/snapshots/objects");
    let stored: Vec<_> = std::fs::read_dir(&objects).unwrap().flatten().collect();
    assert!(
        stored.is_empty(),
        "nothing was copied before the refusal: {stored:?}"
    );
    let out = root.agent(&["list", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[]",
        "no snapshot was recorded"
    );
}

impl Root {
    /// `chroot ROOT ARGS` as a tracked tree, its changes logged to the
    /// returned file.
    fn tracked_chroot(&self, args: &[&str]) -> (std::process::Output, PathBuf) {
        let log = self.dir.parent().unwrap().join("install.changes");
        let out = Command::new(agent())
            .arg("watch")
            .arg("--json")
            .arg("--changes")
            .arg(&log)
            .arg("--")
            .arg("chroot")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap();
        (out, log)
    }

    fn restore_with(&self, id: &str, log: &Path) -> Value {
        let out = self.agent(&[
            "restore",
            id,
            "--verify",
            "--json",
            "--changes",
            log.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "restore --changes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The summary line of `watch --json`.
fn summary(out: &std::process::Output) -> Value {
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str::<Value>(&last).unwrap()["summary"].clone()
}

#[test]
fn restore_guided_by_the_probes_change_log_is_identical_and_looks_only_there() {
    let Some(_g) = support::ebpf_or_skip("restore_guided_by_the_probes_change_log") else {
        return;
    };
    let Some(root) = Root::new("tracked") else {
        return;
    };
    let before = root.walk();
    let id = root.create(&SCOPES);
    let deb = root.deb("cpio");
    let (out, log) = root.tracked_chroot(&["dpkg", "-i", &deb]);
    assert!(
        out.status.success(),
        "dpkg -i under watch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out);
    assert_eq!(s["changes"]["lost"], 0, "{s}");
    assert_eq!(s["changes"]["unresolved"], 0, "{s}");
    assert!(s["changes"]["records"].as_u64().unwrap() > 50, "{s}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let bin = root.dir.join("usr/bin/cpio");
    assert!(
        logged.contains(&format!("\"{}\"", bin.display())),
        "the log does not name {}:\n{logged}",
        bin.display()
    );
    assert!(root.installed("cpio"));

    let r = root.restore_with(&id, &log);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["full_walk_reason"], Value::Null, "{r}");
    assert_eq!(
        r["missed_by_changes"],
        serde_json::json!([]),
        "the full compare found changes the log did not name: {r}"
    );
    let looked_at = r["looked_at"].as_u64().unwrap();
    eprintln!("looked at {looked_at} of {} entries", before.len());
    // Idle, this install's log leads to 118 of 6578 entries; stop 31's
    // CI once saw 537, which passes alone and under load: the log it
    // followed is printed on failure, to say which path widened it.
    assert!(
        looked_at * 20 < before.len() as u64,
        "looked at {looked_at} of {} entries: not proportional to the change; the log:\n{logged}",
        before.len()
    );
    assert_same(&before, &root.walk(), "after a restore from the change log");
    assert!(!root.installed("cpio"));
}

#[test]
fn a_change_the_log_did_not_see_is_found_by_verify_and_repaired() {
    let Some(_g) = support::ebpf_or_skip("a_change_the_log_did_not_see") else {
        return;
    };
    let Some(root) = Root::new("missed") else {
        return;
    };
    let before = root.walk();
    let id = root.create(&SCOPES);
    let deb = root.deb("hello");
    let (out, log) = root.tracked_chroot(&["dpkg", "-i", &deb]);
    assert!(out.status.success());
    // Outside the tracked tree: the log cannot know.
    std::fs::write(root.dir.join("etc/hostname"), b"changed behind our back\n").unwrap();
    let r = root.restore_with(&id, &log);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        r["missed_by_changes"],
        serde_json::json!(["/etc/hostname"]),
        "{r}"
    );
    assert_same(
        &before,
        &root.walk(),
        "after verify repaired a missed change",
    );

    // A log cut short (the agent died): not trusted, the whole scope is walked.
    let (out, log) = root.tracked_chroot(&["dpkg", "-i", &deb]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let cut: Vec<&str> = text.lines().filter(|l| !l.contains("\"end\"")).collect();
    std::fs::write(&log, cut.join("\n")).unwrap();
    let r = root.restore_with(&id, &log);
    assert!(
        r["full_walk_reason"]
            .as_str()
            .is_some_and(|w| w.contains("trailer")),
        "{r}"
    );
    assert_eq!(r["looked_at"], Value::Null, "{r}");
    assert_same(&before, &root.walk(), "after a restore with a cut log");
}

#[test]
fn changes_through_relative_paths_chdirs_and_short_lived_processes_are_all_logged() {
    let Some(_g) = support::ebpf_or_skip("changes_through_relative_paths") else {
        return;
    };
    let Some(root) = Root::new("relative") else {
        return;
    };
    let before = root.walk();
    let id = root.create(&SCOPES);
    // The shell's own writes race its next chdir; touch, mkdir, ln, chmod
    // and rm are gone before their records are read.
    let script = "cd /etc && echo a > motd && cd /usr/share && echo b > new-file && \
                  mkdir -p new-dir/sub && cd new-dir && ln -s ../new-file link && \
                  cd / && touch etc/newer && chmod 600 etc/hostname && \
                  rm etc/debian_version && cd /var/lib/dpkg && mv status status.moved && \
                  cp status.moved status";
    let (out, log) = root.tracked_chroot(&["sh", "-c", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&out);
    assert_eq!(s["changes"]["lost"], 0, "{s}");
    assert_eq!(s["changes"]["unresolved"], 0, "{s}");
    // Without --verify: the log alone must be enough.
    let out = root.agent(&["restore", &id, "--json", "--changes", log.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["full_walk_reason"], Value::Null, "{r}");
    assert_same(&before, &root.walk(), "after a restore from the log alone");
}
