//! The frozen layer built from a real snapshot of a small tree, and the
//! overlay mounted over it as a shadow mounts it (root only: chown,
//! trusted.* xattrs and mount; a loud skip otherwise, a failure under CI).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::shadow::lower::Lower;
use crate::snapshot::{Scope, Store, create, scratch};

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var("CI").is_err(), "{test} needs root under CI");
    eprintln!("*** SKIPPED {test}: needs root ***");
    false
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = cpath(p).unwrap();
    fsops::xattrs_of(&c, true)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| v)
}

/// Whether a file holds no data at all (a hole from 0 to its end): its
/// blocks may still count an xattr block.
fn no_data(p: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(p).unwrap();
    // SAFETY: lseek on a descriptor this function owns.
    let r = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)
}

/// A root with a scope /etc/app of every kind, a scope /etc/missing that
/// does not exist, and usr/keep outside the scope; its snapshot.
fn fixture(name: &str) -> (PathBuf, PathBuf, Store, Snapshot) {
    let dir = scratch(name);
    let root = dir.join("root");
    let app = root.join("etc/app");
    std::fs::create_dir_all(app.join("sub")).unwrap();
    std::fs::create_dir_all(root.join("usr")).unwrap();
    std::fs::set_permissions(root.join("etc"), std::fs::Permissions::from_mode(0o751)).unwrap();
    std::fs::write(app.join("conf"), "original\n").unwrap();
    std::os::unix::fs::lchown(app.join("conf"), Some(7), Some(8)).unwrap();
    std::fs::set_permissions(app.join("conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    set_x(&app.join("conf"), b"user.note", b"kept").unwrap();
    std::fs::write(app.join("empty"), "").unwrap();
    std::fs::write(app.join("hard1"), "linked\n").unwrap();
    std::fs::hard_link(app.join("hard1"), app.join("hard2")).unwrap();
    std::os::unix::fs::symlink("conf", app.join("link")).unwrap();
    mknod(&app.join("fifo"), libc::S_IFIFO, 0).unwrap();
    std::fs::set_permissions(app.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
    set_x(&app.join("sub"), b"trusted.overlay.redirect", b"/elsewhere").unwrap();
    std::fs::write(root.join("usr/keep"), "live v1\n").unwrap();
    let store = Store::open(&dir.join("data")).unwrap();
    let scope = Scope {
        root: root.clone(),
        paths: vec!["/etc/app".into(), "/etc/missing".into()],
        excludes: vec![],
    };
    let id = create(&store, &scope).unwrap().id;
    let snap = store.load(&id).unwrap();
    (dir, root, store, snap)
}

#[test]
fn the_frozen_layer_is_the_snapshot_as_overlayfs_metadata() {
    if !root_or_skip("frozen layer") {
        return;
    }
    let (dir, root, store, snap) = fixture("frozen-build");
    let frozen = dir.join("frozen");
    std::fs::create_dir(&frozen).unwrap();
    let built = build(&snap, &store.dir.join("objects"), &root, &frozen, None).unwrap();
    assert_eq!(
        built.metacopy_files, 2,
        "conf and hard1 (hard2 is its link)"
    );
    assert_eq!(built.whiteouts, 1, "/etc/missing");
    let m = |p: &str| std::fs::symlink_metadata(frozen.join(p)).unwrap();
    // The ancestor: the live directory's metadata, not opaque.
    assert_eq!(m("etc").mode() & 0o7777, 0o751);
    assert_eq!(xattr(&frozen.join("etc"), "trusted.overlay.opaque"), None);
    // Scope directories: opaque, with their recorded metadata.
    assert_eq!(
        xattr(&frozen.join("etc/app"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert_eq!(m("etc/app/sub").mode() & 0o7777, 0o750);
    // A host's own overlay xattr is kept escaped, never obeyed.
    let sub = frozen.join("etc/app/sub");
    assert_eq!(xattr(&sub, "trusted.overlay.redirect"), None);
    assert_eq!(
        xattr(&sub, "trusted.overlay.overlay.redirect"),
        Some(b"/elsewhere".to_vec())
    );
    // A file: sparse, recorded owner, mode, size, mtime and xattrs, and
    // a redirect to its object.
    let conf = m("etc/app/conf");
    let live = std::fs::symlink_metadata(root.join("etc/app/conf")).unwrap();
    assert_eq!(
        (conf.len(), conf.uid(), conf.gid(), conf.mode() & 0o7777),
        (9, 7, 8, 0o640)
    );
    assert!(
        no_data(&frozen.join("etc/app/conf")),
        "no content was copied"
    );
    assert_eq!(
        (conf.mtime(), conf.mtime_nsec()),
        (live.mtime(), live.mtime_nsec())
    );
    assert_eq!(
        xattr(&frozen.join("etc/app/conf"), "user.note"),
        Some(b"kept".to_vec())
    );
    let e = snap
        .entries
        .iter()
        .find(|e| e.path == b"etc/app/conf")
        .unwrap();
    let h = hex::encode(e.hash.unwrap());
    let redirect = xattr(&frozen.join("etc/app/conf"), "trusted.overlay.redirect").unwrap();
    assert_eq!(redirect, format!("/{}/{}", &h[..2], &h[2..]).into_bytes());
    assert!(xattr(&frozen.join("etc/app/conf"), "trusted.overlay.metacopy").is_some());
    assert!(xattr(&frozen.join("etc/app/empty"), "trusted.overlay.metacopy").is_none());
    assert_eq!(
        m("etc/app/hard1").ino(),
        m("etc/app/hard2").ino(),
        "one inode"
    );
    assert_eq!(
        std::fs::read_link(frozen.join("etc/app/link")).unwrap(),
        Path::new("conf")
    );
    assert!(m("etc/app/fifo").file_type().is_fifo());
    assert!(crate::shadow::lower::is_whiteout(&m("etc/missing")));
    assert!(
        std::fs::symlink_metadata(frozen.join("usr")).is_err(),
        "outside the scope"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mount an overlay with `opts` at `merged`; the target, for the unmount.
fn mount_overlay(opts: &str, merged: &Path) -> CString {
    let c = |s: &str| CString::new(s).unwrap();
    let (src, target, fs, data) = (c("overlay"), cpath(merged).unwrap(), c("overlay"), c(opts));
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(r, 0, "mount {opts}: {}", std::io::Error::last_os_error());
    target
}

#[test]
fn a_shadow_over_the_frozen_layer_reads_the_snapshot_while_live_changes() {
    if !root_or_skip("frozen overlay") {
        return;
    }
    let (dir, root, store, snap) = fixture("frozen-mount");
    let frozen = dir.join("frozen");
    std::fs::create_dir(&frozen).unwrap();
    build(&snap, &store.dir.join("objects"), &root, &frozen, None).unwrap();
    let app = root.join("etc/app");
    // Live changes the scope after the snapshot, and outside it.
    std::fs::write(app.join("conf"), "rewritten by live\n").unwrap();
    std::fs::write(app.join("new"), "live only\n").unwrap();
    std::fs::remove_file(app.join("link")).unwrap();
    std::fs::write(root.join("etc/missing"), "made by live\n").unwrap();
    std::fs::write(root.join("usr/keep"), "live v2\n").unwrap();
    let lower = Lower::Frozen {
        frozen,
        live: Some(root.clone()),
        objects: store.dir.join("objects"),
    };
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    let opts = format!(
        "{},upperdir={},workdir={}",
        lower.options(),
        upper.display(),
        work.display()
    );
    let target = mount_overlay(&opts, &merged);
    let read = |p: &str| std::fs::read_to_string(merged.join(p));
    let seen = (
        read("etc/app/conf").ok(),
        read("etc/app/hard2").ok(),
        merged.join("etc/app/new").exists(),
        std::fs::read_link(merged.join("etc/app/link")).ok(),
        merged.join("etc/missing").exists(),
        read("usr/keep").ok(),
    );
    let meta = (
        lower
            .symlink_metadata(Path::new("etc/app/conf"))
            .map(|m| m.len())
            .ok(),
        lower.symlink_metadata(Path::new("etc/app/new")).is_err(),
        lower.symlink_metadata(Path::new("etc/missing")).is_err(),
        lower.symlink_metadata(Path::new("usr/keep")).is_ok(),
    );
    // SAFETY: a valid C string.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    assert_eq!(
        seen,
        (
            Some("original\n".into()),
            Some("linked\n".into()),
            false,
            Some(PathBuf::from("conf")),
            false,
            Some("live v2\n".into()),
        ),
        "(conf, hard2, new exists, link, missing exists, outside the scope)"
    );
    assert_eq!(meta, (Some(9), true, true, true));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_entry_path_that_could_leave_the_layer_is_refused() {
    for bad in [&b"../x"[..], b"a/../../x", b"/etc", b"a//b", b"a/./b"] {
        assert!(
            checked("s1", bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(checked("s1", b"etc/app").unwrap(), PathBuf::from("etc/app"));
}

#[test]
fn a_scope_of_the_whole_root_hides_all_of_the_live_root() {
    let mut snap = Snapshot {
        id: "s1".into(),
        root: "/r".into(),
        scopes: vec![b"etc".to_vec()],
        excludes: vec![],
        created_ms: 0,
        entries: vec![],
    };
    assert!(!covers_root(&snap));
    snap.scopes.push(Vec::new());
    assert!(covers_root(&snap));
}

/// How long building hello's scope takes, on the cached rootfs, in a
/// tmpfs as a shadow builds it:
/// `cargo test -p backstop-agent --lib frozen_build_of_hellos_scope -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn frozen_build_of_hellos_scope() {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xtask/rootfs-bookworm-minbase");
    if !root_or_skip("frozen measurement") || !root.is_dir() {
        return;
    }
    let root = std::fs::canonicalize(root).unwrap();
    let dir = scratch("frozen-measure");
    let store = Store::open(&dir.join("data")).unwrap();
    let paths = [
        "/usr/bin",
        "/usr/share/doc",
        "/usr/share/info",
        "/usr/share/locale",
        "/usr/share/man",
        "/var/lib/dpkg",
        "/var/log",
        "/tmp",
    ];
    let scope = Scope {
        root: root.clone(),
        paths: paths.iter().map(Into::into).collect(),
        excludes: vec![],
    };
    let snap = store.load(&create(&store, &scope).unwrap().id).unwrap();
    for i in 0..3 {
        let out = dir.join(format!("layer{i}"));
        crate::shadow::overlay::mount_tmpfs(&out).unwrap();
        let t = std::time::Instant::now();
        let b = build(&snap, &store.dir.join("objects"), &root, &out, None).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "entries {} metacopy files {} built in {ms:.0} ms",
            b.entries, b.metacopy_files
        );
        crate::shadow::overlay::umount(&out, libc::MNT_DETACH).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
