//! `backstop manifest check FILE [--json]`: lint a deployment manifest
//! without a daemon, so an SRE's CI refuses a bad one before anyone
//! deploys it. Exit 0: valid; 2: invalid (not TOML, or a field fails,
//! named by its dotted path on stderr); 1: the file cannot be read.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use backstop_common::manifest::{Manifest, ManifestError, Step, format_duration};
use clap::Subcommand;

use super::Exit;

#[derive(Subcommand)]
pub enum Action {
    /// Parse and validate FILE as `backstop deploy` would: print a summary
    /// (or, with --json, `{"valid": true, "manifest": ...}`), or the field
    /// at fault and why (exit code 2). Nothing is run or contacted.
    ///
    /// Example: backstop manifest check examples/hello.toml
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(action: Action) -> Result<i32> {
    match action {
        Action::Check { file, json } => check(&file, json),
    }
}

fn check(file: &Path, json: bool) -> Result<i32> {
    match Manifest::load(file) {
        Ok(m) => {
            if json {
                let out = serde_json::json!({ "valid": true, "manifest": m });
                println!("{out}");
            } else {
                print!("{}", summary(file, &m));
            }
            Ok(0)
        }
        Err(e) => {
            let code = if matches!(e, ManifestError::Read { .. }) {
                1
            } else {
                2
            };
            let field = e.field().map(str::to_string);
            let e = anyhow::Error::new(e);
            if json && code == 2 {
                let out = serde_json::json!({
                    "valid": false,
                    "file": file,
                    "field": field,
                    "error": format!("{e:#}"),
                });
                println!("{out}");
            }
            Err(e).context("manifest refused").context(Exit(code))
        }
    }
}

/// The manifest as an SRE checks it: one line per part, defaults filled.
#[expect(
    clippy::many_single_char_names,
    reason = "each short name lives for the one line that prints its part"
)]
fn summary(file: &Path, m: &Manifest) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "{}: valid manifest {:?}", file.display(), m.name);
    if let Some(p) = &m.package {
        let v = p.version.as_deref().unwrap_or("(any version)");
        let _ = writeln!(w, "  package   {} {v}", p.name);
    }
    let _ = writeln!(w, "  root      {}", m.root.display());
    let _ = writeln!(w, "  mode      {}", m.mode.as_str());
    let a = &m.artifact;
    let files: Vec<String> = a.debs.iter().map(|d| d.display().to_string()).collect();
    match &a.dir {
        Some(d) => _ = writeln!(w, "  artifact  dir {}", d.display()),
        None => _ = writeln!(w, "  artifact  {}", files.join(", ")),
    }
    if let Some(b) = &a.build {
        let _ = writeln!(w, "  build     {}", command(b));
    }
    for st in &m.steps {
        let _ = writeln!(w, "  step      {}", command(st));
    }
    let excl = if m.scope.exclude.is_empty() {
        String::new()
    } else {
        format!(" (excluding {})", m.scope.exclude.join(", "))
    };
    let paths: Vec<String> = m
        .scope
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let _ = writeln!(w, "  scope     {}{excl}", paths.join(", "));
    shadow_lines(w, m);
    for p in &m.probes {
        let budget = p.latency_budget.map_or(String::new(), |b| {
            format!(", budget {}", format_duration(b))
        });
        let _ = writeln!(
            w,
            "  probe     {} ({}) every {}, timeout {}{budget}",
            p.name,
            p.kind.type_name(),
            format_duration(p.interval),
            format_duration(p.timeout)
        );
    }
    let _ = writeln!(w, "  monitor   {}", format_duration(m.monitor.period));
    let g = &m.policy.guards;
    let threshold = m
        .policy
        .threshold
        .map_or("the model's own".to_string(), |t| t.to_string());
    let _ = writeln!(
        w,
        "  policy    threshold {threshold}; min_windows {}, history {}, max_latency_increase {}, exhaustion {}",
        g.min_windows,
        if g.history { "on" } else { "off" },
        g.max_latency_increase,
        if g.exhaustion { "on" } else { "off" }
    );
    for h in &m.rollback_hooks {
        let _ = writeln!(w, "  hook      {}", command(h));
    }
    s
}

fn shadow_lines(w: &mut String, m: &Manifest) {
    let sh = &m.shadow;
    if !sh.enabled {
        let _ = writeln!(w, "  shadow    off");
        return;
    }
    let l = &sh.limits;
    let cpu = l
        .cpu_percent
        .map_or(String::new(), |c| format!(", {c}% cpu"));
    let disk = l
        .disk_mb
        .map_or(String::new(), |d| format!(", {d} MiB disk"));
    let _ = writeln!(
        w,
        "  shadow    on, {} MiB, {} pids{cpu}{disk}",
        l.memory_mb, l.pids
    );
    for t in &sh.tests {
        let _ = writeln!(w, "  test      {}", command(t));
    }
}

fn command(s: &Step) -> String {
    format!(
        "{} ({}): {}",
        s.name,
        format_duration(s.timeout),
        s.run.join(" ")
    )
}
