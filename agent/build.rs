//! Embeds the probe object that `cargo xtask build-ebpf` produced, so the
//! agent binary is self-contained. Without it the agent still builds (for
//! clippy, docs, unit tests) with an empty object, which `Probes::load`
//! turns into the one-line `ProbesMissing` error at run time.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let obj = manifest.join("../agent-ebpf/target/bpfel-unknown-none/release/backstop-probes");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("backstop-probes.o");
    println!("cargo:rerun-if-changed={}", obj.display());
    match std::fs::read(&obj) {
        Ok(bytes) => std::fs::write(&out, bytes).expect("writing the probe object to OUT_DIR"),
        Err(_) => {
            println!(
                "cargo:warning=probe object {} not found: run `cargo xtask build-ebpf`; this agent will refuse to load probes",
                obj.display()
            );
            std::fs::write(&out, []).expect("writing an empty probe object to OUT_DIR");
        }
    }
}
