//! `cargo xtask setup`: make a fresh machine able to build and test.
//!
//! Each step checks first and says "ok" or what it did, so running it again
//! is cheap and quiet.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Debian packages the build, tests and benchmarks use.
/// debootstrap + rsync: rootfs fixtures and the rollback benchmark;
/// libseccomp-dev: youki's seccomp; libelf-dev + zlib1g-dev + make: the
/// libbpf that libcgroups' `cgroupsv2_devices` builds (its eBPF device
/// filter on cgroup v2); dpkg-dev: repacking .debs;
/// prometheus-alertmanager: the real Alertmanager tests/tests/alerts.rs
/// posts alerts to (its service is not started: no systemd here, and the
/// test runs its own on loopback); systemd: `systemd-analyze verify` of
/// the packaged units (tests/tests/packaging.rs; nothing is started);
/// prometheus: `promtool check metrics`,
/// which tests/tests/metrics.rs runs on both /metrics bodies (on a systemd
/// host the package starts a server on :9090; no test uses or needs it);
/// chromium: the headless browser tests/tests/dashboard.rs drives over
/// the DevTools protocol (run with --no-sandbox, nothing installed beside).
const DEBIAN_PACKAGES: &[&str] = &[
    "debootstrap",
    "rsync",
    "libseccomp-dev",
    "libelf-dev",
    "zlib1g-dev",
    "make",
    "pkg-config",
    "dpkg-dev",
    "prometheus-alertmanager",
    "systemd",
    "prometheus",
    // corpus-resolve: the Packages list (curl, xz) and the checks
    // (unshare, fallocate for a fuller disk: util-linux; ip to bring lo
    // up in the check's network namespace: iproute2).
    "curl",
    "xz-utils",
    "util-linux",
    "iproute2",
    "chromium",
];

pub fn run() -> Result<()> {
    debian_packages()?;
    rust_src()?;
    bpf_linker()?;
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: debian packages ok ({})", DEBIAN_PACKAGES.join(", "));
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "setup: debian packages missing ({}) and not root: run `sudo apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing debian packages: {}", missing.join(", "));
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    util::step("apt-get update", update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    util::step("apt-get install", install)
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Facts about the nightly the probes build with, read off the toolchain.
struct Nightly {
    sysroot: PathBuf,
    llvm_major: String,
    /// The real libLLVM shared object in the toolchain's lib/ (the
    /// unversioned-looking `libLLVM-*.so` next to it is a linker script).
    libllvm: PathBuf,
}

fn nightly() -> Result<Nightly> {
    let version = util::output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("reading `rustc +nightly -vV` (is a nightly toolchain installed?)")?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` prints no LLVM version")?
        .trim()
        .to_string();
    let llvm_major = llvm.split('.').next().unwrap_or_default().to_string();
    let sysroot = PathBuf::from(
        util::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let lib = sysroot.join("lib");
    let prefix = format!("libLLVM.so.{llvm_major}");
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
                && is_elf(p)
        })
        .with_context(|| format!("no {prefix}* shared object in {}", lib.display()))?;
    Ok(Nightly {
        sysroot,
        llvm_major,
        libllvm,
    })
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

fn rust_src() -> Result<()> {
    let n = nightly()?;
    let marker = n.sysroot.join("lib/rustlib/src/rust/library/Cargo.lock");
    if marker.exists() {
        eprintln!("setup: rust-src for nightly ok");
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    util::step("rustup component add rust-src --toolchain nightly", cmd)
}

fn bpf_linker() -> Result<()> {
    let n = nightly()?;
    if let Ok(v) = util::output(Command::new("bpf-linker").arg("--version")) {
        // bpf-linker must share the nightly's LLVM: bitcode from a newer
        // LLVM does not load into an older one.
        if v.contains(&format!("LLVM {}", n.llvm_major)) || bpf_linker_llvm_matches(&n) {
            eprintln!(
                "setup: bpf-linker ok ({})",
                v.lines().next().unwrap_or("").trim()
            );
            return Ok(());
        }
        eprintln!("setup: bpf-linker present but built for another LLVM; rebuilding");
    }
    let prefix = util::cache_dir().join(format!("llvm-{}", n.llvm_major));
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let name = n
        .libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&n.libllvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), n.libllvm.display()))?;
    }
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        "^0.13",
        "--no-default-features",
        "--features",
        &format!("llvm-{}", n.llvm_major),
    ])
    .env("LLVM_PREFIX", &prefix);
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "CARGO"] {
        cmd.env_remove(var);
    }
    util::step(
        &format!(
            "cargo install bpf-linker (LLVM {} from the nightly's own lib/)",
            n.llvm_major
        ),
        cmd,
    )?;
    write_linker_stamp(&n)
}

/// bpf-linker's --version does not name its LLVM; remember what we built it
/// against next to the prefix instead.
fn stamp_path(n: &Nightly) -> PathBuf {
    util::cache_dir()
        .join(format!("llvm-{}", n.llvm_major))
        .join("bpf-linker.stamp")
}

fn write_linker_stamp(n: &Nightly) -> Result<()> {
    let stamp = stamp_path(n);
    std::fs::write(&stamp, n.libllvm.display().to_string())
        .with_context(|| format!("writing {}", stamp.display()))
}

fn bpf_linker_llvm_matches(n: &Nightly) -> bool {
    // Without a stamp (linker installed by hand), trust it only when it can
    // load the nightly's libLLVM, which `ldd` tells.
    if std::fs::read_to_string(stamp_path(n)).is_ok_and(|s| s == n.libllvm.display().to_string()) {
        return true;
    }
    let Ok(path) = util::output(Command::new("sh").args(["-c", "command -v bpf-linker"])) else {
        return false;
    };
    let Ok(ldd) = util::output(Command::new("ldd").arg(path.trim())) else {
        return false;
    };
    ldd.contains(&format!("libLLVM.so.{}", n.llvm_major)) && !ldd.contains("not found")
}
