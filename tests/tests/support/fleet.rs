//! A controller under test and agents made of the common crate's QUIC
//! client (they need no eBPF): the harness of identity.rs and private.rs.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backstop_common::quic;
use backstop_common::window::{Stream, Window};
use backstop_common::wire::{AgentMsg, ControllerMsg, HostFacts, PROTOCOL_VERSION};
use serde_json::Value;

use super::{bin_dir, eventually};

/// Close codes (controller/src/server.rs `close`, listed in the README).
pub const REVOKED: u32 = 6;
pub const FOREIGN_DEPLOYMENT: u32 = 7;
pub const DUPLICATE_SESSION: u32 = 8;

/// A controller's data directory and its daemon (killed on drop).
pub struct Ctl {
    pub data: PathBuf,
    pub addr: SocketAddr,
    pub serve: Option<Child>,
    log: PathBuf,
}

impl Ctl {
    pub fn new(name: &str) -> Ctl {
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

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin_dir().join("backstop"))
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "backstop {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    pub fn serve(&mut self) {
        self.serve_with(&[]);
    }

    /// `serve` with more of serve's flags (`--config FILE`), and without a
    /// model (`--no-model`): the scripted windows here are not installs,
    /// and what these tests check must not hang on how the shipped model
    /// scores them. `serve_with_model` is for the tests of the model.
    pub fn serve_with(&mut self, extra: &[&str]) {
        self.start(extra, false);
    }

    /// `serve` scoring with the model in use (DATA/models/current, else
    /// the built-in default).
    pub fn serve_with_model(&mut self) {
        self.start(&[], true);
    }

    fn start(&mut self, extra: &[&str], model: bool) {
        let child = Command::new(bin_dir().join("backstop"))
            .arg("--data")
            .arg(&self.data)
            .args(["--log", "info", "serve", "--listen", &self.addr.to_string()])
            .args(extra)
            .args(if model { None } else { Some("--no-model") })
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

    pub fn stop(&mut self) {
        if let Some(mut c) = self.serve.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn enroll(&self, host: &str) -> PathBuf {
        let out = self.data.join(format!("{host}-{}.bundle", now_ns()));
        self.ok(&["enroll", "--host", host, "--out", out.to_str().unwrap()]);
        out
    }

    pub fn host(&self, name: &str) -> Value {
        self.json(&["hosts", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// A deployment's row and its stored windows, for before/after checks.
    pub fn deployment(&self, id: &str) -> (Value, Value) {
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
    pub fn exec(&self, args: &[&str]) -> Child {
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

pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An agent made of the common crate's client: it says Hello, then does
/// exactly what the test tells it.
pub struct Fake {
    _ep: quinn::Endpoint,
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

pub async fn connect(to: SocketAddr, ca: &Path, bundle: &Path) -> Result<Fake, String> {
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
    pub async fn send(&mut self, msg: &AgentMsg) {
        quic::write_frame(&mut self.send, msg).await.unwrap();
    }

    pub async fn next(&mut self) -> ControllerMsg {
        tokio::time::timeout(Duration::from_secs(15), quic::read_frame(&mut self.recv))
            .await
            .expect("a controller message within 15 s")
            .expect("a controller message")
    }

    /// Wait for an Exec; returns its deployment id.
    pub async fn exec(&mut self) -> String {
        loop {
            if let ControllerMsg::Exec { deployment, .. } = self.next().await {
                return deployment;
            }
        }
    }

    /// How the controller closed this connection: (code, reason).
    pub async fn closed(&self) -> (u32, String) {
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

pub fn windows(deployment: &str, seqs: std::ops::Range<u64>, value: f64) -> AgentMsg {
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

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

pub struct Relay {
    pub addr: SocketAddr,
    pub cut: Arc<AtomicBool>,
}

pub fn relay(to: SocketAddr) -> Relay {
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
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            *client.lock().unwrap() = Some(from);
            if !cut.load(Ordering::Relaxed) {
                let _ = back.send(&buf[..n]);
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = b2.recv(&mut buf) {
            let to = *c2.lock().unwrap();
            if let (Some(to), false) = (to, cut2.load(Ordering::Relaxed)) {
                let _ = f2.send_to(&buf[..n], to);
            }
        }
    });
    Relay { addr, cut }
}

/// What a real agent reports when the concurrent shadow of hello.toml
/// passed (its install step and its `greets` test exited 0). The end of
/// monitoring waits for a concurrent shadow's report, so a scripted agent
/// deploying hello.toml must send one to get its order.
pub fn passed_shadow() -> backstop_common::deploy::DeployEvent {
    use backstop_common::deploy::{DeployEvent, ShadowSummary, StepResult};
    let ok = |name: &str| StepResult {
        name: name.into(),
        exit_code: Some(0),
        ..StepResult::default()
    };
    DeployEvent::Shadow {
        report: ShadowSummary {
            steps: vec![ok("install")],
            tests: vec![ok("greets")],
            timed_out: false,
            oom_killed: false,
            oom_kills: 0,
            changed_paths: 12,
            cleanup_problems: Vec::new(),
        },
    }
}
