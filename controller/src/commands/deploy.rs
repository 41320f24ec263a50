//! `backstop deploy`, `backstop show` and `backstop cancel`: the CLI's side
//! of a deployment. `deploy` validates the manifest here first, so an
//! invalid one is refused (exit 2, the field named) before the daemon or
//! any host sees it; the daemon validates it again before acting.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use backstop_common::control::{DeployRequest, Progress, Reply, Request};
use backstop_common::manifest::Manifest;
use backstop_controller::daemon::control::socket_path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::Exit;

/// Exit code of `deploy --wait` when the deployment was rolled back,
/// refused, interrupted or failed.
pub const NOT_COMMITTED: i32 = 1;

pub struct DeployArgs<'a> {
    pub file: &'a Path,
    pub host: &'a str,
    pub wait: bool,
    pub dry_run: bool,
    pub json: bool,
    pub window_ms: Option<u32>,
}

pub async fn run(data: &Path, a: DeployArgs<'_>) -> Result<i32> {
    if let Err(e) = Manifest::load(a.file) {
        return Err(anyhow::Error::new(e).context(Exit(2)));
    }
    let text =
        std::fs::read_to_string(a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let base = std::path::absolute(a.file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let req = DeployRequest {
        host: a.host.to_string(),
        manifest: text,
        base,
        window_ms: a.window_ms,
        dry_run: a.dry_run,
        wait: a.wait,
    };
    let mut lines = request(data, &Request::Deploy(req)).await?;
    let mut code = 0;
    let mut shown: Option<Progress> = None;
    while let Some(line) = lines.next_line().await? {
        let reply: Reply =
            serde_json::from_str(&line).with_context(|| format!("daemon sent {line:?}"))?;
        match &reply {
            Reply::Error { message, field } => {
                let exit = if field.is_some() { 2 } else { 1 };
                let e = anyhow::anyhow!("deploy to {}: {message}", a.host);
                return Err(e.context(Exit(exit)));
            }
            _ if a.json => print!("{}", reply.line()),
            Reply::Started { deployment } => println!("{deployment}"),
            Reply::Event(l) => println!("{}", progress_text(&serde_json::to_value(l)?)),
            Reply::Progress(p) => {
                if worth_a_line(shown.as_ref(), p) {
                    println!("{}", status_text(p));
                    shown = Some(p.clone());
                }
            }
            Reply::Missed { count } => {
                println!("({count} events missed; `backstop show` has them)");
            }
            other => bail!("the daemon answered a deploy with {other:?}"),
        }
        if let Reply::Event(l) = &reply
            && l.last
            && l.kind != "committed"
        {
            code = NOT_COMMITTED;
        }
    }
    Ok(code)
}

/// Whether a status line is worth printing after `last`: a second since
/// it, another step, a probe's result changed, or P(failure) over the
/// threshold. The daemon sends one per window batch scored, four or more
/// a second in 250 ms windows; `--json` prints every one.
fn worth_a_line(last: Option<&Progress>, p: &Progress) -> bool {
    let probes = |p: &Progress| -> Vec<(String, bool)> {
        p.probes.iter().map(|s| (s.name.clone(), s.ok)).collect()
    };
    let alarming = matches!((p.p_failure_live, p.threshold), (Some(v), Some(t)) if v > t);
    last.is_none_or(|l| {
        p.elapsed_ms >= l.elapsed_ms + 1000
            || l.step != p.step
            || probes(l) != probes(p)
            || alarming
    })
}

/// One status line for a human: P(failure) live and shadow against the
/// threshold, after each window batch the daemon scored.
fn status_text(p: &Progress) -> String {
    let p_ = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let mut s = format!(
        "{:.1} s, step {}: P(failure) live {} shadow {} threshold {}",
        p.elapsed_ms as f64 / 1000.0,
        p.step.as_deref().unwrap_or("-"),
        p_(p.p_failure_live),
        p_(p.p_failure_shadow),
        p.threshold
            .map_or("- (no model)".to_string(), |t| format!("{t:.2}")),
    );
    for probe in &p.probes {
        let ok = if probe.ok { "ok" } else { "FAILED" };
        let _ = write!(s, ", probe {} {ok}", probe.name);
    }
    s
}

/// One progress line for a human.
fn progress_text(v: &serde_json::Value) -> String {
    let e = &v["event"];
    let body = |k: &str| e.get(k).cloned().unwrap_or_default();
    match v["kind"].as_str().unwrap_or("?") {
        "step" => {
            let s = &body("step")["step"];
            format!(
                "step {} ({}): exit {} in {:.0} ms",
                s["name"].as_str().unwrap_or("?"),
                body("step")["stream"].as_str().unwrap_or("?"),
                s["exit_code"],
                s["duration_ms"].as_f64().unwrap_or(0.0)
            )
        }
        key @ ("probe" | "baseline") => {
            let p = &body(key)["probe"];
            let ok = if p["ok"] == true { "ok" } else { "FAILED" };
            format!(
                "{key} {}: {ok} ({:.1} ms, {})",
                p["name"].as_str().unwrap_or("?"),
                p["latency_ms"].as_f64().unwrap_or(0.0),
                p["detail"].as_str().unwrap_or("")
            )
        }
        "rolled_back" | "interrupted" => {
            let key = v["kind"].as_str().unwrap_or("");
            let r = &body(key)["report"];
            format!(
                "{key}: {} (restored: {})",
                r["reason"].as_str().unwrap_or("?"),
                if r["restore"].is_null() { "no" } else { "yes" }
            )
        }
        "shadow_failed" => format!(
            "the shadow could not run: {}",
            body("shadow_failed")["reason"].as_str().unwrap_or("?")
        ),
        "would_refuse" => format!(
            "a real run would be refused here (a dry run goes on): {}",
            body("would_refuse")["reason"].as_str().unwrap_or("?")
        ),
        "live_memory" => {
            let m = &body("live_memory")["sample"];
            let mib = |k: &str| m[k].as_f64().unwrap_or(0.0) / 1_048_576.0;
            format!(
                "live memory {:.1} of {:.1} MiB",
                mib("current_bytes"),
                mib("limit_bytes")
            )
        }
        "service" => {
            let m = &body("service")["sample"];
            let when = if m["baseline"] == true {
                "before"
            } else {
                "during"
            };
            format!(
                "service ({when}): cpu {:.3} s, memory {}",
                m["cpu_usage_usec"].as_f64().unwrap_or(0.0) / 1e6,
                m["memory_bytes"]
                    .as_f64()
                    .map_or("-".into(), |b| format!("{:.1} MiB", b / 1_048_576.0))
            )
        }
        kind => format!("{kind}: {}", body(kind)),
    }
}

/// `backstop cancel ID [--force]`: order the deployment rolled back (with
/// `--force`, also mark it abandoned, freeing its root).
pub async fn cancel(data: &Path, id: &str, force: bool) -> Result<i32> {
    let req = Request::Cancel {
        id: id.to_string(),
        force,
    };
    let mut lines = request(data, &req).await?;
    let line = lines
        .next_line()
        .await?
        .context("the daemon closed the connection without an answer")?;
    match serde_json::from_str(&line)? {
        Reply::Cancelled {
            abandoned: true,
            ordered,
            ..
        } => {
            let order = if ordered {
                "rollback ordered"
            } else {
                "its agent is not connected: nothing was rolled back"
            };
            println!("{id} abandoned, its root is free ({order})");
        }
        Reply::Cancelled { .. } => println!("rollback ordered for {id}"),
        Reply::Error { message, .. } => bail!("cancel {id}: {message}"),
        other => bail!("the daemon answered a cancel with {other:?}"),
    }
    Ok(0)
}

/// `backstop show ID`: the deployment, its events and its decisions.
pub async fn show(data: &Path, database: Option<String>, id: &str, json: bool) -> Result<i32> {
    let store = super::open_store(data, database, false).await?;
    let (row, manifest) = store.deploy(id).await?;
    let events = store.deploy_events(id).await?;
    let decisions = store.decisions(id).await?;
    let lead = backstop_controller::report::lead::lead(&events, &decisions);
    if json {
        let v = serde_json::json!({
            "deployment": row, "manifest": manifest, "events": events, "decisions": decisions,
            "lead": lead,
        });
        println!("{v}");
        return Ok(0);
    }
    println!(
        "{} on {}: {}{} ({})",
        row.id,
        row.host,
        row.state.as_str(),
        if row.dry_run { " [dry run]" } else { "" },
        row.reason.as_deref().unwrap_or("-")
    );
    for e in &events {
        let v = serde_json::json!({"kind": e.event.kind(), "event": e.event});
        println!("  {:>4} {} {}", e.seq, e.at_ms, progress_text(&v));
    }
    for d in &decisions {
        let acted = if d.acted {
            "acted"
        } else {
            "not acted (dry run)"
        };
        println!(
            "  decision at {}: {} [{acted}] {}",
            d.at_ms, d.verdict, d.reasons
        );
        if let Some(h) = backstop_controller::daemon::history::describe(&d.evidence) {
            println!("    {h}");
        }
    }
    println!("  {}", backstop_controller::report::lead::text(&lead));
    Ok(0)
}

/// Send one request on the control socket; the reply lines follow.
pub(super) async fn request(
    data: &Path,
    req: &Request,
) -> Result<tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>> {
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
    w.write_all(req.line().as_bytes()).await?;
    Ok(BufReader::new(r).lines())
}

#[cfg(test)]
mod tests {
    use backstop_common::deploy::{DeployEvent, MemorySample, ServiceSample};

    fn line(e: &DeployEvent) -> String {
        super::progress_text(&serde_json::json!({"kind": e.kind(), "event": e}))
    }

    #[test]
    fn status_lines_come_once_a_second_unless_something_changed() {
        use backstop_common::control::{ProbeStatus, Progress};
        let at = |ms: u64, p: f64| Progress {
            elapsed_ms: ms,
            step: Some("install".into()),
            p_failure_live: Some(p),
            threshold: Some(0.5),
            ..Progress::default()
        };
        let worth = super::worth_a_line;
        assert!(worth(None, &at(0, 0.1)), "the first one");
        assert!(!worth(Some(&at(0, 0.1)), &at(250, 0.1)));
        assert!(!worth(Some(&at(0, 0.1)), &at(999, 0.2)));
        assert!(worth(Some(&at(0, 0.1)), &at(1000, 0.1)), "a second on");
        assert!(
            worth(Some(&at(0, 0.1)), &at(250, 0.7)),
            "over the threshold"
        );
        let mut configure = at(250, 0.1);
        configure.step = Some("configure".into());
        assert!(worth(Some(&at(0, 0.1)), &configure), "another step");
        let mut probed = at(250, 0.1);
        probed.probes.push(ProbeStatus {
            name: "http".into(),
            ok: false,
            detail: String::new(),
        });
        assert!(worth(Some(&at(0, 0.1)), &probed), "a probe's result");
    }

    #[test]
    fn samples_and_a_shadow_that_could_not_run_read_as_sentences() {
        let memory = DeployEvent::LiveMemory {
            sample: MemorySample {
                current_bytes: 40 << 20,
                limit_bytes: 64 << 20,
                ..MemorySample::default()
            },
        };
        assert_eq!(line(&memory), "live memory 40.0 of 64.0 MiB");
        let service = DeployEvent::Service {
            sample: ServiceSample {
                baseline: true,
                cpu_usage_usec: 1_500_000,
                memory_bytes: None,
                ..ServiceSample::default()
            },
        };
        assert_eq!(line(&service), "service (before): cpu 1.500 s, memory -");
        let failed = DeployEvent::ShadowFailed {
            reason: "creating the shadow: EAGAIN".into(),
        };
        assert_eq!(
            line(&failed),
            "the shadow could not run: creating the shadow: EAGAIN"
        );
        let would = DeployEvent::WouldRefuse {
            reason: "no room".into(),
        };
        assert_eq!(
            line(&would),
            "a real run would be refused here (a dry run goes on): no room"
        );
    }
}
