//! The checks that span fields: names unique within a list, scope paths
//! and excludes agree, mode and shadow agree, `{artifact}` only where the
//! artifact exists. Per-field checks happen as `parse.rs` reads each
//! field, where its path is at hand; these run on the parsed manifest and
//! name the field they blame the same way.

use std::path::Path;

use super::read::{Result, invalid};
use super::{ARTIFACT_PLACEHOLDER, Manifest, Mode, ProbeKind, Step};

pub(super) fn manifest(m: &Manifest) -> Result<()> {
    unique("steps", m.steps.iter().map(|s| s.name.as_str()))?;
    unique(
        "shadow.tests",
        m.shadow.tests.iter().map(|s| s.name.as_str()),
    )?;
    unique("probes", m.probes.iter().map(|p| p.name.as_str()))?;
    unique(
        "rollback_hooks",
        m.rollback_hooks.iter().map(|s| s.name.as_str()),
    )?;
    if m.mode == Mode::ShadowFirst && !m.shadow.enabled {
        return Err(invalid(
            "mode",
            "\"shadow-first\" waits for the shadow, but shadow.enabled is false",
        ));
    }
    if let Some(b) = &m.artifact.build {
        no_placeholder("artifact.build.run", std::slice::from_ref(b))?;
    }
    for (i, p) in m.probes.iter().enumerate() {
        if let ProbeKind::Command { run } = &p.kind
            && let Some(j) = run.iter().position(|a| a == ARTIFACT_PLACEHOLDER)
        {
            return Err(invalid(
                &format!("probes[{i}].run[{j}]"),
                "{artifact} is for steps, tests and hooks, not probes",
            ));
        }
    }
    scope(m)
}

/// The first repeated name in a list, blamed on its second occurrence.
fn unique<'a>(list: &str, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (i, n) in names.enumerate() {
        if !seen.insert(n) {
            return Err(invalid(
                &format!("{list}[{i}].name"),
                format!("{n:?} is used twice in {list}"),
            ));
        }
    }
    Ok(())
}

fn no_placeholder(field: &str, cmds: &[Step]) -> Result<()> {
    for c in cmds {
        if let Some(j) = c.run.iter().position(|a| a == ARTIFACT_PLACEHOLDER) {
            return Err(invalid(
                &format!("{field}[{j}]"),
                "{artifact} cannot be used by the build that makes the artifact",
            ));
        }
    }
    Ok(())
}

/// Scope paths distinct and not nested; each exclude absolute, free of
/// `..`, and starting (before its first glob character) under a scope
/// path, so an exclude can never widen or leave the scope.
fn scope(m: &Manifest) -> Result<()> {
    let paths = &m.scope.paths;
    for (i, p) in paths.iter().enumerate() {
        for (j, q) in paths.iter().enumerate().take(i) {
            if p.starts_with(q) || q.starts_with(p) {
                return Err(invalid(
                    &format!("scope.paths[{i}]"),
                    format!(
                        "{} overlaps scope.paths[{j}] ({}): name each tree once",
                        p.display(),
                        q.display()
                    ),
                ));
            }
        }
    }
    for (i, glob) in m.scope.exclude.iter().enumerate() {
        let field = format!("scope.exclude[{i}]");
        if !glob.starts_with('/') {
            return Err(invalid(
                &field,
                format!("{glob:?} is not absolute (write it as seen inside the root, from /)"),
            ));
        }
        if glob.split('/').any(|c| c == "..") {
            return Err(invalid(&field, format!("{glob:?} holds '..'")));
        }
        // The agent's snapshot compiles excludes with globset: the same
        // parser here refuses what it would refuse, before anything runs.
        if let Err(e) = globset::Glob::new(glob) {
            return Err(invalid(
                &field,
                format!("{glob:?} is not a glob: {}", e.kind()),
            ));
        }
        let literal: Vec<&str> = glob
            .split('/')
            .take_while(|c| !c.contains(['*', '?', '[', ']', '{', '}', '\\']))
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let prefix = Path::new("/").join(literal.join("/"));
        if paths.contains(&prefix) && !glob.contains(['*', '?', '[', '{']) {
            return Err(invalid(
                &field,
                format!("{glob:?} excludes a whole scope path: drop both"),
            ));
        }
        if !paths.iter().any(|p| prefix.starts_with(p)) {
            return Err(invalid(
                &field,
                format!(
                    "{glob:?} is not under a scope path (it must start below one of scope.paths)"
                ),
            ));
        }
    }
    Ok(())
}
