//! Shared helpers for the end-to-end tests: where the binaries are, running
//! the agent, and the loud skip rule (skip when root or BPF is missing,
//! except under CI, where a skip is a failure).

#![allow(
    dead_code,
    reason = "each test crate includes this module and uses a different subset of it"
)]

pub mod agents;
pub mod cdp;
pub mod deploys;
pub mod fleet;
pub mod leftovers;
pub mod sentinel;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// target/<profile>/, found from this test executable (target/<profile>/deps/..).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn agent() -> PathBuf {
    let p = bin_dir().join("backstop-agent");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo xtask test does)",
        p.display()
    );
    p
}

/// `backstop-agent shadow --json --data DATA sweep`: removes every shadow
/// under DATA that no running agent holds.
pub fn shadow_sweep(data: &Path) -> std::process::Output {
    std::process::Command::new(agent())
        .args(["shadow", "--json", "--data"])
        .arg(data)
        .arg("sweep")
        .output()
        .unwrap()
}

pub fn workload() -> PathBuf {
    let p = bin_dir().join("backstop-workload");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first",
        p.display()
    );
    p
}

/// eBPF tests run one at a time: the leak checks look at every program
/// loaded in the kernel, and timing-sensitive workloads share two CPUs.
static EBPF: Mutex<()> = Mutex::new(());

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Ok(guard) when this test can load probes; otherwise a loud skip, which
/// under CI (CI=true) is a failure.
pub fn ebpf_or_skip(test: &str) -> Option<MutexGuard<'static, ()>> {
    let guard = EBPF
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let reason = if !is_root() {
        Some("not root".to_string())
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("kernel has no BTF".to_string())
    } else {
        None
    };
    match reason {
        None => Some(guard),
        Some(r) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "{test}: cannot run eBPF tests here ({r}), and under CI a skip is a failure"
            );
            eprintln!("\n*** SKIPPED {test}: needs root and eBPF ({r}) ***\n");
            None
        }
    }
}

/// `backstop-agent watch --json [extra] -- cmd`, with the parsed lines.
pub struct Watched {
    pub output: Output,
    pub windows: Vec<Value>,
    pub summary: Value,
}

impl Watched {
    /// Sum of a feature over every window.
    pub fn total(&self, name: &str) -> f64 {
        self.series(name).into_iter().sum()
    }

    /// Largest value of a feature over the windows.
    pub fn max(&self, name: &str) -> f64 {
        self.series(name).into_iter().fold(0.0, f64::max)
    }

    /// A feature's value per window, in order.
    pub fn series(&self, name: &str) -> Vec<f64> {
        self.windows
            .iter()
            .map(|w| {
                w["features"][name]
                    .as_f64()
                    .unwrap_or_else(|| panic!("window has no numeric feature {name}: {w}"))
            })
            .collect()
    }

    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

pub fn watch(extra: &[&str], cmd: &[&str]) -> Watched {
    let output = Command::new(agent())
        .arg("watch")
        .arg("--json")
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .expect("starting backstop-agent");
    parse(output)
}

pub fn parse(output: Output) -> Watched {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut windows = Vec::new();
    let mut summary = Value::Null;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "stdout line is not JSON ({e}): {line}\nstderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        if v.get("summary").is_some() {
            summary = v["summary"].clone();
        } else if v.get("features").is_some() {
            windows.push(v);
        }
    }
    assert!(
        !summary.is_null(),
        "no summary line; status {:?}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Watched {
        output,
        windows,
        summary,
    }
}

/// Poll `pred` until it holds or `timeout` passes; its last answer.
/// The children of `pid` (every thread's), from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

pub fn eventually(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred()
}

/// The cached .deb of `pkg` (cargo xtask test downloads them).
pub fn deb_file(pkg: &str) -> PathBuf {
    let debs = bin_dir().join("../xtask/debs");
    std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{pkg}_"))
        })
        .unwrap_or_else(|| panic!("{pkg}.deb missing from {}", debs.display()))
}

/// The cached Debian rootfs (`cargo xtask test` builds it), or a loud skip
/// (a failure under CI) when it is missing.
pub fn rootfs() -> Option<PathBuf> {
    let r = bin_dir().join("../xtask/rootfs-bookworm-minbase");
    if r.join(".backstop-complete").exists() {
        return Some(std::fs::canonicalize(r).unwrap());
    }
    assert!(
        std::env::var("CI").is_err(),
        "the Debian rootfs fixture is missing under CI (cargo xtask test builds it)"
    );
    eprintln!("*** SKIPPED: the rootfs fixture is missing (cargo xtask test makes it) ***");
    None
}

/// hello repacked with a postinst that exits 1.
pub fn failing_hello(dir: &std::path::Path) -> PathBuf {
    repacked_hello(dir, "hello-bad", |work| {
        let postinst = work.join("DEBIAN/postinst");
        std::fs::write(
            &postinst,
            "#!/bin/sh\necho failing on purpose >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(
            &postinst,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .unwrap();
    })
}

/// hello's .deb unpacked into `dir`, changed by `edit` (given the
/// unpacked tree), and built again as `dir/<name>.deb`.
pub fn repacked_hello(
    dir: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&std::path::Path),
) -> PathBuf {
    let work = dir.join(format!("repack-{name}"));
    let ok = Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb_file("hello"))
        .arg(&work)
        .status()
        .unwrap();
    assert!(ok.success());
    edit(&work);
    let deb = dir.join(format!("{name}.deb"));
    let built = Command::new("dpkg-deb")
        .arg("-b")
        .arg(&work)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    deb
}
