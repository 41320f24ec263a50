//! The report as an SRE reads it in a terminal.

use std::fmt::Write;

use super::Report;

fn ms(at: i64, start: i64) -> String {
    format!("+{:.3}s", (at - start) as f64 / 1000.0)
}

/// `r` as text, most important first.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let pkg = r.package.as_deref().unwrap_or("-");
    let _ = writeln!(
        o,
        "deployment {} of `{}` (package {pkg}) on {}: {}",
        r.deployment, r.name, r.host, r.state
    );
    if let Some(reason) = &r.reason {
        let _ = writeln!(o, "reason: {reason}");
    }
    let start = r.timeline.first().map_or(0, |m| m.at_ms);
    let _ = writeln!(o, "\ntimeline:");
    for m in &r.timeline {
        let _ = writeln!(
            o,
            "  {:>9}  {:<12} {}",
            ms(m.at_ms, start),
            m.what,
            m.detail
        );
    }
    let _ = writeln!(o, "  {}", super::lead::text(&r.lead));
    failure(r, &mut o);
    match &r.decision {
        Some(d) => {
            let acted = if d.acted { "acted on" } else { "not acted on" };
            let _ = writeln!(o, "\ndecision: {} ({acted}): {}", d.verdict, d.reasons);
        }
        None => {
            let _ = writeln!(o, "\ndecision: none stored");
        }
    }
    let _ = writeln!(
        o,
        "\ndeviations from the baseline ({}: {}):",
        r.baseline.kind, r.baseline.detail
    );
    for d in &r.deviations {
        let _ = writeln!(
            o,
            "  {:<28} {:>14.3} vs {:>14.3} (sd {:.3}) {:>8.1} sd  [{}]",
            d.feature, d.value, d.baseline_mean, d.baseline_sd, d.score, d.unit
        );
    }
    let _ = writeln!(o, "\nfailing syscalls by errno: {}", r.errors_by_errno);
    let _ = writeln!(o, "\nlive against shadow ({}):", r.live_vs_shadow_note);
    for d in r.live_vs_shadow.iter().flatten() {
        let _ = writeln!(
            o,
            "  {:<28} live {:>14.3}  shadow {:>14.3}  ({:.0}% apart) [{}]",
            d.feature,
            d.live_mean,
            d.shadow_mean,
            d.relative * 100.0,
            d.unit
        );
    }
    o
}

fn failure(r: &Report, o: &mut String) {
    match &r.first_failure {
        Some(f) => {
            let _ = writeln!(
                o,
                "\nfirst failing {}: {} {} `{}` exited {}",
                f.kind,
                f.stream.as_str(),
                f.index,
                f.name,
                f.exit_code.map_or("nothing".into(), |c| c.to_string())
            );
            for e in &f.errors {
                let _ = writeln!(o, "  error: {e}");
            }
            let _ = writeln!(o, "  output tail:");
            for l in &f.output_tail {
                let _ = writeln!(o, "    {l}");
            }
        }
        None => {
            let _ = writeln!(o, "\nno step or shadow test failed");
        }
    }
}
