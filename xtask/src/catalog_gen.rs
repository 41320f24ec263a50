//! `cargo xtask corpus-catalog`: the corpus catalog, generated with a seed
//! from the resolver's verdicts (corpus/resolve.tsv), so that nothing in
//! how a scenario is set up tells a fault apart from a healthy install.
//!
//! - Every scenario, healthy or faulty, draws its prelude (seconds of
//!   `ls -R` work, then idle seconds) and its host condition from the
//!   same distributions.
//! - Fault families, each with its group and source, rotate over the
//!   packages in a seeded order; magnitudes are drawn.
//! - A fault that comes with a setting of its own has a healthy twin:
//!   the same package, prelude and host, in the same setting, without
//!   the fault. The settings: a service started and probed (slow-service,
//!   crash-loop), a 64 MiB limit (memory-blowup), a tmpfs upper, where
//!   writes make no block I/O (log-flood, disk-full). Otherwise the
//!   setting alone would mark a fault.
//! - Packages whose own maintainer scripts fail on minbase are real
//!   failures, labelled by the cause the resolver recorded; they are left
//!   out of this catalog and recorded apart (corpus/real-failures.toml),
//!   so that the shipped model meets them unseen.
//! - Enough healthy installs that a 1% false-alarm rate can be measured.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};

use crate::util;

/// Every scenario's timeout unless its package installs slowly.
const DEFAULT_TIMEOUT_SECS: u64 = 8;

/// A twin's time beyond its faulty sibling's (see `render`).
const TWIN_EXTRA_SECS: u64 = 5;

/// The families whose fault comes with a setting of its own (a service
/// and its health probe, a 64 MiB limit, a tmpfs upper); each such
/// scenario gets a healthy twin in that setting (the controller's
/// `catalog::TWINNED`).
const TWINNED: [&str; 5] = [
    "slow-service",
    "crash-loop",
    "memory-blowup",
    "log-flood",
    "disk-full",
];

/// (family, group, held out of the default model's training, source).
pub const FAMILIES: [(&str, &str, bool, &str); 18] = [
    (
        "failing-script",
        "silent",
        false,
        "Zhang et al., SOSP'21: upgrade operations that fail outright; a plain exit 1",
    ),
    (
        "missing-dependency",
        "silent",
        false,
        "Dumitras & Narasimhan, Middleware'09, type 3: broken environmental dependencies",
    ),
    (
        "config-typo",
        "silent",
        false,
        "Dumitras & Narasimhan, Middleware'09, type 1: simple configuration errors (typos)",
    ),
    (
        "user-conflict",
        "silent",
        true,
        "maintainer scripts: adduser/useradd of a system user whose uid is taken",
    ),
    (
        "alternatives-conflict",
        "silent",
        false,
        "maintainer scripts: update-alternatives --install of a missing path",
    ),
    (
        "data-format",
        "silent",
        false,
        "Zhang et al., SOSP'21: incompatible data syntax between versions; Dumitras type 4: data-access errors",
    ),
    (
        "prompt-hang",
        // A hang (asleep in open(2) of a FIFO nobody writes); stop 17.
        "build-up",
        true,
        "maintainer scripts: a prompt (debconf, read) with no one to answer it",
    ),
    (
        "slow-service",
        "build-up",
        false,
        "Zhang et al., SOSP'21: performance degradation after an upgrade",
    ),
    (
        "crash-loop",
        "build-up",
        false,
        "maintainer scripts: a restarted service that crashes again (invoke-rc.d start in postinst)",
    ),
    (
        "disk-full",
        "build-up",
        false,
        "dpkg unpack failing with ENOSPC (Debian bug reports: 'No space left on device')",
    ),
    (
        "log-flood",
        "build-up",
        false,
        "maintainer scripts: one growing log or index file filling the disk",
    ),
    (
        "memory-blowup",
        "build-up",
        false,
        "maintainer scripts: index and cache rebuilds (man-db, fc-cache) growing until OOM",
    ),
    (
        "lock-hang",
        "build-up",
        false,
        "maintainer scripts: waiting on a lock another process holds (dpkg/apt lock, database lock)",
    ),
    (
        "cpu-runaway",
        "build-up",
        false,
        "Zhang et al., SOSP'21: hangs after an upgrade; a postinst loop that never ends",
    ),
    (
        "io-stall",
        "build-up",
        false,
        "maintainer scripts: fsync-heavy rebuilds on a slow disk",
    ),
    (
        "unreachable-network",
        "build-up",
        false,
        "maintainer scripts that download at install time (installer packages) behind a firewall",
    ),
    (
        "fd-leak",
        "build-up",
        true,
        "Zhang et al., SOSP'21: resource leaks; descriptors never closed until EMFILE",
    ),
    (
        "fork-storm",
        "build-up",
        true,
        "maintainer scripts: workers started and never reaped",
    ),
];

const REAL: (&str, &str) = (
    "real",
    "the archive itself: packages whose maintainer scripts fail on minbase (corpus/resolve.tsv)",
);

/// splitmix64: a seeded stream with no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

/// The prelude and host condition, one distribution for every scenario.
fn setting(r: &mut Rng) -> String {
    let delay = [0, 0, 1, 1, 2, 3][r.below(6)];
    let pause = [0, 0, 0, 1, 2][r.below(5)];
    let host = match r.below(20) {
        0 => "\nhost = \"fuller-disk\"",
        1 => "\nhost = \"less-memory\"",
        2 => "\nhost = \"busy-neighbour\"",
        _ => "",
    };
    format!("delay = {delay}\npause = {pause}{host}")
}

/// (installable packages with their check's seconds and closure size, real failures with
/// their cause and seconds) from resolve.tsv.
type Verdicts = (Vec<(String, f64, usize)>, Vec<(String, String, f64)>);
fn verdicts(tsv: &std::path::Path) -> Result<Verdicts> {
    let text = std::fs::read_to_string(tsv).with_context(|| {
        format!(
            "reading {} (run cargo xtask corpus-resolve --check)",
            tsv.display()
        )
    })?;
    let mut ok: Vec<(String, f64, usize)> = Vec::new();
    let mut real: Vec<(String, String, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        match cols.as_slice() {
            [p, "installs", _, debs, _, secs, ..] => {
                ok.push((
                    p.to_string(),
                    secs.parse::<f64>().unwrap_or(0.0),
                    debs.parse().unwrap_or(1),
                ));
            }
            [p, "real-failure", cause, _, _, secs, ..] => {
                real.push((
                    p.to_string(),
                    cause.to_string(),
                    secs.parse::<f64>().unwrap_or(0.0),
                ));
            }
            _ => {}
        }
    }
    // The catalog takes only plain names ([A-Za-z0-9._-]: a name becomes a
    // path component and a word in a postinst); a '+' (libstdc++6-...)
    // is left out rather than widening that check.
    let plain = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    ok.retain(|(p, _, _)| plain(p));
    real.retain(|(p, _, _)| plain(p));
    Ok((ok, real))
}

pub struct CatalogOptions {
    pub seed: u64,
    /// Healthy installs in all (at least 2 per package; the remainder
    /// spread over the packages as a third).
    pub healthy: usize,
    /// Faulty scenarios per package.
    pub faults_per_package: usize,
    /// Only the first N packages (a pilot); all when absent.
    pub packages: Option<usize>,
    pub out: std::path::PathBuf,
}

pub fn generate(o: &CatalogOptions) -> Result<()> {
    let tsv = util::root().join("corpus/resolve.tsv");
    let (mut ok, real) = verdicts(&tsv)?;
    ok.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(n) = o.packages {
        ok.truncate(n);
    }
    if ok.is_empty() {
        bail!("{}: no package installs on minbase", tsv.display());
    }
    let s = render(o, &ok)?;
    std::fs::write(&o.out, s).with_context(|| format!("writing {}", o.out.display()))?;
    eprintln!(
        "corpus-catalog: {} packages, {} healthy installs, {} faults each -> {}; {} real failures left out (corpus/real-failures.toml records them apart, so the model meets them unseen)",
        ok.len(),
        o.healthy.max(2 * ok.len()),
        o.faults_per_package,
        o.out.display(),
        real.len(),
    );
    Ok(())
}

/// The catalog's text for these packages. Real failures are left out:
/// stop 23 recorded them apart (corpus/real-failures.toml), so the
/// shipped model meets them unseen.
fn render(o: &CatalogOptions, ok: &[(String, f64, usize)]) -> Result<String> {
    let mut r = Rng(o.seed);
    // Two healthy installs per package at least; the rest of --healthy
    // as a third install of every k-th package.
    let packages = ok.len();
    let base = (o.healthy / packages).max(2);
    let extra = o.healthy.saturating_sub(base * packages);
    let per = |i: usize| base + usize::from((i * 7919) % packages < extra);
    let mut s = String::new();
    let mut twins = 0usize;
    let mut order: Vec<usize> = (0..FAMILIES.len()).collect();
    let mut next_family = 0usize;
    for (k, (p, secs, debs)) in ok.iter().enumerate() {
        // Slow installs get room: three times what the check took.
        let secs_allowed = if *secs > 2.0 {
            Some((secs * 3.0).ceil() as u64 + 4)
        } else {
            None
        };
        let timeout = secs_allowed.map_or(String::new(), |t| format!("\ntimeout_secs = {t}"));
        // A twin must be able to end well: its service starts (1 s) and
        // its health test runs (up to 3 s) after the install, within the
        // time its faulty sibling had. Three of 60 timed out without this.
        let twin_timeout = format!(
            "\ntimeout_secs = {}",
            secs_allowed.unwrap_or(DEFAULT_TIMEOUT_SECS) + TWIN_EXTRA_SECS
        );
        for i in 0..per(k) {
            writeln!(
                s,
                "[[scenario]]\nname = \"{p}-ok-{i}\"\npackage = \"{p}\"\nseed = {i}\n{}{timeout}\n",
                setting(&mut r)
            )?;
        }
        for k in 0..o.faults_per_package {
            if next_family.is_multiple_of(FAMILIES.len()) {
                // A fresh seeded order of the families each round.
                for k in (1..order.len()).rev() {
                    order.swap(k, r.below(k + 1));
                }
            }
            let mut fam = FAMILIES[order[next_family % FAMILIES.len()]].0;
            next_family += 1;
            if fam == "missing-dependency" && *debs < 2 {
                // Nothing to leave out: the install would succeed.
                fam = FAMILIES[order[next_family % FAMILIES.len()]].0;
                next_family += 1;
            }
            let m = 1 + r.below(3);
            let set = setting(&mut r);
            writeln!(
                s,
                "[[scenario]]\nname = \"{p}-{fam}-m{m}-{k}\"\npackage = \"{p}\"\nfault = \"{fam}\"\nmagnitude = {m}\n{set}{timeout}\n",
            )?;
            if TWINNED.contains(&fam) {
                // Its healthy twin: the same package, prelude and host,
                // the same setting, with no fault.
                twins += 1;
                writeln!(
                    s,
                    "[[scenario]]\nname = \"{p}-ok-{fam}-{k}\"\npackage = \"{p}\"\ntwin = \"{fam}\"\nmagnitude = {m}\n{set}{twin_timeout}\n",
                )?;
            }
        }
    }
    let mut head = format!(
        "# Generated by `cargo xtask corpus-catalog --seed {seed}` from corpus/resolve.tsv: do not edit.\n# {np} packages, {h} healthy installs and {twins} healthy twins of faults with a setting, {f} faults each; real failures are recorded apart (corpus/real-failures.toml).\n\n[defaults]\nwindow_ms = 250\ntimeout_secs = {DEFAULT_TIMEOUT_SECS}\nmemory = 1073741824\n\n",
        seed = o.seed,
        np = ok.len(),
        h = o.healthy.max(2 * ok.len()),
        f = o.faults_per_package,
    );
    for (name, group, held_out, source) in FAMILIES
        .iter()
        .copied()
        .chain([(REAL.0, "real", false, REAL.1)])
    {
        writeln!(
            head,
            "[families.{name}]\ngroup = \"{group}\"\nheld_out = {held_out}\nsource = {source:?}\n"
        )?;
    }
    Ok(head + &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (scenarios, mean delay, share paused, share under a host condition)
    /// of the healthy or the faulty scenarios of a catalog's text.
    fn shape(text: &str, faulty: bool) -> (usize, f64, f64, f64) {
        let (mut n, mut delay, mut paused, mut host) = (0usize, 0u32, 0usize, 0usize);
        for block in text.split("[[scenario]]").skip(1) {
            // Twins are counted apart (their setting is their sibling's).
            if block.contains("fault = ") != faulty || block.contains("twin = ") {
                continue;
            }
            let get = |k: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(0)
            };
            n += 1;
            delay += get("delay = ");
            paused += usize::from(get("pause = ") > 0);
            host += usize::from(block.contains("host = "));
        }
        let f = |x: usize| x as f64 / n as f64;
        (n, f64::from(delay) / n as f64, f(paused), f(host))
    }

    #[test]
    fn healthy_and_faulty_scenarios_share_one_prelude_distribution() {
        let ok: Vec<(String, f64, usize)> = (0..400)
            .map(|i| (format!("p{i:03}"), 1.0, 1 + i % 3))
            .collect();
        let o = CatalogOptions {
            seed: 7,
            healthy: 1000,
            faults_per_package: 2,
            packages: None,
            out: std::path::PathBuf::new(),
        };
        let text = render(&o, &ok).unwrap();
        let (nh, dh, ph, hh) = shape(&text, false);
        let (nf, df, pf, hf) = shape(&text, true);
        // 400 packages: 2 healthy each and 200 thirds; 2 faults each.
        assert_eq!((nh, nf), (1000, 800), "healthy and faulty scenarios");
        // Drawn alike: the means differ by sampling noise only (standard
        // errors about 0.05 for the delay and 0.02 for the shares).
        assert!(
            (dh - df).abs() < 0.2,
            "mean delay {dh:.2} healthy, {df:.2} faulty"
        );
        assert!(
            (ph - pf).abs() < 0.08,
            "paused {ph:.2} healthy, {pf:.2} faulty"
        );
        assert!(
            (hh - hf).abs() < 0.06,
            "host condition {hh:.2} healthy, {hf:.2} faulty"
        );
        // Every fault with a setting is followed by its healthy twin: the
        // same package, magnitude and prelude, the family named, no fault.
        let blocks: Vec<&str> = text.split("[[scenario]]").skip(1).collect();
        let mut twins = 0;
        for (i, b) in blocks.iter().enumerate() {
            let Some(fam) = TWINNED
                .iter()
                .find(|f| b.contains(&format!("fault = \"{f}\"")))
            else {
                continue;
            };
            let twin = blocks[i + 1];
            let rest = |b: &str| -> Vec<String> {
                b.lines()
                    .filter(|l| !l.starts_with("name") && !l.starts_with("fault"))
                    .filter(|l| !l.starts_with("twin") && !l.starts_with("timeout"))
                    .map(String::from)
                    .collect()
            };
            assert!(twin.contains(&format!("twin = \"{fam}\"")), "{twin}");
            assert!(!twin.contains("fault = "), "{twin}");
            assert_eq!(rest(b), rest(twin));
            let timeout = |b: &str| {
                b.lines()
                    .find_map(|l| l.strip_prefix("timeout_secs = "))
                    .map_or(DEFAULT_TIMEOUT_SECS, |v| v.parse().unwrap())
            };
            assert_eq!(timeout(twin), timeout(b) + TWIN_EXTRA_SECS);
            twins += 1;
        }
        assert!(twins > 150, "{twins} twins");
        assert!(text.contains(&format!("and {twins} healthy twins")));
        // Every family is used and named with its source.
        for (name, _, _, _) in FAMILIES {
            assert!(
                text.contains(&format!("fault = \"{name}\"")),
                "{name} unused"
            );
            assert!(
                text.contains(&format!("[families.{name}]")),
                "{name} unsourced"
            );
        }
        assert!(!text.contains("fault = \"real\""));
        // A closure of one .deb has no dependency to leave out.
        for block in text
            .split("[[scenario]]")
            .filter(|b| b.contains("missing-dependency\""))
        {
            let p: usize = block
                .lines()
                .find_map(|l| l.strip_prefix("package = \"p"))
                .and_then(|v| v.trim_end_matches('"').parse().ok())
                .unwrap();
            assert!(
                !p.is_multiple_of(3),
                "p{p:03} has one .deb and a missing dependency"
            );
        }
        // The same seed, the same catalog.
        assert_eq!(text, render(&o, &ok).unwrap());
    }
}
