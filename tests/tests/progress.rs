//! Progress of long work (`snapshot create`, `train`; `corpus run` uses the
//! same helper): plain lines on stderr when no person watches, a bar only
//! on a terminal and never with `--json`, and stdout always the verb's own
//! output. The real binaries, a real snapshot store and a real (small)
//! training run.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{agent, bin_dir};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("backstop-progress-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `N/M (P%)` counts of the plain lines starting with `prefix`.
fn counts(stderr: &str, prefix: &str) -> Vec<(u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (n, m) = rest.split(' ').next()?.split_once('/')?;
            Some((n.parse().ok()?, m.parse().ok()?))
        })
        .collect()
}

/// Plain lines: ascending counts that end at the total, no bar drawing.
fn assert_plain(stderr: &str, prefix: &str, total: u64) {
    let c = counts(stderr, prefix);
    assert!(!c.is_empty(), "no progress lines {prefix:?}: {stderr}");
    assert!(c.windows(2).all(|w| w[0].0 < w[1].0), "ascending: {c:?}");
    assert_eq!(
        c.last(),
        Some(&(total, total)),
        "ends at the total: {stderr}"
    );
    assert!(c.len() <= 10, "a line per tenth, not per unit: {c:?}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "no bar, no escape codes off a terminal: {stderr:?}"
    );
}

fn corpus(dir: &Path) -> PathBuf {
    let c = dir.join("corpus");
    let out = Command::new(bin_dir().join("backstop"))
        .args([
            "corpus",
            "synth",
            "--packages",
            "12",
            "--per-package",
            "6",
            "--out",
        ])
        .arg(&c)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c
}

#[test]
fn snapshot_create_reports_plain_lines_on_stderr_and_keeps_stdout_json() {
    let dir = scratch("snapshot");
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    for i in 0..40 {
        std::fs::write(root.join(format!("etc/app/f{i}")), format!("{i}\n")).unwrap();
    }
    let out = Command::new(agent())
        .args(["snapshot", "--data"])
        .arg(dir.join("data"))
        .args(["create", "--json", "--root"])
        .arg(&root)
        .args(["--scope", "/etc"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {stdout:?}"));
    let entries = v["entries"].as_u64().unwrap();
    assert_eq!(entries, 42, "etc, etc/app and 40 files: {v}");
    assert!(
        stderr.contains("backstop-agent: snapshot: walking the scope"),
        "{stderr}"
    );
    assert_plain(&stderr, "backstop-agent: snapshot: ", entries);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_reports_epochs_as_plain_lines_and_keeps_stdout_json() {
    let dir = scratch("train");
    let c = corpus(&dir);
    let out = Command::new(bin_dir().join("backstop"))
        .args(["train", "--json", "--epochs", "20", "--corpus"])
        .arg(&c)
        .arg("--out")
        .arg(dir.join("model"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {stdout:?}"));
    assert!(v["detectors"].is_array(), "{v}");
    assert_plain(&stderr, "backstop: train: ", 20);
    let _ = std::fs::remove_dir_all(&dir);
}

/// On a terminal (a pty from util-linux's `script`), the bar is drawn;
/// with `--json` on the same terminal it is not.
#[test]
fn a_terminal_gets_a_bar_unless_json_was_asked_for() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "script (bsdutils) missing under CI"
        );
        eprintln!("*** SKIPPED: no `script` to make a terminal ***");
        return;
    }
    let dir = scratch("tty");
    let c = corpus(&dir);
    let train = |json: bool| {
        let cmd = format!(
            "{} train {} --epochs 10 --corpus {} --out {} >/dev/null",
            bin_dir().join("backstop").display(),
            if json { "--json" } else { "" },
            c.display(),
            dir.join("model").display()
        );
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let bar = train(false);
    assert!(
        bar.contains("backstop: train [") && bar.contains("10/10"),
        "{bar:?}"
    );
    let plain = train(true);
    assert!(
        !plain.contains("backstop: train ["),
        "no bar with --json: {plain:?}"
    );
    assert!(plain.contains("backstop: train: 10/10 (100%)"), "{plain:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
