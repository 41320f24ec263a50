//! Embed the default model (models/default, made by `cargo xtask
//! train-default`) when the checkout has one: the controller uses it until
//! a model is trained on the fleet's own history.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(default_model)");
    // Read at run time, not baked in with env!(): cargo may reuse this
    // script's binary across checkouts sharing a target directory, and a
    // path baked in by another checkout left its build without a model.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = std::path::Path::new(&manifest).join("../models/default");
    for f in ["model.json", "model.safetensors"] {
        println!("cargo::rerun-if-changed={}", dir.join(f).display());
    }
    if dir.join("model.json").exists() && dir.join("model.safetensors").exists() {
        println!("cargo::rustc-cfg=default_model");
    }
}
