//! Seeded, bounded fuzzing of the readers of untrusted input, in the suite
//! (the coverage-guided targets are fuzz/fuzz_targets/*.rs, run by
//! `cargo xtask fuzz`): mutated valid inputs must give a value or an
//! error, never a panic. The frame decoder's twin is in common/src/wire.rs.
//! The snapshot manifest reader does not exist yet (issue 15), so it has
//! no test here.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use backstop_agent::changes::ChangeSet;
use backstop_controller::learn::catalog;

const CASES: usize = 20_000;

/// xorshift64: the same cases on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that reach deeper than random bytes: structure, path tricks,
/// numbers at the edges.
const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"..",
    b"/",
    b"../",
    b"\0",
    b"\\u0000",
    b"\\",
    b"-1",
    b"18446744073709551615",
    b"1e999",
    b"null",
    b"true",
    b"[[scenario]]",
    b"\xff\xfe",
    b"\xc3",
    b"name",
    b"package",
];

/// `seed` with up to 8 edits: a byte overwritten, a token inserted, a
/// span deleted or duplicated; then maybe truncated.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut buf = seed.to_vec();
    for _ in 0..rng.below(9) {
        let at = rng.below(buf.len() + 1);
        match rng.below(4) {
            0 if !buf.is_empty() => {
                let i = rng.below(buf.len());
                buf[i] = rng.next() as u8;
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                buf.splice(at..at, t.iter().copied());
            }
            2 => {
                let end = (at + rng.below(16)).min(buf.len());
                buf.drain(at..end);
            }
            _ => {
                let end = (at + rng.below(64)).min(buf.len());
                let span = buf[at..end].to_vec();
                buf.splice(at..at, span);
            }
        }
    }
    if rng.below(8) == 0 {
        buf.truncate(rng.below(buf.len() + 1));
    }
    buf
}

/// Runs `read` on `CASES` mutations of `seed`; panics with the input that
/// made the reader panic. Returns (values, errors).
#[expect(
    clippy::match_wild_err_arm,
    reason = "a caught panic's payload is opaque; the hook printed it, the message names the input"
)]
fn fuzz(seed: &[u8], rng_seed: u64, read: impl Fn(&[u8]) -> bool) -> (usize, usize) {
    let mut rng = Rng(rng_seed);
    let (mut ok, mut err) = (0, 0);
    for case in 0..CASES {
        let input = mutate(&mut rng, seed);
        match catch_unwind(AssertUnwindSafe(|| read(&input))) {
            Ok(true) => ok += 1,
            Ok(false) => err += 1,
            Err(_) => panic!(
                "case {case}: the reader panicked on {:?}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    (ok, err)
}

#[test]
fn the_change_log_reader_never_panics_on_mutations() {
    let seed = br#"{"backstop_changes":1}
{"path":"/opt/app/bin/tool","nr":257,"pid":4242}
{"path":"/opt/app/etc/app.conf","nr":82,"pid":4242}
{"ino":131073,"name":"lib/x.so","nr":263,"pid":4243}
{"ino":2,"name":"","nr":90,"pid":4243}
{"unresolved":"relative/name","nr":83,"pid":4244}
{"end":{"records":6,"lost":0,"unresolved":1}}
"#;
    assert!(
        ChangeSet::parse(&seed[..], Path::new("seed")).is_ok(),
        "the seed itself must be a valid change log"
    );
    let (ok, err) = fuzz(seed, 0x9e37_79b9_7f4a_7c15, |input| {
        ChangeSet::parse(input, Path::new("fuzz.changes")).is_ok()
    });
    eprintln!("change log: {ok} read, {err} refused of {CASES}");
    // Both outcomes reached: the mutations neither all break the header
    // nor all leave the log untouched.
    assert!(
        ok > 100 && err > 100,
        "{ok} read, {err} refused: the mutations miss the parser"
    );
}

#[test]
fn the_catalog_reader_never_panics_on_mutations() {
    let seed = br#"[defaults]
window_ms = 250
timeout_secs = 90
memory = 1073741824

[[scenario]]
name = "hello-healthy"
package = "hello"
seed = 3

[[scenario]]
name = "hello-blowup"
package = "hello"
fault = "memory-blowup"
magnitude = 2
delay = 1
timeout_secs = 30
"#;
    assert!(
        catalog::parse(std::str::from_utf8(seed).unwrap(), "seed").is_ok(),
        "the seed itself must be a valid catalog"
    );
    let (ok, err) = fuzz(seed, 0x2545_f491_4f6c_dd1d, |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return false;
        };
        match catalog::parse(text, "fuzz.toml") {
            Ok(c) => {
                // Whatever is accepted stays one path component.
                for s in &c.scenarios {
                    for name in [&s.name, &s.package] {
                        assert!(
                            !name.is_empty() && name != "." && name != ".." && !name.contains('/'),
                            "accepted {name:?} from {text:?}"
                        );
                    }
                }
                true
            }
            Err(_) => false,
        }
    });
    eprintln!("catalog: {ok} read, {err} refused of {CASES}");
    assert!(
        ok > 100 && err > 100,
        "{ok} read, {err} refused: the mutations miss the parser"
    );
}

#[test]
fn the_deployment_manifest_reader_never_panics_on_mutations() {
    use backstop_common::manifest::Manifest;
    let seed = include_bytes!("../../examples/web-service.toml");
    assert!(
        Manifest::from_toml(std::str::from_utf8(seed).unwrap()).is_ok(),
        "the seed itself must be a valid manifest"
    );
    let (ok, err) = fuzz(seed, 0x6a09_e667_f3bc_c908, |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return false;
        };
        match Manifest::from_toml(text) {
            Ok(m) => {
                // Whatever is accepted keeps its scope inside the root
                // and survives the wire unchanged.
                for p in &m.scope.paths {
                    assert!(
                        p.is_absolute() && !p.components().any(|c| c.as_os_str() == ".."),
                        "accepted scope path {p:?} from {text:?}"
                    );
                }
                let bytes = postcard::to_allocvec(&m).expect("encodes");
                let back: Manifest = postcard::from_bytes(&bytes).expect("decodes");
                assert_eq!(back, m, "the wire changed {text:?}");
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        }
    });
    eprintln!("manifest: {ok} read, {err} refused of {CASES}");
    assert!(
        ok > 100 && err > 100,
        "{ok} read, {err} refused: the mutations miss the parser"
    );
}
