//! The demo's closing table, read from `backstop show ID --json`.

use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One line per deployment: id, package, decision, reason, lead time,
/// restored in.
pub fn print(shown: &[&Value]) {
    let rows: Vec<[String; 6]> = shown.iter().map(|s| row(s)).collect();
    let head = [
        "deployment",
        "package",
        "decision",
        "reason",
        "lead time",
        "restored in",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("    ");
        for (c, w) in cells.iter().zip(width) {
            let _ = write!(s, "{c:<w$}  ");
        }
        println!("{}", s.trim_end());
    };
    line(&head.map(String::from));
    line(&width.map(|w| "-".repeat(w)));
    for r in &rows {
        line(r);
    }
    println!(
        "\n    lead time: how long before the failing step would have ended the decision came\n    \
         (projected: the step was killed first, so its end is when the disk would have been full);\n    \
         restored in: from the decision to the host restored (the agent's own restore time in brackets)"
    );
}

fn row(shown: &Value) -> [String; 6] {
    let s = shown;
    let dep = &s["deployment"];
    let m = &s["manifest"];
    let pkg = match (
        m["package"]["name"].as_str(),
        m["package"]["version"].as_str(),
    ) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        _ => m["name"].as_str().unwrap_or("-").to_string(),
    };
    let decision = s["decisions"]
        .as_array()
        .and_then(|ds| ds.iter().find(|x| x["verdict"] != "continue"))
        .cloned()
        .unwrap_or(Value::Null);
    let verdict = format!(
        "{} ({})",
        decision["verdict"].as_str().unwrap_or("-"),
        dep["state"].as_str().unwrap_or("-")
    );
    let reason = decision["reasons"]
        .as_array()
        .and_then(|r| r.first())
        .map_or_else(|| "-".to_string(), reason);
    let lead = &s["lead"];
    let lead_time = lead["lead_ms"].as_i64().map_or_else(
        || "-".to_string(),
        |ms| {
            format!(
                "{:.1} s ({})",
                ms as f64 / 1000.0,
                lead["step_end"].as_str().unwrap_or("?")
            )
        },
    );
    let restored = match (lead["restored_ms"].as_i64(), lead["decision_ms"].as_i64()) {
        (Some(r), Some(at)) => {
            let own = restore_ms(s).map_or(String::new(), |ms| format!(" [{ms:.0} ms]"));
            format!("{:.2} s{own}", (r - at) as f64 / 1000.0)
        }
        _ => "-".to_string(),
    };
    [
        dep["id"].as_str().unwrap_or("-").to_string(),
        pkg,
        verdict,
        reason,
        lead_time,
        restored,
    ]
}

/// A reason in a few words, from its JSON form (decide/reason.rs).
fn reason(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    match r["kind"].as_str().unwrap_or("-") {
        "exhaustion" => format!(
            "trend: disk -{:.1} MiB/s, full in {:.0} s",
            f("rate_per_s") / 1_048_576.0,
            f("full_in_ms") / 1000.0
        ),
        "clean" => format!(
            "clean: {} windows, {} probe(s), shadow {}",
            r["windows"],
            r["probes"],
            if r["shadow"] == true { "passed" } else { "off" }
        ),
        "live_step" => format!("live step `{}` failed", r["name"].as_str().unwrap_or("?")),
        other => other.to_string(),
    }
}

/// The agent's own restore time, from the rolled_back event.
fn restore_ms(s: &Value) -> Option<f64> {
    s["events"]
        .as_array()?
        .iter()
        .find_map(|e| e["event"]["rolled_back"]["report"]["restore"]["duration_ms"].as_f64())
}

/// `GET /metrics` from the controller's HTTP side (plain HTTP/1.0 on
/// loopback, so no client library): the deployments-by-outcome lines.
pub fn metrics(addr: &str) -> Result<Vec<String>> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .with_context(|| format!("reading http://{addr}/metrics"))?;
    if !body.starts_with("HTTP/1.1 200") && !body.starts_with("HTTP/1.0 200") {
        bail!(
            "demo: http://{addr}/metrics answered {:?}",
            body.lines().next()
        );
    }
    let lines: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("backstop_deployments_total{"))
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        bail!("demo: http://{addr}/metrics has no backstop_deployments_total");
    }
    Ok(lines)
}
