//! The deployment manifest reader on arbitrary text: it must return a
//! manifest or an error, never panic; a manifest it accepts keeps the
//! invariants its consumers rely on (scope paths absolute without `..`,
//! timeouts within bounds, argvs non-empty) and survives the wire.
#![no_main]

use std::path::Component;

use backstop_common::manifest::{MAX_DURATION, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Manifest::from_toml(text) else {
        return;
    };
    for p in m.scope.paths.iter().chain([&m.root]) {
        assert!(p.is_absolute(), "accepted a relative path {p:?}");
        assert!(
            !p.components().any(|c| c == Component::ParentDir),
            "accepted '..' in {p:?}"
        );
    }
    for s in m.steps.iter().chain(&m.shadow.tests).chain(&m.rollback_hooks) {
        assert!(!s.run.is_empty(), "accepted an empty argv in {}", s.name);
        assert!(
            !s.timeout.is_zero() && s.timeout <= MAX_DURATION,
            "accepted timeout {:?}",
            s.timeout
        );
    }
    let bytes = postcard::to_allocvec(&m).expect("an accepted manifest encodes");
    let back: Manifest = postcard::from_bytes(&bytes).expect("and decodes");
    assert_eq!(back, m, "the wire changed the manifest");
});
