//! `backstop bench-decide` (hidden): the time from a window reaching the
//! controller to the decision, in process: for each failing install of a
//! generated corpus, the windows arrive one at a time and each arrival
//! runs what the daemon runs (score every window so far with the model,
//! then `decide`). Not counted: QUIC, the store's group commit and its
//! reads, which `bench ingest` measures.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use backstop_common::window::{Stream, Window};
use backstop_controller::daemon::scoring::score;
use backstop_controller::decide::evidence::{History, Phase};
use backstop_controller::decide::{Evidence, Params, Verdict, decide};
use backstop_controller::learn::corpus;
use backstop_controller::predict::model::Model;

/// JSON on stdout: per-window latency (median, p99, max) against the
/// window length, and how many failing installs were decided rollback.
pub fn run(model_dir: &Path, installs: usize) -> Result<i32> {
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
    println!(
        "{}",
        serde_json::json!({
            "decisions": us.len(), "failing_installs": failing.len(), "rolled_back": rolled_back,
            "window_ms": window_ms, "median_us": at(0.5), "p99_us": at(0.99), "max_us": at(1.0),
            "p99_over_window": at(0.99) / window_len_us,
        })
    );
    Ok(0)
}
