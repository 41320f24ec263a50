//! hosts, deployments, windows: straight from the store (the daemon need
//! not run).

use std::path::Path;

use anyhow::{Context, Result};
use backstop_common::features::FEATURES;
use backstop_controller::store::Store;
use serde::Serialize;

/// Open the store, run `f` on it, and close it (whatever `f` returned).
async fn read<T>(
    data: &Path,
    database: Option<String>,
    f: impl AsyncFnOnce(&Store) -> Result<T>,
) -> Result<T> {
    let store = super::open_store(data, database, false).await?;
    let out = f(&store).await;
    store.close().await;
    out
}

/// Print `rows` as one JSON array, or as `header` and one `line` per row.
fn table<T: Serialize>(
    rows: &[T],
    json: bool,
    header: &str,
    line: impl Fn(&T) -> String,
) -> Result<i32> {
    if json {
        println!("{}", serde_json::to_string(rows)?);
        return Ok(0);
    }
    println!("{header}");
    for row in rows {
        println!("{}", line(row));
    }
    Ok(0)
}

fn ago(ms: i64) -> String {
    let s = (backstop_controller::store::now_ms() - ms) / 1000;
    if s < 120 {
        format!("{s}s ago")
    } else if s < 7200 {
        format!("{}m ago", s / 60)
    } else {
        format!("{}h ago", s / 3600)
    }
}

fn or_dash(n: Option<i64>) -> String {
    n.map_or_else(|| "-".into(), |c| c.to_string())
}

pub async fn hosts(data: &Path, database: Option<String>, json: bool) -> Result<i32> {
    let rows = read(data, database, async |s| Ok(s.hosts().await?)).await?;
    let header = format!(
        "{:<24} {:<10} {:<12} {:<12} {:>10} {:<24} os",
        "host", "state", "first seen", "last seen", "violations", "kernel"
    );
    table(&rows, json, &header, |h| {
        format!(
            "{:<24} {:<10} {:<12} {:<12} {:>10} {:<24} {}",
            h.name,
            if h.connected { "connected" } else { "gone" },
            ago(h.first_seen_ms),
            ago(h.last_seen_ms),
            h.identity_violations,
            h.kernel,
            h.os
        )
    })
}

pub async fn deployments(data: &Path, database: Option<String>, json: bool) -> Result<i32> {
    let rows = read(data, database, async |s| Ok(s.deployments().await?)).await?;
    let header = format!(
        "{:<33} {:<16} {:<12} {:>5} {:>8} {:<10} command",
        "id", "host", "state", "exit", "windows", "started"
    );
    table(&rows, json, &header, |d| {
        format!(
            "{:<33} {:<16} {:<12} {:>5} {:>8} {:<10} {}",
            d.id,
            d.host,
            d.state,
            or_dash(d.exit_code),
            or_dash(d.windows),
            ago(d.created_ms),
            d.argv.join(" ")
        )
    })
}

pub async fn windows(data: &Path, database: Option<String>, id: &str, json: bool) -> Result<i32> {
    let windows = read(data, database, async |s| {
        s.deployment(id).await.context("reading windows")?;
        Ok(s.windows(id).await?)
    })
    .await?;
    if json {
        let list: Vec<_> = windows
            .iter()
            .map(backstop_common::window::Window::to_json)
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(0);
    }
    for w in &windows {
        let top: Vec<String> = FEATURES
            .iter()
            .zip(&w.features)
            .filter(|(f, v)| **v != 0.0 && !f.name.starts_with("host_"))
            .take(8)
            .map(|(f, v)| format!("{}={v}", f.name))
            .collect();
        println!(
            "{} {:>4} {:>8.3}s lost={} {}",
            w.stream.as_str(),
            w.seq,
            (w.end_ns - w.start_ns) as f64 / 1e9,
            w.lost_events,
            top.join(" ")
        );
    }
    Ok(0)
}

pub async fn events(data: &Path, database: Option<String>, id: &str, json: bool) -> Result<i32> {
    let events = read(data, database, async |s| {
        s.deployment(id).await.context("reading events")?;
        Ok(s.events(id).await?)
    })
    .await?;
    if json {
        let list: Vec<_> = events
            .iter()
            .map(|(kind, detail)| {
                let mut d = detail.clone();
                d["kind"] = kind.clone().into();
                d
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(0);
    }
    for (kind, d) in &events {
        match kind.as_str() {
            "exec" => println!(
                "exec  pid {} {}",
                d["pid"],
                d["filename"].as_str().unwrap_or("")
            ),
            "exit" => println!(
                "exit  pid {} {} code {} signal {}",
                d["pid"],
                d["comm"].as_str().unwrap_or(""),
                d["exit_code"],
                d["signal"]
            ),
            _ => println!(
                "{kind} pid {} {}",
                d["pid"],
                d["comm"].as_str().unwrap_or("")
            ),
        }
    }
    Ok(0)
}
