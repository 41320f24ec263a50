//! What the learning verbs (train, eval, crossval) share: the training
//! flags, reading corpora, and the evaluation tables.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use backstop_controller::learn::{self, corpus, eval::Metrics};

pub(crate) fn read_corpus(dirs: &[PathBuf]) -> Result<Vec<corpus::Record>> {
    let refs: Vec<&Path> = dirs.iter().map(std::path::PathBuf::as_path).collect();
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

pub(crate) fn print_eval(e: &learn::Evaluation, json: bool) {
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
        e.records,
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
    print_held_out(&e.held_out);
}

pub(crate) const EARLY: &str = "early: failing deployments alarmed before their onset, over the failing ones that are not silent; tells: silent faults (nothing observable before their onset) alarmed before it, which is not foresight\n";

pub(crate) fn print_table(rows: &[Metrics]) {
    // As wide as the longest detector's name: the columns stay aligned.
    let w = rows.iter().map(|m| m.detector.len()).fold(40, usize::max);
    println!(
        "{:<w$} {:>7} {:>7} {:>7} {:>9} {:>7} {:>5} {:>9} {:>9}",
        "detector",
        "ROC AUC",
        "recall",
        "FPR",
        "precision",
        "early",
        "tells",
        "lead p50",
        "lead p10"
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
            tells,
            ..
        } = m;
        println!(
            "{detector:<w$} {roc_auc:>7.3} {recall:>7.3} {false_positive_rate:>7.3} {precision:>9.3} {recall_before_onset:>7.3} {tells:>5} {:>9} {:>9}",
            secs(*lead_time_median_ms),
            secs(*lead_time_p10_ms)
        );
    }
}

/// Per family rows under `title`: nothing when there are none.
pub(crate) fn print_families(families: &[learn::FamilyLead], title: &str) {
    if !families.is_empty() {
        println!("\n{title}:");
    }
    for f in families {
        let group = if f.group.is_empty() { "-" } else { &f.group };
        println!(
            "  {:<22} {:<9} {:>3} {:>3} {:>3}  {}{}",
            f.family,
            group,
            f.failing,
            f.caught,
            f.caught_before_onset,
            secs(f.lead_time_median_ms),
            if f.held_out { "  (held out)" } else { "" }
        );
    }
}

/// The held-out families' figures, apart from the rest.
pub(crate) fn print_held_out(families: &[learn::FamilyLead]) {
    print_families(
        families,
        "families held out of training, on packages the model did not train on either (group, failing, caught, before onset, median lead)",
    );
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or("-".to_string(), |v| format!("{:.1} s", v / 1000.0))
}

/// The model per fault family, and the first `limit` of its alarms with
/// what drove them.
pub(crate) fn print_model(
    families: &[learn::FamilyLead],
    alarms: &[learn::Alarm],
    title: &str,
    limit: usize,
) {
    print_families(
        families,
        "the model per fault family (group, failing, caught, before onset, median lead; before onset on a silent family is a tell)",
    );
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
            a.record,
            format!("{:?}", a.outcome).to_lowercase(),
            a.window,
            a.onset_window.map_or("-".into(), |o| o.to_string()),
            a.probability,
            drivers.join(", ")
        );
    }
}

/// How a model is trained, for `train` and `crossval` alike.
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct TrainingFlags {
    /// Seeds the split (or the folds), the initial weights and the batch
    /// order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of healthy deployments the threshold may alarm on.
    #[arg(long, default_value_t = 0.01)]
    target_fpr: f64,
    /// Passes over the training windows.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// How much a healthy install's window weighs in training against a
    /// failing one's: higher trades early alarms for fewer false ones.
    #[arg(long, default_value_t = 10.0)]
    healthy_weight: f64,
    /// Train the net alone, without the healthy envelope beside it (which
    /// alarms on a window beyond what every healthy install did, and needs
    /// no failure seen before): to measure what the envelope adds.
    #[arg(long)]
    no_envelope: bool,
    /// Calibrate the envelope's factor on the healthy installs that set its
    /// limits (as models before stop 18 did) instead of cross-fitted over
    /// five blocks of them: to measure what cross-fitting changes.
    #[arg(long)]
    envelope_in_sample: bool,
}

impl TrainingFlags {
    pub(crate) fn config(&self) -> anyhow::Result<backstop_controller::learn::train::TrainConfig> {
        let TrainingFlags {
            seed,
            target_fpr,
            epochs,
            healthy_weight,
            no_envelope,
            envelope_in_sample,
        } = *self;
        if !(0.0..1.0).contains(&target_fpr) {
            anyhow::bail!("--target-fpr {target_fpr}: must be in [0, 1)");
        }
        if !(healthy_weight.is_finite() && healthy_weight > 0.0) {
            anyhow::bail!("--healthy-weight {healthy_weight}: must be a positive number");
        }
        Ok(backstop_controller::learn::train::TrainConfig {
            seed,
            target_fpr,
            epochs,
            healthy_weight,
            envelope: !no_envelope,
            envelope_in_sample,
            ..Default::default()
        })
    }
}
