//! The change log: which paths a tracked tree may have changed, so a
//! restore can look only there instead of walking the whole scope.
//!
//! The probes record a modifying syscall's path arguments as the process
//! passed them: relative to its cwd or a dirfd, through symlinks, inside
//! its chroot. Only the process can say what they meant, so each record is
//! resolved on arrival, through /proc/PID/{root,cwd,fd}, into a host path
//! whose parent directories are real (symlinks followed inside the
//! process's root, as the kernel did). A path that cannot be resolved (the
//! process already gone, a relative path, an fd closed, a path too long)
//! is not guessed at: the log says it is incomplete, and a restore given
//! an incomplete log walks the whole scope.
//!
//! The log is JSON lines, written as records arrive: a header, one line
//! per path, and a trailer written only when the tree is done and every
//! record was read. A log without its trailer (the agent died) is
//! incomplete too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use backstop_common::{AT_FDCWD, CHANGE_PATH0_BAD, CHANGE_PATH1_BAD, ChangeEvent};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

pub const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Header {
        backstop_changes: u32,
    },
    Path {
        path: String,
        nr: u32,
        pid: u32,
    },
    /// A path as written, with the inode number of what it starts from as
    /// the kernel saw it at the call: the process's root (absolute name),
    /// its cwd or dirfd (relative name), or the fd's file (empty name).
    Anchored {
        ino: u64,
        name: String,
        nr: u32,
        pid: u32,
    },
    Unresolved {
        unresolved: String,
        nr: u32,
        pid: u32,
    },
    Trailer {
        end: Trailer,
    },
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trailer {
    /// Change records the probes delivered.
    pub records: u64,
    /// Records the probes could not deliver or read whole.
    pub lost: u64,
    /// Records whose paths could not be resolved.
    pub unresolved: u64,
}

/// Writes a change log as a tracked tree runs.
pub struct ChangeLog {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    seen: HashSet<PathBuf>,
    /// Each process's root, as last read: a process that exits before its
    /// record is read still resolves absolute paths.
    roots: HashMap<u32, PathBuf>,
    counts: Trailer,
}

impl ChangeLog {
    pub fn create(path: &Path) -> Result<Self> {
        let err = |source| AgentError::Io {
            context: format!("creating the change log {}", path.display()),
            source,
        };
        let file = std::fs::File::create(path).map_err(err)?;
        let mut log = ChangeLog {
            file: std::io::BufWriter::new(file),
            path: path.to_path_buf(),
            seen: HashSet::new(),
            roots: HashMap::new(),
            counts: Trailer::default(),
        };
        log.line(&Line::Header {
            backstop_changes: FORMAT,
        })?;
        Ok(log)
    }

    fn line(&mut self, l: &Line) -> Result<()> {
        let mut s = serde_json::to_string(l).expect("plain data serializes");
        s.push('\n');
        self.file
            .write_all(s.as_bytes())
            .map_err(|source| AgentError::Io {
                context: format!("writing the change log {}", self.path.display()),
                source,
            })
    }

    /// Resolve one record and log its paths (each once).
    pub fn record(&mut self, ev: &ChangeEvent) -> Result<()> {
        self.counts.records += 1;
        match resolve(ev, &mut self.roots) {
            Ok(found) => {
                for (ino, name) in found.anchored {
                    let Some(name) = name.to_str() else {
                        self.unresolved(ev, "the path is not UTF-8")?;
                        continue;
                    };
                    let l = Line::Anchored {
                        ino,
                        name: name.to_string(),
                        nr: ev.nr,
                        pid: ev.tid,
                    };
                    self.line(&l)?;
                }
                for p in found.paths {
                    if !self.seen.insert(p.clone()) {
                        continue;
                    }
                    let Some(s) = p.to_str() else {
                        self.unresolved(ev, "the path is not UTF-8")?;
                        continue;
                    };
                    let l = Line::Path {
                        path: s.to_string(),
                        nr: ev.nr,
                        pid: ev.tid,
                    };
                    self.line(&l)?;
                }
                Ok(())
            }
            Err(why) => self.unresolved(ev, &why),
        }
    }

    fn unresolved(&mut self, ev: &ChangeEvent, why: &str) -> Result<()> {
        tracing::debug!(nr = ev.nr, pid = ev.tid, "change not resolved: {why}");
        self.counts.unresolved += 1;
        self.line(&Line::Unresolved {
            unresolved: why.to_string(),
            nr: ev.nr,
            pid: ev.tid,
        })
    }

    /// Write the trailer and make the log durable. `lost`: records the
    /// probes counted as lost for this tree.
    pub fn finish(mut self, lost: u64) -> Result<Trailer> {
        self.counts.lost = lost;
        let end = self.counts;
        self.line(&Line::Trailer { end })?;
        let err = |source| AgentError::Io {
            context: format!("writing the change log {}", self.path.display()),
            source,
        };
        self.file.flush().map_err(err)?;
        self.file.get_ref().sync_all().map_err(err)?;
        Ok(end)
    }
}

/// A change log as read back for a restore.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    /// Host paths, absolute.
    pub paths: BTreeSet<PathBuf>,
    /// (inode number, name relative to it; empty: the inode itself). An
    /// absolute name starts from a root directory with that inode.
    pub anchored: BTreeSet<(u64, PathBuf)>,
    /// Paths that had a `..` (normalised, as written): a restore does not
    /// trust a log where one of them leaves its scope.
    pub climbs: Vec<(PathBuf, String)>,
    /// Why the log cannot be trusted to name every change, if it cannot.
    pub incomplete: Option<String>,
}

impl ChangeSet {
    pub fn read(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|source| AgentError::Io {
            context: format!("opening the change log {}", path.display()),
            source,
        })?;
        Self::parse(std::io::BufReader::new(f), path)
    }

    /// The change log read from `input`; `path` names it in errors. Its
    /// own entry point so the fuzzer and the suite's seeded test reach
    /// the parser without files.
    pub fn parse(input: impl BufRead, path: &Path) -> Result<Self> {
        let bad = |line: usize, what: String| AgentError::Io {
            context: format!(
                "reading the change log {} line {line}: {what}",
                path.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        };
        let mut set = ChangeSet::default();
        let mut trailer = None;
        let mut header = false;
        for (i, line) in input.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|e| bad(n, e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = match serde_json::from_str(&line) {
                Ok(l) => l,
                // A torn last line: the agent died while writing it.
                Err(_) if trailer.is_none() => {
                    set.incomplete
                        .get_or_insert_with(|| format!("line {n} is not a change record"));
                    continue;
                }
                Err(e) => return Err(bad(n, e.to_string())),
            };
            match parsed {
                Line::Header { backstop_changes } => {
                    if backstop_changes != FORMAT {
                        return Err(bad(
                            n,
                            format!("format {backstop_changes}, this agent reads {FORMAT}"),
                        ));
                    }
                    header = true;
                }
                // Normalised here, once: every later check (root, scope)
                // then compares clean component lists. A path that cannot
                // be made clean is not dropped: the log is not trusted.
                Line::Path { path: p, .. } => match normalise(&p) {
                    Ok((clean, climbed)) => {
                        if climbed {
                            set.climbs.push((clean.clone(), p));
                        }
                        set.paths.insert(clean);
                    }
                    Err(why) => {
                        set.incomplete
                            .get_or_insert_with(|| format!("line {n}: path {p:?} {why}"));
                    }
                },
                Line::Anchored { ino, name, .. } => {
                    set.anchored.insert((ino, PathBuf::from(name)));
                }
                Line::Unresolved { .. } => {}
                Line::Trailer { end } => trailer = Some(end),
            }
        }
        if !header {
            return Err(bad(1, "no change log header".into()));
        }
        match trailer {
            None => {
                set.incomplete.get_or_insert_with(|| {
                    "the log has no trailer (the recording agent stopped early)".into()
                });
            }
            Some(t) if t.lost > 0 => {
                set.incomplete = Some(format!("the probes lost {} change records", t.lost));
            }
            Some(t) if t.unresolved > 0 => {
                set.incomplete = Some(format!("{} change records were not resolved", t.unresolved));
            }
            Some(_) => {}
        }
        Ok(set)
    }
}

/// `path` with "." and empty components dropped and each ".." applied
/// lexically; and whether it had a "..". Not absolute, a NUL byte, or a
/// ".." above "/" is an error (the reason).
pub fn normalise(path: &str) -> std::result::Result<(PathBuf, bool), &'static str> {
    if !path.starts_with('/') {
        return Err("is not absolute");
    }
    if path.contains('\0') {
        return Err("has a NUL byte");
    }
    let mut parts: Vec<&str> = Vec::new();
    let mut climbed = false;
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                climbed = true;
                if parts.pop().is_none() {
                    return Err("climbs above / through `..`");
                }
            }
            c => parts.push(c),
        }
    }
    Ok((PathBuf::from(format!("/{}", parts.join("/"))), climbed))
}

/// The host paths one record may have changed.
#[derive(Default)]
struct Found {
    paths: Vec<PathBuf>,
    /// (inode number, name relative to it).
    anchored: Vec<(u64, PathBuf)>,
}

/// The paths one record may have changed.
fn resolve(
    ev: &ChangeEvent,
    roots: &mut HashMap<u32, PathBuf>,
) -> std::result::Result<Found, String> {
    if ev.flags & (CHANGE_PATH0_BAD | CHANGE_PATH1_BAD) != 0 {
        return Err("a path could not be read whole".into());
    }
    // A thread's own /proc entry (cwd and root are per thread in principle),
    // else its process's.
    let proc = [ev.tid, ev.tgid]
        .into_iter()
        .map(|p| PathBuf::from(format!("/proc/{p}")))
        .find(|p| p.exists());
    let root = match proc
        .as_ref()
        .and_then(|p| std::fs::read_link(p.join("root")).ok())
    {
        Some(r) => {
            roots.insert(ev.tgid, r.clone());
            Some(r)
        }
        None => roots.get(&ev.tgid).cloned().or_else(|| one_root(roots)),
    };
    let mut out = Found::default();
    for (path, dirfd, ino) in [
        (&ev.path0[..], ev.dirfd0, ev.ino0),
        (&ev.path1[..], ev.dirfd1, ev.ino1),
    ] {
        let path = backstop_common::c_str(path);
        if path.is_empty() && dirfd == AT_FDCWD {
            continue;
        }
        // What the kernel read as the call was made always goes in: /proc,
        // read now, may have moved on (a chdir, a chroot, a reused fd).
        if ino != 0 {
            out.anchored
                .push((ino, PathBuf::from(std::ffi::OsStr::from_bytes(path))));
        }
        match resolve_one(path, dirfd, proc.as_deref(), root.as_deref()) {
            Ok(paths) => out.paths.extend(paths),
            Err(_) if ino != 0 => {}
            Err(why) => return Err(why),
        }
    }
    Ok(out)
}

/// One (dirfd, path) of a record, through /proc while the process lives.
fn resolve_one(
    path: &[u8],
    dirfd: i32,
    proc: Option<&Path>,
    root: Option<&Path>,
) -> std::result::Result<Vec<PathBuf>, String> {
    if path.is_empty() {
        if dirfd == AT_FDCWD {
            return Ok(Vec::new());
        }
        // The fd itself.
        let proc = proc.ok_or("the process is gone")?;
        let target = std::fs::read_link(proc.join(format!("fd/{dirfd}")))
            .map_err(|e| format!("fd {dirfd}: {e}"))?;
        let t = target.as_os_str().as_bytes();
        if t.ends_with(b" (deleted)") || !t.starts_with(b"/") {
            // Unlinked (that unlink was recorded), or not a file.
            return Ok(Vec::new());
        }
        return Ok(vec![target]);
    }
    let root = root.ok_or("the process is gone")?;
    let path = Path::new(std::ffi::OsStr::from_bytes(path));
    let in_root = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let proc = proc.ok_or("the process is gone (relative path)")?;
        let base = if dirfd == AT_FDCWD {
            proc.join("cwd")
        } else {
            proc.join(format!("fd/{dirfd}"))
        };
        let base = std::fs::read_link(&base).map_err(|e| format!("{}: {e}", base.display()))?;
        let base = match base.strip_prefix(root) {
            Ok(b) => Path::new("/").join(b),
            Err(_) if root == Path::new("/") => base,
            Err(_) => return Err(format!("{} is outside the root", base.display())),
        };
        base.join(path)
    };
    in_root_paths(root, &in_root)
}

/// When every process seen so far had the same root, that root.
fn one_root(roots: &HashMap<u32, PathBuf>) -> Option<PathBuf> {
    let mut it = roots.values();
    let first = it.next()?;
    it.all(|r| r == first).then(|| first.clone())
}

/// `path` as the kernel saw it inside `root`: the parent's real host path
/// and the name; and when the name is a symlink, also where it leads (an
/// open for writing follows it).
fn in_root_paths(root: &Path, path: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    // Lexical clean-up first: "." and empty components; ".." is left to
    // the kernel (it may cross a symlink).
    let comps: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            Component::ParentDir => Some(std::ffi::OsStr::new("..")),
            _ => None,
        })
        .collect();
    let Some((name, parent)) = comps.split_last() else {
        return Ok(vec![root.to_path_buf()]);
    };
    let root_fd = open_path(None, root, 0).map_err(|e| format!("{}: {e}", root.display()))?;
    // The deepest existing ancestor, resolved by the kernel inside the
    // root; what does not exist (removed since) is appended as written.
    let mut upto = parent.len();
    let base = loop {
        let rel: PathBuf = parent[..upto].iter().collect();
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        match open_path(Some(&root_fd), &rel, libc::RESOLVE_IN_ROOT) {
            Ok(fd) => break fd_path(&fd)?,
            Err(_) if upto > 0 => upto -= 1,
            Err(e) => return Err(format!("{}: {e}", root.display())),
        }
    };
    let mut host = base;
    for c in &parent[upto..] {
        host.push(c);
    }
    if *name == ".." {
        host.pop();
    } else {
        host.push(name);
    }
    let mut out = vec![host.clone()];
    let is_link = std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        let rel: PathBuf = comps.iter().collect();
        if let Ok(fd) = open_path(Some(&root_fd), &rel, libc::RESOLVE_IN_ROOT) {
            out.push(fd_path(&fd)?);
        }
    }
    Ok(out)
}

/// openat2(O_PATH) relative to `dir` (or absolute), with `resolve` flags.
fn open_path(dir: Option<&OwnedFd>, path: &Path, resolve: u64) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes().to_vec())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zero is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: valid C string and open_how for the call's duration.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fd_path(fd: &OwnedFd) -> std::result::Result<PathBuf, String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| PathBuf::from(std::ffi::OsString::from_vec(p.into_os_string().into_vec())))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("backstop-changes-{name}-{}", std::process::id()));
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
                s += &format!(
                    "{{\"path\":{},\"nr\":257,\"pid\":1}}\n",
                    serde_json::json!(q)
                );
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
}
