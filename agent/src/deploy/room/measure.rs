//! The room check over the recorded corpus's own installs: what it
//! would have refused, and what it costs on the largest .debs. A
//! measurement, run by hand once `corpus/fetch.sh` has fetched the debs:
//! `cargo test -p backstop-agent --lib room::measure -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::debs::read_into;
use super::{Stop, Tally};

fn xtask() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xtask")
}

/// Every scenario of `corpus/catalog.toml` run in a tmpfs layer (the
/// disk-full and log-flood families and their healthy twins), checked
/// against that layer as the catalog runner sizes it
/// (controller/src/learn/catalog/runner.rs, `shadow_command`). None of
/// the healthy twins may be refused.
#[test]
#[ignore = "a measurement over 1.3 GB of fetched debs"]
fn room_check_over_the_recorded_corpus() {
    let (root, closures) = (
        xtask().join("rootfs-bookworm-minbase"),
        xtask().join("corpus-debs/closures"),
    );
    let catalog = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/catalog.toml"),
    )
    .unwrap();
    let catalog: toml::Table = toml::from_str(&catalog).unwrap();
    let mut counts: BTreeMap<(String, &str, bool), u32> = BTreeMap::new();
    let mut twins_refused = Vec::new();
    for s in catalog["scenario"].as_array().unwrap() {
        let field = |k: &str| s.get(k).and_then(|v| v.as_str());
        let (twin, fault) = (field("twin"), field("fault"));
        let Some(setting) = twin
            .or(fault)
            .filter(|f| ["disk-full", "log-flood"].contains(f))
        else {
            continue;
        };
        let m = s
            .get("magnitude")
            .and_then(toml::Value::as_integer)
            .unwrap_or(1)
            .max(1) as u64;
        let dir = closures.join(field("package").unwrap());
        let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (run corpus/fetch.sh)", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        debs.sort();
        let total: u64 = debs
            .iter()
            .map(|d| std::fs::metadata(d).unwrap().len())
            .sum();
        let layer = if setting == "disk-full" && fault.is_some() {
            (total / (2 * m)).max(256 * 1024)
        } else {
            total * 6 + (8 << 20) * m
        };
        let mut t = Tally::new(&root, Some(layer)).unwrap();
        let refused = debs.iter().any(|d| match read_into(d, &mut t) {
            Ok(()) => false,
            Err(Stop::Full(_)) => true,
            Err(e) => panic!("{}: not read: {e:?}", d.display()),
        });
        let kind = if twin.is_some() { "twin" } else { "fault" };
        *counts
            .entry((setting.to_string(), kind, refused))
            .or_default() += 1;
        if refused && twin.is_some() {
            twins_refused.push(field("name").unwrap().to_string());
        }
    }
    for ((setting, kind, refused), n) in &counts {
        let what = if *refused { "refused" } else { "fits" };
        eprintln!("{setting} {kind}: {what} {n}");
    }
    assert!(
        twins_refused.is_empty(),
        "healthy installs refused: {twins_refused:?}"
    );
}

/// The check against dpkg-deb alone on the three largest .debs fetched,
/// three times each, side by side.
#[test]
#[ignore = "a measurement over the fetched debs"]
fn room_check_cost_on_the_largest_debs() {
    let root = xtask().join("rootfs-bookworm-minbase");
    let pool = xtask().join("corpus-debs/pool");
    let mut debs: Vec<(u64, PathBuf)> = std::fs::read_dir(&pool)
        .unwrap()
        .flatten()
        .map(|e| (e.metadata().unwrap().len(), e.path()))
        .collect();
    debs.sort();
    for (size, deb) in debs.iter().rev().take(3) {
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let mut t = Tally::new(&root, None).unwrap();
            assert!(read_into(deb, &mut t).is_ok());
            let check = t0.elapsed().as_secs_f64();
            let t1 = std::time::Instant::now();
            let alone = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "dpkg-deb --fsys-tarfile '{}' > /dev/null",
                    deb.display()
                ))
                .status()
                .unwrap();
            assert!(alone.success());
            let alone = t1.elapsed().as_secs_f64();
            eprintln!(
                "{} ({:.1} MB, {} files): check {check:.2} s, dpkg-deb alone {alone:.2} s, ratio {:.2}",
                deb.file_name().unwrap().to_string_lossy(),
                *size as f64 / 1e6,
                t.files,
                check / alone
            );
        }
    }
}
