//! The rollback, in its one order: kill the live cgroup, restore the
//! snapshot, run the rollback hooks, re-run the health probes against the
//! restored state, report.
//!
//! Kill first: a daemon the install left running would rewrite what the
//! restore puts back, or hold a file the restore replaces open. Hooks after
//! the restore: they restart services on the restored files. Probes last:
//! they say whether the host is healthy again.
//!
//! The host actions sit behind [`HostActions`] so the order is tested
//! without root (a recording fake in the tests below); [`Host`] is the
//! real one, tested as root by tests/tests/deploy_local.rs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cgroup::LiveCgroup;
use super::health::{self, ProbeResult, ProbeSpec};
use super::{Cmd, Plan, StepResult};
use crate::changes::ChangeSet;
use crate::snapshot::{self, Store};

pub use backstop_common::deploy::{RestoreSummary, RollbackReport};

/// The host actions a rollback takes, one method per step.
#[expect(
    async_fn_in_trait,
    reason = "used with concrete types only (Host, the test recorder), whose futures stay Send"
)]
pub trait HostActions {
    /// Kill everything in the live cgroup and wait until it is empty;
    /// returns the pids that were in it.
    async fn kill_live(&mut self) -> Result<Vec<u32>, String>;
    async fn restore(&mut self) -> Result<RestoreSummary, String>;
    async fn hook(&mut self, index: usize, hook: &Cmd) -> StepResult;
    async fn probe(&mut self, probe: &ProbeSpec) -> ProbeResult;
}

/// Roll back: kill, restore, hooks, probes. A failed kill or restore is
/// recorded and the rest still runs: a half-rolled-back host needs its
/// services restarted and its health known more, not less.
pub async fn rollback(host: &mut impl HostActions, plan: &Plan, reason: &str) -> RollbackReport {
    let mut report = RollbackReport {
        reason: reason.to_string(),
        ..Default::default()
    };
    match host.kill_live().await {
        Ok(pids) => report.killed_pids = pids,
        Err(e) => report
            .problems
            .push(format!("killing the live cgroup: {e}")),
    }
    match host.restore().await {
        Ok(r) => report.restore = Some(r),
        Err(e) => report.problems.push(format!("restoring the snapshot: {e}")),
    }
    for (i, h) in plan.rollback_hooks.iter().enumerate() {
        report.hooks.push(host.hook(i, h).await);
    }
    for p in &plan.probes {
        report.probes.push(host.probe(p).await);
    }
    report
}

/// The real host.
pub struct Host<'a> {
    pub data: &'a std::path::Path,
    pub plan: &'a Plan,
    pub cgroup: Option<LiveCgroup>,
    pub snapshot: Option<String>,
    /// The change log the probes recorded, when there is one.
    pub changes: Option<PathBuf>,
}

impl HostActions for Host<'_> {
    async fn kill_live(&mut self) -> Result<Vec<u32>, String> {
        let Some(cg) = self.cgroup.clone() else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || {
            let pids = cg.pids();
            cg.kill_and_remove().map(|()| pids)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    async fn restore(&mut self) -> Result<RestoreSummary, String> {
        let id = self
            .snapshot
            .clone()
            .ok_or("no snapshot was taken before the install")?;
        let data = self.data.to_path_buf();
        let changes = self.changes.clone();
        // The staged artifact was copied by the agent, not the install:
        // the probes never saw it, so the change log is told here.
        let staged = self
            .plan
            .staging
            .as_ref()
            .map(|s| self.plan.root.join(s.strip_prefix("/").unwrap_or(s)));
        tokio::task::spawn_blocking(move || {
            restore_blocking(&data, &id, changes.as_deref(), staged)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn hook(&mut self, index: usize, hook: &Cmd) -> StepResult {
        run_cmd(index, hook, &self.plan.root).await
    }

    async fn probe(&mut self, probe: &ProbeSpec) -> ProbeResult {
        health::probe(probe, &self.plan.root).await
    }
}

/// Restore from the change log when it can be trusted, else (as
/// `snapshot::restore` decides) the whole scope.
fn restore_blocking(
    data: &std::path::Path,
    id: &str,
    changes: Option<&std::path::Path>,
    staged: Option<PathBuf>,
) -> Result<RestoreSummary, String> {
    let start = Instant::now();
    let store = Store::open(data).map_err(|e| e.to_string())?;
    let log = match changes.map(ChangeSet::read) {
        Some(Ok(mut set)) => {
            set.paths.extend(staged);
            Some(set)
        }
        Some(Err(e)) => {
            tracing::warn!("change log unreadable, walking the whole scope: {e}");
            None
        }
        None => None,
    };
    let r = snapshot::restore(&store, id, false, log.as_ref()).map_err(|e| e.to_string())?;
    let full_walk_reason = match (&log, r.full_walk_reason) {
        (None, None) => Some("no change log".to_string()),
        (_, why) => why,
    };
    Ok(RestoreSummary {
        snapshot: id.to_string(),
        full_walk_reason,
        duration_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// Run a hook like a step (chrooted when the root is not "/"), killed at
/// its timeout.
pub async fn run_cmd(index: usize, cmd: &Cmd, root: &std::path::Path) -> StepResult {
    let start = Instant::now();
    let mut c = tokio::process::Command::from(super::live::std_command(&cmd.argv, root, &cmd.env));
    c.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let (exit_code, timed_out, output) = match c.output_with_timeout(cmd.timeout).await {
        Ok(Some(out)) => {
            let mut text = out.stdout;
            text.extend_from_slice(&out.stderr);
            (out.status.code(), false, text)
        }
        Ok(None) => (None, true, b"[backstop: killed at its timeout]".to_vec()),
        Err(e) => (None, false, format!("[backstop: {e}]").into_bytes()),
    };
    let keep = output.len().saturating_sub(4096);
    StepResult {
        index,
        name: cmd.name.clone(),
        exit_code,
        duration_ms: start.elapsed().as_secs_f64() * 1e3,
        timed_out,
        output_tail: String::from_utf8_lossy(&output[keep..]).into_owned(),
    }
}

trait OutputWithTimeout {
    async fn output_with_timeout(
        &mut self,
        t: Duration,
    ) -> std::io::Result<Option<std::process::Output>>;
}

impl OutputWithTimeout for tokio::process::Command {
    /// The output, or None when the timeout ran out (the child is killed
    /// when its future is dropped: kill_on_drop).
    async fn output_with_timeout(
        &mut self,
        t: Duration,
    ) -> std::io::Result<Option<std::process::Output>> {
        match tokio::time::timeout(t, self.output()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the order of the actions; fails the kill when told to.
    #[derive(Default)]
    struct Recorder {
        log: Vec<String>,
        kill_fails: bool,
    }

    impl HostActions for Recorder {
        async fn kill_live(&mut self) -> Result<Vec<u32>, String> {
            self.log.push("kill".into());
            if self.kill_fails {
                Err("stuck".into())
            } else {
                Ok(vec![42])
            }
        }
        async fn restore(&mut self) -> Result<RestoreSummary, String> {
            self.log.push("restore".into());
            Ok(RestoreSummary::default())
        }
        async fn hook(&mut self, index: usize, hook: &Cmd) -> StepResult {
            self.log.push(format!("hook {}", hook.name));
            StepResult {
                index,
                name: hook.name.clone(),
                exit_code: Some(0),
                ..Default::default()
            }
        }
        async fn probe(&mut self, probe: &ProbeSpec) -> ProbeResult {
            self.log.push(format!("probe {}", probe.name));
            ProbeResult {
                name: probe.name.clone(),
                ok: true,
                latency_ms: 1.0,
                detail: String::new(),
                window: 0,
            }
        }
    }

    #[tokio::test]
    async fn a_rollback_kills_then_restores_then_hooks_then_probes() {
        let plan = super::super::tests::plan();
        let mut host = Recorder::default();
        let r = rollback(&mut host, &plan, "step failed").await;
        assert_eq!(
            host.log,
            [
                "kill",
                "restore",
                "hook restart-1",
                "hook restart-2",
                "probe up"
            ],
            "the order of a rollback"
        );
        assert_eq!(r.killed_pids, [42]);
        assert!(r.clean(), "{r:?}");
    }

    #[tokio::test]
    async fn a_failed_kill_is_reported_and_the_rest_still_runs() {
        let plan = super::super::tests::plan();
        let mut host = Recorder {
            kill_fails: true,
            ..Default::default()
        };
        let r = rollback(&mut host, &plan, "timeout").await;
        assert_eq!(host.log.len(), 5, "{:?}", host.log);
        assert!(!r.clean());
        assert!(r.problems[0].contains("stuck"), "{:?}", r.problems);
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_and_says_so() {
        let hook = Cmd {
            name: "slow".into(),
            argv: vec!["sleep".into(), "5".into()],
            timeout: Duration::from_millis(50),
            env: Vec::new(),
        };
        let r = run_cmd(0, &hook, std::path::Path::new("/")).await;
        assert!(r.timed_out && r.exit_code.is_none(), "{r:?}");
    }
}
