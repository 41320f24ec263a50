//! `cargo xtask bench decide`: (a) of issue 15, the time from a window
//! reaching the controller to the decision, against the window length.
//! In process (`backstop bench-decide`): scoring every window so far and
//! `decide`, as the daemon does per window batch; QUIC and the store are
//! `bench ingest`'s. (b) and (c), onset to restored against an
//! exit-code-only baseline, are `onset.rs`.

use std::process::Command;

use anyhow::Result;

use crate::util;

pub(super) fn decide(reps: usize) -> Result<()> {
    let (backstop, base) = super::trained_model("bench-decide")?;
    let out = util::output(
        Command::new(&backstop)
            .env("RAYON_NUM_THREADS", "1")
            .args(["bench-decide", "--model"])
            .arg(base.join("model")),
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nbackstop decide: window arrived -> scored -> decided, one core, {} decisions over {} failing installs ({} rolled back)\n",
        v["decisions"], v["failing_installs"], v["rolled_back"]
    );
    println!("  median   {:>9.0} µs", f("median_us"));
    println!("  p99      {:>9.0} µs", f("p99_us"));
    println!("  max      {:>9.0} µs", f("max_us"));
    println!(
        "  p99 / window ({} ms): {:.4} (target: within 1 window, < 1)",
        v["window_ms"],
        f("p99_over_window")
    );
    println!(
        "\none decision at the last of {} live and as many shadow windows (ten minutes of 250 ms windows) in a SQLite store:",
        v["long_windows"]
    );
    println!(
        "  every window read and scored afresh    {:>9.1} ms",
        f("long_afresh_ms")
    );
    println!(
        "  the kept windows and scores (daemon)   {:>9.1} ms",
        f("long_kept_ms")
    );
    println!(
        "  kept / afresh: {:.3}",
        f("long_kept_ms") / f("long_afresh_ms")
    );
    println!(
        "  its events (a memory sample per live window) read afresh {:>6.2} ms, kept {:>6.2} ms: {:.3}",
        f("long_events_afresh_ms"),
        f("long_events_kept_ms"),
        f("long_events_kept_ms") / f("long_events_afresh_ms")
    );
    super::onset::restore_race(reps)
}
