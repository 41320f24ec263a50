//! `backstop bench-predict` (hidden): inference speed and model size.

use std::path::Path;

use anyhow::{Context, Result};
use backstop_controller::learn::corpus;
use backstop_controller::predict::model;

/// µs per window (batch of one, this thread) over `calls` predictions, and
/// the model's size on disk. JSON on stdout.
pub fn run(model_dir: &Path, calls: usize) -> Result<i32> {
    let m = model::Model::load(model_dir)
        .with_context(|| format!("--model {}", model_dir.display()))?;
    let d = &corpus::synthetic(1, 1, 1)[0];
    let x = m.inputs(&d.windows, &[d.windows.len() - 1])?;
    let mut us = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = std::time::Instant::now();
        let _ = m.forward(&x)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // End to end (raw values to the alarm score: the net's probability and
    // the healthy envelope), for the same window.
    let mut e2e = Vec::with_capacity(calls / 10);
    let one = d.windows[..1].to_vec();
    for _ in 0..calls / 10 {
        let t = std::time::Instant::now();
        let _ = m.score(&one)?;
        e2e.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let size = std::fs::metadata(model_dir.join("model.safetensors"))?.len()
        + std::fs::metadata(model_dir.join("model.json"))?.len();
    println!(
        "{}",
        serde_json::json!({"forward_us_median": median(&mut us), "end_to_end_us_median": median(&mut e2e), "model_bytes": size, "calls": calls})
    );
    Ok(0)
}
