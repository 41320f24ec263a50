//! The long-running agent's outbox under attack: a full disk never kills an
//! install nor loses its outcome, a second agent on the same data directory
//! is refused without costing the first anything, and no other local user
//! can read what the outbox holds.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{agent, bin_dir, ebpf_or_skip, eventually, workload};

/// A process killed (SIGKILL) when dropped, with its stderr collected.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the exit, killing the process (and failing) past `limit`:
    /// no test here can hang on a waiter that never ends.
    fn finish(mut self, limit: Duration) -> (i32, String) {
        let start = Instant::now();
        while self.running() {
            if start.elapsed() > limit {
                panic!(
                    "still running after {limit:?}; killed. stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut out).unwrap();
        }
        (self.child.wait().unwrap().code().unwrap_or(-1), out)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A controller's data directory and address, removed when dropped.
struct Fleet {
    data: PathBuf,
    addr: SocketAddr,
}

impl Fleet {
    fn new(name: &str) -> Fleet {
        let data =
            std::env::temp_dir().join(format!("backstop-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let fleet = Fleet {
            data,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        let out = fleet.cli(&["init", "--host", "web-1"]);
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fleet
    }

    fn backstop(&self) -> Command {
        let mut c = Command::new(bin_dir().join("backstop"));
        c.arg("--data").arg(&self.data);
        c
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.backstop().args(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn serve(&self) -> Proc {
        let p = Proc::spawn(self.backstop().args([
            "--log",
            "info",
            "serve",
            "--listen",
            &self.addr.to_string(),
        ]));
        assert!(
            eventually(Duration::from_secs(20), || p.log().contains("listening on")),
            "controller did not start: {}",
            p.log()
        );
        p
    }

    fn agent_cmd(&self, data: &Path) -> Command {
        let mut c = Command::new(agent());
        c.args([
            "--log",
            "info",
            "run",
            "--controller",
            &self.addr.to_string(),
            "--bundle",
        ])
        .arg(self.data.join("pki/agents/web-1.bundle"))
        .arg("--data")
        .arg(data);
        c
    }

    fn host(&self) -> Value {
        self.json(&["hosts", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == "web-1")
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn wait_connected(&self, agent: &Proc) {
        assert!(
            eventually(Duration::from_secs(20), || self.host()["connected"] == true),
            "web-1 never connected; agent log:\n{}",
            agent.log()
        );
    }

    /// `backstop exec --json` in the background.
    fn exec(&self, cmd: &[&str]) -> Proc {
        Proc::spawn(
            self.backstop()
                .args([
                    "exec",
                    "--json",
                    "--host",
                    "web-1",
                    "--window-ms",
                    "100",
                    "--",
                ])
                .args(cmd),
        )
    }

    fn deployment(&self, id: &str) -> Value {
        self.json(&["deployments", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn windows(&self, id: &str) -> Vec<Value> {
        self.json(&["windows", id, "--json"])
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A 1 MiB tmpfs, unmounted (lazily, so a straggler cannot keep it) and
/// removed when dropped, whatever the test did.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir)
    }

    /// Take every free byte, so the next file data written here fails.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        assert!(
            std::fs::write(self.0.join("probe"), b"x").is_err(),
            "the tmpfs still takes writes after filling"
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The deployment id from `exec --json` output.
fn deployment_of(stdout: &str) -> String {
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("exec printed {stdout:?} ({e})"));
    v["deployment"].as_str().unwrap().to_string()
}

/// DATA/agent on a full 1 MiB tmpfs: the install still runs to its own end
/// (its marker written, its exit code back), its windows are dropped and
/// counted where `backstop hosts` shows them, and it has an outcome.
/// `fill_first`: the disk is full before the agent starts (no reserve can
/// be made: the outcome waits in memory) or only once it runs (the
/// outcome takes the reserve's room).
fn full_disk(name: &str, fill_first: bool) {
    let fleet = Fleet::new(name);
    let _serve = fleet.serve();
    let tmpfs = Tmpfs::mount(fleet.data.join("agent-data"));
    if fill_first {
        tmpfs.fill();
    }
    let agent = Proc::spawn(&mut fleet.agent_cmd(&tmpfs.0));
    fleet.wait_connected(&agent);
    if !fill_first {
        tmpfs.fill();
    }
    let marker = fleet.data.join("marker");
    let script = format!("sleep 3; echo done > {}; exit 7", marker.display());
    let (code, stdout) = fleet
        .exec(&["sh", "-c", &script])
        .finish(Duration::from_secs(60));
    let log = agent.log();
    assert_eq!(
        code, 7,
        "the command's exit code comes back; agent log:\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default(),
        "done\n",
        "the command ran to its end (was it killed?); agent log:\n{log}"
    );
    let id = deployment_of(&stdout);
    let d = fleet.deployment(&id);
    assert_eq!(d["state"], "finished", "{d}");
    assert_eq!(d["exit_code"], 7, "{d}");
    let total = d["windows"].as_u64().unwrap();
    assert!(total >= 25, "3 s at 100 ms windows: {d}");
    let stored = fleet.windows(&id).len() as u64;
    let mut dropped = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            dropped = fleet.host()["dropped_windows"].as_u64().unwrap_or(0);
            dropped + stored >= total
        }),
        "every window is stored or counted as dropped: {stored} stored + {dropped} dropped < {total}\n{log}"
    );
    assert!(
        dropped > 0,
        "the full disk dropped windows: {}",
        fleet.host()
    );
    assert!(
        log.contains("outbox refused a write"),
        "the agent said why: {log}"
    );
    drop(agent);
}

#[test]
fn a_full_disk_drops_windows_but_never_the_install_or_its_outcome() {
    let Some(_g) = ebpf_or_skip("a_full_disk_drops_windows_but_never_the_install_or_its_outcome")
    else {
        return;
    };
    full_disk("full-late", false);
}

#[test]
fn a_disk_full_from_the_start_still_delivers_the_outcome() {
    let Some(_g) = ebpf_or_skip("a_disk_full_from_the_start_still_delivers_the_outcome") else {
        return;
    };
    full_disk("full-early", true);
}

#[test]
fn a_second_agent_on_the_same_data_is_refused_and_the_first_loses_nothing() {
    let Some(_g) =
        ebpf_or_skip("a_second_agent_on_the_same_data_is_refused_and_the_first_loses_nothing")
    else {
        return;
    };
    let fleet = Fleet::new("second");
    let _serve = fleet.serve();
    let data = fleet.data.join("agent-data");
    let mut first = Proc::spawn(&mut fleet.agent_cmd(&data));
    fleet.wait_connected(&first);
    let wl = workload().display().to_string();
    let exec = fleet.exec(&[&wl, "spin", "2000"]);
    let second = Proc::spawn(&mut fleet.agent_cmd(&data));
    let (code, _) = second.finish(Duration::from_secs(20));
    assert_eq!(code, 2, "the second agent is refused as 'cannot run here'");
    let (code, stdout) = exec.finish(Duration::from_secs(60));
    assert_eq!(code, 0);
    let id = deployment_of(&stdout);
    assert!(first.running(), "the first agent lives on: {}", first.log());
    let d = fleet.deployment(&id);
    let ws = fleet.windows(&id);
    let seqs: Vec<u64> = ws.iter().map(|w| w["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..d["windows"].as_u64().unwrap()).collect::<Vec<_>>(),
        "every window of {d} arrived once"
    );
    assert_eq!(fleet.host()["dropped_windows"], 0);
}

#[test]
fn a_second_agent_says_who_holds_the_lock_in_one_line() {
    let Some(_g) = ebpf_or_skip("a_second_agent_says_who_holds_the_lock_in_one_line") else {
        return;
    };
    let fleet = Fleet::new("lockline");
    let data = fleet.data.join("agent-data");
    // No controller needed: the lock comes before anything else.
    let first = Proc::spawn(&mut fleet.agent_cmd(&data));
    let lock = data.join("agent/lock");
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == first.child.id().to_string())
    }));
    let out = fleet.agent_cmd(&data).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&lock.display().to_string()),
        "names the lock file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", first.child.id())),
        "names the holder: {stderr}"
    );
}

/// A log without its colour codes.
fn plain(log: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in log.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// Modes under DATA/agent, as (path, mode) for every entry.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(
        dir.to_path_buf(),
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777,
    )];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(modes(&p));
        } else {
            out.push((p, e.metadata().unwrap().permissions().mode() & 0o7777));
        }
    }
    out
}

#[test]
fn no_other_user_can_read_the_outbox() {
    let Some(_g) = ebpf_or_skip("no_other_user_can_read_the_outbox") else {
        return;
    };
    let fleet = Fleet::new("private");
    let mut serve = fleet.serve();
    let data = fleet.data.join("agent-data");
    let mut agent = Proc::spawn(&mut fleet.agent_cmd(&data));
    fleet.wait_connected(&agent);
    // The controller goes away mid-deployment, so its windows and outcome
    // stay spooled.
    let exec = fleet.exec(&["sleep", "1.5"]);
    assert!(eventually(Duration::from_secs(10), || {
        fleet
            .json(&["deployments", "--json"])
            .as_array()
            .is_some_and(|a| !a.is_empty())
    }));
    drop(serve);
    drop(exec);
    let outbox = data.join("agent/outbox");
    let msgs = || -> Vec<PathBuf> {
        std::fs::read_dir(&outbox)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "msg"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(15), || msgs().len() >= 10),
        "windows spooled: {:?}",
        msgs()
    );

    // An older agent left looser modes: the next one reports and fixes them.
    drop(agent);
    for (p, mode) in [
        (data.join("agent"), 0o755),
        (outbox.clone(), 0o777),
        (msgs()[0].clone(), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    serve = fleet.serve();
    agent = Proc::spawn(&mut fleet.agent_cmd(&data));
    assert!(
        eventually(Duration::from_secs(10), || agent
            .log()
            .matches("tightened its mode")
            .count()
            >= 3),
        "the agent reports the three loose modes: {}",
        agent.log()
    );
    let log = plain(&agent.log());
    assert!(
        log.contains(&format!("path={} old_mode=\"777\"", outbox.display())),
        "names the path and its old mode: {log}"
    );
    // Keep the messages spooled for the read attempts below.
    drop(serve);
    drop(agent);
    let spooled = msgs();
    assert!(!spooled.is_empty());
    for (p, mode) in modes(&data.join("agent")) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
    }
    for p in spooled.iter().chain([&outbox]) {
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
            .arg(p)
            .output()
            .expect("setpriv (util-linux)");
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "nobody read {}",
            p.display()
        );
    }
}
