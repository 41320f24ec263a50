//! `backstop-agent room`: the room check a deployment runs before its
//! snapshot, on its own, as an SRE sizing a host and the corpus runner
//! call it. It reads .debs and the root's free space and writes nothing.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn room(root: &Path, extra: &[&str], debs: &[&Path]) -> Output {
    Command::new(support::agent())
        .arg("room")
        .arg("--root")
        .arg(root)
        .args(extra)
        .args(debs)
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// hello fits over the Debian rootfs; a shadow whose writable layer is
/// 64 KiB does not (hello's files alone take 184 KiB), and says which
/// limit to raise. Exit codes 0 and 3, as `deploy`'s commit and refusal.
#[test]
fn hello_fits_the_rootfs_but_not_a_64_kib_shadow_layer() {
    let Some(root) = support::rootfs() else {
        return;
    };
    let hello = support::deb_file("hello");
    let out = room(&root, &["--json"], &[&hello]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out);
    assert_eq!(v["verdict"], "fits", "{v}");
    assert_eq!(v["debs"], 1, "{v}");
    assert!(v["files"].as_u64().unwrap() >= 10, "{v}");
    assert!(v["bytes"].as_u64().unwrap() >= 100_000, "{v}");

    let out = room(&root, &["--json", "--upper-size", "65536"], &[&hello]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v = json(&out);
    assert_eq!(v["verdict"], "refused", "{v}");
    let why = v["reason"].as_str().unwrap();
    assert!(
        why.contains("shadow.limits.disk_mb") && why.contains("64.0 KiB"),
        "{why}"
    );
    // The same, for a person.
    let out = room(&root, &["--upper-size", "65536"], &[&hello]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("refused: shadow.limits.disk_mb"),
        "{out:?}"
    );
}

/// Bad input is named and changes nothing: a root that is not a
/// directory and a .deb that is not there are usage errors (2); a file
/// that is not a .deb is refused (3) by name; the root's tree is the same
/// afterwards, and a file its symlink points at outside it is untouched.
#[test]
fn bad_input_is_named_and_the_root_is_left_as_it_was() {
    let base = std::env::temp_dir().join(format!("backstop-room-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (root, outside) = (base.join("root"), base.join("outside"));
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "Package: base\n\n").unwrap();
    let sentinel = outside.join("sentinel");
    std::fs::write(&sentinel, "keep").unwrap();
    // A hostile root: its /usr leads out of it, to the sentinel's directory.
    std::os::unix::fs::symlink(&outside, root.join("usr")).unwrap();
    let garbage = base.join("not-a.deb");
    std::fs::write(&garbage, "PK\x03\x04 not an ar archive").unwrap();
    let before = walk(&base);

    let out = room(&base.join("nope"), &[], &[&support::deb_file("hello")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--root") && err.contains("nope"), "{err}");

    let missing = base.join("missing.deb");
    let out = room(&root, &[], &[&missing]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.deb"),
        "{out:?}"
    );

    let out = room(&root, &["--json"], &[&garbage]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v = json(&out);
    assert!(v["reason"].as_str().unwrap().contains("not-a.deb"), "{v}");

    // hello's files land under /usr, a link out of the root: the check
    // reads free space where the chrooted install would write (never out
    // of the root: room/tests.rs shows it on a link to /proc/kcore) and
    // writes nowhere, inside the root or out of it.
    let out = room(&root, &["--json"], &[&support::deb_file("hello")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(walk(&base), before, "the check wrote something");
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "keep");
    std::fs::remove_dir_all(&base).unwrap();
}

/// Every path under `dir` with its size and mtime (symlinks not followed).
fn walk(dir: &Path) -> Vec<(PathBuf, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((
                e.path(),
                m.len(),
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
            ));
        }
    }
    out.sort();
    out
}
