//! `backstop bench-decide` (hidden): the time from a window reaching the
//! controller to the decision, in process: for each failing install of a
//! generated corpus, the windows arrive one at a time and each arrival
//! runs what the daemon runs (score every window so far with the model,
//! then `decide`). Not counted: QUIC, the store's group commit and its
//! reads, which `bench ingest` measures.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use backstop_common::deploy::{DeployEvent, MemorySample};
use backstop_common::manifest::Manifest;
use backstop_common::window::{Stream, Window};
use backstop_controller::daemon::decider::evidence;
use backstop_controller::daemon::scoring::{Cache, score, score_cached, score_explained};
use backstop_controller::decide::evidence::{History, Phase};
use backstop_controller::decide::{Evidence, Params, Verdict, decide};
use backstop_controller::learn::corpus;
use backstop_controller::predict::model::Model;
use backstop_controller::store::{DeploymentKind, Store, default_url};

/// JSON on stdout: per-window latency (median, p99, max) against the
/// window length, and how many failing installs were decided rollback.
pub async fn run(model_dir: &Path, installs: usize) -> Result<i32> {
    let model =
        Model::load(model_dir).with_context(|| format!("--model {}", model_dir.display()))?;
    let records = corpus::synthetic(11, installs.max(1), 2);
    let failing: Vec<_> = records.iter().filter(|r| r.failing()).collect();
    let params = Params::default();
    let (mut us, mut rolled_back, mut window_ms) = (Vec::new(), 0usize, 1000u32);
    for r in &failing {
        window_ms = r.window_ms;
        let mut arrived: Vec<Window> = Vec::new();
        for (i, f) in r.windows.iter().enumerate() {
            let mut w = Window::new(Stream::Live, i as u64, 0, 0);
            w.features.clone_from(f);
            arrived.push(w);
            let started = Instant::now();
            let evidence = Evidence {
                phase: Phase::Installing,
                windows: score(&model, &arrived)?,
                live_steps: Vec::new(),
                shadow: None,
                probes: Vec::new(),
                performance: Vec::new(),
                history: History::default(),
                resources: backstop_controller::decide::trend::Resources::default(),
                no_model: None,
                window_length: None,
            };
            let decision = decide(&evidence, &params);
            us.push(started.elapsed().as_secs_f64() * 1e6);
            if decision.verdict == Verdict::Rollback {
                rolled_back += 1;
                break;
            }
        }
    }
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    let window_len_us = f64::from(window_ms) * 1000.0;
    let (afresh_ms, kept_ms, events) = long_deployment(&model, &records, LONG_WINDOWS).await?;
    println!(
        "{}",
        serde_json::json!({
            "decisions": us.len(), "failing_installs": failing.len(), "rolled_back": rolled_back,
            "window_ms": window_ms, "median_us": at(0.5), "p99_us": at(0.99), "max_us": at(1.0),
            "p99_over_window": at(0.99) / window_len_us,
            "long_windows": LONG_WINDOWS, "long_afresh_ms": afresh_ms, "long_kept_ms": kept_ms,
            "long_events_afresh_ms": events.0, "long_events_kept_ms": events.1,
        })
    );
    Ok(0)
}

/// Removes the scratch store's directory, a failed run included.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ten minutes of 250 ms windows, live and shadow.
const LONG_WINDOWS: usize = 2400;

/// One decision at the last window of a long deployment, its windows in
/// a real store (a scratch SQLite file): every window read and scored
/// afresh, against the daemon's way (the windows and scores the decisions
/// before kept: only the two windows stored since are read and scored);
/// then its events (a memory sample per live window) read and made into
/// evidence afresh, against reading only the one stored since; medians of
/// 5, in ms.
async fn long_deployment(
    model: &Model,
    records: &[corpus::Record],
    n: usize,
) -> Result<(f64, f64, (f64, f64))> {
    let rows: Vec<&Vec<f64>> = records.iter().flat_map(|r| &r.windows).collect();
    let mut ws: Vec<Window> = Vec::with_capacity(2 * n);
    for i in 0..n {
        for s in [Stream::Live, Stream::Shadow] {
            let mut w = Window::new(s, i as u64 + 1, 0, 0);
            w.features.clone_from(rows[i % rows.len()]);
            ws.push(w);
        }
    }
    let threshold = model.meta.threshold;
    let dir = std::env::temp_dir().join(format!("backstop-bench-decide-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let removed = RemoveOnDrop(dir.clone());
    let store = Store::open(&default_url(&dir), true).await?;
    let (mut afresh, mut kept) = (Vec::new(), Vec::new());
    for rep in 0..5 {
        let id = format!("long{rep}");
        store
            .new_deployment(&id, "bench", DeploymentKind::Exec, &["bench".into()])
            .await?;
        store.insert_windows(&id, &ws[..ws.len() - 2]).await?;
        let mut cache = Cache::default();
        cache.refresh(&store, &id).await?;
        let (stored, scores) = cache.parts();
        score_cached(model, stored, threshold, scores)?;
        store.insert_windows(&id, &ws[ws.len() - 2..]).await?;
        let started = Instant::now();
        let all = store.windows(&id).await?;
        score_explained(model, &all, threshold)?;
        afresh.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        cache.refresh(&store, &id).await?;
        let (stored, scores) = cache.parts();
        score_cached(model, stored, threshold, scores)?;
        kept.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let events = long_events(&store, n).await?;
    drop(store);
    drop(removed);
    Ok((median(afresh), median(kept), events))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// [`long_deployment`]'s events: `n` memory samples stored, then per
/// repetition one more, read with the evidence made of all of them,
/// afresh and through a cache that read the rest before.
async fn long_events(store: &Store, n: usize) -> Result<(f64, f64)> {
    // Only stored, never run: a root and an artifact that need not exist.
    let manifest = Manifest::from_toml(concat!(
        "name = \"bench\"\nroot = \"/nonexistent\"\n",
        "[artifact]\ndir = \"/nonexistent-artifact\"\n",
        "[[steps]]\nname = \"install\"\nrun = [\"true\"]\n",
        "[scope]\npaths = [\"/opt/bench\"]\n",
    ))?;
    store
        .new_deploy("events", "bench", &manifest, false)
        .await?;
    let sample = |i: u64| DeployEvent::LiveMemory {
        sample: MemorySample {
            index: i,
            at_ms: i as f64 * 250.0,
            current_bytes: 64 << 20,
            limit_bytes: 1 << 30,
            oom_kills: 0,
        },
    };
    for i in 0..n as u64 {
        store.add_deploy_event("events", i, &sample(i)).await?;
    }
    let mut cache = Cache::default();
    cache.refresh_events(store, "events").await?;
    let (mut afresh, mut kept) = (Vec::new(), Vec::new());
    for rep in 0..5u64 {
        let seq = n as u64 + rep;
        store.add_deploy_event("events", seq, &sample(seq)).await?;
        let started = Instant::now();
        let all: Vec<DeployEvent> = (store.deploy_events("events").await?)
            .into_iter()
            .map(|r| r.event)
            .collect();
        std::hint::black_box(evidence(&all, 1));
        afresh.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        cache.refresh_events(store, "events").await?;
        std::hint::black_box(evidence(cache.events(), 1));
        kept.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(afresh), median(kept)))
}
