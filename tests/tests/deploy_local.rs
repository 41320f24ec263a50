//! `backstop-agent deploy` end to end, with no controller: the real agent
//! binary, real probes, real dpkg in a copy of the cached Debian rootfs as
//! the target root, real cgroups. Each test walks the whole root before
//! and after (content, mode, owner, size, mtime, link target: everything
//! but inode numbers, which a restore may change) and keeps a sentinel
//! outside the root that must not change at all.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::agents::{Proc, Tmpfs};
use support::sentinel::{self, Walk};
use support::{agent, deb_file, ebpf_or_skip, eventually, failing_hello, repacked_hello, rootfs};

/// A scratch directory with a copy of the rootfs, a data directory and a
/// sentinel beside them; removed when dropped.
struct Scene {
    base: PathBuf,
    root: PathBuf,
    data: PathBuf,
    sentinel: PathBuf,
    sentinel_before: Walk,
}

impl Scene {
    fn new(name: &str) -> Option<Scene> {
        let cached = rootfs()?;
        let base = PathBuf::from("/var/tmp")
            .join(format!("backstop-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let root = base.join("root");
        let ok = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&cached)
            .arg(&root)
            .status()
            .unwrap()
            .success();
        assert!(ok, "copying the rootfs");
        let sentinel = base.join("sentinel");
        std::fs::create_dir_all(sentinel.join("etc")).unwrap();
        std::fs::write(sentinel.join("etc/keep"), b"outside the root").unwrap();
        let sentinel_before = sentinel::walk(&sentinel);
        Some(Scene {
            data: base.join("data"),
            base,
            root,
            sentinel,
            sentinel_before,
        })
    }

    fn manifest(&self, body: &str) -> PathBuf {
        let path = self.base.join("deploy.toml");
        let text = format!("root = {:?}\n{body}", self.root.display().to_string());
        std::fs::write(&path, text).unwrap();
        path
    }

    fn deploy(&self, manifest: &Path) -> Command {
        let mut c = Command::new(agent());
        c.arg("deploy")
            .arg(manifest)
            .arg("--json")
            .arg("--window-ms")
            .arg("200")
            .arg("--data")
            .arg(&self.data);
        c
    }

    fn journal(&self, id: &str) -> Value {
        let p = self
            .data
            .join(format!("agent/deployments/{id}/journal.json"));
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }

    fn sentinel_untouched(&self) {
        sentinel::assert_untouched(&self.sentinel, &self.sentinel_before, "deploy");
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Everything of the root a rollback must put back: the sentinel's walk
/// without inode numbers (a restored file is a new inode).
fn root_walk(root: &Path) -> BTreeMap<String, String> {
    sentinel::walk(root)
        .into_iter()
        .map(|(k, n)| {
            let v = format!(
                "mode {:o} uid {} gid {} nlink {} size {} mtime {:?} content {:x} target {:?}",
                n.mode, n.uid, n.gid, n.nlink, n.size, n.mtime, n.content, n.target
            );
            (k, v)
        })
        .collect()
}

fn assert_same_root(before: &BTreeMap<String, String>, root: &Path, what: &str) {
    let after = root_walk(root);
    let mut diffs: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| format!("~ {k}: {v} -> {:?}", after.get(k)))
        .collect();
    diffs.extend(
        after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .map(|k| format!("+ {k}")),
    );
    diffs.truncate(40);
    assert!(
        diffs.is_empty(),
        "{what}: the root differs from before:\n{}",
        diffs.join("\n")
    );
}

/// The JSON events a `deploy --json` printed.
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn event<'a>(evs: &'a [Value], kind: &str) -> Option<&'a Value> {
    evs.iter().find(|e| e["event"] == kind)
}

fn started(evs: &[Value]) -> (String, PathBuf) {
    let s = event(evs, "started").expect("a started event");
    (
        s["id"].as_str().unwrap().to_string(),
        PathBuf::from(s["cgroup"].as_str().unwrap()),
    )
}

/// Deploy `manifest`, which must exit 3 (rolled back or refused): its
/// events, and its output for messages.
fn deploy_exits_3(s: &Scene, manifest: &Path) -> (Vec<Value>, String) {
    let out = s.deploy(manifest).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(3),
        "rolled back or refused exits 3\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (events(&stdout), stdout)
}

/// Deploy `manifest`, which must be rolled back after its install step
/// failed printing `tail`: its events, and the step's.
fn rolled_back_after(s: &Scene, manifest: &Path, tail: &str) -> (Vec<Value>, Value) {
    let (evs, _) = deploy_exits_3(s, manifest);
    let step = event(&evs, "step")
        .expect("the install step reported")
        .clone();
    assert!(
        step["step"]["output_tail"].as_str().unwrap().contains(tail),
        "{step}"
    );
    (evs, step)
}

/// The scope hello's files and dpkg's records live in.
const HELLO_SCOPE: &str = r#"
[scope]
paths = ["/usr/bin", "/usr/share/doc", "/usr/share/info", "/usr/share/locale", "/usr/share/man", "/var/lib/dpkg", "/var/log"]
"#;

#[test]
fn a_healthy_real_package_is_committed_with_its_files_in_place() {
    let Some(_g) = ebpf_or_skip("deploy healthy") else {
        return;
    };
    let Some(s) = Scene::new("healthy") else {
        return;
    };
    let m = s.manifest(&format!(
        r#"name = "hello"
[artifact]
debs = [{:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "2m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}
{HELLO_SCOPE}
[shadow]
tests = [{{ name = "greets", run = ["hello"], timeout = "30s" }}]
[[probes]]
name = "hello-runs"
type = "command"
run = ["hello", "--greeting=up"]
[monitor]
period = "0s"
"#,
        deb_file("hello").display().to_string()
    ));
    let out = s.deploy(&m).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "committed exits 0\n{stdout}\n{stderr}"
    );
    let evs = events(&stdout);
    let (id, cgroup) = started(&evs);
    let fin = event(&evs, "finished").expect("a finished event");
    assert_eq!(fin["outcome"]["outcome"], "committed", "{fin}");
    let shadow = event(&evs, "shadow").expect("the concurrent shadow reported");
    assert_eq!(shadow["report"]["tests"][0]["exit_code"], 0, "{shadow}");
    let probe = event(&evs, "probe").expect("a probe ran");
    assert_eq!(probe["probe"]["ok"], true, "{probe}");
    let hello = Command::new("chroot")
        .arg(&s.root)
        .arg("hello")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hello.stdout), "Hello, world!\n");
    assert!(s.root.join("usr/share/doc/hello/copyright").exists());
    assert_eq!(s.journal(&id)["phase"], "committed");
    assert!(
        !cgroup.exists(),
        "the empty live cgroup {} is removed",
        cgroup.display()
    );
    assert!(
        !s.root.join(format!("tmp/backstop-{id}")).exists(),
        "the staged artifact is removed after a commit"
    );
    let shadows = s.data.join("agent/shadows");
    let left: Vec<_> = std::fs::read_dir(&shadows)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the shadow left {left:?} in {}",
        shadows.display()
    );
    s.sentinel_untouched();
}

#[test]
fn a_failing_postinst_is_rolled_back_to_an_identical_root() {
    let Some(_g) = ebpf_or_skip("deploy failing postinst") else {
        return;
    };
    let Some(s) = Scene::new("postinst") else {
        return;
    };
    let deb = failing_hello(&s.base);
    let m = s.manifest(&format!(
        r#"name = "hello-bad"
[artifact]
debs = [{:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "2m"
{HELLO_SCOPE}
[shadow]
enabled = false
[[rollback_hooks]]
name = "after"
run = ["true"]
"#,
        deb.display().to_string()
    ));
    let before = root_walk(&s.root);
    let (evs, step) = rolled_back_after(&s, &m, "failing on purpose");
    let (id, cgroup) = started(&evs);
    assert_eq!(step["step"]["exit_code"], 1, "{step}");
    let rb = event(&evs, "rolled_back").expect("a rollback report");
    assert!(
        rb["report"]["problems"].as_array().unwrap().is_empty(),
        "{rb}"
    );
    assert_eq!(rb["report"]["hooks"][0]["exit_code"], 0, "{rb}");
    // The probes' change log was complete: the restore followed it alone.
    assert!(
        rb["report"]["restore"]["full_walk_reason"].is_null(),
        "{rb}"
    );
    assert_same_root(&before, &s.root, "after the rollback of a failed postinst");
    assert_eq!(s.journal(&id)["phase"], "rolled-back");
    assert!(
        !cgroup.exists(),
        "the live cgroup {} is removed",
        cgroup.display()
    );
    s.sentinel_untouched();
}

/// The pid a step printed as `daemon=PID`.
fn daemon_pid(evs: &[Value]) -> i32 {
    evs.iter()
        .filter(|e| e["event"] == "step")
        .find_map(|e| {
            let out = e["step"]["output_tail"].as_str()?;
            out.lines()
                .find_map(|l| l.strip_prefix("daemon=")?.trim().parse().ok())
        })
        .expect("a step printed daemon=PID")
}

/// Running, as opposed to gone or dead and not yet reaped: a daemon the
/// kill orphaned is reaped by the host's pid 1 whenever that gets to it,
/// and a zombie holds no file and runs nothing.
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the ")" that ends the command name.
    let state = stat
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start().chars().next());
    !matches!(state, Some(Some('Z' | 'X')) | None)
}

#[test]
fn a_daemon_the_install_left_is_killed_before_the_exact_restore() {
    let Some(_g) = ebpf_or_skip("deploy daemon") else {
        return;
    };
    let Some(s) = Scene::new("daemon") else {
        return;
    };
    // Double fork and setsid: the daemon leaves the tree and the session,
    // holds a file in the scope open, and says its pid; then the install
    // fails, so the local policy rolls back.
    let daemonise = "( setsid sh -c 'exec 3>>/opt/held; echo $$ >/opt/daemon.pid; exec sleep 1000' </dev/null >/dev/null 2>&1 & ); \
                     while [ ! -s /opt/daemon.pid ]; do sleep 0.05; done; echo daemon=$(cat /opt/daemon.pid)";
    let m = s.manifest(&format!(
        r#"name = "daemon"
[artifact]
debs = [{:?}]
[[steps]]
name = "start-daemon"
run = ["sh", "-c", {daemonise:?}]
timeout = "1m"
[[steps]]
name = "fail"
run = ["false"]
timeout = "1m"
[scope]
paths = ["/opt"]
[shadow]
enabled = false
"#,
        deb_file("hello").display().to_string()
    ));
    let before = root_walk(&s.root);
    let (evs, _) = deploy_exits_3(&s, &m);
    let pid = daemon_pid(&evs);
    assert!(!alive(pid), "the daemon {pid} outlived the rollback");
    let rb = event(&evs, "rolled_back").expect("a rollback report");
    let killed: Vec<i64> = rb["report"]["killed_pids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert!(
        killed.contains(&i64::from(pid)),
        "the daemon {pid} was in the live cgroup: {rb}"
    );
    assert_same_root(&before, &s.root, "after killing the daemon and restoring");
    let (_, cgroup) = started(&evs);
    assert!(
        !cgroup.exists(),
        "the live cgroup {} is removed",
        cgroup.display()
    );
    s.sentinel_untouched();
}

#[test]
fn an_agent_killed_mid_install_is_rolled_back_on_restart_as_interrupted() {
    let Some(_g) = ebpf_or_skip("deploy kill -9") else {
        return;
    };
    let Some(s) = Scene::new("kill9") else { return };
    let m = s.manifest(&format!(
        r#"name = "slow"
[artifact]
debs = [{:?}]
[[steps]]
name = "slow"
run = ["sh", "-c", "echo changed >/opt/marker; exec sleep 1000"]
timeout = "10m"
[scope]
paths = ["/opt"]
[shadow]
enabled = false
"#,
        deb_file("hello").display().to_string()
    ));
    let before = root_walk(&s.root);
    let mut first = Proc::spawn(&mut s.deploy(&m));
    let marker = s.root.join("opt/marker");
    assert!(
        eventually(Duration::from_mins(5), || marker.exists()),
        "the install never started:\n{}",
        first.log()
    );
    first.kill9();
    let journals = s.data.join("agent/deployments");
    let id = std::fs::read_dir(&journals)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    assert_eq!(s.journal(&id)["phase"], "installing");
    let cgroup = PathBuf::from(s.journal(&id)["cgroup"].as_str().unwrap().to_string());
    let orphans: Vec<i32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert!(
        !orphans.is_empty(),
        "the install outlives the killed agent in {}",
        cgroup.display()
    );

    let out = Command::new(agent())
        .args(["deploy", "--recover", "--json", "--data"])
        .arg(&s.data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: Value = events(&stdout)
        .into_iter()
        .find(|e| e["id"] == id.as_str())
        .expect("the recovery reports the deployment");
    assert_eq!(rec["found"], "installing", "{rec}");
    assert!(rec["rollback"]["restore"].is_object(), "restored: {rec}");
    // The dead agent never closed its change log: the whole scope is walked.
    assert!(
        rec["rollback"]["restore"]["full_walk_reason"].is_string(),
        "{rec}"
    );
    let j = s.journal(&id);
    assert_eq!(j["phase"], "interrupted", "{j}");
    for pid in orphans {
        assert!(
            !alive(pid),
            "pid {pid} of the interrupted install is still alive"
        );
    }
    assert!(!cgroup.exists(), "no cgroup is left: {}", cgroup.display());
    assert_same_root(
        &before,
        &s.root,
        "after recovering an interrupted deployment",
    );
    s.sentinel_untouched();
}

#[test]
fn a_step_past_its_timeout_gets_its_cgroup_killed_and_is_rolled_back() {
    let Some(_g) = ebpf_or_skip("deploy timeout") else {
        return;
    };
    let Some(s) = Scene::new("timeout") else {
        return;
    };
    let m = s.manifest(&format!(
        r#"name = "hangs"
[artifact]
debs = [{:?}]
[[steps]]
name = "hang"
run = ["sh", "-c", "echo changed >/opt/marker; exec sleep 1000"]
timeout = "2s"
[scope]
paths = ["/opt"]
[shadow]
enabled = false
"#,
        deb_file("hello").display().to_string()
    ));
    let before = root_walk(&s.root);
    let (evs, _) = deploy_exits_3(&s, &m);
    let step = event(&evs, "step").expect("the hanging step reported");
    assert_eq!(step["step"]["timed_out"], true, "{step}");
    let fin = event(&evs, "finished").unwrap();
    assert_eq!(
        fin["outcome"]["reason"], "step hang ran past its timeout",
        "{fin}"
    );
    assert_same_root(&before, &s.root, "after a step timed out");
    s.sentinel_untouched();
}

/// Deploy `manifest`, which must be refused before anything starts (no
/// live install, no shadow): the reason.
fn refused(s: &Scene, manifest: &Path) -> String {
    let (evs, stdout) = deploy_exits_3(s, manifest);
    for kind in ["started", "shadow"] {
        assert!(
            event(&evs, kind).is_none(),
            "{kind} before a refusal:\n{stdout}"
        );
    }
    let fin = event(&evs, "finished").expect("a finished event");
    assert_eq!(fin["outcome"]["outcome"], "refused", "{fin}");
    let reason = fin["outcome"]["reason"].as_str().unwrap().to_string();
    eprintln!("refused: {reason}");
    reason
}

/// hello puts 42 translations under /usr/share/locale, 184 KiB in 4 KiB
/// blocks; with a 64 KiB tmpfs there, dpkg's unpack would die of ENOSPC
/// in its first moments, before any monitor could see a trend. The room
/// check reads that from the .deb and refuses before the snapshot, naming
/// the filesystem; with the guard off the same install runs, fails as
/// predicted, and is rolled back.
#[test]
fn an_artifact_that_cannot_fit_is_refused_before_anything_changes() {
    refused_for_room(
        "room",
        "size=64k",
        "KiB free on the filesystem of /usr/share/locale",
    );
}

/// The same translations need 126 inodes there (84 new directories and
/// 42 files); a tmpfs with room for the bytes but 40 inodes fails the
/// unpack with the same ENOSPC.
#[test]
fn an_artifact_with_more_files_than_inodes_left_is_refused() {
    refused_for_room(
        "room-inodes",
        "size=64m,nr_inodes=40",
        "inodes free on the filesystem of /usr/share/locale",
    );
}

/// hello's install on a root whose /usr/share/locale is a tmpfs mounted
/// with `options`: refused with `reason` in its words and nothing
/// changed; then, the guard off, failed with ENOSPC and rolled back.
fn refused_for_room(name: &str, options: &str, reason: &str) {
    let Some(_g) = ebpf_or_skip("deploy room check") else {
        return;
    };
    let Some(s) = Scene::new(name) else {
        return;
    };
    let _small = Tmpfs::with(s.root.join("usr/share/locale"), options);
    let manifest = |guard: &str| {
        s.manifest(&format!(
            r#"name = "hello"
[artifact]
debs = [{:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "2m"
{HELLO_SCOPE}
[shadow]
enabled = false
[policy.guards]
exhaustion = {guard}
"#,
            deb_file("hello").display().to_string()
        ))
    };
    let before = root_walk(&s.root);
    let why = refused(&s, &manifest("true"));
    assert!(why.starts_with("no room") && why.contains(reason), "{why}");
    assert_same_root(&before, &s.root, "after a refusal");
    s.sentinel_untouched();

    // The guard off: the prediction was right.
    let (evs, _) = rolled_back_after(&s, &manifest("false"), "No space left on device");
    started(&evs);
    assert_same_root(&before, &s.root, "after the rollback of a full disk");
    s.sentinel_untouched();
}

/// A shadow whose writable layer (1 MiB) cannot hold the artifact (hello
/// plus a 2 MiB file) would fail of ENOSPC and count against a healthy
/// install: the room check refuses it by the manifest's field, before
/// anything changes.
#[test]
fn a_shadow_too_small_for_the_artifact_is_refused_by_its_field() {
    let Some(_g) = ebpf_or_skip("deploy room check, shadow") else {
        return;
    };
    let Some(s) = Scene::new("room-shadow") else {
        return;
    };
    let deb = repacked_hello(&s.base, "hello-big", |work| {
        std::fs::create_dir_all(work.join("usr/share/hello-big")).unwrap();
        std::fs::write(work.join("usr/share/hello-big/blob"), vec![7u8; 2 << 20]).unwrap();
    });
    let m = s.manifest(&format!(
        r#"name = "hello-big"
[artifact]
debs = [{:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "2m"
{HELLO_SCOPE}
[shadow.limits]
disk_mb = 1
"#,
        deb.display().to_string()
    ));
    let before = root_walk(&s.root);
    let reason = refused(&s, &m);
    assert!(reason.starts_with("shadow.limits.disk_mb"), "{reason}");
    assert_same_root(&before, &s.root, "after a refusal");
    s.sentinel_untouched();
}
