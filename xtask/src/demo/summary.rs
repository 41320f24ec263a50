//! The demo's closing table, read from `backstop show ID --json`.

use serde_json::Value;

/// One line per deployment: id, package, decision, reason, lead time,
/// restored in.
pub fn print(shown: &[&Value]) {
    let rows: Vec<[String; 6]> = shown.iter().map(|s| row(s)).collect();
    let head = [
        "deployment",
        "package",
        "decision",
        "reason",
        "lead time",
        "restored in",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("    ");
        for (c, w) in cells.iter().zip(width) {
            s.push_str(&format!("{c:<w$}  "));
        }
        println!("{}", s.trim_end());
    };
    line(&head.map(String::from));
    line(&width.map(|w| "-".repeat(w)));
    for r in &rows {
        line(r);
    }
    println!(
        "\n    lead time: how long before the failing step would have ended the decision came\n    \
         (projected: the step was killed first, so its end is when the disk would have been full);\n    \
         restored in: from the decision to the host restored (the agent's own restore time in brackets)"
    );
}

fn row(s: &Value) -> [String; 6] {
    let d = &s["deployment"];
    let m = &s["manifest"];
    let pkg = match (
        m["package"]["name"].as_str(),
        m["package"]["version"].as_str(),
    ) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        _ => m["name"].as_str().unwrap_or("-").to_string(),
    };
    let decision = s["decisions"]
        .as_array()
        .and_then(|ds| ds.iter().find(|x| x["verdict"] != "continue"))
        .cloned()
        .unwrap_or(Value::Null);
    let verdict = format!(
        "{} ({})",
        decision["verdict"].as_str().unwrap_or("-"),
        d["state"].as_str().unwrap_or("-")
    );
    let reason = decision["reasons"]
        .as_array()
        .and_then(|r| r.first())
        .map_or_else(|| "-".to_string(), reason);
    let lead = &s["lead"];
    let lead_time = lead["lead_ms"].as_i64().map_or_else(
        || "-".to_string(),
        |ms| {
            format!(
                "{:.1} s ({})",
                ms as f64 / 1000.0,
                lead["step_end"].as_str().unwrap_or("?")
            )
        },
    );
    let restored = match (lead["restored_ms"].as_i64(), lead["decision_ms"].as_i64()) {
        (Some(r), Some(d)) => {
            let own = restore_ms(s).map_or(String::new(), |ms| format!(" [{ms:.0} ms]"));
            format!("{:.2} s{own}", (r - d) as f64 / 1000.0)
        }
        _ => "-".to_string(),
    };
    [
        d["id"].as_str().unwrap_or("-").to_string(),
        pkg,
        verdict,
        reason,
        lead_time,
        restored,
    ]
}

/// A reason in a few words, from its JSON form (decide/reason.rs).
fn reason(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    match r["kind"].as_str().unwrap_or("-") {
        "exhaustion" => format!(
            "trend: disk -{:.1} MiB/s, full in {:.0} s",
            f("rate_per_s") / 1_048_576.0,
            f("full_in_ms") / 1000.0
        ),
        "clean" => format!(
            "clean: {} windows, {} probe(s), shadow {}",
            r["windows"],
            r["probes"],
            if r["shadow"] == true { "passed" } else { "off" }
        ),
        "live_step" => format!("live step `{}` failed", r["name"].as_str().unwrap_or("?")),
        other => other.to_string(),
    }
}

/// The agent's own restore time, from the rolled_back event.
fn restore_ms(s: &Value) -> Option<f64> {
    s["events"]
        .as_array()?
        .iter()
        .find_map(|e| e["event"]["rolled_back"]["report"]["restore"]["duration_ms"].as_f64())
}
