//! `cargo xtask bench predict`: inference per window and model size.

use std::process::Command;

use anyhow::Result;

use crate::util;

pub(super) fn predict() -> Result<()> {
    let (backstop, base) = super::trained_model("bench-predict")?;
    let out = util::output(
        Command::new(&backstop)
            .env("RAYON_NUM_THREADS", "1")
            .args(["bench-predict", "--model"])
            .arg(base.join("model")),
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nbackstop predict: one core, batch of one, median of {} calls\n",
        v["calls"]
    );
    println!(
        "forward pass per window       {:>8.1} us   (target <= 100 us)",
        f("forward_us_median")
    );
    println!(
        "raw window to probability     {:>8.1} us",
        f("end_to_end_us_median")
    );
    println!(
        "model on disk                 {:>8.1} KB   (target <= 2048 KB)",
        f("model_bytes") / 1024.0
    );
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
