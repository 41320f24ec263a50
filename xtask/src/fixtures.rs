//! Real things to install into: a cached Debian rootfs (debootstrap
//! minbase) and cached real .deb files, used by tests, the demo and the
//! benchmarks. Built once per checkout under target/xtask/. The demo is in
//! demo/, the corpus and training in corpus.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

pub const SUITE: &str = "bookworm";
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// Packages fetched with `apt-get download`; each installs into the minbase
/// rootfs with `dpkg -i` alone (their dependencies are all in minbase).
/// hello: tiny, no maintainer scripts. cpio, less: maintainer scripts
/// (update-alternatives, mime), man pages, a few hundred KB each.
pub const DEBS: &[&str] = &["hello", "cpio", "less"];

pub fn rootfs_dir() -> PathBuf {
    util::cache_dir().join(format!("rootfs-{SUITE}-minbase"))
}

pub fn debs_dir() -> PathBuf {
    util::cache_dir().join("debs")
}

const COMPLETE: &str = ".backstop-complete";

/// The cached rootfs, made with debootstrap if absent. Built in a side
/// directory and renamed into place, so an interrupted build is never
/// mistaken for a finished one.
pub fn rootfs() -> Result<PathBuf> {
    let dir = rootfs_dir();
    if dir.join(COMPLETE).exists() {
        eprintln!("fixtures: rootfs ok ({})", dir.display());
        return Ok(dir);
    }
    if !util::is_root() {
        bail!("fixtures: building the Debian rootfs needs root (debootstrap)");
    }
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the unfinished {}", partial.display()))?;
    }
    std::fs::create_dir_all(
        partial
            .parent()
            .context("the rootfs cache path has no parent")?,
    )?;
    let mut cmd = Command::new("debootstrap");
    cmd.args(["--variant=minbase", SUITE])
        .arg(&partial)
        .arg(MIRROR);
    util::step(
        &format!("debootstrap --variant=minbase {SUITE} (about 30 s)"),
        cmd,
    )?;
    std::fs::write(partial.join(COMPLETE), "")?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    Ok(dir)
}

/// The cached .deb files, downloaded with apt-get if absent.
pub fn debs() -> Result<PathBuf> {
    let dir = debs_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let missing: Vec<&str> = DEBS
        .iter()
        .copied()
        .filter(|p| deb_path(&dir, p).is_none())
        .collect();
    if missing.is_empty() {
        eprintln!("fixtures: debs ok ({})", DEBS.join(", "));
        return Ok(dir);
    }
    let mut cmd = Command::new("apt-get");
    cmd.arg("download").args(&missing).current_dir(&dir);
    if util::step(&format!("apt-get download {}", missing.join(" ")), cmd).is_err() {
        // A fresh machine may not have package lists yet.
        let mut update = Command::new("apt-get");
        update.args(["update", "-q"]);
        util::step("apt-get update", update)?;
        let mut cmd = Command::new("apt-get");
        cmd.arg("download").args(&missing).current_dir(&dir);
        util::step(&format!("apt-get download {}", missing.join(" ")), cmd)?;
    }
    Ok(dir)
}

/// The downloaded file for `pkg` (named `pkg_VERSION_ARCH.deb`).
pub fn deb_path(dir: &Path, pkg: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")))
        })
}

/// Everything the test suite needs besides the build.
pub fn prepare() -> Result<()> {
    rootfs()?;
    debs()?;
    Ok(())
}

/// A throw-away root: an overlay whose lower layer is the cached rootfs.
/// Unmounted and removed on drop.
pub struct ScratchRoot {
    base: PathBuf,
    pub merged: PathBuf,
}

impl ScratchRoot {
    pub fn new(lower: &Path, name: &str) -> Result<Self> {
        let base = util::cache_dir()
            .join("scratch")
            .join(format!("{name}-{}", std::process::id()));
        let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged);
        util::output(&mut cmd)
            .with_context(|| format!("mounting an overlay at {}", merged.display()))?;
        Ok(ScratchRoot { base, merged })
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
