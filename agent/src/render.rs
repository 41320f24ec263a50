//! What the binary prints: the human text and the `--json` objects of
//! shadow and snapshot reports. The bytes are a contract (tests/tests/
//! read them), so every format lives here, once, beside no logic.

use std::fmt::Write as _;

use backstop_agent::shadow::ShadowReport;
use backstop_agent::snapshot::{CreateReport, FsDiff, RestoreReport, Snapshot};

/// A report's `--json` form: its serde fields, as they are.
pub fn json(report: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_default()
}

/// `shadow bench` (test-seams): milliseconds per run, each side.
#[cfg(feature = "test-seams")]
pub fn bench(shadow_ms: &[f64], unshare_ms: &[f64]) -> serde_json::Value {
    serde_json::json!({"shadow_ms": shadow_ms, "unshare_ms": unshare_ms})
}

/// `shadow sweep`: one JSON object, or one line of what was swept.
pub fn sweep(swept: &[String], problems: &[String], json: bool) -> String {
    if json {
        return format!(
            "{}\n",
            serde_json::json!({"swept": swept, "problems": problems})
        );
    }
    let names = if swept.is_empty() {
        String::new()
    } else {
        format!(": {}", swept.join(" "))
    };
    format!("swept {} shadow(s){names}\n", swept.len())
}

/// `shadow run`: steps, verdict-relevant flags, the filesystem listing and,
/// when CMD failed, its output's tail.
pub fn shadow_text(r: &ShadowReport) -> String {
    let code = |c: Option<i32>| c.map_or("killed".to_string(), |c| c.to_string());
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "shadow {} over {}", r.id, r.root.display());
    let _ = writeln!(
        s,
        "  cmd   exit {:>6}  {:>9.1} ms  {}",
        code(r.cmd.exit_code),
        r.cmd.duration_ms.unwrap_or(0.0),
        r.cmd.command
    );
    for t in &r.tests {
        let _ = writeln!(
            s,
            "  test  exit {:>6}  {:>9.1} ms  {}",
            code(t.exit_code),
            t.duration_ms.unwrap_or(0.0),
            t.command
        );
    }
    if r.timed_out {
        let _ = writeln!(s, "  TIMED OUT: killed after the timeout");
    }
    if r.oom_killed {
        let _ = writeln!(s, "  OOM-killed {} time(s) (memory limit)", r.oom_kills);
    }
    let d = &r.diff;
    let _ = writeln!(
        s,
        "  filesystem: {} added, {} changed, {} removed",
        d.added.len(),
        d.changed.len(),
        d.removed.len()
    );
    s.push_str(&d.listing("    "));
    let _ = writeln!(
        s,
        "  {} windows, {} lost events",
        r.windows.len(),
        r.lost_events
    );
    if !r.cmd.output_tail.is_empty() && r.cmd.exit_code != Some(0) {
        let _ = writeln!(s, "  cmd output (tail):\n{}", r.cmd.output_tail);
    }
    s
}

/// `snapshot create`: the id, then what was stored.
pub fn created(r: &CreateReport) -> String {
    format!(
        "{}\t{} entries, {} bytes; hashed {} files ({} bytes)",
        r.id, r.entries, r.bytes, r.hashed_files, r.hashed_bytes
    )
}

/// `snapshot restore`: one line of what was done.
pub fn restored(r: &RestoreReport) -> String {
    let looked_at = match r.looked_at {
        Some(n) => format!("{n} entries looked at, from the change log"),
        None => "whole scope".to_string(),
    };
    let resumed = if r.resumed {
        " (finished an interrupted restore)"
    } else {
        ""
    };
    let verified = match r.verified {
        Some(true) => "; verified identical",
        Some(false) => "; VERIFY FOUND DIFFERENCES",
        None => "",
    };
    format!(
        "restored {} ({looked_at}): {} removed, {} files rewritten, {} recreated, {} metadata reset{resumed}{verified}",
        r.id, r.removed, r.content_restored, r.recreated, r.metadata_reset,
    )
}

fn scope_paths(s: &Snapshot) -> Vec<String> {
    s.scopes
        .iter()
        .map(|p| format!("/{}", String::from_utf8_lossy(p)))
        .collect()
}

/// `snapshot list --json`.
pub fn list_json(list: &[Snapshot]) -> serde_json::Value {
    let rows = list
        .iter()
        .map(|s| {
            serde_json::json!({"id": s.id, "root": s.root, "created_ms": s.created_ms,
                "entries": s.entries.len(), "bytes": s.bytes(), "scopes": scope_paths(s)})
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// `snapshot list`: one line per snapshot, oldest first.
pub fn list(list: &[Snapshot]) -> String {
    list.iter()
        .map(|s| {
            format!(
                "{}\t{}\t{} entries\t{} bytes",
                s.id,
                s.root.display(),
                s.entries.len(),
                s.bytes()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `snapshot show --json`.
pub fn show_json(s: &Snapshot) -> serde_json::Value {
    let entries: Vec<_> = s
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({"path": format!("/{}", String::from_utf8_lossy(&e.path)),
                "kind": format!("{:?}", e.kind), "mode": format!("{:o}", e.mode),
                "uid": e.uid, "gid": e.gid, "size": e.size, "hash": e.hash.map(hex::encode)})
        })
        .collect();
    serde_json::json!({"id": s.id, "root": s.root, "entries": entries})
}

/// `snapshot show`: one `ls -l`-like line per entry.
pub fn show(s: &Snapshot) -> String {
    s.entries
        .iter()
        .map(|e| {
            format!(
                "{:>7o} {:>5}:{:<5} {:>10} /{}",
                e.mode,
                e.uid,
                e.gid,
                e.size,
                String::from_utf8_lossy(&e.path)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `snapshot diff`: `+ added`, `~ changed`, `- removed`, one per line.
pub fn diff(d: &FsDiff) -> String {
    d.to_string()
}

/// `snapshot gc --json`.
pub fn gc_json(objects: u64, bytes: u64) -> serde_json::Value {
    serde_json::json!({"objects_freed": objects, "bytes_freed": bytes})
}

/// `snapshot gc`.
pub fn gc(objects: u64, bytes: u64) -> String {
    format!("freed {objects} objects, {bytes} bytes")
}
