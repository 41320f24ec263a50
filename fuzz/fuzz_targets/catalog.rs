//! The catalog reader on arbitrary text: it must return a catalog or an
//! error, never panic; and a catalog it accepts names no path outside its
//! directories.
#![no_main]

use backstop_controller::learn::catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = catalog::parse(text, "fuzz.toml") {
        for s in &c.scenarios {
            for name in [&s.name, &s.package] {
                assert!(
                    !name.is_empty() && name != "." && name != ".." && !name.contains('/'),
                    "accepted a name that is not one path component: {name:?}"
                );
            }
        }
    }
});
