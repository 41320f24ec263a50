//! kill -9 of the controller mid-install (issue 15's Must-hold): the real
//! controller (`backstop serve`) and the real agent over QUIC with mutual
//! TLS, real probes, real dpkg in a copy of the cached Debian rootfs. The
//! controller is SIGKILLed while a step waits on a trigger file; the step
//! then fails or passes with no controller there, and a new controller on
//! the same data directory must end up agreeing with the host.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;
#[allow(dead_code, reason = "shared with alerts.rs, which uses all of it")]
mod alerts {
    pub mod receiver;
}

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::agents::{Fleet, Proc};
use support::deploys::root_walk;
use support::{deb_file, ebpf_or_skip, eventually, rootfs};

/// One scenario's controller, agent, root and Alertmanager receiver.
struct Crash {
    fleet: Fleet,
    base: PathBuf,
    root: PathBuf,
    config: PathBuf,
    rx: alerts::receiver::Receiver,
    _rt: tokio::runtime::Runtime,
}

impl Crash {
    fn new(name: &str, cached: &Path) -> Crash {
        let fleet = Fleet::new(&format!("crash-{name}"));
        let base = PathBuf::from("/var/tmp")
            .join(format!("backstop-e2e-crash-{name}-{}", std::process::id()));
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
        let rt = support::fleet::runtime();
        let rx = rt.block_on(alerts::receiver::Receiver::start(&[]));
        let config = base.join("controller.toml");
        let sink = format!(
            "[alerts]\ninitial_backoff = \"20ms\"\n[[alerts.sink]]\ntype = \"alertmanager\"\nname = \"am\"\nurl = \"{}\"\n",
            rx.url()
        );
        std::fs::write(&config, sink).unwrap();
        Crash {
            fleet,
            base,
            root,
            config,
            rx,
            _rt: rt,
        }
    }

    fn serve(&self) -> Proc {
        self.fleet
            .serve_with(&["--config", self.config.to_str().unwrap()])
    }

    /// A manifest whose one step changes the root, waits for `go` in the
    /// root's /tmp, then runs `then` (`$0` is the staged hello .deb).
    fn manifest(&self, then: &str) -> PathBuf {
        let path = self.base.join("crash.toml");
        let step = format!(
            "echo crash > /usr/bin/backstop-crash; while [ ! -e /tmp/backstop-go ]; do sleep 0.1; done; {then}"
        );
        std::fs::write(
            &path,
            format!(
                r#"name = "hello"
root = {:?}
[artifact]
debs = [{:?}]
[[steps]]
name = "install"
run = ["sh", "-c", {step:?}, "{{artifact}}"]
timeout = "5m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}
[scope]
paths = ["/usr/bin", "/usr/share/doc", "/usr/share/info", "/usr/share/locale", "/usr/share/man", "/var/lib/dpkg", "/var/log"]
[shadow]
enabled = false
[monitor]
period = "0s"
"#,
                self.root.display().to_string(),
                deb_file("hello").display().to_string()
            ),
        )
        .unwrap();
        path
    }

    /// Start the deployment, wait until its step runs (`started` exists),
    /// SIGKILL the controller, and wait until the agent has marked the
    /// session lost. Returns the deployment id.
    fn deploy_then_kill(&self, manifest: &Path, serve: &mut Proc, agent: &Proc) -> String {
        let out = self
            .fleet
            .backstop()
            .args(["deploy", manifest.to_str().unwrap(), "--host", "web-1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            eventually(Duration::from_mins(1), || self
                .root
                .join("usr/bin/backstop-crash")
                .exists()),
            "the step never ran: {}",
            agent.log()
        );
        serve.kill9();
        assert!(
            eventually(Duration::from_mins(1), || agent
                .log()
                .lines()
                .any(|l| l.contains("marking the controller's session")
                    && l.contains(&id)
                    && l.contains("connected=false"))),
            "the agent never noticed the controller was gone: {}",
            agent.log()
        );
        id
    }

    fn go(&self) {
        std::fs::write(self.root.join("tmp/backstop-go"), b"").unwrap();
    }

    fn show(&self, id: &str) -> Value {
        self.fleet.json(&["show", id, "--json"])
    }

    fn journal_phase(&self, id: &str) -> String {
        let path = self
            .base
            .join(format!("agent-data/agent/deployments/{id}/journal.json"));
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|j| j["phase"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl Drop for Crash {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// An event's kind: serde's external tag (a unit variant is a string).
fn kind(e: &Value) -> String {
    match &e["event"] {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        other => format!("{other}"),
    }
}

/// The kinds of `shown`'s events, in seq order.
fn kinds(shown: &Value) -> Vec<String> {
    shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(kind)
        .collect()
}

#[test]
fn a_hard_failure_while_the_controller_is_dead_is_rolled_back_by_the_agent_alone() {
    let Some(_g) = ebpf_or_skip("kill -9 of the controller, then a failing step") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let c = Crash::new("fail", &cached);
    let manifest = c.manifest(
        "echo crash > /usr/bin/backstop-crash-late; rm /usr/bin/touch; echo failing on purpose >&2; exit 3",
    );
    let before = root_walk(&c.root);
    let mut serve = c.serve();
    let agent = Proc::spawn(&mut c.fleet.agent_cmd(&c.base.join("agent-data")));
    c.fleet.wait_connected(&agent);
    let id = c.deploy_then_kill(&manifest, &mut serve, &agent);
    c.go();
    // With no controller, the local policy rolls it back at once.
    assert!(
        eventually(Duration::from_mins(2), || c.journal_phase(&id)
            == "rolled-back"),
        "the agent did not roll back alone (journal {}): {}",
        c.journal_phase(&id),
        agent.log()
    );
    std::fs::remove_file(c.root.join("tmp/backstop-go")).unwrap();
    // The trigger's directory (outside the scope) is the test's own doing.
    let (mut before, mut after) = (before, root_walk(&c.root));
    before.remove("tmp");
    after.remove("tmp");
    let diffs: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(after.keys().filter(|k| !before.contains_key(*k)).cloned())
        .take(20)
        .collect();
    assert!(
        diffs.is_empty(),
        "the root differs after the local rollback: {diffs:?}"
    );
    // The controller returns on the same data directory.
    let serve = c.serve();
    assert!(
        eventually(
            Duration::from_mins(1),
            || c.show(&id)["deployment"]["state"] == "rolled_back"
        ),
        "the store never agreed with the host: {}\ncontroller: {}\nagent: {}",
        c.show(&id),
        serve.log(),
        agent.log()
    );
    stored_as_local_rollback(&c, &id);
    alerted_as_local_rollback(&c, &id, &serve);
    drop(agent);
}

#[test]
fn a_healthy_install_while_the_controller_is_dead_waits_and_commits_when_it_returns() {
    let Some(_g) = ebpf_or_skip("kill -9 of the controller, then a healthy step") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let c = Crash::new("ok", &cached);
    let manifest = c.manifest("dpkg -i \"$0\"");
    let mut serve = c.serve();
    let agent = Proc::spawn(&mut c.fleet.agent_cmd(&c.base.join("agent-data")));
    c.fleet.wait_connected(&agent);
    let id = c.deploy_then_kill(&manifest, &mut serve, &agent);
    c.go();
    // The install finishes and waits: no commit, no rollback of its own.
    assert!(
        eventually(Duration::from_mins(2), || c.journal_phase(&id)
            == "monitoring"),
        "the install never finished (journal {}): {}",
        c.journal_phase(&id),
        agent.log()
    );
    assert!(c.root.join("usr/bin/hello").exists(), "hello installed");
    // Not a timing claim: a wait long enough for a wrong local commit or
    // rollback to show in the journal, which must still say "monitoring".
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.journal_phase(&id), "monitoring", "{}", agent.log());
    let serve = c.serve();
    assert!(
        eventually(
            Duration::from_mins(1),
            || c.show(&id)["deployment"]["state"] == "committed"
        ),
        "never committed after the controller returned: {}\ncontroller: {}\nagent: {}",
        c.show(&id),
        serve.log(),
        agent.log()
    );
    assert_eq!(c.journal_phase(&id), "committed", "the host agrees");
    let shown = c.show(&id);
    let k = kinds(&shown);
    assert!(
        k.contains(&"controller_lost".to_string()) && k.contains(&"controller_back".to_string()),
        "{k:?}"
    );
    assert_eq!(k.iter().filter(|k| *k == "committed").count(), 1, "{k:?}");
    let decisions = shown["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "exactly one decision: {shown}");
    assert_eq!(decisions[0]["verdict"], "commit", "{shown}");
    let hello = Command::new("chroot")
        .arg(&c.root)
        .arg("hello")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hello.stdout), "Hello, world!\n");
    // Replay gives the stored decision again, with its reasons.
    let replay = c.fleet.cli(&["replay", &id, "--json"]);
    assert_eq!(replay.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8_lossy(&replay.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["verdict"], "commit");
    assert_eq!(lines[0]["stored_verdict"], "commit");
    assert_eq!(lines[0]["reproduced"], true);
    assert_eq!(lines[0]["reasons"], decisions[0]["reasons"], "{shown}");
    assert!(c.rx.got().is_empty(), "no alert fires: {:?}", c.rx.got());
    drop(agent);
}

/// The store agrees with the agent: rolled back by its local policy,
/// one outcome, no controller decision, and replay says why.
fn stored_as_local_rollback(c: &Crash, id: &str) {
    let shown = c.show(id);
    let k = kinds(&shown);
    let lost = k.iter().position(|k| k == "controller_lost");
    let failed = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| e["event"]["step"]["step"]["exit_code"] == 3);
    assert!(
        lost.is_some() && lost < failed,
        "the loss is marked before the failing step: {k:?}"
    );
    let finals: Vec<&Value> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            [
                "rolled_back",
                "committed",
                "interrupted",
                "refused",
                "failed",
            ]
            .contains(&kind(e).as_str())
        })
        .collect();
    assert_eq!(finals.len(), 1, "exactly one outcome: {k:?}");
    assert_eq!(finals[0]["event"]["rolled_back"]["local"], true, "{shown}");
    assert_eq!(
        shown["decisions"].as_array().map(Vec::len),
        Some(0),
        "the controller did not decide what the agent did alone: {shown}"
    );
    let reason = shown["deployment"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("local policy") && reason.contains("exited 3"),
        "{shown}"
    );
    // Replay: nothing to replay, said on stderr, exit 0, no JSON line.
    let replay = c.fleet.cli(&["replay", id, "--json"]);
    let err = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(0), "{err}");
    assert!(
        replay.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&replay.stdout)
    );
    assert!(
        err.contains("no controller decision") && err.contains("local policy"),
        "{err}"
    );
}

/// One alert, fired as the local rollback it was.
fn alerted_as_local_rollback(c: &Crash, id: &str, serve: &Proc) {
    assert!(
        eventually(Duration::from_secs(30), || !c.rx.got().is_empty()),
        "the receiver never got the alert: {}",
        serve.log()
    );
    let body = c.rx.got()[0].json();
    let alerts = body.as_array().expect("postableAlerts");
    assert_eq!(alerts.len(), 1, "{body}");
    assert_eq!(alerts[0]["labels"]["deployment"], id, "{body}");
    assert_eq!(alerts[0]["labels"]["decision"], "rollback", "{body}");
    let reasons = alerts[0]["annotations"]["reasons"].as_str().unwrap_or("");
    assert!(reasons.contains("local policy"), "{body}");
    let firing =
        std::fs::read_dir(c.fleet.data.join("alerts/firing")).map_or(0, std::iter::Iterator::count);
    assert_eq!(firing, 1, "one alert firing");
}
