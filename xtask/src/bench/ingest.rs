//! `cargo xtask bench ingest`: simulated agents streaming windows to a
//! real controller.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::Result;

use crate::util;

pub(super) fn ingest(agents: &[usize], hz: u32, seconds: u64) -> Result<()> {
    util::step(
        "cargo build --release (controller, loadgen)",
        util::cargo(&[
            "build",
            "--release",
            "-p",
            "backstop-controller",
            "-p",
            "backstop-tests",
        ]),
    )?;
    let bin = util::target_dir().join("release");
    let data = util::cache_dir().join("bench-ingest");
    let _ = std::fs::remove_dir_all(&data);
    let mut init = Command::new(bin.join("backstop"));
    init.arg("--data")
        .arg(&data)
        .args(["init", "--host", "bench"]);
    util::output(&mut init)?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut rows = Vec::new();
    for &n in agents {
        // A fresh controller (and database) per size, so RSS is per size.
        for f in ["backstop.db", "backstop.db-wal", "backstop.db-shm"] {
            let _ = std::fs::remove_file(data.join(f));
        }
        let mut serve = Command::new(bin.join("backstop"))
            .arg("--data")
            .arg(&data)
            .args(["--log", "warn", "serve", "--listen", &addr])
            .stderr(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(serve.stderr.take().expect("stderr is piped above")).read_line(&mut line)?;
        let mut loadgen = Command::new(bin.join("backstop-loadgen"));
        loadgen.arg("--data").arg(&data).args([
            "--controller",
            &addr,
            "--agents",
            &n.to_string(),
            "--hz",
            &hz.to_string(),
            "--seconds",
            &seconds.to_string(),
        ]);
        let out = util::output(&mut loadgen);
        let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", serve.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
        let _ = serve.wait();
        let v: serde_json::Value = serde_json::from_str(out?.trim())?;
        eprintln!("bench ingest: {n} agents: {v}");
        rows.push((n, v, rss_kb));
    }
    report(&rows, hz, seconds);
    Ok(())
}

/// The table: per agent count, what was sent and stored, how fast, how
/// late, and the controller's peak RSS.
fn report(rows: &[(usize, serde_json::Value, u64)], hz: u32, seconds: u64) {
    println!(
        "\nbackstop ingest: simulated agents at {hz} Hz for {seconds} s each, real QUIC + mTLS on loopback; controller and load generator share this 2-core machine\n"
    );
    println!(
        "{:>7} {:>10} {:>10} {:>11} {:>9} {:>9} {:>12} {:>7}",
        "agents", "sent", "stored", "windows/s", "p50 ms", "p99 ms", "ctrl RSS MB", "errors"
    );
    for (n, v, rss) in rows {
        println!(
            "{:>7} {:>10} {:>10} {:>11.0} {:>9.2} {:>9.2} {:>12.1} {:>7}",
            n,
            v["windows_sent"].as_u64().unwrap_or(0),
            v["windows_acked"].as_u64().unwrap_or(0),
            v["windows_per_s"].as_f64().unwrap_or(0.0),
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            *rss as f64 / 1024.0,
            v["errors"].as_u64().unwrap_or(0),
        );
    }
    println!("\ntarget: 1000 agents at 10 Hz, every window stored (stored = sent), p99 < 250 ms");
}
