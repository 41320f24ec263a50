//! Reading a change log back for a restore: the paths it names,
//! normalised once, and why it cannot be trusted if it cannot.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::{FORMAT, Line};
use crate::error::{AgentError, Result};

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
        let bad = |line: usize, reason: String| AgentError::BadChangeLog {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut set = ChangeSet::default();
        let mut trailer = None;
        let mut header = false;
        for (i, line) in input.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|source| AgentError::Io {
                context: format!("reading the change log {} line {n}", path.display()),
                source,
            })?;
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
