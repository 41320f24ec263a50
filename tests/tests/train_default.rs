//! The default model is reproducible from a shipped corpus file: the real
//! `backstop` binary packs a corpus into gzip JSON lines, trains from the
//! file twice (with one thread and with two, as a laptop and CI would) and
//! gets the same bytes; and it refuses, before training, a corpus whose
//! digest is not the one it was told (what `cargo xtask train-default`
//! passes from models/default/model.json). Needs no root.
//!
//! The mechanism is tested on a generated corpus (`backstop corpus
//! synth`, whatever feature schema this build has); the shipped
//! models/default is then checked against the shipped recorded corpus.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::bin_dir;

fn backstop(args: &[&str]) -> Command {
    let mut c = Command::new(bin_dir().join("backstop"));
    c.args(args);
    c
}

fn ok(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn train(corpus: &Path, out: &Path, threads: &str, digest: Option<&str>) -> Output {
    let mut c = backstop(&["train", "--seed", "1", "--epochs", "3", "--corpus"]);
    c.arg(corpus)
        .arg("--out")
        .arg(out)
        .arg("--json")
        .env("RAYON_NUM_THREADS", threads);
    if let Some(d) = digest {
        c.args(["--expect-digest", d]);
    }
    c.output().unwrap()
}

#[test]
fn a_model_trained_twice_from_a_packed_corpus_has_the_same_bytes_and_a_wrong_digest_is_refused() {
    let base = std::env::temp_dir().join(format!("backstop-train-default-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _s = Scratch(base.clone());
    let synth = base.join("synth");
    let mut c = backstop(&[
        "corpus",
        "synth",
        "--packages",
        "16",
        "--per-package",
        "6",
        "--out",
    ]);
    c.arg(&synth);
    ok(c);
    let packed = base.join("deployments.jsonl.gz");
    let mut c = backstop(&["corpus", "pack", "--corpus"]);
    c.arg(&synth).arg("--out").arg(&packed);
    let said = String::from_utf8(ok(c).stdout).unwrap();
    let digest = said.rsplit("digest ").next().unwrap().trim().to_string();
    assert_eq!(digest.len(), 64, "pack printed no digest: {said}");
    // Packing again gives the same file.
    let again = base.join("again.jsonl.gz");
    let mut c = backstop(&["corpus", "pack", "--corpus"]);
    c.arg(&synth).arg("--out").arg(&again);
    ok(c);
    assert!(
        std::fs::read(&packed).unwrap() == std::fs::read(&again).unwrap(),
        "two packs of one corpus differ"
    );

    let (one, two) = (base.join("m1"), base.join("m2"));
    for (dir, threads) in [(&one, "1"), (&two, "2")] {
        let out = train(&packed, dir, threads, Some(&digest));
        assert!(
            out.status.success(),
            "training with {threads} thread(s) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for f in ["model.safetensors", "model.json"] {
        let (a, b) = (
            std::fs::read(one.join(f)).unwrap(),
            std::fs::read(two.join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs between one and two threads");
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(one.join("model.json")).unwrap()).unwrap();
    assert_eq!(
        meta["corpus_digest"],
        digest.as_str(),
        "the model names another corpus"
    );

    // One record fewer: another digest, refused before any training.
    let text = std::fs::read_to_string(synth.join("deployments.jsonl")).unwrap();
    let short = base.join("short.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&short, lines[1..].join("\n") + "\n").unwrap();
    let refused = base.join("m3");
    let out = train(&short, &refused, "1", Some(&digest));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a corpus with a record dropped was trained on"
    );
    assert!(
        err.contains("--expect-digest") && err.contains(&digest) && err.contains("not the corpus"),
        "the refusal does not say what differed: {err}"
    );
    assert!(!refused.exists(), "a refused corpus still wrote a model");
}

/// `eval --all` scores every record of a corpus the model never saw (a
/// fleet's own history), with no split; `--all` and `--lockbox` exclude
/// each other.
#[test]
fn eval_all_scores_every_record_of_a_corpus_recorded_elsewhere() {
    let base = std::env::temp_dir().join(format!("backstop-eval-all-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _s = Scratch(base.clone());
    let synth = |seed: &str, dir: &Path| {
        let mut c = backstop(&["corpus", "synth", "--packages", "16", "--per-package", "6"]);
        c.args(["--seed", seed, "--out"]).arg(dir);
        ok(c);
    };
    let (home, elsewhere) = (base.join("home"), base.join("elsewhere"));
    synth("1", &home);
    synth("9", &elsewhere);
    let trained = train(&home, &base.join("model"), "1", None);
    assert!(trained.status.success(), "{trained:?}");
    let mut c = backstop(&["eval", "--all", "--json", "--model"]);
    c.arg(base.join("model")).arg("--corpus").arg(&elsewhere);
    let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let lines = std::fs::read_to_string(elsewhere.join("deployments.jsonl")).unwrap();
    assert_eq!(v["deployments"], lines.lines().count(), "{v}");
    let model = &v["detectors"][0];
    assert_eq!(
        model["failing"].as_u64().unwrap() + model["healthy"].as_u64().unwrap(),
        lines.lines().count() as u64
    );
    let mut both = backstop(&["eval", "--all", "--lockbox", "--model"]);
    both.arg(base.join("model")).arg("--corpus").arg(&elsewhere);
    let out = both.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lockbox"));
}

/// The shipped default model is what the shipped recorded corpus trains
/// to, byte for byte, with this build (debug here; `cargo xtask
/// train-default --check` does the same with the release build): nobody
/// has to take models/default on trust.
#[test]
fn the_shipped_model_is_reproduced_from_the_shipped_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (packed, shipped) = (
        root.join("corpus/recorded/deployments.jsonl.gz"),
        root.join("models/default"),
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped.join("model.json")).unwrap()).unwrap();
    let digest = meta["corpus_digest"].as_str().unwrap();
    let base = std::env::temp_dir().join(format!("backstop-shipped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _s = Scratch(base.clone());
    let out = base.join("model");
    let mut c = backstop(&["train", "--seed", "1", "--corpus"]);
    c.arg(&packed)
        .arg("--out")
        .arg(&out)
        .args(["--expect-digest", digest])
        .env("RAYON_NUM_THREADS", "1");
    ok(c);
    for f in ["model.safetensors", "model.json"] {
        let (a, b) = (
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(shipped.join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs from models/default/{f}");
    }
}

/// The real failures found in stop 23 (nova-common and cinder-common,
/// whose postinst needs the host's name to resolve) have nothing
/// observable before the failing lookup: the shipped model must not
/// alarm before their onset, and the exit code must catch every one.
/// Stop 22's model "caught" all four early, on the running total of
/// ENOMEM errors (EAGAINs), that is on the size of the install.
#[test]
fn the_shipped_model_claims_no_foresight_of_the_real_failures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = backstop(&["eval", "--all", "--json", "--model"]);
    c.arg(root.join("models/default"))
        .arg("--corpus")
        .arg(root.join("corpus/recorded/real-failures.jsonl.gz"));
    let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let d = v["detectors"].as_array().unwrap();
    let model = &d[0];
    assert_eq!(model["failing"], 4, "{model}");
    assert_eq!(model["caught_before_onset"], 0, "{model}");
    let checks = d
        .iter()
        .find(|x| x["detector"].as_str().unwrap().starts_with("exit codes"))
        .unwrap();
    assert_eq!(checks["recall"], 1.0, "{checks}");
}

/// The shipped model scored on `corpus` with `eval --all --json`: the
/// deployments it alarmed on, by id.
fn alarmed(corpus: &Path) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = backstop(&["eval", "--all", "--json", "--model"]);
    c.arg(root.join("models/default"))
        .arg("--corpus")
        .arg(corpus);
    let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    let mut ids: Vec<String> = (v["model_alarms"].as_array().unwrap().iter())
        .map(|a| a["deployment"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Big and heavy healthy installs, recorded beside the corpus, which
/// holds none this big, are no alarm: closures of 132-326 packages (stop
/// 23), a JVM's first run, emacs and numpy (stop 24), TeX formats, a
/// database cluster, an initramfs, every locale, fonts, SciPy and a
/// compiler (stop 25). Stop 23's model alarmed on two of the big ones,
/// on p99 block latency (the queue a big unpack's own writes build), and
/// on the JVM, on the EAGAINs of one window; stop 24's on texlive and the
/// kernel, on a shell asleep on a pipe while its children worked.
///
/// One known false alarm is left with stop 30's model (trained on the
/// corpus recorded again with stop 29's probes), and with stop 31's
/// (its factor 3.2): lava-server-ok-0 at window 265, on the envelope's
/// p50 syscall latency, 98 us, 4.0 times its limit of 24.6 us (two steps
/// of the agent's log2 histogram).
/// Stop 26's net alarmed on texlive-latex-base and linux-image-amd64,
/// where one process computes on a whole CPU (TeX building its formats,
/// the initramfs's compressor), as a CPU runaway's windows look.
///
/// Any other alarm, or this one gone, fails.
#[test]
fn the_shipped_model_lets_big_healthy_installs_be_but_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let big = root.join("corpus/recorded/big-healthy.jsonl.gz");
    assert_eq!(alarmed(&big), vec!["lava-server-ok-0-0".to_string()]);
}

/// A healthy install that talks TCP (a 30 ms connect, a few retransmits,
/// a 2 MB download, in one window) alarms no more than it did without
/// it (a quarter of the corpus's non-lockbox healthy installs). No
/// healthy install of the corpus connects (its installs run without a
/// network, as a shadow does): stop 23's model alarmed on every one of
/// them given a single loopback connect; stop 30's, trained with the
/// bytes sent and received shown to the net, on 11 more of 278 (see
/// `learn::train::MASKED`).
#[test]
fn a_healthy_install_that_talks_tcp_is_no_alarm() {
    use backstop_common::features::feature;
    use backstop_controller::learn::{corpus, honest};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let packed = root.join("corpus/recorded/deployments.jsonl.gz");
    // Not the lockbox's: no choice, and no test, looks at it.
    let healthy: Vec<corpus::Record> = (corpus::read(&[&packed]).unwrap().into_iter())
        .filter(|r| !r.failing() && !honest::in_lockbox(&r.package))
        .step_by(4)
        .collect();
    assert!(healthy.len() > 200, "{} healthy installs", healthy.len());
    let base = std::env::temp_dir().join(format!("backstop-tcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _s = Scratch(base.clone());
    let (plain, talking) = (base.join("plain"), base.join("talking"));
    corpus::write(&plain, &healthy).unwrap();
    let mut talked = healthy;
    for r in &mut talked {
        let t = 5.min(r.windows.len() - 1);
        let w = &mut r.windows[t];
        w[feature::NET_CONNECT_ATTEMPTS] = 1.0;
        w[feature::NET_CONNECT_LATENCY_P99_US] = 30_000.0;
        w[feature::NET_TCP_RETRANSMITS] = 3.0;
        w[feature::NET_TX_BYTES] += 2_000.0;
        w[feature::NET_RX_BYTES] += 2e6;
        w[feature::SYSCALLS_NET] += 200.0;
    }
    corpus::write(&talking, &talked).unwrap();
    let before = alarmed(&plain);
    assert!(before.len() * 100 <= talked.len(), "{before:?}");
    assert_eq!(alarmed(&talking), before);
}

/// The shipped corpus is the shipped catalog, recorded: every scenario
/// once, nothing else. And every fault that comes with a setting of its
/// own (a service and its probe, a 64 MiB limit, a tmpfs upper) has a
/// healthy twin there, recorded in that setting, that ended well: before
/// stop 25 only faults had them, so the setting alone marked a fault.
#[test]
fn the_shipped_corpus_is_its_catalog_with_a_healthy_twin_of_every_setting() {
    use backstop_common::features::feature;
    use backstop_controller::learn::{catalog, corpus};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let c = catalog::load(&root.join("corpus/catalog.toml")).unwrap();
    let records = corpus::read(&[&root.join("corpus/recorded/deployments.jsonl.gz")]).unwrap();
    let want: std::collections::BTreeSet<String> =
        c.scenarios.iter().map(catalog::Scenario::id).collect();
    let have: std::collections::BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let unrecorded: Vec<&String> = want.difference(&have).collect();
    let stray: Vec<&String> = have.difference(&want).collect();
    assert!(
        unrecorded.is_empty() && stray.is_empty() && have.len() == records.len(),
        "the corpus is not its catalog, recorded: {} scenarios unrecorded {unrecorded:?}, {} records of no scenario {stray:?}",
        unrecorded.len(),
        stray.len()
    );
    let by_id: std::collections::HashMap<&str, &corpus::Record> =
        records.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut twins = 0;
    for s in &c.scenarios {
        if !catalog::TWINNED.contains(&s.fault) {
            continue;
        }
        let twin = (c.scenarios.iter())
            .find(|t| {
                t.twin == Some(s.fault)
                    && t.package == s.package
                    && t.delay == s.delay
                    && t.pause == s.pause
            })
            .unwrap_or_else(|| panic!("{} has no healthy twin", s.name));
        let r = by_id[twin.id().as_str()];
        assert_eq!(r.family, "none", "{}", r.id);
        // Two healthy packages outgrow 64 MiB by themselves (fpc-source's
        // unpack, pypy3-venv's postinst): the limit kills them, as it did
        // their faulty siblings, and the record says so.
        let killed = (r.windows.iter()).any(|w| w[feature::PROC_OOM_KILLS] > 0.0);
        assert!(
            !r.failing() || (twin.twin == Some(catalog::Family::MemoryBlowup) && killed),
            "{}: {:?}",
            r.id,
            r.outcome
        );
        twins += 1;
    }
    assert!(twins >= 140, "{twins} twins");
}
