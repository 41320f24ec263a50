//! Embeds the probe object that `cargo xtask build-ebpf` produced, so the
//! agent binary is self-contained. Without it the agent still builds (for
//! clippy, docs, unit tests) with an empty object, which `Probes::load`
//! turns into the one-line `ProbesMissing` error at run time.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .expect("cargo sets CARGO_MANIFEST_DIR for build scripts"),
    );
    let obj = manifest.join("../agent-ebpf/target/bpfel-unknown-none/release/backstop-probes");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"))
            .join("backstop-probes.o");
    println!("cargo:rerun-if-changed={}", obj.display());
    if let Ok(bytes) = std::fs::read(&obj) {
        std::fs::write(&out, bytes).expect("writing the probe object to OUT_DIR");
    } else {
        println!(
            "cargo:warning=probe object {} not found: run `cargo xtask build-ebpf`; this agent will refuse to load probes",
            obj.display()
        );
        std::fs::write(&out, []).expect("writing an empty probe object to OUT_DIR");
    }
}
