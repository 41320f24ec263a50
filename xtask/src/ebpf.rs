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
