//! A controller and real agents as separate processes, for the tests of the
//! long-running agent (outbox.rs, agent_lock.rs): each process is killed
//! when dropped, and every wait has a deadline. (fleet.rs is the other
//! harness: agents made of the QUIC client alone, for identity tests.)

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{agent, bin_dir, children, eventually};

/// A process killed (SIGKILL) when dropped, with its stderr collected.
pub struct Proc {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
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

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the exit, killing the process (and failing) past `limit`:
    /// no test here can hang on a waiter that never ends.
    pub fn finish(mut self, limit: Duration) -> (i32, String) {
        let start = Instant::now();
        while self.running() {
            assert!(
                start.elapsed() <= limit,
                "still running after {limit:?}; killed. stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut out).unwrap();
        }
        (self.child.wait().unwrap().code().unwrap_or(-1), out)
    }
}

impl Proc {
    /// This process and its descendants, one line each: pid, name, state,
    /// and where in the kernel each task sleeps (its wchan and stack).
    /// For a failure that is a wait that never ended: it says what the
    /// agent, its creator child and the shadow's init were blocked on.
    pub fn tree(&self) -> String {
        use std::fmt::Write as _;
        let mut tree = vec![self.child.id()];
        let mut i = 0;
        while i < tree.len() {
            tree.extend(children(tree[i]));
            i += 1;
        }
        let mut out = String::new();
        for pid in tree {
            let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (name) state ppid: the rest is numbers no one reads.
            let head = line.split(' ').take(4).collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "{head}");
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .unwrap_or_default();
            for t in tasks {
                let read = |f: &str| std::fs::read_to_string(t.join(f)).unwrap_or_default();
                let stack = read("stack").lines().collect::<Vec<_>>().join(" < ");
                let _ = writeln!(
                    out,
                    "  task {}: {} wchan={} stack: {stack}",
                    t.file_name().unwrap_or_default().to_string_lossy(),
                    read("comm").trim_end(),
                    read("wchan"),
                );
            }
        }
        out
    }

    /// SIGKILL, then reap: a crash, as the tests that need one mean it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A controller's data directory and address, removed when dropped.
pub struct Fleet {
    pub data: PathBuf,
    pub addr: SocketAddr,
}

impl Fleet {
    pub fn new(name: &str) -> Fleet {
        let data =
            std::env::temp_dir().join(format!("backstop-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let fleet = Fleet {
            data,
            addr: Fleet::free_addr(),
        };
        let out = fleet.cli(&["init", "--host", "web-1"]);
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fleet
    }

    pub fn backstop(&self) -> Command {
        let mut c = Command::new(bin_dir().join("backstop"));
        c.arg("--data").arg(&self.data);
        c
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.backstop().args(args).output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn serve(&self) -> Proc {
        self.serve_with(&[])
    }

    /// `serve` with more of serve's flags (`--config FILE`), without a
    /// model (`--no-model`): these tests check steps, probes, shadows,
    /// trends and restores, and a decision must not hang on how the
    /// shipped model scores a test's install on a loaded machine (one
    /// window over its threshold leaves a healthy install inconclusive).
    /// The model's own path is tested by deploy_model.rs and, with real
    /// installs, by `cargo xtask demo`.
    pub fn serve_with(&self, extra: &[&str]) -> Proc {
        self.serve_at(self.addr, extra)
    }

    /// A free UDP port on loopback.
    pub fn free_addr() -> SocketAddr {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// [`Fleet::serve_with`] listening on `addr` instead of the fleet's
    /// own: a controller its agents cannot find.
    pub fn serve_at(&self, addr: SocketAddr, extra: &[&str]) -> Proc {
        let p = Proc::spawn(
            self.backstop()
                .args(["--log", "info", "serve", "--listen", &addr.to_string()])
                .args(extra)
                .arg("--no-model"),
        );
        assert!(
            eventually(Duration::from_secs(20), || p.log().contains("listening on")),
            "controller did not start: {}",
            p.log()
        );
        p
    }

    pub fn agent_cmd(&self, data: &Path) -> Command {
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

    pub fn host(&self) -> Value {
        self.json(&["hosts", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == "web-1")
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn wait_connected(&self, agent: &Proc) {
        assert!(
            eventually(Duration::from_secs(20), || self.host()["connected"] == true),
            "web-1 never connected; agent log:\n{}",
            agent.log()
        );
    }

    /// `backstop exec --json` in the background.
    pub fn exec(&self, cmd: &[&str]) -> Proc {
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

    pub fn deployment(&self, id: &str) -> Value {
        self.json(&["deployments", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn windows(&self, id: &str) -> Vec<Value> {
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

/// A tmpfs, unmounted (lazily, so a straggler cannot keep it) and
/// removed when dropped, whatever the test did.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// 1 MiB at `dir`.
    pub fn mount(dir: PathBuf) -> Tmpfs {
        Tmpfs::with(dir, "size=1m")
    }

    /// At `dir`, with mount `options` (`size=64k`, `nr_inodes=40`).
    pub fn with(dir: PathBuf, options: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("{options},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir)
    }

    /// Take every free byte, so the next file data written here fails.
    pub fn fill(&self) {
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
pub fn deployment_of(stdout: &str) -> String {
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("exec printed {stdout:?} ({e})"));
    v["deployment"].as_str().unwrap().to_string()
}

/// DATA/agent on a full 1 MiB tmpfs: the install still runs to its own end
/// (its marker written, its exit code back), its windows are dropped and
/// counted where `backstop hosts` shows them, and it has an outcome.
/// `fill_first`: the disk is full before the agent starts (no reserve can
/// be made: the outcome waits in memory) or only once it runs (the
/// A log without its colour codes.
pub fn plain(log: &str) -> String {
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
