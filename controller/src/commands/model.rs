//! `backstop model`: the model in use, where it is from and how it did.

use std::path::Path;

use anyhow::Result;
use backstop_controller::predict::model;

pub fn run(data: &Path, json: bool) -> Result<i32> {
    let (m, source) = model::Model::current(data)?;
    if json {
        println!("{}", serde_json::json!({"source": source, "meta": m.meta}));
        return Ok(0);
    }
    println!("model: {source}");
    println!(
        "schema {} ({} features), {} windows of context, threshold {:.4} (target {:.1}% false alarms)",
        m.meta.schema,
        m.meta.features.len(),
        m.meta.k,
        m.meta.threshold,
        m.meta.target_fpr * 100.0
    );
    println!(
        "trained on {} deployments, corpus {}, seed {}, split rule {}, healthy windows weighed {}x",
        m.meta.trained_on,
        m.meta.corpus_digest,
        m.meta.seed,
        if m.meta.split_rule.is_empty() {
            "(not recorded)"
        } else {
            &m.meta.split_rule
        },
        m.meta.healthy_weight
    );
    println!("{}", windows(m.meta.window_ms));
    if !m.meta.masked.is_empty() {
        println!(
            "the net is given as zero (its corpus cannot teach them): {}",
            m.meta.masked.join(", ")
        );
    }
    match &m.meta.envelope {
        Some(e) => print_envelope(e),
        None => println!("healthy envelope: none (the net alone decides)"),
    }
    let range = &m.meta.host_range.conditions;
    if range.is_empty() {
        println!("host range: not recorded (the corpus had no host levels)");
    }
    for r in range {
        println!(
            "host range: {} {:.3}..{:.3} (a window outside is noted in decisions)",
            r.name, r.min, r.max
        );
    }
    if let Some(e) = &m.meta.evaluation
        && let Ok(e) = serde_json::from_value::<serde_json::Value>(e.clone())
    {
        for d in e["detectors"].as_array().into_iter().flatten() {
            println!(
                "  {:<40} recall {:.3}  FPR {:.3}  AUC {:.3}",
                d["detector"].as_str().unwrap_or(""),
                d["recall"].as_f64().unwrap_or(0.0),
                d["false_positive_rate"].as_f64().unwrap_or(0.0),
                d["roc_auc"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(0)
}

/// The line on the model's window length.
fn windows(window_ms: Option<u32>) -> String {
    match window_ms {
        Some(ms) => format!(
            "windows: {ms} ms (its figures hold for deployments in {ms} ms windows; a decision notes any other length)"
        ),
        None => "windows: not recorded (trained before window lengths were)".into(),
    }
}

/// The envelope's factor and every limit it watches.
fn print_envelope(e: &backstop_controller::predict::envelope::Envelope) {
    println!(
        "healthy envelope: a window alarms when one of {} watched features (or {} running totals since the deployment began{}) is over {:.2}x its limit: the highest value 99% of healthy training installs stayed under, times the rule's scale where its healthy tail reaches further (target {:.1}% false alarms); limits (scale):",
        e.features.len(),
        e.totals.len(),
        if e.spin.is_some() {
            ", or the spin: ms on a CPU without a syscall"
        } else {
            ""
        },
        e.threshold,
        e.target_fpr * 100.0
    );
    for (j, (f, l)) in (e.names().iter())
        .zip(e.limits.iter().chain(&e.totals).chain(&e.spin))
        .enumerate()
    {
        match e.scale(j) {
            _ if e.first_event(j) => {
                println!("  {f:<32} the first one alarms (no healthy training install had one)");
            }
            s if s > 1.0 => println!("  {f:<32} {} ({l} x {s:.2})", l * s),
            _ => println!("  {f:<32} {l}"),
        }
    }
}
