//! The room check's own tests: where a file lands, what it costs in
//! bytes and inodes, dpkg's own writes, the shadow's layer, and artifacts
//! that are not what they claim.

use super::*;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("backstop-room-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_file_lands_on_its_nearest_existing_directorys_filesystem_as_the_root_sees_it() {
    let root = scratch("links");
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    // Absolute links, as a hostile root would hold them: to the host
    // they lead to procfs; in the root, to nothing, so the root's own
    // filesystem is where those files land.
    std::os::unix::fs::symlink("/proc", root.join("usr/share/locale")).unwrap();
    std::os::unix::fs::symlink("/proc/self", root.join("usr/lib")).unwrap();
    let files = vec![
        (b"usr/share/locale/de/LC_MESSAGES/x.mo".to_vec(), 1),
        (b"usr/lib/x/y.so".to_vec(), 5000),
        (b"usr/share/doc/x/copyright".to_vec(), 4097),
    ];
    let r = Root::open(&root).unwrap();
    let root_dev = fstat(std::os::fd::AsFd::as_fd(
        &r.open_in_root(b"", libc::O_PATH).unwrap(),
    ))
    .unwrap()
    .st_dev;
    for (path, _) in &files {
        let (at, fd) = nearest(&r, parent(path)).unwrap();
        let dev = fstat(std::os::fd::AsFd::as_fd(&fd)).unwrap().st_dev;
        assert_eq!(
            dev,
            root_dev,
            "{} went off the root via /{}",
            String::from_utf8_lossy(path),
            String::from_utf8_lossy(&at)
        );
    }
    // 4 KiB + 8 KiB + 8 KiB on one filesystem that has more free.
    let mut t = Tally::new(&root, None).unwrap();
    for (path, size) in &files {
        assert!(t.add(path, Entry::File(*size)).is_ok());
    }
    assert_eq!((t.files, t.total), (3, 20 * 1024));
    assert_eq!(t.fs.len(), 1);
    let Err(Stop::Full(why)) = t.add(b"usr/bin/big", Entry::File(u64::MAX / 2)) else {
        panic!("a file larger than the disk fits");
    };
    assert!(
        why.starts_with("no room") && why.contains("filesystem of /usr "),
        "{why}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_shadow_smaller_than_the_files_is_named_by_its_field() {
    let root = scratch("upper");
    let mut t = Tally::new(&root, Some(3 * BLOCK - 1)).unwrap();
    assert!(t.add(b"usr/bin/a", Entry::File(1)).is_ok());
    let Err(Stop::Full(why)) = t.add(b"usr/bin/b", Entry::File(4097)) else {
        panic!("12 KiB fit a layer of 12 KiB less a byte");
    };
    assert!(why.starts_with("shadow.limits.disk_mb"), "{why}");
    assert!(why.contains("12.0 KiB counted"), "{why}");
    let mut t = Tally::new(&root, Some(3 * BLOCK)).unwrap();
    assert!(
        t.add(b"usr/bin/a", Entry::File(1)).is_ok()
            && t.add(b"usr/bin/b", Entry::File(4097)).is_ok()
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// The one filesystem a scratch root's entries have landed on.
fn only_fs(t: &mut Tally) -> &mut Fs {
    assert_eq!(t.fs.len(), 1);
    t.fs.values_mut().next().unwrap()
}

#[test]
fn new_directories_and_nodes_cost_an_inode_and_existing_ones_nothing() {
    let root = scratch("inodes");
    std::fs::create_dir_all(root.join("usr/share/doc")).unwrap();
    let mut t = Tally::new(&root, None).unwrap();
    for (path, e) in [
        (&b"usr"[..], Entry::Dir),
        (b"usr/share/doc", Entry::Dir),
        (b"usr/share/doc/x", Entry::Dir),
        (b"usr/share/doc/x/copyright", Entry::File(10)),
        (b"usr/share/doc/x/changelog.gz", Entry::Node),
    ] {
        assert!(t.add(path, e).is_ok());
    }
    let f = only_fs(&mut t);
    assert_eq!(
        (f.inodes, f.need),
        (3, BLOCK),
        "one new directory, a file, a link"
    );
    assert_eq!(f.at, b"usr".to_vec(), "the shallowest directory seen");
    // As if the filesystem had one inode left: the next entry is refused
    // by its inodes, though its bytes fit.
    f.inodes_free = Some(3);
    let Err(Stop::Full(why)) = t.add(b"usr/share/doc/x/README", Entry::File(0)) else {
        panic!("a fourth inode fit three");
    };
    assert!(why.contains("more than the 3 inodes free"), "{why}");
    assert!(why.contains("(4 inodes counted"), "{why}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn dpkg_copying_its_status_file_must_fit_beside_the_control_area() {
    let root = scratch("status");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        vec![b'x'; 3 * BLOCK as usize],
    )
    .unwrap();
    let mut t = Tally::new(&root, None).unwrap();
    assert!(
        t.add(b"var/lib/dpkg/tmp.ci/control", Entry::File(1))
            .is_ok()
    );
    only_fs(&mut t).free = 4 * BLOCK;
    assert!(t.status_copy().is_ok(), "3 blocks beside 1 in 4");
    only_fs(&mut t).free = 4 * BLOCK - 1;
    let Err(Stop::Full(why)) = t.status_copy() else {
        panic!("the status copy fit a block short");
    };
    assert!(why.contains("status file (12.0 KiB)"), "{why}");
    assert!(why.contains("filesystem of /var/lib/dpkg"), "{why}");
    assert_eq!(only_fs(&mut t).need, BLOCK, "the copy is not kept");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_shadow_holds_the_status_files_copy_up_and_its_new_copies() {
    let root = scratch("status-shadow");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        vec![b'x'; 3 * BLOCK as usize],
    )
    .unwrap();
    // The control file, the copy-up and the new copy: 7 blocks.
    for (upper, fits) in [(7 * BLOCK, true), (7 * BLOCK - 1, false)] {
        let mut t = Tally::new(&root, Some(upper)).unwrap();
        assert!(
            t.add(b"var/lib/dpkg/tmp.ci/control", Entry::File(1))
                .is_ok()
        );
        match t.status_copy() {
            Ok(()) => assert!(fits, "7 blocks fit a layer a byte short"),
            Err(Stop::Full(why)) => {
                assert!(!fits, "{why}");
                assert!(why.starts_with("shadow.limits.disk_mb"), "{why}");
            }
            Err(e) => panic!("the root could not be read: {e:?}"),
        }
        assert_eq!(t.total, 4 * BLOCK, "the copy-up stays, the new copy passes");
        if fits {
            // A second .deb's checkpoint copies nothing up again.
            assert!(t.status_copy().is_ok());
            assert_eq!(t.total, 4 * BLOCK);
            // Once a file is in place, the copy after it no longer fits.
            assert!(t.status_copy_after_files().is_ok());
            assert!(t.add(b"usr/bin/x", Entry::File(1)).is_ok());
            assert!(matches!(t.status_copy_after_files(), Err(Stop::Full(_))));
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_status_file_that_leads_off_the_root_is_not_followed() {
    let root = scratch("status-link");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    // To the host, a file far larger than any disk.
    std::os::unix::fs::symlink("/proc/kcore", root.join("var/lib/dpkg/status")).unwrap();
    let mut t = Tally::new(&root, None).unwrap();
    assert!(
        t.add(b"var/lib/dpkg/tmp.ci/control", Entry::File(1))
            .is_ok()
    );
    only_fs(&mut t).free = 2 * BLOCK;
    assert!(t.status_copy().is_ok(), "the root has no /proc/kcore");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_file_that_is_not_a_deb_is_refused_by_name_and_a_plain_file_is_not_checked() {
    let d = scratch("bad");
    let bad = d.join("x.deb");
    std::fs::write(&bad, b"not an ar archive").unwrap();
    std::fs::write(d.join("notes.txt"), b"x").unwrap();
    if !dpkg_deb_or_skip() {
        return;
    }
    let why = refusal(&d, std::slice::from_ref(&bad), None).expect("a refusal");
    assert!(why.contains(&bad.display().to_string()), "{why}");
    assert_eq!(refusal(&d, &[d.join("notes.txt")], Some(1)), None);
    std::fs::remove_dir_all(&d).unwrap();
}

fn dpkg_deb_or_skip() -> bool {
    if Command::new("dpkg-deb").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no dpkg-deb on this host: CI installs dpkg"
    );
    eprintln!("SKIP: no dpkg-deb on this host");
    false
}

/// An ar archive of `members` (name, bytes), as a .deb is.
fn ar(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            "100644",
            data.len()
        );
        assert_eq!(header.len(), 60);
        out.extend(header.as_bytes());
        out.extend(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// A tar header for `path` of `kind`, claiming `size` bytes, linking to
/// `link`.
fn header(path: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Regular {
        0o644
    } else {
        0o755
    });
    if let Some(to) = link {
        h.set_link_name(to).unwrap();
    }
    h.set_cksum();
    h
}

/// A tar of `entries` (path, content): a path ending in `/` is a
/// directory, content starting with `->` a symlink to the rest.
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = tar::Builder::new(&mut out);
    for (path, body) in entries {
        use tar::EntryType as T;
        let (h, body): (_, &[u8]) = if path.ends_with('/') {
            (header(path, T::Directory, 0, None), b"")
        } else if let Some(to) = body.strip_prefix(b"->") {
            let to = std::str::from_utf8(to).unwrap();
            (header(path, T::Symlink, 0, Some(to)), b"")
        } else {
            (header(path, T::Regular, body.len() as u64, None), body)
        };
        b.append(&h, body).unwrap();
    }
    b.into_inner().unwrap();
    out
}

/// A tar of one regular file's header claiming `size` bytes, and none of
/// them: what a compression bomb looks like to a reader that trusts
/// sizes, at no cost to the test.
fn tar_claiming(path: &str, size: u64, mut body: Vec<u8>) -> Vec<u8> {
    let mut out = header(path, tar::EntryType::Regular, size, None)
        .as_bytes()
        .to_vec();
    out.append(&mut body);
    out
}

/// A .deb of package `name` whose data.tar is `data`, as dpkg-deb reads
/// it: a control area of `./` and `./control`.
fn deb_of(name: &str, data: Vec<u8>) -> Vec<u8> {
    let text = format!(
        "Package: {name}\nVersion: 1\nArchitecture: all\nMaintainer: x <x@example.org>\nDescription: x\n"
    );
    ar(&[
        ("debian-binary", b"2.0\n".to_vec()),
        (
            "control.tar",
            tar_of(&[("./", b""), ("./control", text.as_bytes())]),
        ),
        ("data.tar", data),
    ])
}

#[test]
fn a_debs_control_area_and_files_are_counted_in_dpkgs_order() {
    if !dpkg_deb_or_skip() {
        return;
    }
    let d = scratch("order");
    let data = tar_of(&[
        ("./", b""),
        ("./usr/", b""),
        ("./usr/share/", b""),
        ("./usr/share/t/", b""),
        ("./usr/share/t/a", &[1u8; 5000]),
        ("./usr/share/t/l", b"->a"),
    ]);
    let deb = d.join("t_1_all.deb");
    std::fs::write(&deb, deb_of("t", data)).unwrap();
    let root = d.join("root");
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    let mut t = Tally::new(&root, None).unwrap();
    assert!(read_into(&deb, &mut t).is_ok());
    assert_eq!(t.files, 2, "./control and usr/share/t/a");
    let f = only_fs(&mut t);
    // tmp.ci, its control; usr/share/t, its file and link.
    assert_eq!((f.inodes, f.need), (5, 3 * BLOCK));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_deb_claiming_a_petabyte_is_refused_at_its_first_header() {
    if !dpkg_deb_or_skip() {
        return;
    }
    let d = scratch("bomb");
    // 64 KiB of the claimed petabyte: enough that dpkg-deb is still
    // streaming when the reader stops.
    let data = tar_claiming("./usr/share/bomb/blob", 1 << 50, vec![0; 64 << 10]);
    let deb = d.join("bomb_1_all.deb");
    std::fs::write(&deb, deb_of("bomb", data)).unwrap();
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let t0 = std::time::Instant::now();
    let why = refusal(&root, std::slice::from_ref(&deb), None).expect("a refusal");
    assert!(why.starts_with("no room"), "{why}");
    assert!(why.contains("1048576.0 GiB counted"), "{why}");
    eprintln!("refused in {:?}: {why}", t0.elapsed());
    // The same claim against a shadow's layer names that field.
    let why = refusal(&root, std::slice::from_ref(&deb), Some(1 << 20)).expect("a refusal");
    assert!(why.starts_with("shadow.limits.disk_mb"), "{why}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// dpkg-deb's stderr is drained while its stdout is read: one warning far
/// past a pipe's 64 KiB before its tar still has it read (else the read
/// blocks forever); one failing after as many keeps the first 4 KiB.
#[test]
fn a_dpkg_deb_that_warns_past_a_pipe_is_still_read() {
    let root = scratch("stderr");
    let tar = root.join("t.tar");
    std::fs::write(&tar, tar_of(&[("usr/", b""), ("usr/f", b"x")])).unwrap();
    let loud = |then: &str| {
        let mut c = Command::new("sh");
        let warn = "yes 'dpkg-deb: warning: loud' | head -c 1048576 >&2";
        c.arg("-c").arg(format!("{warn}; {then}"));
        c
    };
    let ((tx, rx), r, t) = (std::sync::mpsc::channel(), root.clone(), tar.clone());
    std::thread::spawn(move || {
        let mut tally = Tally::new(&r, None).unwrap();
        let read = debs::tar_from(loud(&format!("cat {}", t.display())), b"", &mut tally)
            .map(|()| (tally.files, tally.total));
        let failed = debs::tar_from(loud("exit 2"), b"", &mut tally);
        let _ = tx.send((read, failed));
    });
    let (read, failed) = rx
        .recv_timeout(std::time::Duration::from_mins(1))
        .expect("the read blocked on a full stderr pipe");
    assert_eq!(read.ok(), Some((1, BLOCK)));
    let Err(Stop::Bad(why)) = failed else {
        panic!("{failed:?}")
    };
    assert!(why.contains("dpkg-deb: warning: loud"), "{why}");
    assert!(why.len() < 4096 + 200, "{} bytes kept", why.len());
    std::fs::remove_dir_all(&root).unwrap();
}
