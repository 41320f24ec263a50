use std::path::Path;

use anyhow::{Context, Result, bail};
use backstop_controller::control::socket_path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub async fn run(
    data: &Path,
    host: &str,
    argv: Vec<String>,
    window_ms: u32,
    json: bool,
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
    while let Some(line) = lines.next_line().await? {
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
            let reason = o
                .get("failed")
                .and_then(|f| f["reason"].as_str())
                .unwrap_or("unknown");
            bail!("deployment {id} failed to start on {host}: {reason}");
        }
    }
    bail!("the daemon closed the connection before the deployment ended")
}
