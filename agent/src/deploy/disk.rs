//! Which filesystem a deployment's `host_disk_free_bytes` reports: the one,
//! among the state scope's paths inside the target root, with the least
//! free space when the install starts. The root's own filesystem says
//! nothing when the scope lives on another (a data volume mounted at
//! `/var/lib/app`), and the fullest one is where an install that fills a
//! disk fails first; it is chosen once so the series stays one
//! filesystem's and a trend over it means something.

use std::path::{Component, Path, PathBuf};

/// The path to `statvfs` for the deployment's windows: the fullest of the
/// scope's filesystems, else the root.
pub fn watched(root: &Path, scope: &[PathBuf]) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    for path in scope {
        let Some(at) = existing(root, path) else {
            continue;
        };
        match crate::host::disk_free(&at) {
            Ok(free) if best.as_ref().is_none_or(|(b, _)| free < *b) => best = Some((free, at)),
            Ok(_) => {}
            Err(e) => tracing::debug!("free space of {}: {e}", at.display()),
        }
    }
    match best {
        Some((free, at)) => {
            tracing::info!(path = %at.display(), free, "host_disk_free_bytes reports this filesystem");
            at
        }
        None => root.to_path_buf(),
    }
}

/// `path` (absolute, inside `root`) under `root`, or its nearest existing
/// ancestor (a scope path the install creates); `None` when any part of
/// it is a symbolic link (it may lead off the root: the root's own
/// filesystem is reported rather than a stranger's).
fn existing(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut at = root.to_path_buf();
    for c in path.components() {
        let Component::Normal(name) = c else { continue };
        let next = at.join(name);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => return None,
            Ok(_) => at = next,
            Err(_) => break,
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_scope_path_reports_its_nearest_existing_ancestor() {
        let root = std::env::temp_dir().join(format!("backstop-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        let got = existing(&root, Path::new("/var/lib/app/data"));
        assert_eq!(got, Some(root.join("var/lib")));
        std::os::unix::fs::symlink("/", root.join("etc")).unwrap();
        assert_eq!(existing(&root, Path::new("/etc")), None, "a link");
        assert_eq!(existing(&root, Path::new("/etc/app")), None, "under a link");
        assert_eq!(watched(&root, &["/etc".into()]), root);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
