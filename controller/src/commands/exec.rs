use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use backstop_common::control::{ExecEnd, Reply, Request};

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
    let req = Request::Exec {
        host: host.to_string(),
        argv,
        window_ms,
    };
    let mut lines = super::deploy::request(data, &req).await?;
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
        let reply: Reply =
            serde_json::from_str(&line).with_context(|| format!("daemon sent {line:?}"))?;
        match reply {
            Reply::Error { message, .. } => bail!("exec on {host}: {message}"),
            Reply::Started { deployment: id } => {
                if !json {
                    println!("deployment {id}");
                }
                deployment = Some(id);
            }
            Reply::Ended {
                deployment: id,
                end,
            } => return ended(host, &id, &end, json),
            Reply::Progress(_) => {}
            other => bail!("the daemon answered exec with {other:?}"),
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

fn ended(host: &str, id: &str, end: &ExecEnd, json: bool) -> Result<i32> {
    if json {
        println!("{}", serde_json::json!({"deployment": id, "outcome": end}));
    }
    match end {
        ExecEnd::Finished {
            exit_code,
            windows,
            lost_events,
        } => {
            if !json {
                println!("exit code {exit_code} ({windows} windows, {lost_events} lost events)");
            }
            Ok(*exit_code)
        }
        ExecEnd::Interrupted { reason } => Err(anyhow::anyhow!(
            "deployment {id} on {host} was interrupted: {reason}"
        )
        .context(Exit(INTERRUPTED))),
        ExecEnd::Failed { reason } => {
            bail!("deployment {id} failed to start on {host}: {reason}")
        }
    }
}
