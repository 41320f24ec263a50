//! The model's vote in a deployment: the daemon loads the current model
//! once at start (`DATA/models/current`, else the built-in default; none:
//! deployments decide from steps, shadow and probes alone), and before each
//! decision scores the deployment's stored windows, live and shadow, into
//! the evidence's per-window P(failure), threshold and divergence.
//!
//! Why rescore every stored window each time: a score at window t is made
//! of the K windows up to t, and windows may arrive late or twice (the
//! agent's outbox redelivers); scoring the ordered, deduplicated stream the
//! store holds gives the same evidence whatever the arrival order. It is a
//! few ms for a deployment's hundreds of windows.
//!
//! The net sees only windows it has not scored before: a deployment's
//! scores are kept between its decisions (`score_cache.rs`).
//!
//! Inference runs in `spawn_blocking`: a slow model never stalls the agents'
//! sessions on the async runtime.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use backstop_common::control::{ProbeStatus, Progress};
use backstop_common::window::{Stream, Window};

pub use super::score_cache::{Cache, Scores};
use super::state::Daemon;
use crate::decide::Evidence;
use crate::decide::divergence::divergence;
use crate::decide::evidence::{WindowEvidence, WindowLength};
use crate::predict::model::{Model, ModelError};
use crate::store::{DeployRow, now_ms};

/// The model in use and where it came from.
pub struct Scorer {
    pub model: Model,
    pub source: String,
}

/// The daemon's model, set once at start (`None` inside: no model).
#[derive(Default)]
pub struct ModelSlot {
    model: OnceLock<Option<Arc<Scorer>>>,
    /// Why there is none (the load's error), said in every decision.
    why_none: OnceLock<String>,
}

impl ModelSlot {
    /// Load the current model of `data`; with none, log that deployments
    /// decide without it.
    pub fn load(&self, data: &Path) {
        let scorer = match Model::current(data) {
            Ok((model, source)) => {
                tracing::info!(model = source, "deployments are scored with this model");
                Some(Arc::new(Scorer { model, source }))
            }
            Err(e) => {
                tracing::warn!("no model ({e}): deployments decide without P(failure)");
                let _ = self.why_none.set(e.to_string());
                None
            }
        };
        self.set(scorer);
    }

    /// No model, on purpose: every decision says `why`.
    pub fn off(&self, why: &str) {
        tracing::info!("deployments decide without a model: {why}");
        let _ = self.why_none.set(why.to_string());
        self.set(None);
    }

    /// Use `scorer` (tests and the benchmark set their own). A second call
    /// changes nothing.
    pub fn set(&self, scorer: Option<Arc<Scorer>>) {
        let _ = self.model.set(scorer);
    }

    pub fn get(&self) -> Option<Arc<Scorer>> {
        self.model.get().cloned().flatten()
    }

    /// The window length a deployment that names none is watched in: the
    /// model's, where its figures were measured; without a model (or one
    /// that predates `window_ms`), the agent's default.
    pub fn window_ms(&self) -> u32 {
        self.get()
            .and_then(|s| s.model.meta.window_ms)
            .unwrap_or(backstop_common::window::DEFAULT_WINDOW_MS)
    }

    /// Why no model scores deployments (only meaningful when [`Self::get`]
    /// gives none).
    pub fn why_none(&self) -> String {
        self.why_none
            .get()
            .cloned()
            .unwrap_or_else(|| NO_MODEL.to_string())
    }
}

/// One stream's windows, in seq order (the store's order; sorted again so
/// any caller's order works), once each.
fn ordered(windows: &[Window], s: Stream) -> Vec<&Window> {
    let mut ws: Vec<&Window> = windows.iter().filter(|w| w.stream == s).collect();
    ws.sort_by_key(|w| w.seq);
    ws.dedup_by_key(|w| w.seq);
    ws
}

/// One stream's feature rows, in seq order.
fn rows(ws: &[&Window]) -> Vec<Vec<f64>> {
    ws.iter().map(|w| w.features.clone()).collect()
}

/// The evidence of every live window: its P(failure), the shadow's at the
/// same position (the same seconds since its install started), the
/// model's calibrated threshold, and the divergence over the model's
/// normaliser.
pub fn score(model: &Model, windows: &[Window]) -> Result<Vec<WindowEvidence>, ModelError> {
    Ok(scored(model, windows, &mut Scores::default())?.0)
}

/// The evidence, the live rows it scored, how many kept their score.
type Scoring = (Vec<WindowEvidence>, Vec<Vec<f64>>, usize);

/// [`score`], through `cache`, with the live stream's feature rows it
/// scored and how many live windows kept their score.
fn scored(model: &Model, windows: &[Window], cache: &mut Scores) -> Result<Scoring, ModelError> {
    let (live_ws, shadow_ws) = (
        ordered(windows, Stream::Live),
        ordered(windows, Stream::Shadow),
    );
    let (live, shadow) = (rows(&live_ws), rows(&shadow_ws));
    let kept = cache.live.update(model, &live_ws, &live)?;
    cache.shadow.update(model, &shadow_ws, &shadow)?;
    let (live_p, shadow_p) = (cache.live.p(), cache.shadow.p());
    let norm = &model.meta.normalizer;
    let mut beyond = model.beyond_all(&live).into_iter();
    let ev = live_p
        .iter()
        .enumerate()
        .map(|(t, &p)| WindowEvidence {
            index: live_ws[t].seq,
            live_p: p,
            shadow_p: shadow_p.get(t).copied(),
            threshold: model.meta.threshold,
            divergence: divergence(norm, &live, &shadow, t),
            // The 8-SD mark of schema v2 is never set again (`decide::range`).
            outside: None,
            host_outside: model.meta.host_range.outside(&live_ws[t].host),
            beyond: beyond.next().flatten(),
            drivers: Vec::new(),
        })
        .collect();
    Ok((ev, live, kept))
}

/// Most alarming windows explained per scoring: an explanation is one
/// batch through the net per window, and a deployment in trouble may
/// alarm on hundreds.
const EXPLAINED: usize = 32;

/// [`score`], and each window that alarms against `threshold` (the one
/// in force: a manifest's, else the model's) or beyond the envelope gets
/// the features that drove it, the first [`EXPLAINED`] of them.
pub fn score_explained(
    model: &Model,
    windows: &[Window],
    threshold: f64,
) -> Result<Vec<WindowEvidence>, ModelError> {
    score_cached(model, windows, threshold, &mut Scores::default())
}

/// [`score_explained`] through deployment's `cache`: the same evidence,
/// with the net run only on what the cache did not hold.
pub fn score_cached(
    model: &Model,
    windows: &[Window],
    threshold: f64,
    cache: &mut Scores,
) -> Result<Vec<WindowEvidence>, ModelError> {
    let (mut ev, live, kept) = scored(model, windows, cache)?;
    cache.keep_drivers(kept, threshold);
    let alarming = (ev.iter_mut().enumerate())
        .filter(|(_, w)| w.live_p > threshold || w.beyond.is_some())
        .take(EXPLAINED);
    for (t, w) in alarming {
        let drivers = cache.drivers.entry(t).or_insert_with(|| {
            (model.explain_alarm(&live, t, 3).into_iter())
                .map(|(f, _)| f)
                .collect()
        });
        w.drivers.clone_from(drivers);
    }
    Ok(ev)
}

/// What a decision's inputs name when the daemon has no model.
pub const NO_MODEL: &str = "no model";

/// A deployment's windows as the model saw them.
pub(super) struct Scored {
    pub windows: Vec<WindowEvidence>,
    /// The model's calibrated threshold; `None` without a model.
    pub threshold: Option<f64>,
    /// Where the model came from, or [`NO_MODEL`].
    pub model: String,
    /// Why no model scored them (said in the decision).
    pub no_model: Option<String>,
    /// Set when the live windows are not as long as the model's.
    pub window_length: Option<WindowLength>,
}

/// The live windows' length against `model_ms`, when it differs by more
/// than a tenth. Every live window but the last is full length, give or
/// take the timer's jitter, so their median is the deployment's length;
/// a deployment of one window gives only a lower bound, so only a longer
/// one is known to differ.
pub fn window_length(model_ms: Option<u32>, stored: &[Window]) -> Option<WindowLength> {
    let model_ms = model_ms?;
    let mut live: Vec<&Window> = stored.iter().filter(|w| w.stream == Stream::Live).collect();
    live.sort_by_key(|w| w.seq);
    live.dedup_by_key(|w| w.seq);
    let full = match live.len() {
        0 => return None,
        1 => &live[..],
        n => &live[..n - 1],
    };
    let only = live.len() == 1;
    let mut ns: Vec<u64> = full
        .iter()
        .map(|w| w.end_ns.saturating_sub(w.start_ns))
        .collect();
    ns.sort_unstable();
    let median = *ns.get(ns.len() / 2)?;
    let live_ms = u32::try_from((median + 500_000) / 1_000_000).unwrap_or(u32::MAX);
    let tolerance = model_ms / 10;
    let longer = live_ms > model_ms + tolerance;
    let shorter = !only && live_ms + tolerance < model_ms;
    (longer || shorter).then_some(WindowLength { live_ms, model_ms })
}

/// The scored `stored` windows of deployment `id`, off the async runtime.
/// No model, or an error (logged): no window evidence, and the deployment
/// decides from the rest.
pub(super) async fn windows(
    daemon: &Daemon,
    id: &str,
    mut cache: Cache,
    params: &crate::decide::Params,
) -> Scored {
    let Some(scorer) = daemon.model.get() else {
        daemon.kept.put(id, cache);
        let model = NO_MODEL.to_string();
        return Scored {
            windows: Vec::new(),
            threshold: None,
            model,
            no_model: Some(daemon.model.why_none()),
            window_length: None,
        };
    };
    let mut out = Scored {
        windows: Vec::new(),
        threshold: Some(scorer.model.meta.threshold),
        model: scorer.source.clone(),
        no_model: None,
        window_length: window_length(scorer.model.meta.window_ms, &cache.stored),
    };
    let threshold = params.threshold_for(scorer.model.meta.threshold);
    let outcome = tokio::task::spawn_blocking(move || {
        let ev = score_cached(&scorer.model, &cache.stored, threshold, &mut cache.scores);
        (ev, cache)
    })
    .await;
    match outcome {
        Ok((Ok(w), cache)) => {
            daemon.kept.put(id, cache);
            out.windows = w;
        }
        // An error drops the cache: the next decision scores afresh.
        Ok((Err(e), _)) => tracing::error!(deployment = id, "scoring windows: {e}"),
        Err(e) => tracing::error!(deployment = id, "the scoring task failed: {e}"),
    }
    out
}

/// Tell `deploy --wait` where the deployment is: the last step started,
/// the time since it was sent, the newest window's P(failure) live and
/// shadow, the threshold in force, and each probe's latest result.
pub(super) async fn progress(
    daemon: &Daemon,
    row: &DeployRow,
    e: &Evidence,
    threshold: Option<f64>,
) {
    let last = e.windows.last();
    let p = Progress {
        deployment: row.id.clone(),
        step: e.live_steps.last().map(|s| s.name.clone()),
        elapsed_ms: u64::try_from(now_ms() - row.created_ms).unwrap_or(0),
        p_failure_live: last.map(|w| w.live_p),
        p_failure_shadow: last.and_then(|w| w.shadow_p),
        threshold,
        probes: e
            .probes
            .iter()
            .filter_map(|p| {
                p.results.last().map(|r| ProbeStatus {
                    name: p.name.clone(),
                    ok: r.ok,
                    detail: r.detail.clone(),
                })
            })
            .collect(),
    };
    daemon.deploys.progress(&row.id, p).await;
}

#[cfg(test)]
#[path = "scoring_tests.rs"]
mod tests;
