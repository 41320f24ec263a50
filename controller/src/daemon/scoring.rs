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
//! Inference runs in `spawn_blocking`: a slow model never stalls the agents'
//! sessions on the async runtime.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use backstop_common::control::{ProbeStatus, Progress};
use backstop_common::window::{Stream, Window};

use super::state::Daemon;
use crate::decide::Evidence;
use crate::decide::divergence::divergence;
use crate::decide::evidence::WindowEvidence;
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
    /// Held by the decider while it decides: one decision at a time.
    pub(super) serial: tokio::sync::Mutex<()>,
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

fn predict(model: &Model, rows: &[Vec<f64>]) -> Result<Vec<f64>, ModelError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    model.predict(rows)
}

/// The evidence of every live window: its P(failure), the shadow's at the
/// same position (the same seconds since its install started), the
/// model's calibrated threshold, and the divergence over the model's
/// normaliser.
pub fn score(model: &Model, windows: &[Window]) -> Result<Vec<WindowEvidence>, ModelError> {
    Ok(scored(model, windows)?.0)
}

/// [`score`], with the live stream's feature rows it scored.
fn scored(
    model: &Model,
    windows: &[Window],
) -> Result<(Vec<WindowEvidence>, Vec<Vec<f64>>), ModelError> {
    let live_ws = ordered(windows, Stream::Live);
    let (live, shadow) = (rows(&live_ws), rows(&ordered(windows, Stream::Shadow)));
    let live_p = predict(model, &live)?;
    let shadow_p = predict(model, &shadow)?;
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
    Ok((ev, live))
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
    let (mut ev, live) = scored(model, windows)?;
    let alarming = (ev.iter_mut().enumerate())
        .filter(|(_, w)| w.live_p > threshold || w.beyond.is_some())
        .take(EXPLAINED);
    for (t, w) in alarming {
        w.drivers = (model.explain_alarm(&live, t, 3).into_iter())
            .map(|(f, _)| f)
            .collect();
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
}

/// The scored `stored` windows of deployment `id`, off the async runtime.
/// No model, or an error (logged): no window evidence, and the deployment
/// decides from the rest.
pub(super) async fn windows(
    daemon: &Daemon,
    id: &str,
    stored: Vec<Window>,
    params: &crate::decide::Params,
) -> Scored {
    let Some(scorer) = daemon.model.get() else {
        let model = NO_MODEL.to_string();
        return Scored {
            windows: Vec::new(),
            threshold: None,
            model,
            no_model: Some(daemon.model.why_none()),
        };
    };
    let mut out = Scored {
        windows: Vec::new(),
        threshold: Some(scorer.model.meta.threshold),
        model: scorer.source.clone(),
        no_model: None,
    };
    let threshold = params.threshold_for(scorer.model.meta.threshold);
    let outcome =
        tokio::task::spawn_blocking(move || score_explained(&scorer.model, &stored, threshold))
            .await;
    match outcome {
        Ok(Ok(w)) => out.windows = w,
        Ok(Err(e)) => tracing::error!(deployment = id, "scoring windows: {e}"),
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
mod tests {
    use backstop_common::window::Window;

    use super::*;
    use crate::learn::corpus::synthetic;
    use crate::learn::train::{TrainConfig, train};

    fn windows(s: Stream, rows: &[Vec<f64>]) -> Vec<Window> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                let mut w = Window::new(s, i as u64 + 1, 0, 1);
                w.features = r.clone();
                w
            })
            .collect()
    }

    /// A generated corpus and a model trained on it in two epochs.
    fn tiny() -> (Vec<crate::learn::corpus::Record>, Model) {
        let all = synthetic(5, 4, 4);
        let cfg = TrainConfig {
            epochs: 2,
            ..Default::default()
        };
        let model = train(&all, &all, &cfg, "x".into()).expect("a tiny model trains");
        (all, model)
    }

    #[test]
    fn scoring_gives_each_live_window_both_streams_p_and_the_threshold() {
        let (all, model) = tiny();
        let failing = all.iter().find(|r| r.failing()).expect("a failing record");
        let healthy = all.iter().find(|r| !r.failing()).expect("a healthy record");
        // Live: the failing install; shadow: a healthy one, shorter.
        let shadow_rows = &healthy.windows[..healthy.windows.len().min(5)];
        let mut stored = windows(Stream::Shadow, shadow_rows);
        // Out of order and once redelivered: scoring must not care.
        let mut live = windows(Stream::Live, &failing.windows);
        live.reverse();
        live.push(live[0].clone());
        stored.extend(live);
        let ev = score(&model, &stored).expect("scores");
        assert_eq!(ev.len(), failing.windows.len(), "one entry per live window");
        let want = model.predict(&failing.windows).expect("predicts");
        let want_shadow = model.predict(shadow_rows).expect("predicts");
        for (t, w) in ev.iter().enumerate() {
            assert_eq!(w.index, t as u64 + 1);
            assert_eq!(w.live_p, want[t], "window {t}");
            assert_eq!(w.shadow_p, want_shadow.get(t).copied(), "window {t}");
            assert_eq!(w.threshold, model.meta.threshold);
            assert_eq!(w.divergence.is_some(), t < shadow_rows.len());
        }
        assert!(score(&model, &[]).expect("no windows").is_empty());
    }

    /// Every window that alarms against the threshold in force carries
    /// what drove it; no other window does.
    #[test]
    fn alarming_windows_are_explained_against_the_threshold_in_force() {
        let (all, model) = tiny();
        let failing = all.iter().find(|r| r.failing()).expect("a failing record");
        let stored = windows(Stream::Live, &failing.windows);
        // A threshold in the middle of this install's scores: some windows
        // alarm, some do not.
        let mut ps = model.predict(&failing.windows).expect("predicts");
        ps.sort_by(f64::total_cmp);
        let thr = ps[ps.len() / 2];
        let ev = score_explained(&model, &stored, thr).expect("scores");
        let mut explained = 0;
        for w in &ev {
            let alarms = w.live_p > thr || w.beyond.is_some();
            assert_eq!(!w.drivers.is_empty(), alarms, "window {}: {w:?}", w.index);
            explained += usize::from(alarms);
        }
        assert!(
            explained > 0 && explained < ev.len(),
            "{explained} of {}",
            ev.len()
        );
    }
    /// The shipped model's envelope, through the daemon's own scoring: a
    /// tree that computes with syscalls is inside it; the same tree
    /// stuck in a loop that never enters the kernel is beyond it from a
    /// few windows on, named as a spin.
    #[test]
    fn the_shipped_model_names_a_loop_without_syscalls_a_spin() {
        use crate::predict::envelope::SPIN_NAME;
        use backstop_common::features::{FEATURES, feature};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let model = Model::load(&root.join("models/default")).expect("the shipped model loads");
        let computing = |syscalls: f64| {
            let mut w = vec![0.0; FEATURES.len()];
            w[feature::SCHED_ON_CPU_NS] = 240e6;
            w[feature::SYSCALLS_TOTAL] = syscalls;
            w[feature::SYSCALLS_FILE] = syscalls;
            w[feature::TREE_PROCESSES] = 3.0;
            w[feature::TREE_OPEN_FDS] = 12.0;
            w
        };
        let busy = vec![computing(400.0); 40];
        let ev = score(&model, &windows(Stream::Live, &busy)).expect("scores");
        assert!(ev.iter().all(|w| w.beyond.is_none()), "{ev:?}");
        let mut stuck = vec![computing(400.0); 4];
        stuck.extend(vec![computing(0.0); 36]);
        let ev = score(&model, &windows(Stream::Live, &stuck)).expect("scores");
        let first = ev
            .iter()
            .position(|w| w.beyond.is_some())
            .expect("a spin alarms");
        // Past the floor's second times the factor, well before the end.
        assert!((8..20).contains(&first), "first beyond at window {first}");
        for w in &ev[first..] {
            let b = w.beyond.as_ref().expect("stays beyond while it spins");
            assert_eq!(b.feature, SPIN_NAME, "{b:?}");
        }
    }
}
