//! Running a catalog: each scenario a real install in a shadow, its
//! report turned into a training record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use backstop_common::features::SCHEMA_VERSION;
use backstop_common::shadow::ShadowReport;

use super::inject::{fault_script, main_deb, repack};
use super::{Catalog, CatalogError, Defaults, Family, Outcome, Record, Result, Scenario, io};

/// Where the runner finds things.
pub struct RunOptions {
    pub agent: PathBuf,
    pub root: PathBuf,
    /// DEBS/<package>/*.deb: the package and the dependencies the root lacks.
    pub debs: PathBuf,
    pub out: PathBuf,
}

/// Run one scenario; the deployment it produced.
pub fn run_scenario(catalog: &Catalog, s: &Scenario, o: &RunOptions) -> Result<Record> {
    let defaults = &catalog.defaults;
    let fail = |reason: String| CatalogError::Scenario {
        scenario: s.name.clone(),
        reason,
    };
    let pkg_dir = o.debs.join(&s.package);
    let main = main_deb(&pkg_dir, &s.package)?;
    let work = o.out.join("work").join(&s.name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(format!("creating {}", work.display())))?;
    let debs = debs_for(s, &pkg_dir, &main, &work)?;
    let cmd = shadow_command(defaults, s, o, &debs);
    // The host condition holds from before the install to after it.
    let neighbour = s
        .host
        .map(|c| super::host::Neighbour::start(c, &work, &s.name))
        .transpose()?;
    // What a live deployment would have been told first. The install runs
    // either way: its windows are what the model is measured on.
    let upper = super::room::upper_size(s, total_size(&debs));
    let room = super::room::check(&o.agent, &o.root, &debs, upper)?;
    let out = super::stop::output(cmd, &o.agent, &o.out.join("agent-data"))?;
    drop(neighbour);
    let report: ShadowReport = serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "the shadow printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    let _ = std::fs::remove_dir_all(&work);
    let mut r = record_from_report(s, &report, defaults.window_ms).map_err(fail)?;
    r.room = Some(room);
    if s.fault == Family::Real && r.outcome == Outcome::Ok {
        // The package's own failure did not happen here: label what did
        // happen (a healthy install), not what the catalog expected.
        r.family = super::HEALTHY.into();
        r.variant = super::HEALTHY.into();
        r.cause = None;
        return Ok(r);
    }
    catalog.label(&mut r);
    Ok(r)
}

/// The .debs to install, sorted, the package's own repacked with the
/// scenario's fault (only that one when a dependency is left out).
pub(super) fn debs_for(
    s: &Scenario,
    pkg_dir: &Path,
    main: &Path,
    work: &Path,
) -> Result<Vec<PathBuf>> {
    let mut debs = super::room::closure(s, pkg_dir)?;
    let repacked = repack(main, &fault_script(s).unwrap_or_default(), work)?;
    for d in &mut debs {
        if *d == main {
            d.clone_from(&repacked);
        }
    }
    Ok(debs)
}

/// The `backstop-agent shadow run` that installs `debs` with the
/// scenario's limits and health probe.
fn shadow_command(defaults: &Defaults, s: &Scenario, o: &RunOptions, debs: &[PathBuf]) -> Command {
    let total = total_size(debs);
    let mut cmd = Command::new(&o.agent);
    cmd.args(["shadow", "--json", "--data"])
        .arg(o.out.join("agent-data"))
        .arg("run")
        .arg("--root")
        .arg(&o.root)
        .args(["--window-ms", &defaults.window_ms.to_string()])
        .args([
            "--timeout-secs",
            &s.timeout_secs.unwrap_or(defaults.timeout_secs).to_string(),
        ])
        // Sync calls reach the disk, so the windows' I/O is a live install's.
        .arg("--durable");
    // A twin runs in its family's setting: limit, upper, service, probe.
    let setting = s.twin.unwrap_or(s.fault);
    let memory = if setting == Family::MemoryBlowup {
        64 << 20
    } else {
        defaults.memory
    };
    cmd.args(["--memory", &memory.to_string()]);
    if let Some(size) = super::room::upper_size(s, total) {
        cmd.args(["--upper-size", &size.to_string()]);
    }
    let health = match setting {
        Family::SlowService => Some(
            "for i in 1 2 3 4 5 6 7 8; do s=$(date +%s%N); perl -MIO::Socket::INET -e '$c=IO::Socket::INET->new(PeerAddr=>\"127.0.0.1:8089\") or exit 1; <$c>' || exit 1; e=$(date +%s%N); [ $(( (e-s)/1000000 )) -lt 200 ] || exit 1; done",
        ),
        // The service's process must live through 3 seconds.
        Family::CrashLoop => Some("p=$(cat /run/backstop-demo.pid) && sleep 3 && kill -0 $p"),
        _ => None,
    };
    if let Some(h) = health {
        cmd.args(["--test", h]);
    }
    for d in debs {
        cmd.arg("--copy-in").arg(d);
    }
    let names: Vec<String> = debs
        .iter()
        .map(|d| {
            format!(
                "/.backstop-shadow/in/{}",
                d.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    cmd.arg("--").args(super::install::dpkg_argv(debs, &names));
    cmd
}

/// The .debs' size in all, as their files are.
pub(super) fn total_size(debs: &[PathBuf]) -> u64 {
    (debs.iter())
        .filter_map(|d| std::fs::metadata(d).ok())
        .map(|m| m.len())
        .sum()
}

/// Outcome and onset from a shadow report: the outcome is the report's
/// verdict, the onset the end of the step that showed it.
pub fn record_from_report(
    s: &Scenario,
    r: &ShadowReport,
    window_ms: u32,
) -> std::result::Result<Record, String> {
    let windows: Vec<Vec<f64>> = r.windows.iter().map(|w| w.features.clone()).collect();
    if windows.is_empty() {
        return Err("no windows in the report".into());
    }
    let outcome = r.verdict().outcome();
    // When it showed: the failing step's end (CMD, or CMD then the test).
    let cmd_ms = r.cmd.duration_ms;
    let onset_ms = match outcome {
        Outcome::Ok => None,
        Outcome::Failed => Some(cmd_ms.unwrap_or(f64::MAX)),
        Outcome::Degraded => {
            Some(cmd_ms.unwrap_or(0.0) + r.tests.iter().filter_map(|t| t.duration_ms).sum::<f64>())
        }
    };
    let last = windows.len() - 1;
    let onset_window = onset_ms.map(|ms| ((ms / f64::from(window_ms)) as usize).min(last));
    Ok(Record {
        id: s.id(),
        package: s.package.clone(),
        family: s.fault.name().into(),
        variant: s.variant(),
        outcome,
        onset_window,
        visible_to_checks: outcome != Outcome::Ok,
        window_ms,
        schema: SCHEMA_VERSION.into(),
        windows,
        group: String::new(),
        held_out: false,
        host_condition: s.host.map(|h| h.name().to_string()).unwrap_or_default(),
        cause: s.cause.clone(),
        host: r.windows.iter().map(|w| w.host).collect(),
        room: None,
    })
}

/// Hold OUT/lock for the run: a second `corpus run` on the same OUT would
/// reuse and remove the first one's work directories under it (seen: a
/// `dpkg-deb -R` failing mid-run). It is refused instead, naming the lock.
/// The lock goes with the process, however it ends.
fn lock_out(out: &Path) -> Result<std::fs::File> {
    let path = out.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(CatalogError::Bad {
            path: path.display().to_string(),
            reason: "another `corpus run` is writing to this --out (its lock is held); give each run its own --out".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(format!("locking {}", path.display()))(e)),
    }
}

/// Run every scenario, appending to OUT/deployments.jsonl as each ends
/// (a long run interrupted keeps what it did; a scenario already in the
/// corpus is not run again).
pub fn run(
    catalog: &Catalog,
    o: &RunOptions,
    bar: &dyn backstop_common::progress::Progress,
) -> Result<Vec<Record>> {
    let progress = |line: &str| bar.note(line);
    bar.total(catalog.scenarios.len() as u64);
    std::fs::create_dir_all(&o.out).map_err(io(format!("creating {}", o.out.display())))?;
    let _lock = lock_out(&o.out)?;
    for name in super::sweep_stale() {
        progress(&format!(
            "removed cgroup {name}: a busy neighbour left by a runner that is gone"
        ));
    }
    let ids: Vec<String> = catalog.scenarios.iter().map(Scenario::id).collect();
    let mut done: BTreeMap<String, Record> = BTreeMap::new();
    let earlier = if o.out.join("deployments.jsonl").exists() {
        crate::learn::corpus::read(&[&o.out]).unwrap_or_else(|e| {
            // Not silently: a whole corpus is about to be run again.
            progress(&format!(
                "not reusing the records in {}: {e}",
                o.out.display()
            ));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    for d in earlier {
        if ids.contains(&d.id) {
            done.insert(d.id.clone(), d);
        } else {
            // A scenario the catalog no longer has: its record goes.
            progress(&format!("dropping {}: not in the catalog", d.id));
        }
    }
    for (i, (s, id)) in catalog.scenarios.iter().zip(ids).enumerate() {
        if super::stop::requested() {
            return Err(CatalogError::Stopped);
        }
        if done.contains_key(&id) {
            bar.advance(1);
            continue;
        }
        progress(&format!(
            "[{}/{}] {} ({}, {})",
            i + 1,
            catalog.scenarios.len(),
            s.name,
            s.package,
            s.variant()
        ));
        let t0 = std::time::Instant::now();
        let d = match run_scenario(catalog, s, o) {
            Err(CatalogError::Stopped) => {
                // Its neighbour and shadow are gone; its repacked .debs go.
                let _ = std::fs::remove_dir_all(o.out.join("work"));
                return Err(CatalogError::Stopped);
            }
            d => d?,
        };
        // Per install, so a long recording can be planned from a pilot.
        progress(&format!(
            "{}: {:?}, {} windows, {:.1} s",
            s.name,
            d.outcome,
            d.windows.len(),
            t0.elapsed().as_secs_f64()
        ));
        done.insert(id, d);
        bar.advance(1);
        let all: Vec<Record> = done.values().cloned().collect();
        crate::learn::corpus::write(&o.out, &all).map_err(|e| CatalogError::Io {
            context: e.to_string(),
            source: std::io::Error::other("writing the corpus"),
        })?;
    }
    let _ = std::fs::remove_dir_all(o.out.join("work"));
    Ok(done.into_values().collect())
}

#[cfg(test)]
mod tests {
    use backstop_common::features::feature;
    use backstop_common::fsdiff::FsDiff;
    use backstop_common::shadow::StepResult;
    use backstop_common::window::{Stream, Window};

    use super::*;

    fn step(exit_code: i32, duration_ms: f64) -> StepResult {
        StepResult {
            command: String::new(),
            exit_code: Some(exit_code),
            duration_ms: Some(duration_ms),
            output_tail: String::new(),
        }
    }

    /// A report as the agent prints it, read back the way the runner reads it.
    fn report(n: usize, cmd: StepResult, tests: Vec<StepResult>) -> ShadowReport {
        let mut w = Window::new(Stream::Shadow, 0, 0, 0);
        w.features[feature::SYSCALLS_TOTAL] = 5.0;
        let r = ShadowReport {
            id: "sh-1".into(),
            root: "/".into(),
            cmd,
            tests,
            timed_out: false,
            oom_killed: false,
            oom_kills: 0,
            diff: FsDiff::default(),
            windows: vec![w; n],
            events: Vec::new(),
            lost_events: 0,
            cleanup_problems: Vec::new(),
        };
        serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap()
    }

    #[test]
    fn outcome_and_onset_from_a_report() {
        let s = Scenario {
            name: "x".into(),
            package: "p".into(),
            fault: Family::FailingScript,
            magnitude: 1,
            delay: 2,
            seed: 0,
            timeout_secs: None,
            pause: 0,
            host: None,
            cause: None,
            twin: None,
        };
        let v = report(6, step(1, 1600.0), vec![]);
        let d = record_from_report(&s, &v, 500).unwrap();
        assert_eq!(d.outcome, Outcome::Failed);
        assert_eq!(d.onset_window, Some(3));
        assert_eq!(d.windows[0][0], 5.0);
        let v = report(3, step(0, 100.0), vec![step(1, 600.0)]);
        let d = record_from_report(&s, &v, 500).unwrap();
        assert_eq!(d.outcome, Outcome::Degraded);
        assert_eq!(d.onset_window, Some(1));
    }

    #[test]
    fn a_second_run_on_one_out_is_refused_naming_the_lock() {
        let out = std::env::temp_dir().join(format!("backstop-corpus-lock-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let held = lock_out(&out).unwrap();
        let e = lock_out(&out).unwrap_err().to_string();
        assert!(e.contains("lock") && e.contains("own --out"), "{e}");
        // Released with the first run: the next one may start.
        drop(held);
        lock_out(&out).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
    }
}
