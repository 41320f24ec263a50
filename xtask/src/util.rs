use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Where xtask keeps what it downloads or builds for the project's own use
/// (LLVM prefix, Debian rootfs, .deb files). Under target/ so `cargo clean`
/// forgets it and nothing lands outside the checkout.
pub fn cache_dir() -> PathBuf {
    target_dir().join("xtask")
}

/// `cargo` with the environment of the outer cargo removed, so an inner
/// build picks its own toolchain (rust-toolchain.toml) and settings.
pub fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(root());
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Run a command, inheriting stdio, and fail with its name if it fails.
pub fn step(what: &str, mut cmd: Command) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("starting {what} ({})", cmd.get_program().display()))?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

/// Build the release `backstop` (which embeds models/default as the
/// checkout has it) and return its path: the one build train-default and the
/// benches go through (the corpus verbs build it with the agent).
pub fn release_backstop() -> Result<PathBuf> {
    step(
        "cargo build --release -p backstop-controller --bin backstop",
        cargo(&[
            "build",
            "--release",
            "-p",
            "backstop-controller",
            "--bin",
            "backstop",
        ]),
    )?;
    Ok(target_dir().join("release/backstop"))
}

/// Run a command and return its stdout; fail with its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", cmd.get_program().display()))?;
    if !out.status.success() {
        bail!(
            "{} {:?} failed: {}: {}",
            cmd.get_program().display(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
