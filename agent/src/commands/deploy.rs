//! `backstop-agent deploy`: one deployment on this host with no
//! controller: the local policy decides (see `deploy/policy.rs`). First,
//! like every agent start, it rolls back what a stopped agent left
//! unfinished.
//!
//! Exit codes: 0 committed, 3 rolled back (or refused: nothing was
//! installed), 2 an invalid manifest (or cannot run here), 1 an error.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_agent::deploy::{self, DeployEvent, Outcome, Plan};
use backstop_agent::probes::{ProbeOptions, Probes};
use backstop_common::manifest::Manifest;

#[derive(clap::Args)]
pub struct Args {
    /// The deployment manifest (TOML; `backstop manifest check` lints it).
    #[arg(required_unless_present = "recover")]
    manifest: Option<PathBuf>,
    /// Data directory (snapshots, journals, outputs under DATA/agent).
    #[arg(long, env = "BACKSTOP_DATA", default_value = "/var/lib/backstop")]
    data: PathBuf,
    /// One JSON object per event (windows included) on stdout.
    #[arg(long)]
    json: bool,
    /// Window length in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    window_ms: u64,
    /// Only roll back what a stopped agent left unfinished, then exit.
    #[arg(long)]
    recover: bool,
}

pub async fn deploy(args: Args) -> super::Outcome {
    let manifest = match &args.manifest {
        Some(path) => match Manifest::load(path) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("backstop-agent: invalid manifest: {e}");
                return Ok(2);
            }
        },
        None => None,
    };
    backstop_common::root::require_root("deployments need root")?;
    let _lock = backstop_agent::datadir::DataLock::take(&args.data)?;
    let failed = |e: deploy::DeployError| backstop_agent::AgentError::Failed {
        context: "deployment".into(),
        source: Box::new(e),
    };
    for r in deploy::recover::recover(&args.data).await.map_err(failed)? {
        print_json_or(args.json, &r, || {
            format!(
                "recovered {}: found {:?}, recorded as interrupted",
                r.id, r.found
            )
        });
    }
    let Some(m) = manifest else { return Ok(0) };
    let probes = Probes::load(&ProbeOptions { probe_log: false })?;
    let ctx = deploy::Context {
        probes: Arc::new(Mutex::new(probes)),
        data: args.data.clone(),
        window: Duration::from_millis(args.window_ms),
    };
    let id = new_id();
    let plan = Plan::from_manifest(&m, &id);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let json = args.json;
    let printer = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            print_event(json, &ev);
        }
    });
    let outcome = deploy::run(&ctx, &id, &plan, None, tx).await;
    let _ = printer.await;
    Ok(match outcome.map_err(failed)? {
        Outcome::Committed => 0,
        Outcome::RolledBack { .. } | Outcome::Refused { .. } => 3,
    })
}

fn new_id() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    format!("dep-{}", hex::encode(b))
}

fn print_json_or<T: serde::Serialize>(json: bool, v: &T, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string(v).unwrap_or_default());
    } else {
        println!("{}", text());
    }
}

fn print_event(json: bool, ev: &DeployEvent) {
    if json {
        print_json_or(true, ev, String::new);
    } else if let Some(line) = text(ev) {
        println!("{line}");
    }
}

/// One probe run's line (`what`: probe or baseline).
fn probe_text(what: &str, p: &backstop_common::deploy::ProbeResult) -> String {
    let status = if p.ok { "ok" } else { "FAILED" };
    format!(
        "{what} {}: {status} in {:.1} ms ({})",
        p.name, p.latency_ms, p.detail
    )
}

/// The progress line of an event; windows and process records have none.
fn text(ev: &DeployEvent) -> Option<String> {
    Some(match ev {
        DeployEvent::Started {
            id,
            snapshot,
            cgroup,
        } => format!(
            "deployment {id}: snapshot {snapshot}, live cgroup {}",
            cgroup
                .as_ref()
                .map(|c| c.display().to_string())
                .unwrap_or_default()
        ),
        DeployEvent::Step { stream, step } => format!(
            "{stream:?} step {} {}: {} ({:.0} ms)",
            step.index,
            step.name,
            match (step.exit_code, step.timed_out) {
                (_, true) => "timed out".to_string(),
                (Some(c), _) => format!("exit {c}"),
                (None, _) => "killed".to_string(),
            },
            step.duration_ms
        )
        .to_lowercase(),
        DeployEvent::Probe { probe } => probe_text("probe", probe),
        DeployEvent::Baseline { probe } => probe_text("baseline", probe),
        DeployEvent::Shadow { report } => format!(
            "shadow {}: {}",
            report.id,
            if report.verdict().passed() {
                "passed"
            } else {
                "failed"
            }
        ),
        DeployEvent::ShadowFailed { reason } => format!("shadow could not run: {reason}"),
        DeployEvent::WouldRefuse { reason } => format!("dry run, going on; would refuse: {reason}"),
        DeployEvent::RolledBack { report, .. } => {
            let restore = match &report.restore {
                Some(r) => format!(
                    "restored {} in {:.0} ms{}",
                    r.snapshot,
                    r.duration_ms,
                    r.full_walk_reason
                        .as_ref()
                        .map(|w| format!(" (whole scope: {w})"))
                        .unwrap_or_default()
                ),
                None => "NOT restored".into(),
            };
            format!(
                "rollback: killed {} processes, {restore}, {} hooks, {} probes ok{}",
                report.killed_pids.len(),
                report.hooks.len(),
                report.probes.iter().filter(|p| p.ok).count(),
                report.problems.iter().fold(String::new(), |mut s, p| {
                    let _ = write!(s, "; problem: {p}");
                    s
                })
            )
        }
        DeployEvent::Finished { id, outcome } => match outcome {
            Outcome::Committed => format!("{id}: committed"),
            Outcome::RolledBack { reason } => format!("{id}: rolled back: {reason}"),
            Outcome::Refused { reason } => format!("{id}: refused: {reason}"),
        },
        DeployEvent::Window { .. }
        | DeployEvent::Process { .. }
        | DeployEvent::Controller { .. }
        | DeployEvent::LiveMemory { .. }
        | DeployEvent::Service { .. } => return None,
    })
}
