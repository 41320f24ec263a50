//! An agent certificate speaks for one host only, and the controller's data
//! is root's alone: the real `backstop` daemon and CLI, attacked by agents
//! built from the common crate's QUIC client (they need no eBPF), and read
//! as `nobody`.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backstop_common::quic;
use backstop_common::window::{Stream, Window};
use backstop_common::wire::{AgentMsg, ControllerMsg, HostFacts, PROTOCOL_VERSION};
use serde_json::Value;
use support::{bin_dir, eventually, is_root};

/// Close codes (controller/src/server.rs `close`, listed in the README).
const REVOKED: u32 = 6;
const FOREIGN_DEPLOYMENT: u32 = 7;
const DUPLICATE_SESSION: u32 = 8;

/// A controller's data directory and its daemon (killed on drop).
struct Ctl {
    data: PathBuf,
    addr: SocketAddr,
    serve: Option<Child>,
    log: PathBuf,
}

impl Ctl {
    fn new(name: &str) -> Ctl {
        let data = std::env::temp_dir().join(format!("backstop-id-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log =
            std::env::temp_dir().join(format!("backstop-id-{name}-{}.log", std::process::id()));
        let ctl = Ctl {
            data,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            serve: None,
            log,
        };
        ctl.ok(&["init", "--host", "web-1"]);
        ctl
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin_dir().join("backstop"))
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "backstop {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn serve(&mut self) {
        let child = Command::new(bin_dir().join("backstop"))
            .arg("--data")
            .arg(&self.data)
            .args(["--log", "info", "serve", "--listen", &self.addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap();
        self.serve = Some(child);
        assert!(
            eventually(Duration::from_secs(20), || self
                .log()
                .contains("listening on")),
            "controller did not start: {}",
            self.log()
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.serve.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn enroll(&self, host: &str) -> PathBuf {
        let out = self.data.join(format!("{host}-{}.bundle", now_ns()));
        self.ok(&["enroll", "--host", host, "--out", out.to_str().unwrap()]);
        out
    }

    fn host(&self, name: &str) -> Value {
        self.json(&["hosts", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// A deployment's row and its stored windows, for before/after checks.
    fn deployment(&self, id: &str) -> (Value, Value) {
        let row = self
            .json(&["deployments", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or(Value::Null);
        (row, self.json(&["windows", id, "--json"]))
    }

    /// `backstop exec` in the background.
    fn exec(&self, args: &[&str]) -> Child {
        Command::new(bin_dir().join("backstop"))
            .arg("--data")
            .arg(&self.data)
            .arg("exec")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An agent made of the common crate's client: it says Hello, then does
/// exactly what the test tells it.
struct Fake {
    _ep: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

async fn connect(to: SocketAddr, ca: &Path, bundle: &Path) -> Result<Fake, String> {
    let (ca, _) = quic::read_pem(ca).unwrap();
    let b = quic::read_bundle(bundle).unwrap();
    let cfg = quic::client_config(ca[0].clone(), Some((b.cert, b.key))).unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let hello = AgentMsg::Hello {
        protocol: PROTOCOL_VERSION,
        facts: HostFacts {
            kernel: "k".into(),
            os: "o".into(),
            agent_version: "fake".into(),
        },
        dropped_windows: 0,
    };
    let (conn, send, recv) = quic::open_session(&ep, cfg, to, "backstop-controller", &hello)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Fake {
        _ep: ep,
        conn,
        send,
        recv,
    })
}

impl Fake {
    async fn send(&mut self, msg: &AgentMsg) {
        quic::write_frame(&mut self.send, msg).await.unwrap();
    }

    async fn next(&mut self) -> ControllerMsg {
        tokio::time::timeout(Duration::from_secs(15), quic::read_frame(&mut self.recv))
            .await
            .expect("a controller message within 15 s")
            .expect("a controller message")
    }

    /// Wait for an Exec; returns its deployment id.
    async fn exec(&mut self) -> String {
        loop {
            if let ControllerMsg::Exec { deployment, .. } = self.next().await {
                return deployment;
            }
        }
    }

    /// How the controller closed this connection: (code, reason).
    async fn closed(&self) -> (u32, String) {
        let e = tokio::time::timeout(Duration::from_secs(10), self.conn.closed())
            .await
            .expect("the controller closes the connection within 10 s");
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => (
                u64::from(c.error_code) as u32,
                String::from_utf8_lossy(&c.reason).to_string(),
            ),
            other => panic!("closed by {other}, not by the controller"),
        }
    }
}

fn windows(deployment: &str, seqs: std::ops::Range<u64>, value: f64) -> AgentMsg {
    AgentMsg::Windows {
        deployment: deployment.into(),
        windows: seqs
            .map(|s| {
                let mut w = Window::new(Stream::Live, s, s * 10, s * 10 + 10);
                w.features[0] = value;
                w
            })
            .collect(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_certificate_speaks_only_for_its_own_host() {
    let mut ctl = Ctl::new("foreign");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let a = ctl.data.join("pki/agents/web-1.bundle");
    let b = ctl.enroll("web-2");
    let rt = runtime();
    // B runs a deployment that never ends; it has three windows stored.
    let mut host_b = rt.block_on(connect(ctl.addr, &ca, &b)).unwrap();
    let mut exec = ctl.exec(&["--host", "web-2", "--", "sleep", "60"]);
    let victim = rt.block_on(async {
        let id = host_b.exec().await;
        host_b.send(&windows(&id, 0..3, 1.0)).await;
        while !matches!(
            host_b.next().await,
            ControllerMsg::Ack {
                through_seq: Some(2),
                ..
            }
        ) {}
        id
    });
    assert_eq!(victim.len(), 33, "d and 128 bits in hex: {victim}");
    let before = ctl.deployment(&victim);
    assert_eq!(before.0["state"], "running");
    assert_eq!(before.1.as_array().unwrap().len(), 3);

    // A, with its own valid certificate, writes B's deployment: windows
    // (new and overwriting seqs), a finish record, events, a failure.
    let attacks: Vec<(&str, AgentMsg)> = vec![
        ("windows", windows(&victim, 0..10, 666.0)),
        (
            "finish",
            AgentMsg::Finished {
                deployment: victim.clone(),
                exit_code: 0,
                windows: 10,
                lost_events: 0,
            },
        ),
        (
            "failure",
            AgentMsg::Failed {
                deployment: victim.clone(),
                reason: "forged".into(),
            },
        ),
        (
            "events",
            AgentMsg::Events {
                deployment: victim.clone(),
                events: vec![],
            },
        ),
        ("a made-up deployment", windows("d-nonexistent", 0..1, 1.0)),
    ];
    let count = attacks.len();
    for (i, (what, msg)) in attacks.into_iter().enumerate() {
        let (code, reason) = rt.block_on(async {
            let mut host_a = connect(ctl.addr, &ca, &a).await.unwrap();
            host_a.send(&msg).await;
            host_a.closed().await
        });
        assert_eq!(
            code, FOREIGN_DEPLOYMENT,
            "{what}: closed with {code}: {reason}"
        );
        assert!(
            reason.contains("web-1"),
            "{what}: the reason names the host: {reason}"
        );
        assert_eq!(
            ctl.host("web-1")["identity_violations"],
            i as u64 + 1,
            "{what}: counted"
        );
    }
    assert_eq!(
        ctl.deployment(&victim),
        before,
        "B's deployment was changed"
    );
    let log = ctl.log();
    assert!(
        log.matches("identity violation").count() >= count && log.contains(&victim),
        "logged with host and deployment: {log}"
    );
    assert_eq!(ctl.host("web-2")["identity_violations"], 0);
    // B itself goes on: its own finish ends its own deployment.
    rt.block_on(host_b.send(&AgentMsg::Finished {
        deployment: victim.clone(),
        exit_code: 3,
        windows: 3,
        lost_events: 0,
    }));
    let status = exec.wait().unwrap();
    assert_eq!(status.code(), Some(3), "exec reports B's own outcome");
    assert_eq!(ctl.deployment(&victim).0["state"], "finished");
}

/// A UDP relay between a client and the controller that can go silent:
/// a connection through it dies without a close, as when an agent's host
/// loses power.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

fn relay(to: SocketAddr) -> Relay {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(to).unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let addr = front.local_addr().unwrap();
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let (f2, b2, c2, cut2) = (
        front.try_clone().unwrap(),
        back.try_clone().unwrap(),
        client.clone(),
        cut.clone(),
    );
    let cut1 = cut.clone();
    std::thread::spawn(move || {
        let cut = cut1;
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            *client.lock().unwrap() = Some(from);
            if !cut.load(Ordering::Relaxed) {
                let _ = back.send(&buf[..n]);
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = b2.recv(&mut buf) {
            let to = *c2.lock().unwrap();
            if let (Some(to), false) = (to, cut2.load(Ordering::Relaxed)) {
                let _ = f2.send_to(&buf[..n], to);
            }
        }
    });
    Relay { addr, cut }
}

#[test]
fn a_second_session_is_refused_while_the_first_lives() {
    let mut ctl = Ctl::new("dup");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let a = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut first = rt.block_on(connect(ctl.addr, &ca, &a)).unwrap();
    let started = Instant::now();
    let second = rt.block_on(connect(ctl.addr, &ca, &a));
    let err = second.err().expect("a second live session was accepted");
    assert!(
        err.contains(&format!("code {DUPLICATE_SESSION}"))
            && err.contains("already has a live session"),
        "refused with the reason: {err}"
    );
    eprintln!("second session refused after {:?}", started.elapsed());
    // The first still holds the host: it gets the host's commands.
    let mut exec = ctl.exec(&["--host", "web-1", "--", "true"]);
    rt.block_on(async {
        let id = first.exec().await;
        first
            .send(&AgentMsg::Finished {
                deployment: id,
                exit_code: 0,
                windows: 0,
                lost_events: 0,
            })
            .await;
    });
    assert_eq!(
        exec.wait().unwrap().code(),
        Some(0),
        "the first session works"
    );
    drop(first);

    // An agent whose connection died silently (not yet timed out) gets
    // back in within seconds.
    let r = relay(ctl.addr);
    let silent = rt.block_on(connect(r.addr, &ca, &a)).unwrap();
    r.cut.store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    let back = rt.block_on(connect(ctl.addr, &ca, &a));
    let took = cut_at.elapsed();
    assert!(
        back.is_ok(),
        "the reconnecting agent was refused: {:?}",
        back.err()
    );
    assert!(
        took < Duration::from_secs(3),
        "reconnect took {took:?}, beyond the 1.5 s liveness probe"
    );
    eprintln!("reconnect after a silent death took {took:?}");
    drop(silent);
}

#[test]
fn a_revoked_certificate_fails_its_next_handshake() {
    let mut ctl = Ctl::new("revoke");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let rt = runtime();
    let old = ctl.enroll("web-2");
    let live = rt.block_on(connect(ctl.addr, &ca, &old)).unwrap();

    let again = ctl.data.join("again.bundle");
    let out = ctl.cli(&[
        "enroll",
        "--host",
        "web-2",
        "--out",
        again.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a second enroll was accepted: {stderr}"
    );
    assert!(
        stderr.contains("live certificate") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!again.exists(), "no bundle was written");

    ctl.ok(&["revoke", "web-2"]);
    let (code, reason) = rt.block_on(live.closed());
    assert_eq!(code, REVOKED, "the live session is closed: {reason}");
    let err = rt
        .block_on(connect(ctl.addr, &ca, &old))
        .err()
        .expect("a revoked certificate was accepted");
    assert!(
        err.contains(&format!("code {REVOKED}")) && err.contains("revoked"),
        "the refusal says why: {err}"
    );

    // --force issues a new one; the old stays refused.
    let new = ctl.data.join("new.bundle");
    ctl.ok(&[
        "enroll",
        "--host",
        "web-2",
        "--force",
        "--out",
        new.to_str().unwrap(),
    ]);
    rt.block_on(connect(ctl.addr, &ca, &new))
        .expect("the new certificate works");
    assert!(rt.block_on(connect(ctl.addr, &ca, &old)).is_err());

    // A certificate signed by the CA but never recorded (as a thief with
    // the CA key, or an old backup, would have) is refused for a recorded host.
    let (ca_cert, ca_key) = backstop_controller::pki::load_ca(&ctl.data).unwrap();
    let minted = ctl.data.join("minted.bundle");
    let now = time::OffsetDateTime::now_utc();
    backstop_controller::pki::enroll_with(
        &ca_cert,
        &ca_key,
        "web-1",
        &minted,
        now,
        now + time::Duration::days(1),
    )
    .unwrap();
    let err = rt
        .block_on(connect(ctl.addr, &ca, &minted))
        .err()
        .expect("an unrecorded certificate was accepted");
    assert!(err.contains("not on record"), "{err}");
}

#[test]
fn exec_timeout_returns_and_waiters_end_when_the_host_is_gone() {
    let mut ctl = Ctl::new("timeout");
    ctl.serve();
    let ca = ctl.data.join("pki/ca.pem");
    let a = ctl.data.join("pki/agents/web-1.bundle");
    let rt = runtime();
    let mut agent = rt.block_on(connect(ctl.addr, &ca, &a)).unwrap();

    // The host takes the command and never finishes it.
    let started = Instant::now();
    let exec = ctl.exec(&["--timeout", "5", "--host", "web-1", "--", "sleep", "60"]);
    let id = rt.block_on(agent.exec());
    let out = exec.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains(&id), "names the deployment: {stderr}");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "returned after {took:?}"
    );

    // Without a timeout, the waiter ends when the host is gone for good.
    let exec = ctl.exec(&["--host", "web-1", "--", "sleep", "60"]);
    let id = rt.block_on(agent.exec());
    let gone = Instant::now();
    agent.conn.close(0u32.into(), b"agent going away");
    drop(agent);
    let out = exec.wait_with_output().unwrap();
    let took = gone.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&id) && stderr.contains("interrupted"),
        "{stderr}"
    );
    assert!(
        took < Duration::from_secs(12),
        "the waiter ended {took:?} after the host left (grace 6 s)"
    );
    eprintln!("waiter ended {took:?} after the host left");
    assert_eq!(ctl.deployment(&id).0["state"], "interrupted");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Whether `nobody` can read `p` (with cat, through setpriv).
fn nobody_reads(p: &Path) -> bool {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn controller_data_is_private_to_root() {
    if !is_root() {
        assert!(std::env::var("CI").is_err(), "under CI a skip is a failure");
        eprintln!("\n*** SKIPPED controller_data_is_private_to_root: needs root ***\n");
        return;
    }
    let mut ctl = Ctl::new("private");
    ctl.serve();
    let b = ctl.enroll("web-2");
    // Some traffic, so the WAL and its index exist and hold data.
    let rt = runtime();
    let _agent = rt
        .block_on(connect(ctl.addr, &ctl.data.join("pki/ca.pem"), &b))
        .unwrap();
    let d = &ctl.data.clone();
    let dirs = [d.clone(), d.join("pki"), d.join("pki/agents")];
    let files: Vec<PathBuf> = [
        "backstop.db",
        "backstop.db-wal",
        "backstop.db-shm",
        "pki/ca.key",
        "pki/server.key",
        "pki/agents/web-1.bundle",
    ]
    .iter()
    .map(|f| d.join(f))
    .chain([b.clone()])
    .collect();
    for p in &dirs {
        assert_eq!(mode(p), 0o700, "{}", p.display());
    }
    for p in &files {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&d.join("control.sock")) & 0o777, 0o600, "control.sock");
    let pid = ctl.serve.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == "Umask:\t0077"),
        "the daemon runs under umask 077, so nothing it creates is ever readable by others"
    );
    for p in &files {
        assert!(!nobody_reads(p), "nobody read {}", p.display());
    }
    // The files hold on their own, without the directories' help.
    for p in &dirs {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    for p in &files {
        assert!(
            !nobody_reads(p),
            "nobody read {} through a 0711 directory",
            p.display()
        );
    }
    assert!(
        nobody_reads(&d.join("pki/ca.pem")),
        "the check itself can succeed"
    );

    // Loose modes (an old version's, a restored backup's) are reported and fixed.
    ctl.stop();
    for p in &files[..3] {
        if p.exists() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    std::fs::set_permissions(d.join("pki/ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = ctl.cli(&["hosts"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for p in [d.join("backstop.db"), d.join("pki/ca.key"), d.clone()] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&p.display().to_string()) && l.contains("old_mode=")),
            "{} reported: {stderr}",
            p.display()
        );
    }
    for p in &dirs {
        assert_eq!(mode(p), 0o700, "{} fixed", p.display());
    }
    for p in files.iter().filter(|p| p.exists()) {
        assert_eq!(mode(p), 0o600, "{} fixed", p.display());
    }
}
