//! The shadow's overlay root: mounting it (upper layer on an optional
//! tmpfs, everything below the shadow's directory nosuid and nodev on the
//! host side), unmounting, and finding what is mounted under a directory.

use std::path::{Path, PathBuf};

use super::container::{Layout, err, other};
use super::lower::Lower;
use crate::error::Result;

/// Mount the overlay: `lower` read-only below (the root, or a frozen
/// layer over it: `lower.rs`), upper and work in the
/// shadow's directory; with `upper_size`, on a tmpfs of that size. Not
/// `durable`: mounted `volatile` (no sync reaches the upper layer; see
/// `ShadowOptions::durable`). A volatile upper cannot be mounted again
/// after a crash, which suits a shadow: the sweep deletes it.
///
/// Everything the shadow can write lands below its directory, which is
/// first bound onto itself nosuid and nodev (and made private, so the
/// mounts below do not propagate to the host's peers): a setuid file or a
/// device node the install makes in the upper layer or the io directory
/// is inert when the host reaches it by path. The upper tmpfs and the
/// overlay carry the same flags; the directory is 0700 besides.
pub fn mount_overlay(
    lower: &Lower,
    l: &Layout,
    upper_size: Option<u64>,
    durable: bool,
) -> Result<()> {
    bind_inert(&l.dir)?;
    if let Some(size) = upper_size {
        let rw = l.dir.join("rw");
        std::fs::create_dir_all(&rw).map_err(err(format!("creating {}", rw.display())))?;
        mount(
            "tmpfs",
            &rw,
            "tmpfs",
            INERT,
            &format!("size={size},mode=0755"),
        )
        .map_err(err(format!(
            "mounting a {size}-byte tmpfs at {}",
            rw.display()
        )))?;
    }
    for d in [&l.upper, &l.work, &l.merged, &l.bundle, &l.io] {
        std::fs::create_dir_all(d).map_err(err(format!("creating {}", d.display())))?;
    }
    for p in lower.dirs().into_iter().chain([l.upper.as_path(), &l.work]) {
        if p.as_os_str()
            .as_encoded_bytes()
            .iter()
            .any(|&b| b == b',' || b == b':')
        {
            return Err(other(
                format!("mounting the shadow's overlay at {}", l.merged.display()),
                format!(
                    "{} contains ',' or ':', which overlayfs options cannot carry",
                    p.display()
                ),
            ));
        }
    }
    // A frozen layer hidden by a later mount would let the live root show
    // through where the snapshot should: refuse rather than run on it.
    if let Lower::Frozen { frozen, .. } = lower
        && std::fs::read_dir(frozen).map_or(true, |mut d| d.next().is_none())
    {
        return Err(other(
            format!("mounting the shadow's overlay at {}", l.merged.display()),
            format!("its frozen layer {} is empty or hidden", frozen.display()),
        ));
    }
    let data = format!(
        "{},upperdir={},workdir={}{}",
        lower.options(),
        l.upper.display(),
        l.work.display(),
        if durable { "" } else { ",volatile" }
    );
    mount("overlay", &l.merged, "overlay", INERT, &data).map_err(err(format!(
        "mounting the shadow's overlay ({data}) nosuid,nodev"
    )))
}

/// Make the shadow's directory 0700 and bind it onto itself nosuid,nodev
/// and private (see [`mount_overlay`]); once: a directory already bound
/// is left as it is, so whatever was mounted below it stays reachable.
pub fn bind_inert(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(err(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(err(format!("making {} 0700", dir.display())))?;
    // The kernel lists mounts by their resolved path.
    let real = std::fs::canonicalize(dir).map_err(err(format!("resolving {}", dir.display())))?;
    if mounts_under(&real).contains(&real) {
        return Ok(());
    }
    let name = dir.to_string_lossy();
    mount(&name, dir, "", libc::MS_BIND, "")
        .and_then(|()| mount("", dir, "", libc::MS_PRIVATE, ""))
        .and_then(|()| mount("", dir, "", libc::MS_REMOUNT | libc::MS_BIND | INERT, ""))
        .map_err(err(format!(
            "binding {} onto itself nosuid,nodev",
            dir.display()
        )))
}

/// A tmpfs at `dir` (made 0700), nosuid and nodev: a frozen layer's home,
/// metadata in memory, gone with its unmount.
pub fn mount_tmpfs(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).map_err(err(format!("creating {}", dir.display())))?;
    mount("tmpfs", dir, "tmpfs", INERT, "mode=0700")
        .map_err(err(format!("mounting a tmpfs at {}", dir.display())))
}

/// Mount flags that make setuid bits and device nodes inert.
const INERT: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    let c = |s: &[u8]| std::ffi::CString::new(s).map_err(|_| std::io::ErrorKind::InvalidInput);
    let (src, target, fstype, data) = (
        c(src.as_bytes())?,
        c(target.as_os_str().as_encoded_bytes())?,
        c(fstype.as_bytes())?,
        c(data.as_bytes())?,
    );
    let opt = |s: &std::ffi::CString| {
        if s.as_bytes().is_empty() {
            std::ptr::null()
        } else {
            s.as_ptr()
        }
    };
    // SAFETY: valid C strings (or null) for the call's duration.
    let r = unsafe {
        libc::mount(
            opt(&src),
            target.as_ptr(),
            opt(&fstype),
            flags,
            opt(&data).cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn umount(target: &Path, flags: i32) -> std::io::Result<()> {
    let t = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(t.as_ptr(), flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Mount points at or under `dir`, deepest first, by their resolved
/// paths. The kernel lists mounts resolved, so `dir` is resolved too: a
/// data directory reached through a symlink (an ordinary way to put it
/// on another disk) otherwise matched none, and its shadows' mounts
/// outlived them. A `dir` that is gone is taken as it is, made absolute.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = &std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mount_path(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}
