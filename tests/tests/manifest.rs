//! `backstop manifest check`, the real binary: a good manifest passes with
//! its summary, a bad one exits 2 naming the field on stderr, and every
//! shipped example passes as an SRE's CI would run it.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::bin_dir;

fn check(args: &[&str], file: &Path) -> Output {
    std::process::Command::new(bin_dir().join("backstop"))
        .args(["manifest", "check"])
        .args(args)
        .arg(file)
        .output()
        .expect("running backstop manifest check")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A private scratch directory for this test's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("backstop-manifest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, body: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = r#"
name = "hello"
root = "rootfs"
[artifact]
debs = ["debs/hello_2.10-3_amd64.deb"]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{artifact}"]
timeout = "2m"
[scope]
paths = ["/usr/bin", "/var/lib/dpkg"]
"#;

#[test]
fn a_good_manifest_passes_with_its_summary_and_defaults() {
    let dir = Scratch::new("good");
    let file = dir.write("hello.toml", GOOD);
    let out = check(&[], &file);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("valid manifest \"hello\""), "{stdout}");
    // Relative paths are taken from the file's directory.
    let root = dir.0.join("rootfs");
    assert!(
        stdout.contains(&format!("root      {}", root.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("monitor   30s"),
        "the default period is shown: {stdout}"
    );

    let out = check(&["--json"], &file);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["valid"], true);
    assert_eq!(v["manifest"]["steps"][0]["timeout"], "2m", "{v}");
    assert_eq!(
        v["manifest"]["artifact"]["debs"][0],
        dir.0.join("debs/hello_2.10-3_amd64.deb").to_str().unwrap()
    );
}

#[test]
fn a_bad_manifest_exits_2_naming_the_field() {
    let dir = Scratch::new("bad");
    let bad = GOOD.replace("timeout = \"2m\"", "timeout = \"0s\"");
    let file = dir.write("bad.toml", &bad);
    let out = check(&[], &file);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("steps[0].timeout"),
        "the field is named: {stderr}"
    );
    assert!(
        stderr.contains(&file.display().to_string()),
        "the file is named: {stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout without --json");

    let typo = GOOD.replace("[scope]", "[scope]\nexclued = [\"/usr/bin/x\"]");
    let out = check(&["--json"], &dir.write("typo.toml", &typo));
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["valid"], false);
    assert_eq!(v["field"], "scope.exclued", "{v}");
}

#[test]
fn a_missing_file_exits_1_not_2() {
    let out = check(&[], Path::new("/nonexistent/backstop-manifest.toml"));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/nonexistent/backstop-manifest.toml"));
}

#[test]
fn every_shipped_example_passes() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&examples).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let out = check(&[], &path);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                text(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 3, "expected the three shipped examples, found {n}");
}
