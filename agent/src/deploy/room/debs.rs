//! Reading a .deb's two tars as dpkg-deb streams them, into the tally.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tar::EntryType as T;

use super::{Entry, Stop, Tally};

/// Where dpkg extracts a .deb's control area before it unpacks the files.
const CONTROL_AREA: &[u8] = b"var/lib/dpkg/tmp.ci";

/// The .debs among the artifact's paths: files named `*.deb`, and those
/// directly inside a directory.
pub(super) fn debs_of(artifact: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let is_deb = |p: &Path| p.extension().is_some_and(|e| e == "deb");
    let mut out = Vec::new();
    for p in artifact {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| format!("artifact {}: {e}", p.display()))?;
            let mut found: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| is_deb(p) && p.is_file())
                .collect();
            found.sort();
            out.extend(found);
        } else if is_deb(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Tally what dpkg writes for `deb` in its order: the control area, the
/// status file's copy, the files, the status file's copy again.
pub(super) fn read_into(deb: &Path, tally: &mut Tally) -> Result<(), Stop> {
    stream(deb, "--ctrl-tarfile", CONTROL_AREA, tally)?;
    tally.status_copy()?;
    stream(deb, "--fsys-tarfile", b"", tally)?;
    tally.status_copy_after_files()
}

/// Tally the entries of one of `deb`'s tars (`dpkg-deb FLAG`), each under
/// `under`, as dpkg-deb streams them; dpkg-deb is killed when reading
/// stops early.
fn stream(deb: &Path, flag: &str, under: &[u8], tally: &mut Tally) -> Result<(), Stop> {
    let mut dpkg_deb = Command::new("dpkg-deb");
    dpkg_deb.arg(flag).arg(deb);
    tar_from(dpkg_deb, under, tally)
}

/// Tally the tar `cmd` (dpkg-deb) writes to its stdout.
pub(super) fn tar_from(mut cmd: Command, under: &[u8], tally: &mut Tally) -> Result<(), Stop> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Stop::NoDpkgDeb,
            _ => Stop::Bad(format!("running dpkg-deb: {e}")),
        })?;
    // Drained aside, so dpkg-deb never blocks on a full stderr pipe while
    // its stdout is read: its first 4 KiB are kept for the refusal.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = e.by_ref().take(4096).read_to_end(&mut kept);
            let _ = std::io::copy(&mut e, &mut std::io::sink());
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    let read = match child.stdout.take() {
        Some(out) => entries(out, under, tally),
        None => Err(Stop::Bad("dpkg-deb gave no output".into())),
    };
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Stop::Bad(format!("waiting for dpkg-deb: {e}")))?;
    match read {
        // A refusal, or the root failing us, stands whatever dpkg-deb
        // said after it was killed.
        Err(e @ (Stop::Full(_) | Stop::Root(_))) => return Err(e),
        Err(e) if status.success() => return Err(e),
        _ => {}
    }
    if !status.success() {
        // Joined only here: a refusal does not wait on whatever dpkg-deb
        // left holding the pipe.
        let said = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        return Err(Stop::Bad(format!(
            "not a .deb dpkg-deb can read ({status}): {}",
            said.trim()
        )));
    }
    Ok(())
}

fn entries(r: impl Read, under: &[u8], tally: &mut Tally) -> Result<(), Stop> {
    let what = if under.is_empty() {
        "its files"
    } else {
        "its control area"
    };
    let bad = |e: std::io::Error| Stop::Bad(format!("{what}: {e}"));
    for e in tar::Archive::new(r).entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        let entry = match e.header().entry_type() {
            T::Regular | T::Continuous => Entry::File(e.header().size().map_err(bad)?),
            T::Directory => Entry::Dir,
            T::Symlink | T::Char | T::Block | T::Fifo => Entry::Node,
            // Hard links share an inode; the rest are headers of headers.
            _ => continue,
        };
        let path = e.path_bytes();
        let rel = path.strip_prefix(b"./").unwrap_or(&path);
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        let rel = rel.strip_suffix(b"/").unwrap_or(rel);
        let full = match (under.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_vec(),
            (false, true) => under.to_vec(),
            (false, false) => [under, b"/", rel].concat(),
        };
        tally.add(&full, entry)?;
    }
    Ok(())
}
