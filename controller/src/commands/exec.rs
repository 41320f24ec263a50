use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use backstop_controller::daemon::control::socket_path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::Exit;

/// Exit code when `--timeout` ran out first, as timeout(1) has it.
pub const TIMED_OUT: i32 = 124;
/// Exit code when the host went away for good before the deployment ended.
pub const INTERRUPTED: i32 = 125;

pub async fn run(
    data: &Path,
    host: &str,
    argv: Vec<String>,
    window_ms: u32,
    json: bool,
    timeout: Option<u64>,
) -> Result<i32> {
    let path = socket_path(data);
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .with_context(|| {
            format!(
                "connecting to the daemon at {} (is `backstop serve` running?)",
                path.display()
            )
        })?;
    let (r, mut w) = stream.into_split();
    let req = serde_json::json!({"op": "exec", "host": host, "argv": argv, "window_ms": window_ms});
    w.write_all(format!("{req}\n").as_bytes()).await?;
    let mut lines = BufReader::new(r).lines();
    let mut deployment = None;
    let deadline = timeout.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, lines.next_line()).await {
                Ok(line) => line?,
                Err(_) => return Ok(timed_out(host, deployment.as_deref(), timeout, json)),
            },
            None => lines.next_line().await?,
        };
        let Some(line) = next else { break };
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("daemon sent {line:?}"))?;
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            bail!("exec on {host}: {e}");
        }
        if let Some(id) = v.get("deployment").and_then(|d| d.as_str()) {
            deployment = Some(id.to_string());
            if !json {
                println!("deployment {id}");
            }
        }
        if let Some(o) = v.get("outcome") {
            let id = deployment.clone().unwrap_or_default();
            return outcome(host, &id, o, json);
        }
    }
    bail!("the daemon closed the connection before the deployment ended")
}

fn timed_out(host: &str, id: Option<&str>, timeout: Option<u64>, json: bool) -> i32 {
    let id = id.unwrap_or("(none yet)");
    if json {
        println!(
            "{}",
            serde_json::json!({"deployment": id, "timed_out": true})
        );
    }
    eprintln!(
        "backstop: deployment {id} on {host} did not end within --timeout {} s; it goes on there \
         (`backstop deployments` shows its state)",
        timeout.unwrap_or(0)
    );
    TIMED_OUT
}

fn outcome(host: &str, id: &str, o: &serde_json::Value, json: bool) -> Result<i32> {
    if json {
        println!("{}", serde_json::json!({"deployment": id, "outcome": o}));
    }
    if let Some(f) = o.get("finished") {
        let code = f["exit_code"].as_i64().unwrap_or(1) as i32;
        if !json {
            println!(
                "exit code {code} ({} windows, {} lost events)",
                f["windows"], f["lost_events"]
            );
        }
        return Ok(code);
    }
    if let Some(i) = o.get("interrupted") {
        let reason = i["reason"].as_str().unwrap_or("host gone");
        return Err(
            anyhow::anyhow!("deployment {id} on {host} was interrupted: {reason}")
                .context(Exit(INTERRUPTED)),
        );
    }
    let reason = o
        .get("failed")
        .and_then(|f| f["reason"].as_str())
        .unwrap_or("unknown");
    bail!("deployment {id} failed to start on {host}: {reason}");
}
