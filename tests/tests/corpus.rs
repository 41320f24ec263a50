//! The corpus runner on real installs: faults injected into a real
//! package, run in shadows under the probes, each recorded with the
//! outcome and onset an SRE would see.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use backstop_common::features::feature;
use serde_json::Value;
use support::{bin_dir, ebpf_or_skip};

#[test]
fn a_catalog_of_real_installs_records_outcomes_and_onsets() {
    let Some(_g) = ebpf_or_skip("a_catalog_of_real_installs") else {
        return;
    };
    let root = minbase();
    let base = PathBuf::from("/var/tmp").join(format!("backstop-corpus-{}", std::process::id()));
    let _cleanup = hello_scratch(&base);
    let catalog = base.join("catalog.toml");
    // The installs that end by themselves have a minute: on a loaded
    // host (CI, once) hello's install outlived the 5 s the hang needs.
    std::fs::write(
        &catalog,
        r#"
[defaults]
window_ms = 250
timeout_secs = 5
[[scenario]]
name = "ok"
package = "hello"
timeout_secs = 60
[[scenario]]
name = "postinst-fails"
package = "hello"
fault = "failing-script"
delay = 1
timeout_secs = 60
[[scenario]]
name = "oom"
package = "hello"
fault = "memory-blowup"
[[scenario]]
name = "hang"
package = "hello"
fault = "lock-hang"
[[scenario]]
name = "slow"
package = "hello"
fault = "slow-service"
[[scenario]]
name = "full"
package = "hello"
fault = "disk-full"
"#,
    )
    .unwrap();
    let out = base.join("corpus");
    let run = corpus_run(&catalog, &root, &base, &out).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ds = records(&out);
    let get = |id: &str| {
        ds.iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"))
    };
    assert_eq!(get("ok-0")["outcome"], "ok");
    assert_eq!(get("ok-0")["onset_window"], Value::Null);
    for (id, outcome) in [
        ("postinst-fails-0", "failed"),
        ("oom-0", "failed"),
        ("hang-0", "failed"),
        ("slow-0", "degraded"),
    ] {
        let d = get(id);
        assert_eq!(d["outcome"], outcome, "{id}");
        let onset = d["onset_window"].as_u64().unwrap();
        let n = d["windows"].as_array().unwrap().len() as u64;
        assert!(onset < n, "{id}: onset {onset} of {n} windows");
        assert_eq!(d["schema"], backstop_common::features::SCHEMA_VERSION);
    }
    // The delay before the failing script's exit is in its onset: at
    // least one second of 250 ms windows.
    assert!(get("postinst-fails-0")["onset_window"].as_u64().unwrap() >= 4);
    // The hang ran into the 5 s timeout.
    assert!(get("hang-0")["onset_window"].as_u64().unwrap() >= 16);
    // Before their onset, the windows show both building up: the blocked
    // flock's age and the growing process's memory.
    let before_onset = |id: &str, feature: usize| -> Vec<f64> {
        let d = get(id);
        let onset = d["onset_window"].as_u64().unwrap() as usize;
        d["windows"].as_array().unwrap()[..onset]
            .iter()
            .map(|w| w[feature].as_f64().unwrap())
            .collect()
    };
    let blocked = before_onset("hang-0", feature::SCHED_BLOCKED_LONGEST_MS);
    assert!(
        blocked.iter().any(|&ms| ms >= 2000.0),
        "the hang's flock should have been blocked for seconds before the timeout: {blocked:?}"
    );
    let peaks = before_onset("oom-0", feature::MEM_ANON_PEAK_BYTES);
    let growing = peaks
        .windows(2)
        .filter(|p| p[1] > p[0] && p[0] > 0.0)
        .count();
    assert!(
        growing >= 2 && peaks.iter().any(|&b| b >= (32u64 << 20) as f64),
        "the blow-up should grow over windows past half its 64 MiB before the OOM kill: {peaks:?}"
    );
    // (That the OOM kill shows in the windows is asserted by the shadow
    // tests; here it was missing once in about a dozen runs, not yet
    // understood, so it is not asserted twice.)

    rooms_as_a_live_deployment_would_meet_them(&ds, &catalog, &root, &base, &out);
}

/// The room check a live deployment would have met first, as the runner
/// recorded it: hello fits the host, not a disk-full shadow's 256 KiB
/// layer (it needs 260 KiB with dpkg's own writes), where it fails at
/// unpack. `corpus room` checks the same records again to the same
/// verdicts, as it checks a corpus recorded without them.
fn rooms_as_a_live_deployment_would_meet_them(
    ds: &[Value],
    catalog: &std::path::Path,
    root: &std::path::Path,
    base: &std::path::Path,
    out: &std::path::Path,
) {
    let get = |id: &str| {
        ds.iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"))
    };
    let full = get("full-0");
    assert_eq!(full["outcome"], "failed");
    assert_eq!(full["room"]["verdict"], "refused", "{}", full["room"]);
    let why = full["room"]["reason"].as_str().unwrap();
    assert!(why.contains("256.0 KiB"), "{why}");
    for id in ["ok-0", "postinst-fails-0", "oom-0", "hang-0", "slow-0"] {
        assert_eq!(get(id)["room"]["verdict"], "fits", "{id}");
    }
    let packed = base.join("rechecked.jsonl.gz");
    let recheck = Command::new(bin_dir().join("backstop"))
        .args(["corpus", "room", "--catalog"])
        .arg(catalog)
        .arg("--corpus")
        .arg(out)
        .arg("--root")
        .arg(root)
        .arg("--debs")
        .arg(base.join("debs"))
        .arg("--out")
        .arg(&packed)
        .arg("--agent")
        .arg(support::agent())
        .output()
        .unwrap();
    assert!(recheck.status.success(), "{recheck:?}");
    let stdout = String::from_utf8_lossy(&recheck.stdout);
    assert!(stdout.contains("6 checked, 1 refused"), "{stdout}");
    let rechecked = backstop_controller::learn::corpus::read(&[packed.as_path()]).unwrap();
    assert_eq!(rechecked.len(), 6);
    for r in &rechecked {
        let want: backstop_controller::learn::corpus::Room =
            serde_json::from_value(get(&r.id)["room"].clone()).unwrap();
        assert_eq!(r.room.as_ref(), Some(&want), "{}", r.id);
    }
    assert!(!base.join("rechecked.jsonl.gz.work").exists());
}

/// The records a `corpus run` wrote to OUT/deployments.jsonl.
fn records(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("deployments.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The cached minbase rootfs `cargo xtask test` builds.
fn minbase() -> PathBuf {
    let root = bin_dir().join("../xtask/rootfs-bookworm-minbase");
    assert!(
        root.join(".backstop-complete").exists(),
        "the rootfs fixture is missing (cargo xtask test builds it)"
    );
    root
}

/// `backstop corpus run` of `catalog` on `root`, the .debs under
/// BASE/debs, into `out`, with the agent under test.
fn corpus_run(
    catalog: &std::path::Path,
    root: &std::path::Path,
    base: &std::path::Path,
    out: &std::path::Path,
) -> Command {
    let mut c = Command::new(bin_dir().join("backstop"));
    c.args(["corpus", "run", "--catalog"])
        .arg(catalog)
        .arg("--root")
        .arg(root)
        .arg("--debs")
        .arg(base.join("debs"))
        .arg("--out")
        .arg(out)
        .arg("--agent")
        .arg(support::agent());
    c
}

/// BASE, new, with BASE/debs/hello holding the cached hello .deb as
/// `corpus run --debs` wants it; removed when the guard drops.
fn hello_scratch(base: &std::path::Path) -> RemoveOnDrop {
    let _ = std::fs::remove_dir_all(base);
    let guard = RemoveOnDrop(base.to_path_buf());
    let debs = base.join("debs/hello");
    std::fs::create_dir_all(&debs).unwrap();
    let src = bin_dir().join("../xtask/debs");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("hello_") {
            std::fs::copy(e.path(), debs.join(e.file_name())).unwrap();
        }
    }
    guard
}

/// Where the runner puts a busy neighbour's cgroup, and the file that
/// takes a pid: cgroup v2's root where its cpu controller is, v1's cpu
/// hierarchy else.
fn neighbour_cgroups() -> (&'static str, &'static str) {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"));
    if v2 {
        ("/sys/fs/cgroup", "cgroup.procs")
    } else {
        ("/sys/fs/cgroup/cpu", "tasks")
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Path -> (content, mode, owner, inode, link count) of everything under
/// `dir`, itself included.
fn full_walk(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>, u32, u32, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        if m.is_dir() {
            let mut kids: Vec<PathBuf> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            kids.sort();
            todo.extend(kids);
        }
        out.push((p, content, m.mode(), m.uid(), m.ino(), m.nlink()));
    }
    out
}

#[test]
fn a_scenario_named_to_climb_out_is_refused_and_the_sentinel_untouched() {
    // OUT/work/NAME is emptied with remove_dir_all before a scenario runs:
    // with NAME = ../../../x that is A/x, two levels above OUT.
    let base = std::env::temp_dir().join(format!("backstop-catalog-climb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let out = base.join("a/b/out");
    let sentinel = base.join("a/x");
    std::fs::create_dir_all(sentinel.join("keep")).unwrap();
    std::fs::write(sentinel.join("keep/precious"), "do not delete").unwrap();
    std::fs::hard_link(sentinel.join("keep/precious"), sentinel.join("link")).unwrap();
    // The package exists, so only the name stands between the runner and
    // the sentinel.
    std::fs::create_dir_all(base.join("debs/hello")).unwrap();
    std::fs::write(base.join("debs/hello/hello_1.0_amd64.deb"), "!<arch>\n").unwrap();
    // OUT/work is there, as an interrupted run leaves it: the name then
    // resolves (a fresh OUT would make ../ fail on the missing work/).
    std::fs::create_dir_all(out.join("work")).unwrap();
    let before = full_walk(&sentinel);
    let out_before = full_walk(&out);
    for (field, name, package) in [
        ("name", "../../../x", "hello"),
        ("package", "fine", "../a/x"),
    ] {
        let catalog = base.join("catalog.toml");
        std::fs::write(
            &catalog,
            format!("[[scenario]]\nname = {name:?}\npackage = {package:?}\n"),
        )
        .unwrap();
        let run = Command::new(bin_dir().join("backstop"))
            .args(["corpus", "run", "--catalog"])
            .arg(&catalog)
            .arg("--root")
            .arg(base.join("no-root"))
            .arg("--debs")
            .arg(base.join("debs"))
            .arg("--out")
            .arg(&out)
            .arg("--agent")
            .arg("/bin/false")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        let value = if field == "name" { name } else { package };
        assert!(
            !run.status.success()
                && err.contains(&format!("scenario[0].{field} {value:?}"))
                && err.contains("catalog.toml"),
            "{field} {value:?}: exit {:?}, stderr: {err}",
            run.status.code()
        );
        assert_eq!(
            full_walk(&out),
            out_before,
            "the runner touched OUT before refusing the catalog"
        );
        assert_eq!(
            full_walk(&sentinel),
            before,
            "the sentinel outside OUT changed"
        );
    }
    std::fs::remove_dir_all(&base).unwrap();
}

/// A cgroup made for this test, removed (its processes killed) on drop.
struct TestCgroup(PathBuf, std::process::Child);

impl TestCgroup {
    /// Where the runner puts a busy neighbour's ([`neighbour_cgroups`]).
    fn new(name: &str) -> TestCgroup {
        let (base, procs) = neighbour_cgroups();
        let dir = PathBuf::from(base).join(name);
        std::fs::create_dir(&dir).unwrap();
        let child = Command::new("sleep").arg("600").spawn().unwrap();
        std::fs::write(dir.join(procs), child.id().to_string()).unwrap();
        TestCgroup(dir, child)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_dead_runners_busy_neighbour_is_swept_and_a_live_ones_kept() {
    // A runner killed mid-scenario cannot drop its busy neighbour's
    // cgroup; the next run removes it, and only it: a cgroup whose
    // runner still runs (here: this test) is another recorder's.
    let Some(_g) = ebpf_or_skip("a_dead_runners_busy_neighbour_is_swept") else {
        return;
    };
    let me = std::process::id();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let mut stale = TestCgroup::new(&format!("backstop-neighbour-{dead}-sweep-{me}"));
    let mut live = TestCgroup::new(&format!("backstop-neighbour-{me}-sweep-{me}"));
    let base = std::env::temp_dir().join(format!("backstop-corpus-sweep-{me}"));
    let _ = std::fs::remove_dir_all(&base);
    let _cleanup = RemoveOnDrop(base.clone());
    std::fs::create_dir_all(&base).unwrap();
    let catalog = base.join("catalog.toml");
    std::fs::write(&catalog, "scenario = []\n").unwrap();
    let run = Command::new(bin_dir().join("backstop"))
        .args(["corpus", "run", "--catalog"])
        .arg(&catalog)
        .args(["--root", "/nonexistent", "--debs", "/nonexistent", "--out"])
        .arg(base.join("out"))
        .arg("--agent")
        .arg("/bin/false")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "corpus run failed: {err}");
    assert!(
        err.contains(&format!(
            "removed cgroup backstop-neighbour-{dead}-sweep-{me}"
        )),
        "the sweep did not say what it removed: {err}"
    );
    assert!(!stale.0.exists(), "the dead runner's cgroup is still there");
    let status = stale.1.wait().unwrap();
    assert!(
        !status.success(),
        "the stale neighbour was not killed: {status}"
    );
    assert!(live.0.exists(), "a live runner's cgroup was removed");
    assert_eq!(
        live.1.try_wait().unwrap(),
        None,
        "a live runner's neighbour died"
    );
}

/// Processes of this test's making under `base`: a command line naming
/// it (the agent's `--data`) or a root inside it (the shadow's).
fn processes_under(base: &std::path::Path) -> Vec<String> {
    let needle = base.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let root = std::fs::read_link(e.path().join("root")).unwrap_or_default();
        if cmdline.contains(&needle) || root.starts_with(base) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Mount points under `base`, as the kernel lists them.
fn mounts_under(base: &std::path::Path) -> Vec<String> {
    let real = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| std::path::Path::new(m).starts_with(&real))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_runner_stopped_by_sigterm_leaves_nothing_and_the_same_command_resumes() {
    // Stopped mid-scenario, with a busy neighbour's cgroup made and a
    // shadow mounted, the runner kills its agent, sweeps the shadow and
    // removes the cgroup before it exits; run again, it records the rest.
    let Some(_g) = ebpf_or_skip("a_runner_stopped_by_sigterm_leaves_nothing") else {
        return;
    };
    let root = minbase();
    let me = std::process::id();
    let base = PathBuf::from("/var/tmp").join(format!("backstop-corpus-stop-{me}"));
    let _cleanup = hello_scratch(&base);
    let catalog = base.join("catalog.toml");
    std::fs::write(
        &catalog,
        "[defaults]\nwindow_ms = 250\ntimeout_secs = 6\n\
         [[scenario]]\nname = \"hang\"\npackage = \"hello\"\nfault = \"lock-hang\"\nhost = \"busy-neighbour\"\n\
         [[scenario]]\nname = \"ok\"\npackage = \"hello\"\n",
    )
    .unwrap();
    let out = base.join("out");
    let run = || corpus_run(&catalog, &root, &base, &out);
    let mut runner = run()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cgroup = PathBuf::from(neighbour_cgroups().0)
        .join(format!("backstop-neighbour-{}-hang", runner.id()));
    // The neighbour's cgroup and the shadow's mounts both there: the
    // scenario is running.
    let t0 = std::time::Instant::now();
    while !cgroup.exists() || mounts_under(&out).is_empty() {
        assert!(
            t0.elapsed() < std::time::Duration::from_mins(1),
            "the hang never got going (cgroup {} exists: {}; mounts {:?})",
            cgroup.display(),
            cgroup.exists(),
            mounts_under(&out)
        );
        assert_eq!(runner.try_wait().unwrap(), None, "the runner ended early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on our own child, still running.
    unsafe { libc::kill(runner.id().cast_signed(), libc::SIGTERM) };
    let stopped = runner.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(130), "stderr: {err}");
    assert!(err.contains("stopped by a signal"), "stderr: {err}");
    assert!(!cgroup.exists(), "the busy neighbour's cgroup was left");
    assert_eq!(mounts_under(&out), Vec::<String>::new(), "mounts were left");
    assert_eq!(
        processes_under(&base),
        Vec::<String>::new(),
        "processes were left"
    );
    assert!(
        !out.join("work").exists(),
        "the scenario's work directory was left"
    );
    // Nothing was recorded of the stopped scenario; run again, both are.
    let again = run().output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let ids: Vec<String> = records(&out)
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.iter().any(|i| i.starts_with("hang")) && ids.iter().any(|i| i.starts_with("ok")),
        "{ids:?}"
    );
    assert_eq!(mounts_under(&out), Vec::<String>::new());
}
