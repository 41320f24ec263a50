//! Reading a scope as it is now: every entry's metadata, parents before
//! children, without following a symlink or leaving the root. `create`,
//! `diff` and `restore` all see the tree through this one walk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{Entry, Kind, Result, SnapshotError, beneath, fsops, io};

/// Refuse a scope whose ancestors inside the root are symlinks: a walk or
/// restore of it would act wherever the link leads.
pub(super) fn check_scope_ancestors(root: &Path, scopes: &[Vec<u8>]) -> Result<()> {
    for s in scopes {
        let comps: Vec<&[u8]> = s.split(|&c| c == b'/').filter(|c| !c.is_empty()).collect();
        let mut rel = Vec::new();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(c);
            let full = join(root, &rel);
            match fsops::lstat(&full) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    return Err(SnapshotError::SymlinkAncestor {
                        scope: format!("/{}", String::from_utf8_lossy(s)),
                        path: full,
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(io(&full)(e)),
            }
        }
    }
    Ok(())
}

/// What to snapshot.
#[derive(Debug, Clone)]
pub struct Scope {
    pub root: PathBuf,
    /// Absolute paths as seen inside the root (e.g. /etc).
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
}

pub(super) struct Excludes(globset::GlobSet);

impl Excludes {
    pub(super) fn new(globs: &[String]) -> Result<Self> {
        let mut b = globset::GlobSetBuilder::new();
        for g in globs {
            b.add(
                globset::Glob::new(g).map_err(|e| SnapshotError::BadExclude {
                    glob: g.clone(),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(Excludes(b.build().map_err(|e| {
            SnapshotError::BadExclude {
                glob: globs.join(" "),
                reason: e.to_string(),
            }
        })?))
    }

    /// `rel` is root-relative; globs are written as absolute paths in the root.
    fn excluded(&self, rel: &[u8]) -> bool {
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(rel);
        self.0.is_match(fsops::os(&abs))
    }
}

pub(super) fn scope_rel(p: &Path) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let s = p.as_os_str().as_bytes();
    if !s.starts_with(b"/")
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(SnapshotError::BadScope {
            scope: p.display().to_string(),
        });
    }
    Ok(s.trim_start_matches_bytes(b'/')
        .trim_end_matches_bytes(b'/')
        .to_vec())
}

trait TrimBytes {
    fn trim_start_matches_bytes(&self, b: u8) -> &[u8];
    fn trim_end_matches_bytes(&self, b: u8) -> &[u8];
}

impl TrimBytes for [u8] {
    fn trim_start_matches_bytes(&self, b: u8) -> &[u8] {
        let n = self.iter().take_while(|&&c| c == b).count();
        &self[n..]
    }
    fn trim_end_matches_bytes(&self, b: u8) -> &[u8] {
        let n = self.iter().rev().take_while(|&&c| c == b).count();
        &self[..self.len() - n]
    }
}

pub fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(fsops::os(rel))
    }
}

pub(super) fn kind_of(mode: u32) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFCHR => Kind::CharDev,
        libc::S_IFBLK => Kind::BlockDev,
        libc::S_IFSOCK => Kind::Socket,
        _ => Kind::File,
    }
}

/// Walk the scope: every entry's metadata (no content yet), parents before
/// children, in a stable order.
/// `earlier`: entries of a previous snapshot of this root, by path. An entry
/// whose (dev, inode, ctime) is unchanged since then has the same xattrs and
/// symlink target (changing either moves ctime), so they are not read again.
pub(super) fn walk(
    scope: &Scope,
    excludes: &Excludes,
    earlier: &HashMap<&[u8], &Entry>,
) -> Result<Vec<(Entry, libc::stat)>> {
    let starts = scope
        .paths
        .iter()
        .map(|p| Ok((scope_rel(p)?, true)))
        .collect::<Result<Vec<_>>>()?;
    walk_from(&scope.root, starts, excludes, earlier)
}

/// [`walk`] from root-relative start points; a start with `false` is
/// looked at alone, its children are not.
pub(super) fn walk_from(
    root: &Path,
    starts: Vec<(Vec<u8>, bool)>,
    excludes: &Excludes,
    earlier: &HashMap<&[u8], &Entry>,
) -> Result<Vec<(Entry, libc::stat)>> {
    let mut out = Vec::new();
    // A start whose parent is not a real directory beneath the root (a
    // symlink on the way, as a hostile change log may name) has nothing
    // of the scope under it: it is not looked at.
    let beneath = beneath::Root::open(root).map_err(io(root))?;
    let mut stack: Vec<(Vec<u8>, bool)> = starts
        .into_iter()
        .filter(|(rel, _)| rel.is_empty() || beneath.parent(rel).is_ok())
        .collect();
    stack.reverse();
    let mut seen_dirs = HashSet::new();
    while let Some((rel, descend)) = stack.pop() {
        if excludes.excluded(&rel) {
            continue;
        }
        let full = join(root, &rel);
        let st = match fsops::lstat(&full) {
            Ok(st) => st,
            // A scope path that does not exist yet is an empty scope; an
            // entry that vanished during the walk is skipped.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&full)(e)),
        };
        let entry = entry_of(&rel, &full, &st, earlier)?;
        if entry.kind == Kind::Dir && descend && seen_dirs.insert((st.st_dev, st.st_ino)) {
            let mut children = children_of(&rel, &full)?;
            children.sort();
            children.reverse();
            stack.extend(children.into_iter().map(|c| (c, true)));
        }
        out.push((entry, st));
    }
    Ok(out)
}

/// The entry for `rel` (at `full`, lstat `st`). Its xattrs and symlink
/// target come from `earlier` when the inode and ctime are unchanged
/// (changing either moves ctime), else from the disk.
fn entry_of(
    rel: &[u8],
    full: &Path,
    st: &libc::stat,
    earlier: &HashMap<&[u8], &Entry>,
) -> Result<Entry> {
    let kind = kind_of(st.st_mode);
    let ident = (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec);
    let same_inode = earlier
        .get(rel)
        .filter(|e| e.ident == ident && e.kind == kind);
    Ok(Entry {
        path: rel.to_vec(),
        kind,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        size: if kind == Kind::File {
            st.st_size as u64
        } else {
            0
        },
        hash: None,
        target: if let Some(e) = same_inode {
            e.target.clone()
        } else if kind == Kind::Symlink {
            Some(
                std::os::unix::ffi::OsStrExt::as_bytes(
                    std::fs::read_link(full).map_err(io(full))?.as_os_str(),
                )
                .to_vec(),
            )
        } else {
            None
        },
        rdev: st.st_rdev,
        link_group: None,
        xattrs: match same_inode {
            Some(e) => e.xattrs.clone(),
            None => fsops::xattrs(full).map_err(io(full))?,
        },
        ident,
    })
}

/// The root-relative paths of the directory `rel`'s children (unsorted).
fn children_of(rel: &[u8], full: &Path) -> Result<Vec<Vec<u8>>> {
    std::fs::read_dir(full)
        .map_err(io(full))?
        .map(|e| {
            e.map(|e| {
                let name =
                    std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str()).to_vec();
                let mut child = rel.to_vec();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(&name);
                child
            })
        })
        .collect::<std::io::Result<_>>()
        .map_err(io(full))
}
