//! What the shadow-test and performance deployment tests share: a small
//! real .deb built with dpkg-deb, a scratch copy of the cached Debian
//! rootfs, the full independent walk a rollback must leave unchanged, and
//! the replay check every decided deployment must pass.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::agents::Fleet;
use super::sentinel;

/// A .deb named `name` at `version` holding `files` (path inside the root,
/// content), with `postinst` when given, built by the real dpkg-deb.
pub fn build_deb(
    dir: &Path,
    name: &str,
    version: &str,
    files: &[(&str, &str)],
    postinst: Option<&str>,
) -> PathBuf {
    let work = dir.join(format!("{name}-{version}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("DEBIAN")).unwrap();
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: backstop tests <t@example.invalid>\nDescription: a backstop test package\n"
    );
    std::fs::write(work.join("DEBIAN/control"), control).unwrap();
    for (path, content) in files {
        let p = work.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    if let Some(script) = postinst {
        let p = work.join("DEBIAN/postinst");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deb = dir.join(format!("{name}_{version}_all.deb"));
    let built = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&work)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "dpkg-deb -b {name}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    deb
}

/// A scratch directory under /var/tmp (a real disk, like a host's root)
/// holding a copy of the cached rootfs at `root`; removed on drop.
pub struct Scratch {
    pub base: PathBuf,
    pub root: PathBuf,
}

impl Scratch {
    pub fn new(cached: &Path, name: &str) -> Scratch {
        let base =
            PathBuf::from("/var/tmp").join(format!("backstop-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let root = base.join("root");
        let copied = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(cached)
            .arg(&root)
            .status()
            .unwrap();
        assert!(copied.success(), "copying the rootfs");
        Scratch { base, root }
    }

    /// `dpkg -i` of `deb` straight into the root (chrooted), before any
    /// deployment: the version a host runs today.
    pub fn preinstall(&self, deb: &Path) {
        let inside = self.root.join("tmp").join(deb.file_name().unwrap());
        std::fs::copy(deb, &inside).unwrap();
        let out = Command::new("chroot")
            .arg(&self.root)
            .args(["dpkg", "-i"])
            .arg(Path::new("/tmp").join(deb.file_name().unwrap()))
            .output()
            .unwrap();
        std::fs::remove_file(&inside).unwrap();
        assert!(
            out.status.success(),
            "preinstalling {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A test's own directory, removed on drop however the test ends (a
/// failed run left /var/tmp/backstop-e2e-fleet-PID behind). The shadows
/// of an agent whose data is DIR/agent-data are swept first, so nothing
/// is removed through a mount. Declare it before the agent's `Proc`, so
/// it drops after the agent is gone.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let data = self.0.join("agent-data");
        if data.exists() {
            let _ = super::shadow_sweep(&data);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The root as a rollback must leave it: a full walk (every entry, its
/// mode, owner, size, mtime, content and target), without inode numbers.
pub fn root_walk(root: &Path) -> BTreeMap<String, String> {
    sentinel::walk(root)
        .into_iter()
        .map(|(k, n)| {
            let v = format!(
                "mode {:o} uid {} gid {} size {} mtime {:?} content {:x} target {:?}",
                n.mode, n.uid, n.gid, n.size, n.mtime, n.content, n.target
            );
            (k, v)
        })
        .collect()
}

/// The first few paths that differ between two walks.
pub fn differences(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(after.keys().filter(|k| !before.contains_key(*k)).cloned())
        .take(20)
        .collect()
}

/// `backstop replay ID --json` gives, for every stored decision, the
/// stored verdict and reasons again; returns the stored decisions.
pub fn assert_replays(fleet: &Fleet, id: &str) -> Vec<Value> {
    let shown = fleet.json(&["show", id, "--json"]);
    let stored = shown["decisions"].as_array().unwrap().clone();
    assert!(!stored.is_empty(), "no decision stored: {shown}");
    let out = fleet.cli(&["replay", id, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "replay of {id}: {text}");
    let replayed: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed.len(), stored.len(), "{text}");
    for (r, d) in replayed.iter().zip(&stored) {
        assert_eq!(r["verdict"], d["verdict"], "replayed verdict: {text}");
        assert_eq!(r["reasons"], d["reasons"], "replayed reasons: {text}");
        assert_eq!(r["reproduced"], true, "{text}");
    }
    stored
}

/// The kind of one of `show --json`'s events (`step`, `probe`,
/// `baseline`, ...): the one key of its externally tagged `event`.
pub fn kind(row: &Value) -> &str {
    row["event"]
        .as_object()
        .and_then(|o| o.keys().next())
        .map_or("", String::as_str)
}

/// `base/hello.toml`: install `deb` with dpkg into `root`, hello's scope,
/// no shadow, no monitoring period (what deploy.rs and metrics.rs deploy).
pub fn hello_manifest(base: &Path, root: &Path, deb: &Path) -> PathBuf {
    let manifest = base.join("hello.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "hello"
root = {:?}
[artifact]
debs = [{:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "2m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}
[scope]
paths = ["/usr/bin", "/usr/share/doc", "/usr/share/info", "/usr/share/locale", "/usr/share/man", "/var/lib/dpkg", "/var/log"]
[shadow]
enabled = false
[monitor]
period = "0s"
"#,
            root.display().to_string(),
            deb.display().to_string()
        ),
    )
    .unwrap();
    manifest
}

/// [`hello_manifest`] with the shadow on (over the deployment's snapshot:
/// `agent/src/shadow/frozen.rs`) and a shadow test that runs the hello it
/// installed there.
pub fn hello_manifest_shadowed(base: &Path, root: &Path, deb: &Path) -> PathBuf {
    let manifest = hello_manifest(base, root, deb);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let shadowed = text.replace(
        "[shadow]\nenabled = false\n",
        "[[shadow.tests]]\nname = \"greets\"\nrun = [\"hello\"]\ntimeout = \"30s\"\n",
    );
    assert_ne!(text, shadowed, "hello_manifest's [shadow] table moved");
    std::fs::write(&manifest, shadowed).unwrap();
    manifest
}

/// What [`deploy_until`] gives back: the CLI's output, the deployment's
/// id, and `show --json` once it reached the state asked for.
pub struct Deployed {
    pub out: std::process::Output,
    pub id: String,
    pub shown: Value,
}

/// `backstop deploy MANIFEST --host web-1 --wait --json [EXTRA...]`
/// through `fleet`: the CLI's output and the deployment's id (its first
/// JSON line); fails with the CLI's stderr and the agent's log without one.
pub fn deploy_json(
    fleet: &Fleet,
    agent: &super::agents::Proc,
    manifest: &Path,
    extra: &[&str],
) -> (std::process::Output, String) {
    let mut args = vec![
        "deploy",
        manifest.to_str().unwrap(),
        "--host",
        "web-1",
        "--wait",
        "--json",
    ];
    args.extend(extra);
    let out = fleet.cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = serde_json::from_str::<Value>(stdout.lines().next().unwrap_or("null")).unwrap()
        ["deployment"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "no deployment id: {stdout}\n{}\nagent: {}",
                String::from_utf8_lossy(&out.stderr),
                agent.log()
            )
        })
        .to_string();
    (out, id)
}

/// [`deploy_json`], then wait (30 s) until `show` says `want`; fails with
/// the agent's log when it never does.
pub fn deploy_until(
    fleet: &Fleet,
    agent: &super::agents::Proc,
    manifest: &Path,
    want: &str,
) -> Deployed {
    let (out, id) = deploy_json(fleet, agent, manifest, &[]);
    let ended = super::eventually(std::time::Duration::from_secs(30), || {
        fleet.json(&["show", &id, "--json"])["deployment"]["state"] == want
    });
    let shown = fleet.json(&["show", &id, "--json"]);
    assert!(ended, "not {want}: {shown}\nagent: {}", agent.log());
    Deployed { out, id, shown }
}

/// The live install step's event in `show --json`: (its `at_ms`, the step).
pub fn live_step(shown: &Value) -> (i64, Value) {
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| {
            let s = &e["event"]["step"];
            (s["stream"] == "live").then(|| (e["at_ms"].as_i64().unwrap(), s["step"].clone()))
        })
        .unwrap_or_else(|| panic!("no live step: {shown}"))
}

/// A rollback that rests first on `resource`'s projected exhaustion, at a
/// rate (MiB/s) inside `rate` (the fault writes 1 MiB per half second at
/// most; slower when the machine is busy), decided before the step failed.
pub fn assert_exhaustion(d: &Value, resource: &str, rate: (f64, f64)) {
    assert_eq!(d["verdict"], "rollback", "{d}");
    let reasons = d["reasons"].as_array().unwrap();
    assert_eq!(reasons[0]["kind"], "exhaustion", "{d}");
    assert_eq!(reasons[0]["resource"], resource, "{d}");
    let r = reasons[0]["rate_per_s"].as_f64().unwrap() / f64::from(1u32 << 20);
    assert!(r > rate.0 && r < rate.1, "rate {r} MiB/s: {d}");
    assert!(
        !reasons.iter().any(|r| r["kind"] == "live_step"),
        "decided before the step failed: {d}"
    );
}

/// A manifest on `root` whose one step runs `script` chrooted; no shadow
/// and no monitoring, so the step's run is the deployment's.
pub fn chroot_manifest(dir: &Path, name: &str, root: &Path, script: &str, hook: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    // Every manifest carries an artifact; this one is never installed.
    let deb = build_deb(dir, name, "1.0", &[], None);
    let text = format!(
        r#"name = "{name}"
root = {root:?}
[artifact]
debs = [{deb:?}]
[[steps]]
name = "work"
run = ["sh", "-c", {script:?}]
timeout = "1m"
[scope]
paths = ["/etc"]
[shadow]
enabled = false
[monitor]
period = "0s"
[[rollback_hooks]]
name = "after"
run = ["sh", "-c", {hook:?}]
timeout = "1m"
"#,
        root = root.display().to_string(),
        deb = deb.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `backstop deploy FILE` (no --wait): the deployment's id, or what the
/// CLI said when it refused.
pub fn start(fleet: &Fleet, file: &Path) -> Result<String, String> {
    let out = fleet.cli(&["deploy", file.to_str().unwrap(), "--host", "web-1"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `backstop show ID --json`.
pub fn state(fleet: &Fleet, id: &str) -> Value {
    fleet.json(&["show", id, "--json"])
}

pub fn ended(shown: &Value) -> bool {
    !matches!(
        shown["deployment"]["state"].as_str(),
        Some("running" | "rolling_back") | None
    )
}

/// The cgroup v2 root, as the agent finds it.
pub fn v2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find(|c| {
            mounts.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[1] == **c && f[2] == "cgroup2"
            })
        })
        .map(PathBuf::from)
        .expect("a cgroup v2 hierarchy")
}
