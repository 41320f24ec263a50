//! `backstop-loadgen`: N simulated agents, each a real QUIC connection with
//! its own certificate, streaming windows at a fixed rate to a controller.
//! It measures what an SRE sizing a controller asks: windows stored per
//! second and the delay from a window's end to the controller's
//! acknowledgement, which it sends only after the window is committed.
//!
//! Usage: backstop-loadgen --data DIR --controller ADDR --agents N --hz R --seconds S
//! Prints one JSON object on stdout.
#![allow(
    clippy::unwrap_used,
    reason = "a test workload: an unwrap that fails aborts the run the test then reports as failed"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backstop_common::quic;
use backstop_common::window::{Stream, Window};
use backstop_common::wire::{AgentMsg, ControllerMsg, HostFacts, PROTOCOL_VERSION};
use tokio::sync::Mutex;

struct Args {
    data: PathBuf,
    controller: SocketAddr,
    agents: usize,
    hz: u32,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        data: PathBuf::new(),
        controller: "127.0.0.1:7870".parse().unwrap(),
        agents: 10,
        hz: 10,
        seconds: 10,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let val = &v[i + 1];
        match v[i].as_str() {
            "--data" => a.data = val.into(),
            "--controller" => a.controller = val.parse().expect("--controller ADDR"),
            "--agents" => a.agents = val.parse().expect("--agents N"),
            "--hz" => a.hz = val.parse().expect("--hz N"),
            "--seconds" => a.seconds = val.parse().expect("--seconds N"),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    assert!(
        !a.data.as_os_str().is_empty(),
        "--data DIR (a `backstop init` directory) is required"
    );
    a
}

#[derive(Default)]
struct Stats {
    sent: u64,
    acked: u64,
    delays_us: Vec<u64>,
    errors: Vec<String>,
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(a));
}

#[expect(
    clippy::too_many_lines,
    reason = "the load generator's whole run, read top to bottom as the report it prints"
)]
async fn run(a: Args) {
    let (ca_cert, ca_key) = backstop_controller::pki::load_ca(&a.data).expect("loading the CA");
    let dir = a.data.join("loadgen");
    let _ = std::fs::remove_dir_all(&dir);
    let now = time::OffsetDateTime::now_utc();
    // The daemon accepts only recorded certificates (for hosts with
    // records) and messages about deployments of the sender's own host:
    // each simulated agent's certificate and deployment go on record, as
    // `backstop enroll` and `backstop exec` would put them.
    let store = backstop_controller::store::Store::open(
        &backstop_controller::store::default_url(&a.data),
        false,
    )
    .await
    .expect("opening the controller's store");
    let mut configs = Vec::new();
    for i in 0..a.agents {
        let path = dir.join(format!("load-{i}.bundle"));
        let issued = backstop_controller::pki::enroll_with(
            &ca_cert,
            &ca_key,
            &format!("load-{i}"),
            &path,
            now,
            now + time::Duration::days(1),
        )
        .expect("enrolling a simulated agent");
        store
            .record_certificate(&issued.to_row(), true)
            .await
            .expect("recording a simulated agent's certificate");
        store
            .new_deployment(
                &format!("load-{i}-{}", std::process::id()),
                &format!("load-{i}"),
                backstop_controller::store::DeploymentKind::Load,
                &[],
            )
            .await
            .expect("recording a simulated agent's deployment");
        let b = quic::read_bundle(&path).unwrap();
        configs.push(quic::client_config(b.ca, Some((b.cert, b.key))).unwrap());
    }
    // A few UDP sockets, as a few hosts' worth of agents would use.
    let endpoints: Vec<quinn::Endpoint> = (0..8)
        .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap())
        .collect();
    let stats = Arc::new(Mutex::new(Stats::default()));
    // Agents connect over a ramp (as a fleet does after a controller
    // restart, with its backoff and jitter); the measured interval starts
    // when the ramp ends.
    let ramp = Duration::from_millis((a.agents as u64 * 3).min(5000));
    let start = Instant::now() + ramp;
    let deadline = start + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for (i, cfg) in configs.into_iter().enumerate() {
        let ep = endpoints[i % endpoints.len()].clone();
        let stats = stats.clone();
        let addr = a.controller;
        let period = Duration::from_secs_f64(1.0 / f64::from(a.hz));
        // Spread the agents' ticks over one period.
        let offset = period.mul_f64(i as f64 / a.agents as f64);
        let connect_at = Instant::now() + ramp.mul_f64(i as f64 / a.agents as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(connect_at.into()).await;
            if let Err(e) = agent(
                i,
                ep,
                cfg,
                addr,
                period,
                start + offset,
                deadline,
                stats.clone(),
            )
            .await
            {
                stats.lock().await.errors.push(format!("agent {i}: {e}"));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = a.seconds as f64;
    let mut s = stats.lock().await;
    s.delays_us.sort_unstable();
    let q = |p: f64| -> u64 {
        if s.delays_us.is_empty() {
            return 0;
        }
        s.delays_us
            [((p * s.delays_us.len() as f64).ceil() as usize).clamp(1, s.delays_us.len()) - 1]
    };
    println!(
        "{}",
        serde_json::json!({
            "agents": a.agents,
            "hz": a.hz,
            "seconds": a.seconds,
            "windows_sent": s.sent,
            "windows_acked": s.acked,
            "windows_per_s": s.acked as f64 / elapsed,
            "p50_ms": q(0.50) as f64 / 1000.0,
            "p99_ms": q(0.99) as f64 / 1000.0,
            "max_ms": s.delays_us.last().copied().unwrap_or(0) as f64 / 1000.0,
            "errors": s.errors.len(),
            "first_error": s.errors.first(),
        })
    );
}

#[expect(
    clippy::too_many_arguments,
    reason = "one simulated agent's whole setup, spawned once per agent; a struct would only rename them"
)]
async fn agent(
    i: usize,
    ep: quinn::Endpoint,
    cfg: quinn::ClientConfig,
    addr: SocketAddr,
    period: Duration,
    first_tick: Instant,
    deadline: Instant,
    stats: Arc<Mutex<Stats>>,
) -> Result<(), String> {
    let hello = AgentMsg::Hello {
        protocol: PROTOCOL_VERSION,
        facts: HostFacts {
            kernel: "sim".into(),
            os: "sim".into(),
            agent_version: "loadgen".into(),
        },
        dropped_windows: 0,
    };
    let (conn, mut send, mut recv) =
        quic::open_session(&ep, cfg, addr, "backstop-controller", &hello)
            .await
            .map_err(|e| e.to_string())?;
    let deployment = format!("load-{i}-{}", std::process::id());
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let reader = {
        let sent_at = sent_at.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            while let Ok(msg) = quic::read_frame::<ControllerMsg>(&mut recv).await {
                if let ControllerMsg::Ack {
                    through_seq: Some(seq),
                    ..
                } = msg
                {
                    let at = sent_at.lock().await.remove(&seq);
                    if let Some(at) = at {
                        let mut s = stats.lock().await;
                        s.acked += 1;
                        s.delays_us.push(at.elapsed().as_micros() as u64);
                    }
                }
            }
        })
    };
    let mut tick = tokio::time::interval_at(first_tick.into(), period);
    let mut seq = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        let mut w = Window::new(Stream::Live, seq, seq * 100, seq * 100 + 100);
        w.features[0] = seq as f64;
        sent_at.lock().await.insert(seq, Instant::now());
        let msg = AgentMsg::Windows {
            deployment: deployment.clone(),
            windows: vec![w],
        };
        quic::write_frame(&mut send, &msg)
            .await
            .map_err(|e| e.to_string())?;
        stats.lock().await.sent += 1;
        seq += 1;
    }
    // Give the last acknowledgements time to arrive.
    let drain_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_until && !sent_at.lock().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.abort();
    conn.close(0u32.into(), b"done");
    Ok(())
}
