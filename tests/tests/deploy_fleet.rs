//! Ten deployments to one agent, some at once (issue 15's Must-hold): the
//! real controller and ONE real agent over QUIC with mutual TLS, real
//! probes, real dpkg in four scratch copies of the cached Debian rootfs,
//! a real webhook receiver on loopback. Healthy hello and a hello whose
//! postinst fails are mixed: four start at once (one per root), six run
//! back to back. A fifth deployment to a root that is busy is refused,
//! naming the one running there. Each deployment must get exactly one
//! decision, end in the state it says, leave its root as it says
//! (committed: hello works; rolled back: a full independent walk equal to
//! before), leave no cgroup and no process, fire at most one alert (and
//! only on a rollback), and replay to the same verdict and reasons.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;
#[allow(dead_code, reason = "shared with alerts.rs, which uses all of it")]
mod alerts {
    pub mod receiver;
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agents::{Fleet, Proc};
use support::deploys::{RemoveOnDrop, root_walk};
use support::{deb_file, ebpf_or_skip, eventually, failing_hello, rootfs};

/// The file the gated deployment's first step waits for, inside its root.
const GATE: &str = "tmp/backstop-fleet-go";

fn differences(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(after.keys().filter(|k| !before.contains_key(*k)).cloned())
        .take(20)
        .collect()
}

/// One deployment of the test: what it installs where, and what it must
/// end as.
struct Dep {
    root: usize,
    healthy: bool,
    gated: bool,
    id: String,
    /// The root's walk before it started (taken and checked for a
    /// rollback only).
    before: BTreeMap<String, String>,
}

struct Setup {
    fleet: Fleet,
    base: PathBuf,
    roots: Vec<PathBuf>,
    good: PathBuf,
    bad: PathBuf,
}

impl Setup {
    /// The manifest of deployment `n`: hello (or its failing build) into
    /// root `root`; `gated`: a first step waits for [`GATE`].
    fn manifest(&self, n: usize, d: &Dep) -> PathBuf {
        let root = &self.roots[d.root];
        let deb = if d.healthy { &self.good } else { &self.bad };
        let gate = if d.gated {
            format!(
                "[[steps]]\nname = \"gate\"\nrun = [\"sh\", \"-c\", \"while [ ! -e /{GATE} ]; do sleep 0.05; done; rm -f /{GATE}\"]\ntimeout = \"2m\"\n"
            )
        } else {
            String::new()
        };
        let text = format!(
            r#"name = "hello"
package = {{ name = "hello", version = "2.10-3" }}
root = {root:?}
[artifact]
debs = [{deb:?}]
{gate}
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
            root = root.display().to_string(),
            deb = deb.display().to_string(),
        );
        let path = self.base.join(format!("deploy-{n}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn deploy_args(manifest: &Path) -> Vec<String> {
        ["deploy", manifest.to_str().unwrap(), "--host", "web-1"]
            .map(str::to_string)
            .to_vec()
    }

    fn state(&self, id: &str) -> String {
        self.fleet.json(&["show", id, "--json"])["deployment"]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one fleet scenario whose phases read in the order they run"
)]
fn ten_deployments_to_one_agent_each_get_one_decision_and_the_roots_it_says() {
    let Some(_g) = ebpf_or_skip("ten deployments to one agent") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let base = PathBuf::from("/var/tmp").join(format!("backstop-e2e-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _cleanup = RemoveOnDrop(base.clone());
    std::fs::create_dir_all(&base).unwrap();
    let roots: Vec<PathBuf> = (0..4).map(|i| base.join(format!("root-{i}"))).collect();
    // The four copies at once: on a loaded two-core machine each takes
    // seconds, mostly waiting on the disk.
    let copies: Vec<_> = roots
        .iter()
        .map(|root| {
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&cached)
                .arg(root)
                .spawn()
                .unwrap()
        })
        .collect();
    for (mut cp, root) in copies.into_iter().zip(&roots) {
        let status = cp.wait().unwrap();
        assert!(status.success(), "copying the rootfs to {}", root.display());
    }
    let setup = Setup {
        fleet: Fleet::new("deploy-fleet"),
        bad: failing_hello(&base),
        good: deb_file("hello"),
        roots,
        base: base.clone(),
    };
    let fleet = &setup.fleet;
    let rt = support::fleet::runtime();
    let rx = rt.block_on(alerts::receiver::Receiver::start(&[]));
    let config = base.join("controller.toml");
    let sink = format!(
        "[alerts]\ninitial_backoff = \"20ms\"\n[[alerts.sink]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n",
        rx.url()
    );
    std::fs::write(&config, sink).unwrap();
    let serve = fleet.serve_with(&["--config", config.to_str().unwrap()]);
    let agent = Proc::spawn(&mut fleet.agent_cmd(&base.join("agent-data")));
    fleet.wait_connected(&agent);

    // Four at once, one per root; root 0's first waits at its gate.
    let plan: [(usize, bool); 10] = [
        (0, true),
        (1, false),
        (2, true),
        (3, false),
        (0, false),
        (1, true),
        (2, false),
        (3, true),
        (0, true),
        (1, false),
    ];
    let mut deps: Vec<Dep> = plan
        .iter()
        .enumerate()
        .map(|(n, &(root, healthy))| Dep {
            root,
            healthy,
            gated: n == 0,
            id: String::new(),
            before: BTreeMap::new(),
        })
        .collect();
    // Only a rollback's root is compared with its walk from before.
    for d in deps[..4].iter_mut().filter(|d| !d.healthy) {
        d.before = root_walk(&setup.roots[d.root]);
    }
    let manifests: Vec<PathBuf> = deps
        .iter()
        .enumerate()
        .map(|(n, d)| setup.manifest(n, d))
        .collect();
    let started: Vec<Proc> = manifests[..4]
        .iter()
        .map(|m| Proc::spawn(fleet.backstop().args(Setup::deploy_args(m))))
        .collect();
    for (d, p) in deps.iter_mut().zip(started) {
        let (code, out) = p.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "deploy without --wait prints the id: {out}");
        d.id = out.trim().to_string();
    }
    // Root 0 is busy (its deployment waits at the gate): a second one
    // there is refused, naming the first, and nothing of it is stored.
    assert_eq!(setup.state(&deps[0].id), "running");
    let listed = fleet
        .json(&["deployments", "--json"])
        .as_array()
        .unwrap()
        .len();
    let refused = fleet.cli(
        &Setup::deploy_args(&manifests[4])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_ne!(
        refused.status.code(),
        Some(0),
        "a busy root is refused: {err}"
    );
    assert!(
        err.contains(&deps[0].id) && err.contains(&setup.roots[0].display().to_string()),
        "the refusal names the running deployment and the root: {err}"
    );
    assert_eq!(
        fleet
            .json(&["deployments", "--json"])
            .as_array()
            .unwrap()
            .len(),
        listed,
        "the refused deployment is not stored"
    );
    // All four run on the one agent at once before the gate opens.
    for d in &deps[..4] {
        assert!(
            eventually(Duration::from_mins(1), || {
                fleet.json(&["show", &d.id, "--json"])["events"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["event"].get("started").is_some()))
            }),
            "{} never started: {}",
            d.id,
            agent.log()
        );
    }
    assert_eq!(setup.state(&deps[0].id), "running", "held at its gate");
    std::fs::write(setup.roots[0].join(GATE), b"go").unwrap();
    for d in &deps[..4] {
        assert!(
            eventually(Duration::from_mins(2), || {
                let s = setup.state(&d.id);
                s == "committed" || s == "rolled_back"
            }),
            "{} never ended: {}\nagent: {}\ncontroller: {}",
            d.id,
            fleet.json(&["show", &d.id, "--json"]),
            agent.log(),
            serve.log()
        );
    }
    for d in &deps[..4] {
        check(&setup, d);
    }

    // Six back to back, each waited for.
    for n in 4..10 {
        if !deps[n].healthy {
            deps[n].before = root_walk(&setup.roots[deps[n].root]);
        }
        let out = fleet
            .backstop()
            .args(Setup::deploy_args(&manifests[n]))
            .args(["--wait", "--json"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(i32::from(!deps[n].healthy)),
            "deployment {n}: {stdout}\n{}\nagent: {}",
            String::from_utf8_lossy(&out.stderr),
            agent.log()
        );
        let first: serde_json::Value =
            serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        deps[n].id = first["deployment"].as_str().unwrap().to_string();
        assert!(
            eventually(Duration::from_secs(20), || {
                let s = setup.state(&deps[n].id);
                s == "committed" || s == "rolled_back"
            }),
            "deployment {n} never ended"
        );
        check(&setup, &deps[n]);
    }

    alerts_fired(&setup, &rx, &deps);
    drop(agent);
    drop(serve);
    let _ = std::fs::remove_dir_all(&base);
}

/// One ended deployment is what its one decision says.
fn check(setup: &Setup, d: &Dep) {
    let fleet = &setup.fleet;
    let root = &setup.roots[d.root];
    let shown = fleet.json(&["show", &d.id, "--json"]);
    let (want_state, want_verdict) = if d.healthy {
        ("committed", "commit")
    } else {
        ("rolled_back", "rollback")
    };
    assert_eq!(shown["deployment"]["state"], want_state, "{shown}");
    let decisions = shown["decisions"].as_array().unwrap();
    assert_eq!(
        decisions.len(),
        1,
        "exactly one decision for {}: {shown}",
        d.id
    );
    let stored = &decisions[0];
    assert_eq!(
        (stored["verdict"].as_str(), stored["acted"].as_bool()),
        (Some(want_verdict), Some(true)),
        "{shown}"
    );
    // The replay gives the same verdict and the same reasons.
    let replay = fleet.cli(&["replay", &d.id, "--json"]);
    let text = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(0), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["reproduced"], true, "{text}");
    assert_eq!(lines[0]["verdict"], stored["verdict"], "{text}");
    assert_eq!(lines[0]["reasons"], stored["reasons"], "{text}");
    if d.healthy {
        let hello = Command::new("chroot")
            .arg(root)
            .arg("hello")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&hello.stdout),
            "Hello, world!\n",
            "{}",
            d.id
        );
        let status = Command::new("chroot")
            .arg(root)
            .args(["dpkg-query", "-W", "-f=${Status}", "hello"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&status.stdout),
            "install ok installed"
        );
        assert!(!root.join(GATE).exists(), "the gate step ran");
    } else {
        let diffs = differences(&d.before, &root_walk(root));
        assert!(
            diffs.is_empty(),
            "{}: the root differs after the rollback: {diffs:?}",
            d.id
        );
    }
    for parent in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let cg = Path::new(parent).join("backstop.deploy").join(&d.id);
        assert!(!cg.exists(), "{} is left", cg.display());
    }
    let left = processes_in(root);
    assert!(
        left.is_empty(),
        "{}: processes left in its root: {left:?}",
        d.id
    );
}

/// Processes whose root directory is `root` (the steps run chrooted in
/// it), as (pid, comm).
fn processes_in(root: &Path) -> Vec<(String, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| std::fs::read_link(e.path().join("root")).is_ok_and(|r| r.starts_with(root)))
        .map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            (
                e.file_name().to_string_lossy().into_owned(),
                comm.trim().to_string(),
            )
        })
        .collect()
}

/// Every rollback fired exactly one alert, and no commit fired any: the
/// webhook's bodies once the sink's queue is drained.
fn alerts_fired(setup: &Setup, rx: &alerts::receiver::Receiver, deps: &[Dep]) {
    let queue = setup.fleet.data.join("alerts/queue/hook");
    let rollbacks = deps.iter().filter(|d| !d.healthy).count();
    let firing = |rx: &alerts::receiver::Receiver| -> Vec<String> {
        rx.got()
            .iter()
            .map(alerts::receiver::Got::json)
            .filter(|b| b["state"] == "firing")
            .map(|b| b["deployment"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(30), || {
            std::fs::read_dir(&queue).map_or(0, Iterator::count) == 0
                && firing(rx).len() >= rollbacks
        }),
        "the alerts never all arrived: {:?}",
        firing(rx)
    );
    let got = firing(rx);
    for d in deps {
        let n = got.iter().filter(|id| **id == d.id).count();
        assert_eq!(n, usize::from(!d.healthy), "alerts for {}: {got:?}", d.id);
    }
}

/// Execs that hold every probe slot of the agent make the next
/// deployment's live install fail in the agent itself (it cannot be
/// tracked): the agent rolls it back at once, so its root is as before,
/// its cgroup is gone and the controller has it `rolled_back`, not
/// "failed, nothing changed" with the artifact still staged in the root.
#[test]
fn a_deployment_the_agent_cannot_track_is_rolled_back_at_once() {
    /// Stream slots one agent can track at once (`MAX_SLOTS - 1`).
    const SLOTS: usize = backstop_common::kernel::MAX_SLOTS as usize - 1;
    let Some(_g) = ebpf_or_skip("a deployment with no free probe slot") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let base = PathBuf::from("/var/tmp").join(format!("backstop-e2e-slots-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _cleanup = RemoveOnDrop(base.clone());
    std::fs::create_dir_all(&base).unwrap();
    let root = base.join("root-0");
    let copied = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the rootfs");
    let setup = Setup {
        fleet: Fleet::new("deploy-slots"),
        bad: deb_file("hello"),
        good: deb_file("hello"),
        roots: vec![root.clone()],
        base: base.clone(),
    };
    let fleet = &setup.fleet;
    let serve = fleet.serve();
    let agent = Proc::spawn(&mut fleet.agent_cmd(&base.join("agent-data")));
    fleet.wait_connected(&agent);
    let execs: Vec<Proc> = (0..SLOTS).map(|_| fleet.exec(&["sleep", "40"])).collect();
    // Each holds its slot once it has sent a window.
    assert!(
        eventually(Duration::from_mins(1), || {
            let tracked = fleet
                .json(&["deployments", "--json"])
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["state"] == "running")
                .filter(|d| !fleet.windows(d["id"].as_str().unwrap()).is_empty())
                .count();
            tracked == SLOTS
        }),
        "the execs never all ran: {}",
        agent.log()
    );
    let mut d = Dep {
        root: 0,
        healthy: true,
        gated: false,
        id: String::new(),
        before: root_walk(&root),
    };
    let manifest = setup.manifest(0, &d);
    let out = fleet
        .backstop()
        .args(Setup::deploy_args(&manifest))
        .args(["--wait", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "not committed: {stdout}\nagent: {}",
        agent.log()
    );
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    d.id = first["deployment"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(20), || setup.state(&d.id)
        == "rolled_back"));
    let shown = fleet.json(&["show", &d.id, "--json"]);
    let reason = shown["deployment"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("slot"),
        "the reason names the cause: {shown}"
    );
    let diffs = differences(&d.before, &root_walk(&root));
    assert!(
        diffs.is_empty(),
        "the root differs after the rollback: {diffs:?}"
    );
    for parent in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let cg = Path::new(parent).join("backstop.deploy").join(&d.id);
        assert!(!cg.exists(), "{} is left", cg.display());
    }
    drop(execs);
    drop(agent);
    drop(serve);
    let _ = std::fs::remove_dir_all(&base);
}
