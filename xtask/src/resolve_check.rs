//! Does a resolved closure really install on minbase? One `dpkg -i` of
//! all its .debs on an overlay over the cached rootfs, in a throw-away
//! mount, PID and network namespace (no network, as in a shadow; every
//! process the install started dies with the namespace), so the rootfs
//! is never written and nothing outlives the check. `lo` is up, as in a
//! shadow (agent/src/shadow/container.rs), so a package fails here only
//! when it would fail there: with `lo` down, postfix's newaliases fails
//! ("could not find any active network interfaces") but installs in a
//! shadow.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::resolve::{MIRROR, Pkg};
use crate::util;

/// Longest a check's `dpkg -i` may take.
const CHECK_TIMEOUT_SECS: u32 = 240;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `dpkg -i` succeeded.
    Installs,
    /// The package's own maintainer script failed on minbase: a real
    /// failure, kept with its cause.
    RealFailure(String),
    /// Not usable: why (unmet dependency, download, timeout).
    Dropped(String),
    /// Resolved without `--check`.
    Unchecked,
}

impl Verdict {
    pub fn keeps(&self) -> bool {
        matches!(
            self,
            Verdict::Installs | Verdict::RealFailure(_) | Verdict::Unchecked
        )
    }

    pub fn label(&self) -> String {
        match self {
            Verdict::Installs => "installs".into(),
            Verdict::RealFailure(r) => format!("real-failure: {r}"),
            Verdict::Dropped(r) => format!("dropped: {r}"),
            Verdict::Unchecked => "unchecked".into(),
        }
    }

    fn columns(&self) -> (&'static str, &str) {
        match self {
            Verdict::Installs => ("installs", ""),
            Verdict::RealFailure(r) => ("real-failure", r),
            Verdict::Dropped(r) => ("dropped", r),
            Verdict::Unchecked => ("unchecked", ""),
        }
    }
}

/// corpus/resolve.tsv: package, verdict, reason, debs, bytes, seconds.
pub struct Verdicts {
    by_package: BTreeMap<String, String>,
}

impl Verdicts {
    pub fn load(path: &Path) -> Verdicts {
        let mut by_package = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let mut cols = line.split('\t');
                if let (Some(p), Some(v)) = (cols.next(), cols.next()) {
                    by_package.insert(p.to_string(), v.to_string());
                }
            }
        }
        Verdicts { by_package }
    }

    pub fn has(&self, package: &str) -> bool {
        self.by_package.contains_key(package)
    }

    pub fn kept(&self) -> usize {
        self.by_package
            .values()
            .filter(|v| *v == "installs" || *v == "unchecked")
            .count()
    }

    pub fn append(
        &mut self,
        path: &Path,
        package: &str,
        v: &Verdict,
        debs: usize,
        bytes: u64,
        took: Duration,
    ) -> Result<()> {
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if new {
            writeln!(
                f,
                "# cargo xtask corpus-resolve: package\tverdict\treason\tdebs\tbytes\tseconds"
            )?;
        }
        let (verdict, reason) = v.columns();
        let reason = reason.replace(['\t', '\n'], " ");
        writeln!(
            f,
            "{package}\t{verdict}\t{reason}\t{debs}\t{bytes}\t{:.1}",
            took.as_secs_f64()
        )?;
        self.by_package.insert(package.into(), verdict.into());
        Ok(())
    }
}

fn sha256(path: &Path) -> Result<String> {
    let out = util::output(Command::new("sha256sum").arg(path))?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The closure's .debs in POOL, downloaded and verified when missing.
fn fetch(pool: &Path, closure: &[&Pkg]) -> Result<(), String> {
    std::fs::create_dir_all(pool).map_err(|e| format!("creating {}: {e}", pool.display()))?;
    for d in closure {
        let file = pool.join(d.filename.rsplit('/').next().unwrap_or(&d.filename));
        if file.exists() && sha256(&file).ok().as_deref() == Some(d.sha256.as_str()) {
            continue;
        }
        let ok = Command::new("curl")
            .args(["-sSfL", "--retry", "3", "-o"])
            .arg(&file)
            .arg(format!("{MIRROR}/{}", d.filename))
            .status()
            .is_ok_and(|s| s.success());
        if !ok || sha256(&file).ok().as_deref() != Some(d.sha256.as_str()) {
            let _ = std::fs::remove_file(&file);
            return Err(format!(
                "download of {} failed or its SHA-256 differs",
                d.filename
            ));
        }
    }
    Ok(())
}

/// Install the closure on an overlay over ROOT; the verdict.
pub fn check(root: &Path, pool: &Path, dir: &Path, closure: &[&Pkg]) -> Result<Verdict> {
    if !util::is_root() {
        bail!("corpus-resolve --check: needs root (overlay mount, chroot)");
    }
    if let Err(reason) = fetch(pool, closure) {
        return Ok(Verdict::Dropped(reason));
    }
    let s = dir.join("scratch");
    let _ = std::fs::remove_dir_all(&s);
    let input = s.join("upper/tmp/backstop-in");
    std::fs::create_dir_all(&input)?;
    // The upper /tmp hides the root's: give it the root's mode (1777), or
    // a script that writes there as its own user (sa-compile's
    // debian-spamd) fails on our check, not on minbase.
    let tmp_mode = std::fs::metadata(root.join("tmp")).map_or(0o1777, |m| m.permissions().mode());
    std::fs::set_permissions(
        s.join("upper/tmp"),
        std::fs::Permissions::from_mode(tmp_mode),
    )?;
    for sub in ["work", "merged"] {
        std::fs::create_dir_all(s.join(sub))?;
    }
    let mut names = Vec::new();
    for d in closure {
        let file = d.filename.rsplit('/').next().unwrap_or(&d.filename);
        std::fs::hard_link(pool.join(file), input.join(file))
            .or_else(|_| std::fs::copy(pool.join(file), input.join(file)).map(|_| ()))?;
        names.push(format!("/tmp/backstop-in/{file}"));
    }
    // In stages, as a scenario installs them (`backstop_common::dpkg`).
    let controls: Vec<_> = closure.iter().map(|d| d.control.clone()).collect();
    let dpkg = backstop_common::dpkg::script(&backstop_common::dpkg::in_stages(
        &names,
        &backstop_common::dpkg::stages(&controls),
    ));
    let script = format!(
        "set -e; m={m}; mount -t overlay overlay -o lowerdir={r},upperdir={u},workdir={w} $m; mount -t proc proc $m/proc; ip link set lo up; exec timeout {CHECK_TIMEOUT_SECS} chroot $m /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 sh -c \"$1\" </dev/null",
        m = s.join("merged").display(),
        r = root.display(),
        u = s.join("upper").display(),
        w = s.join("work").display(),
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--net",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
        ])
        .arg(&script)
        // $1 of the script: the staged dpkg command, quoted once, by
        // `dpkg::script`, and never pasted into the script's own text.
        .args(["sh", &dpkg])
        .output()
        .context("starting unshare")?;
    let _ = std::fs::remove_dir_all(&s);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // dpkg's whole output, kept beside the cache: a verdict's one line is
    // often not enough to tell a package's own failure from an ordering.
    if let Some(p) = closure.last() {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        std::fs::write(logs.join(format!("{}.log", p.name)), &text)?;
    }
    Ok(classify(out.status.code(), &text))
}

/// The verdict from dpkg's exit and output.
fn classify(code: Option<i32>, text: &str) -> Verdict {
    let last = |pred: &dyn Fn(&str) -> bool| {
        text.lines()
            .rfind(|l| pred(l))
            .unwrap_or_default()
            .trim()
            .chars()
            .take(200)
            .collect::<String>()
    };
    match code {
        Some(0) => Verdict::Installs,
        Some(124) => Verdict::Dropped(format!("dpkg -i ran over {CHECK_TIMEOUT_SECS} s")),
        // A failing maintainer script first: dpkg then reports its
        // dependents' dependency problems, which are its consequence.
        _ if text.contains("installation script subprocess returned error") => {
            // The script's own last words before dpkg's summary.
            let cause = last(&|l| {
                !l.starts_with("dpkg")
                    && !l.starts_with(' ')
                    && !l.starts_with("Errors were")
                    && !l.starts_with("Processing")
                    && !l.is_empty()
            });
            Verdict::RealFailure(if cause.is_empty() {
                last(&|l| l.contains("returned error"))
            } else {
                cause
            })
        }
        _ if text.contains("dependency problems") => {
            // "X depends on Y; however:" is followed by why ("Package Y is
            // not configured yet.").
            let lines: Vec<&str> = text.lines().collect();
            let at = lines.iter().rposition(|l| l.contains("depends on"));
            let why = at.map_or(String::new(), |i| {
                lines[i..lines.len().min(i + 2)]
                    .iter()
                    .map(|l| l.trim())
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            Verdict::Dropped(format!("unmet: {why}"))
        }
        _ => Verdict::Dropped(format!(
            "dpkg -i failed ({code:?}): {}",
            // dpkg's own complaint, else its last words.
            Some(last(
                &|l| l.starts_with("dpkg: error") || l.contains("trying to overwrite")
            ))
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| last(&|l| !l.trim().is_empty()))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_output_is_classified_by_its_cause() {
        assert_eq!(classify(Some(0), ""), Verdict::Installs);
        let v = classify(
            Some(1),
            "dpkg: dependency problems prevent configuration of x:\n x depends on libz (>= 9); however:\n",
        );
        assert!(
            matches!(&v, Verdict::Dropped(r) if r.contains("libz")),
            "{v:?}"
        );
        let v = classify(
            Some(1),
            "Setting up postfix\nnewaliases: fatal: no hostname\ndpkg: error processing package postfix (--install):\n installed postfix package post-installation script subprocess returned error exit status 75\nErrors were encountered while processing:\n postfix\n",
        );
        assert_eq!(
            v,
            Verdict::RealFailure("newaliases: fatal: no hostname".into())
        );
        assert!(!classify(Some(124), "").keeps());
        let v = classify(
            Some(1),
            "postfix: fatal: bad hostname\ndpkg: error processing package postfix (--install):\n installed postfix package post-installation script subprocess returned error exit status 1\ndpkg: dependency problems prevent configuration of postfix-cdb:\n postfix-cdb depends on postfix; however:\n",
        );
        assert!(
            matches!(&v, Verdict::RealFailure(r) if r.contains("bad hostname")),
            "{v:?}"
        );
    }
}
