//! Embeds the probe object that `cargo xtask build-ebpf` produced, so the
//! agent binary is self-contained. Without it the agent still builds (for
//! clippy, docs, unit tests) and says at run time how to build the probes.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let obj = manifest.join("../agent-ebpf/target/bpfel-unknown-none/release/backstop-probes");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("backstop-probes.o");
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo::rustc-check-cfg=cfg(probes_missing)");
    match std::fs::read(&obj) {
        Ok(bytes) => std::fs::write(&out, bytes).expect("writing the probe object to OUT_DIR"),
        Err(_) => {
            println!(
                "cargo:warning=probe object {} not found: run `cargo xtask build-ebpf`; this agent will refuse to load probes",
                obj.display()
            );
            println!("cargo:rustc-cfg=probes_missing");
            std::fs::write(&out, []).expect("writing an empty probe object to OUT_DIR");
        }
    }
}
