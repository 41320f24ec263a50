//! The room check of each scenario, recorded beside its windows: what a
//! live deployment of the same .debs would have been told before its
//! snapshot (`backstop-agent room`, the agent's own check). A refusal is
//! an alarm before window 0, which no window can give; the evaluation
//! counts it as one (`learn::detectors::WithRoom`).
//!
//! Why a separate pass as well as the runner: the shipped corpus was
//! recorded before the check existed, and checking it again needs only
//! the .debs and the root, not the installs ([`recheck`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::inject::main_deb;
use super::runner::{debs_for, total_size};
use super::{Catalog, CatalogError, Family, Record, Result, Scenario, io};
use crate::learn::corpus::Room;

/// The size of the scenario's tmpfs writable layer, when it has one: a
/// disk-full fault's is a fraction of what unpacking writes (`total` is
/// the .debs' size as installed); a log flood's, and a disk-full twin's,
/// hold the unpacked package and a few MiB more.
pub(super) fn upper_size(s: &Scenario, total: u64) -> Option<u64> {
    let m = u64::from(s.magnitude.max(1));
    let setting = s.twin.unwrap_or(s.fault);
    if s.fault == Family::DiskFull {
        Some((total / (2 * m)).max(256 * 1024))
    } else if setting == Family::LogFlood || s.twin == Some(Family::DiskFull) {
        Some(total * 6 + (8 << 20) * m)
    } else {
        None
    }
}

/// What `backstop-agent room --json` prints, as far as read here.
#[derive(serde::Deserialize)]
struct Verdict {
    verdict: String,
    reason: Option<String>,
}

/// The agent's room check on `debs` over `root` (as a shadow with a
/// writable layer of `upper` bytes, when given).
pub(super) fn check(
    agent: &Path,
    root: &Path,
    debs: &[PathBuf],
    upper: Option<u64>,
) -> Result<Room> {
    let mut cmd = Command::new(agent);
    cmd.args(["room", "--json", "--root"]).arg(root);
    if let Some(u) = upper {
        cmd.args(["--upper-size", &u.to_string()]);
    }
    cmd.arg("--").args(debs);
    let what = format!("{} room", agent.display());
    let out = cmd.output().map_err(io(what.clone()))?;
    let v: Option<Verdict> = serde_json::from_slice(&out.stdout).ok();
    match (out.status.code(), v) {
        (Some(0), Some(v)) if v.verdict == "fits" => Ok(Room::Fits),
        (
            Some(3),
            Some(Verdict {
                reason: Some(reason),
                ..
            }),
        ) => Ok(Room::Refused { reason }),
        (code, _) => Err(CatalogError::Io {
            context: format!(
                "{what} (exit {code:?}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: std::io::Error::other("the room check did not run"),
        }),
    }
}

/// The catalog id of the scenario a record is of: one run under a host
/// condition is named NAME-on-CONDITION (`corpus run --host-condition`).
fn scenario_id(record: &str) -> String {
    (["fuller-disk", "less-memory", "busy-neighbour"].iter())
        .find_map(|c| record.split_once(&format!("-on-{c}-")))
        .map_or_else(
            || record.to_string(),
            |(name, seed)| format!("{name}-{seed}"),
        )
}

/// Where [`recheck`] finds things: the runner's agent, root and .debs, and
/// a directory for the repacked .debs.
pub struct Recheck<'a> {
    pub agent: &'a Path,
    pub root: &'a Path,
    pub debs: &'a Path,
    pub work: &'a Path,
}

/// Give each record of `catalog`'s scenarios the room check the runner
/// would have run before it. A scenario with a tmpfs layer is checked as
/// the runner checks it: its package repacked with its fault, the layer
/// sized from the repacked .debs. One on the host's disk is checked with
/// its package's .debs as fetched, once per package (the fault's
/// postinst fragment adds less than a KiB to its control area, nothing
/// beside a disk with GBs free). Records of no scenario are left as they
/// are; the number of records checked is returned.
pub fn recheck(
    catalog: &Catalog,
    o: &Recheck,
    records: &mut [Record],
    note: &dyn Fn(&str),
) -> Result<usize> {
    let scenarios: HashMap<String, &Scenario> =
        catalog.scenarios.iter().map(|s| (s.id(), s)).collect();
    // Keyed by the .debs: a left-out dependency's scenario has fewer.
    let mut on_disk: HashMap<Vec<PathBuf>, Room> = HashMap::new();
    let mut checked = 0;
    for r in records.iter_mut() {
        let Some(s) = scenarios.get(&scenario_id(&r.id)) else {
            continue;
        };
        let pkg_dir = o.debs.join(&s.package);
        let debs = closure(s, &pkg_dir)?;
        let room = if upper_size(s, total_size(&debs)).is_some() {
            let work = o.work.join(&s.name);
            std::fs::create_dir_all(&work).map_err(io(format!("creating {}", work.display())))?;
            let main = main_deb(&pkg_dir, &s.package)?;
            let debs = debs_for(s, &pkg_dir, &main, &work)?;
            let room = check(o.agent, o.root, &debs, upper_size(s, total_size(&debs)))?;
            let _ = std::fs::remove_dir_all(&work);
            room
        } else if let Some(room) = on_disk.get(&debs) {
            room.clone()
        } else {
            let room = check(o.agent, o.root, &debs, None)?;
            on_disk.insert(debs, room.clone());
            room
        };
        if let Room::Refused { reason } = &room {
            note(&format!("{}: refused: {reason}", r.id));
        }
        r.room = Some(room);
        checked += 1;
    }
    Ok(checked)
}

/// The scenario's .debs as fetched, sorted: the package and what the root
/// lacks (only the package when a dependency is left out).
pub(super) fn closure(s: &Scenario, pkg_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut debs: Vec<PathBuf> = if s.fault == Family::MissingDependency {
        vec![main_deb(pkg_dir, &s.package)?]
    } else {
        std::fs::read_dir(pkg_dir)
            .map_err(io(format!("reading {}", pkg_dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect()
    };
    debs.sort();
    Ok(debs)
}

#[cfg(test)]
mod tests {
    use super::super::inject::tests::scenario;
    use super::*;

    /// The layers the shipped corpus was recorded with (runner.rs passed
    /// these sizes before they moved here): they must not move.
    #[test]
    fn each_setting_gets_the_layer_it_was_recorded_with() {
        const MIB: u64 = 1 << 20;
        let size = |text: &str, total| upper_size(&scenario(text), total);
        assert_eq!(size("fault = \"disk-full\"\n", 10 * MIB), Some(5 * MIB));
        assert_eq!(
            size("fault = \"disk-full\"\nmagnitude = 2\n", 10 * MIB),
            Some(10 * MIB / 4)
        );
        assert_eq!(size("fault = \"disk-full\"\n", 100_000), Some(256 * 1024));
        for text in [
            "fault = \"log-flood\"\n",
            "twin = \"disk-full\"\n",
            "twin = \"log-flood\"\n",
        ] {
            assert_eq!(size(text, MIB), Some(6 * MIB + 8 * MIB), "{text}");
        }
        assert_eq!(
            size("fault = \"log-flood\"\nmagnitude = 2\n", MIB),
            Some(6 * MIB + 16 * MIB)
        );
        for text in ["", "fault = \"memory-blowup\"\n", "twin = \"crash-loop\"\n"] {
            assert_eq!(size(text, MIB), None, "{text}");
        }
    }

    #[test]
    fn a_record_under_a_host_condition_is_of_its_quiet_scenario() {
        assert_eq!(scenario_id("hello-ok-0-1"), "hello-ok-0-1");
        assert_eq!(scenario_id("hello-ok-0-on-fuller-disk-1"), "hello-ok-0-1");
        assert_eq!(scenario_id("x-on-y-ok-on-busy-neighbour-0"), "x-on-y-ok-0");
        // Not a condition: the name stands.
        assert_eq!(scenario_id("lib-on-the-side-0"), "lib-on-the-side-0");
    }
}
