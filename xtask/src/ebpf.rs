//! `cargo xtask build-ebpf`: compile agent-ebpf for bpfel-unknown-none.
//!
//! The toolchain, target and linker flags live in agent-ebpf's own
//! rust-toolchain.toml and .cargo/config.toml; this only runs the build and
//! says where the object is. agent/build.rs embeds it from there.

use anyhow::{Context, Result};

use crate::util;

pub fn build() -> Result<()> {
    let dir = util::root().join("agent-ebpf");
    let mut cmd = util::cargo(&["build", "--release"]);
    cmd.current_dir(&dir);
    util::step("build-ebpf (nightly, bpfel-unknown-none, BTF)", cmd)?;
    let obj = dir.join("target/bpfel-unknown-none/release/backstop-probes");
    let meta = std::fs::metadata(&obj).with_context(|| {
        format!(
            "the probe object {} is missing after the build",
            obj.display()
        )
    })?;
    eprintln!("build-ebpf: {} ({} bytes)", obj.display(), meta.len());
    Ok(())
}

/// Setup, the probes, then release builds of `packages` (the agent embeds
/// the probes, so they come first). Returns target/release.
pub fn release(packages: &[&str]) -> Result<std::path::PathBuf> {
    crate::setup::run()?;
    build()?;
    let mut args = vec!["build", "--release"];
    for p in packages {
        args.extend(["-p", p]);
    }
    util::step(
        &format!("cargo build --release ({})", packages.join(", ")),
        util::cargo(&args),
    )?;
    Ok(util::target_dir().join("release"))
}
