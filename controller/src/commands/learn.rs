//! `backstop train` and `backstop eval`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use backstop_controller::predict::{self, corpus, eval::Metrics, model};

fn read_corpus(dirs: &[PathBuf]) -> Result<Vec<corpus::Deployment>> {
    let refs: Vec<&Path> = dirs.iter().map(|p| p.as_path()).collect();
    let all = corpus::read(&refs).context("reading the corpus")?;
    if all.is_empty() {
        anyhow::bail!(
            "--corpus: no deployments in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(all)
}

pub fn train(
    corpus_dirs: &[PathBuf],
    out: &Path,
    cfg: model::TrainConfig,
    json: bool,
) -> Result<i32> {
    let all = read_corpus(corpus_dirs)?;
    eprintln!(
        "backstop: training on {} deployments ({} failing), seed {}",
        all.len(),
        all.iter().filter(|d| d.failing()).count(),
        cfg.seed
    );
    let (m, e) = predict::train_and_evaluate(&all, &cfg).context("training")?;
    m.save(out)
        .with_context(|| format!("saving the model to {}", out.display()))?;
    print_eval(&e, json);
    if !json {
        println!(
            "model saved to {} (threshold {:.4}, corpus {})",
            out.display(),
            m.meta.threshold,
            &m.meta.corpus_digest[..12]
        );
    }
    Ok(0)
}

pub fn eval(model_dir: &Path, corpus_dirs: &[PathBuf], json: bool) -> Result<i32> {
    let m = model::Model::load(model_dir)
        .with_context(|| format!("--model {}", model_dir.display()))?;
    let all = read_corpus(corpus_dirs)?;
    let split = predict::test_split(&m, &all)
        .with_context(|| format!("--model {}", model_dir.display()))?;
    let e = predict::evaluate(&m, &split);
    print_eval(&e, json);
    Ok(0)
}

fn print_eval(e: &predict::Evaluation, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(e).expect("plain data serializes")
        );
        return;
    }
    println!(
        "split: {} train, {} validation, {} test ({} left out: package and fault variant in different parts)",
        e.split.train, e.split.validation, e.split.test, e.split.left_out
    );
    println!(
        "{} test deployments; thresholds for at most {:.1}% false alarms on healthy installs\n",
        e.deployments,
        e.target_fpr * 100.0
    );
    println!("{EARLY}");
    print_table(&e.detectors);
    print_model(
        &e.model_by_family,
        &e.model_alarms,
        "the model's alarms",
        20,
    );
}

pub fn crossval(
    corpus_dirs: &[PathBuf],
    cfg: model::TrainConfig,
    folds: u8,
    json: bool,
) -> Result<i32> {
    let all = read_corpus(corpus_dirs)?;
    eprintln!(
        "backstop: cross-validating over {folds} folds of {} deployments ({} failing), seed {}: one model per fold",
        all.len(),
        all.iter().filter(|d| d.failing()).count(),
        cfg.seed
    );
    let cv = predict::cross_validate(&all, &cfg, folds, |f| {
        eprintln!(
            "  fold {}/{folds}: trained on {}, calibrated on {}, tested on {}: recall {:.3}, FPR {:.3}, threshold {:.4}",
            f.fold + 1,
            f.split.train,
            f.split.validation,
            f.split.test,
            f.model.recall,
            f.model.false_positive_rate,
            f.threshold
        );
    })
    .context("cross-validating")?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&cv).expect("plain data serializes")
        );
        return Ok(0);
    }
    let (failing, healthy) = cv
        .detectors
        .first()
        .map_or((0, 0), |m| (m.failing, m.healthy));
    println!(
        "{} deployments tested once each ({failing} failing, {healthy} healthy; {} never tested: package and fault variant in different folds)",
        failing + healthy,
        cv.never_tested
    );
    println!(
        "each fold's thresholds for at most {:.1}% false alarms, chosen without its test part\n",
        cv.target_fpr * 100.0
    );
    println!("{EARLY}");
    print_table(&cv.detectors);
    let model_fpr = cv.detectors.first().map_or(0.0, |m| m.false_positive_rate);
    println!(
        "\nat equal false positives: each detector at the threshold that suits it best on these deployments, alarming on at most {:.1}% of healthy ones (the model's rate)\n",
        model_fpr * 100.0
    );
    print_table(&cv.at_model_fpr);
    println!(
        "\nthe same at {:.1}% (what a perfect calibration to the target would give)\n",
        cv.target_fpr * 100.0
    );
    print_table(&cv.at_target_fpr);
    let false_alarms: Vec<predict::Alarm> = cv
        .model_alarms
        .iter()
        .filter(|a| a.outcome == corpus::Outcome::Ok)
        .cloned()
        .collect();
    print_model(
        &cv.model_by_family,
        &false_alarms,
        "the model's false alarms on healthy installs",
        false_alarms.len(),
    );
    Ok(0)
}

const EARLY: &str =
    "early: failing deployments alarmed before their onset, over all failing ones\n";

fn print_table(rows: &[Metrics]) {
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>9} {:>7} {:>9} {:>9}",
        "detector", "ROC AUC", "recall", "FPR", "precision", "early", "lead p50", "lead p10"
    );
    for m in rows {
        let Metrics {
            detector,
            roc_auc,
            recall,
            false_positive_rate,
            precision,
            recall_before_onset,
            lead_time_median_ms,
            lead_time_p10_ms,
            ..
        } = m;
        println!(
            "{detector:<40} {roc_auc:>7.3} {recall:>7.3} {false_positive_rate:>7.3} {precision:>9.3} {recall_before_onset:>7.3} {:>9} {:>9}",
            secs(*lead_time_median_ms),
            secs(*lead_time_p10_ms)
        );
    }
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or("-".to_string(), |v| format!("{:.1} s", v / 1000.0))
}

/// The model per fault family, and the first `limit` of its alarms with
/// what drove them.
fn print_model(
    families: &[predict::FamilyLead],
    alarms: &[predict::Alarm],
    title: &str,
    limit: usize,
) {
    if !families.is_empty() {
        println!(
            "\nthe model per fault family (failing, caught, caught before onset, median lead):"
        );
    }
    for f in families {
        println!(
            "  {:<22} {:>3} {:>3} {:>3}  {}",
            f.family,
            f.failing,
            f.caught,
            f.caught_before_onset,
            secs(f.lead_time_median_ms)
        );
    }
    if !alarms.is_empty() {
        println!("\n{title} (first window, onset, what drove it):");
    }
    for a in alarms.iter().take(limit) {
        let drivers: Vec<String> = a
            .drivers
            .iter()
            .map(|(f, v)| format!("{f} ({v:+.2})"))
            .collect();
        println!(
            "  {:<32} {:<9} window {:>3} onset {:>4}  p={:.3}  {}",
            a.deployment,
            format!("{:?}", a.outcome).to_lowercase(),
            a.window,
            a.onset_window.map_or("-".into(), |o| o.to_string()),
            a.probability,
            drivers.join(", ")
        );
    }
}

/// µs per window (batch of one, this thread) over `calls` predictions, and
/// the model's size on disk. JSON on stdout.
pub fn bench(model_dir: &Path, calls: usize) -> Result<i32> {
    let m = model::Model::load(model_dir)
        .with_context(|| format!("--model {}", model_dir.display()))?;
    let d = &corpus::synthetic(1, 1, 1)[0];
    let x = m.inputs(d, &[d.windows.len() - 1])?;
    let mut us = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = std::time::Instant::now();
        let _ = m.forward(&x)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // End to end (raw values to probability), for the same window.
    let mut e2e = Vec::with_capacity(calls / 10);
    let one = corpus::Deployment {
        windows: d.windows[..1].to_vec(),
        ..d.clone()
    };
    for _ in 0..calls / 10 {
        let t = std::time::Instant::now();
        let _ = m.predict(&one)?;
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

pub fn show(data: &Path, json: bool) -> Result<i32> {
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
