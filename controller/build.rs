//! Embed the default model (models/default, made by `cargo xtask
//! train-default`) when the checkout has one: the controller uses it until
//! a model is trained on the fleet's own history.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(default_model)");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    for f in ["model.json", "model.safetensors"] {
        println!("cargo::rerun-if-changed={}", dir.join(f).display());
    }
    if dir.join("model.json").exists() && dir.join("model.safetensors").exists() {
        println!("cargo::rustc-cfg=default_model");
    }
}
