//! `/api/v1/...`: the dashboard's data as JSON (the README's table lists
//! each path). Every handler only reads: the store's read functions, the
//! report's `analyse` (what `backstop report --json` prints), and the
//! decider's `scoring::score` for P(failure). Nothing here writes the
//! store or talks to an agent.

use std::sync::Arc;

use backstop_common::http::{Reply, Request};
use backstop_common::window::{Stream, Window};
use serde::Serialize;

use super::query::{Filter, QueryError};
use super::series::{Scores, series};
use super::views::{AlarmExplained, ApiError, DeployDetail, DeploySummary, HostView, ModelView};
use crate::daemon::Daemon;
use crate::daemon::scoring::{NO_MODEL, score};
use crate::report::{Stored, analyse, history, lead};
use crate::store::{DeployRow, StoreError, now_ms};

pub const JSON: &str = "application/json";

/// How many recent rollbacks the models page explains.
const EXPLAINED: usize = 5;

fn json<T: Serialize>(status: u16, v: &T) -> Reply {
    match serde_json::to_vec(v) {
        Ok(body) => Reply {
            status,
            content_type: JSON,
            body,
        },
        Err(e) => Reply::text(500, format!("encoding JSON: {e}\n")),
    }
}

fn error(status: u16, error: String, parameter: Option<String>, id: Option<String>) -> Reply {
    json(
        status,
        &ApiError {
            error,
            parameter,
            id,
        },
    )
}

fn store_error(e: &StoreError) -> Reply {
    if let StoreError::NoDeployment { id } = e {
        return error(404, e.to_string(), None, Some(id.clone()));
    }
    tracing::error!("dashboard: {e}");
    error(500, e.to_string(), None, None)
}

fn duration(row: &DeployRow) -> i64 {
    row.ended_ms.unwrap_or_else(now_ms) - row.created_ms
}

/// `/api/v1/deployments?state=&host=&package=&decision=`.
pub async fn deployments(daemon: Arc<Daemon>, req: Request) -> Reply {
    let filter = match Filter::parse(req.query.as_deref()) {
        Ok(f) => f,
        Err(QueryError { parameter, reason }) => {
            let msg = format!("query parameter {parameter}: {reason}");
            return error(400, msg, Some(parameter), None);
        }
    };
    match summaries(&daemon, &filter).await {
        Ok(rows) => json(200, &rows),
        Err(e) => store_error(&e),
    }
}

async fn summaries(daemon: &Daemon, filter: &Filter) -> Result<Vec<DeploySummary>, StoreError> {
    let mut out = Vec::new();
    for row in daemon.store.deploys().await?.into_iter().rev() {
        if !filter.keeps_row(&row) {
            continue;
        }
        let decisions = daemon.store.decisions(&row.id).await?;
        let decision = decisions
            .iter()
            .find(|d| d.verdict != "commit")
            .or(decisions.first())
            .map(|d| d.verdict.clone());
        if !filter.keeps_decision(decision.as_deref()) {
            continue;
        }
        let events = daemon.store.deploy_events(&row.id).await?;
        out.push(DeploySummary {
            lead_ms: lead::lead(&events, &decisions).lead_ms,
            duration_ms: duration(&row),
            state: row.state.as_str(),
            decision,
            id: row.id,
            host: row.host,
            name: row.name,
            package: row.package,
            version: row.version,
            dry_run: row.dry_run,
            created_ms: row.created_ms,
            ended_ms: row.ended_ms,
        });
    }
    Ok(out)
}

/// `/api/v1/deployments/ID`.
pub async fn deployment(daemon: Arc<Daemon>, id: &str) -> Reply {
    match detail(&daemon, id).await {
        Ok(d) => json(200, &d),
        Err(e) => store_error(&e),
    }
}

async fn detail(daemon: &Daemon, id: &str) -> Result<DeployDetail, StoreError> {
    let (_, manifest) = daemon.store.deploy(id).await?;
    let stored = Stored::load(&daemon.store, id).await?;
    let report = analyse(&stored, &history(&daemon.store, &stored.row).await?);
    let mut scores = scores(daemon, id, stored.windows.clone()).await;
    if let Some(t) = manifest.policy.threshold {
        scores.threshold = Some(f64::from(t));
    }
    let series = series(&stored, &report, scores);
    Ok(DeployDetail {
        lead: lead::lead(&stored.events, &stored.decisions),
        elapsed_ms: duration(&stored.row),
        live: !stored.row.state.ended(),
        series,
        report,
        deployment: stored.row,
        events: stored.events,
        decisions: stored.decisions,
    })
}

/// The windows scored by the daemon's model, as the decider scores them.
async fn scores(daemon: &Daemon, id: &str, windows: Vec<Window>) -> Scores {
    let Some(scorer) = daemon.model.get() else {
        return Scores {
            windows: Vec::new(),
            threshold: None,
            model: NO_MODEL.to_string(),
        };
    };
    let mut out = Scores {
        windows: Vec::new(),
        threshold: Some(scorer.model.meta.threshold),
        model: scorer.source.clone(),
    };
    match tokio::task::spawn_blocking(move || score(&scorer.model, &windows)).await {
        Ok(Ok(w)) => out.windows = w,
        Ok(Err(e)) => tracing::warn!(deployment = id, "dashboard scoring: {e}"),
        Err(e) => tracing::warn!(deployment = id, "dashboard scoring task: {e}"),
    }
    out
}

/// `/api/v1/hosts`.
pub async fn hosts(daemon: Arc<Daemon>) -> Reply {
    let read = async {
        let lost = daemon.store.lost_events_by_host().await?;
        let hosts = daemon.store.hosts().await?;
        Ok::<_, StoreError>(
            hosts
                .into_iter()
                .map(|host| HostView {
                    lost_events: lost.get(&host.name).copied().unwrap_or(0),
                    host,
                })
                .collect::<Vec<_>>(),
        )
    };
    match read.await {
        Ok(v) => json(200, &v),
        Err(e) => store_error(&e),
    }
}

/// `/api/v1/models`.
pub async fn models(daemon: Arc<Daemon>) -> Reply {
    let Some(scorer) = daemon.model.get() else {
        let none = ModelView {
            source: None,
            meta: None,
            recent_alarms: Vec::new(),
        };
        return json(200, &none);
    };
    let recent_alarms = match alarms(&daemon).await {
        Ok(a) => a,
        Err(e) => return store_error(&e),
    };
    let view = ModelView {
        source: Some(scorer.source.clone()),
        meta: serde_json::to_value(&scorer.model.meta).ok(),
        recent_alarms,
    };
    json(200, &view)
}

/// The newest deployments decided against, each with its first live
/// window over the threshold and the model's explanation of it.
async fn alarms(daemon: &Daemon) -> Result<Vec<AlarmExplained>, StoreError> {
    let Some(scorer) = daemon.model.get() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in daemon.store.deploys().await?.into_iter().rev() {
        if out.len() == EXPLAINED {
            break;
        }
        let decided = daemon.store.decisions(&row.id).await?;
        if !decided.iter().any(|d| d.verdict != "commit") {
            continue;
        }
        let windows = daemon.store.windows(&row.id).await?;
        let scorer = scorer.clone();
        let found = tokio::task::spawn_blocking(move || explain_first(&scorer.model, &windows))
            .await
            .ok()
            .flatten();
        if let Some((seq, p, threshold, features)) = found {
            out.push(AlarmExplained {
                deployment: row.id,
                package: row.package,
                seq,
                p_failure: p,
                threshold,
                features,
            });
        }
    }
    Ok(out)
}

type Explained = (u64, f64, f64, Vec<(String, f64)>);

fn explain_first(model: &crate::predict::model::Model, windows: &[Window]) -> Option<Explained> {
    let scored = score(model, windows).ok()?;
    let t = (scored.iter()).position(|w| w.live_p >= w.threshold || w.beyond.is_some())?;
    let mut live: Vec<&Window> = windows
        .iter()
        .filter(|w| w.stream == Stream::Live)
        .collect();
    live.sort_by_key(|w| w.seq);
    live.dedup_by_key(|w| w.seq);
    let rows: Vec<Vec<f64>> = live.iter().map(|w| w.features.clone()).collect();
    let features = model.explain_alarm(&rows, t, 5);
    let w = &scored[t];
    Some((w.index, w.live_p, w.threshold, features))
}
