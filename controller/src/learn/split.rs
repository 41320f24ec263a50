//! Splits and folds of a corpus: by package and by fault variant, never by
//! window (windows of one install are near-copies of each other, and a
//! model tested on a package or a variant it trained on is tested on what
//! it memorised).

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::corpus::{HEALTHY, Record};

#[derive(Debug, Clone, Default)]
pub struct Split {
    pub train: Vec<Record>,
    pub validation: Vec<Record>,
    pub test: Vec<Record>,
    /// Deployments whose package or variant is tested or validates, but
    /// which are not in that fold themselves (their package and variant
    /// fell in different folds).
    pub left_out: usize,
}

/// Split by package and by fault variant, never by window: the last of
/// five [`folds`] tests, the one before it validates, the other three
/// train. Seeded and deterministic.
pub fn split(records: &[Record], seed: u64) -> Split {
    folds(records, 5, seed).split(records, 4)
}

/// Packages and fault variants dealt into folds. A deployment belongs to a
/// fold when its package and its variant (healthy ones: the package alone)
/// are both in it; one whose package and variant are in different folds
/// can still train wherever neither is tested or validates, but is never
/// tested or validated on.
#[derive(Debug, Clone)]
pub struct Folds {
    pub k: u8,
    package: std::collections::BTreeMap<String, u8>,
    variant: std::collections::BTreeMap<String, u8>,
}

/// Deal packages and variants into `k` (at least 3) folds of equal shares.
///
/// Packages and variants are each put in a seeded order and dealt into
/// consecutive folds. Placed independently, most faulty deployments would
/// have their package and their variant in different folds (a variant
/// shows up in a few packages). So, in rounds, pairs of packages in
/// different folds swap when that puts more faulty deployments in one
/// fold, then pairs of variants do the same, until no swap helps. Swaps
/// never change a fold's size, so every fold keeps its share of packages
/// and of variants: when variants spread over many packages, letting each
/// follow the majority of its packages would put them all in one fold and
/// leave the others no failures.
pub fn folds(records: &[Record], k: u8, seed: u64) -> Folds {
    use std::collections::BTreeMap;
    let k = k.max(3);
    let faulty: Vec<(&str, &str)> = records
        .iter()
        .filter(|d| d.variant != HEALTHY)
        .map(|d| (d.package.as_str(), d.variant.as_str()))
        .collect();
    let packages = seeded_parts(records.iter().map(|d| d.package.as_str()), k, seed);
    let variants = seeded_parts(faulty.iter().map(|(_, v)| *v), k, seed);
    let mut pkg: BTreeMap<&str, u8> = packages.iter().copied().collect();
    let mut var: BTreeMap<&str, u8> = variants.iter().copied().collect();
    // Who meets whom: a package's faulty variants, a variant's packages.
    let mut variants_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut packages_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (p, v) in &faulty {
        variants_of.entry(p).or_default().push(v);
        packages_of.entry(v).or_default().push(p);
    }
    for _round in 0..32 {
        let a = swap_pass(&packages, &mut pkg, &variants_of, &var);
        let b = swap_pass(&variants, &mut var, &packages_of, &pkg);
        if !(a || b) {
            break;
        }
    }
    let owned = |m: BTreeMap<&str, u8>| -> BTreeMap<String, u8> {
        m.into_iter().map(|(n, f)| (n.to_string(), f)).collect()
    };
    Folds {
        k,
        package: owned(pkg),
        variant: owned(var),
    }
}

impl Folds {
    /// The folds of a deployment's package and of its variant.
    fn of(&self, d: &Record) -> (u8, u8) {
        let p = self.package.get(&d.package).copied().unwrap_or(u8::MAX);
        let v = if d.variant == HEALTHY {
            p
        } else {
            self.variant.get(&d.variant).copied().unwrap_or(u8::MAX)
        };
        (p, v)
    }

    /// Fold `test` tests, the fold before it validates, the rest train.
    pub fn split(&self, records: &[Record], test: u8) -> Split {
        let validation = (test + self.k - 1) % self.k;
        let mut s = Split::default();
        for d in records {
            let (p, v) = self.of(d);
            let held = |f: u8| f == test || f == validation || f == u8::MAX;
            if p == v && p == test {
                s.test.push(d.clone());
            } else if p == v && p == validation {
                s.validation.push(d.clone());
            } else if !held(p) && !held(v) {
                s.train.push(d.clone());
            } else {
                s.left_out += 1;
            }
        }
        s
    }
}

/// Distinct names in a seeded order, each with its fold: consecutive equal
/// shares of the order.
fn seeded_parts<'a>(names: impl Iterator<Item = &'a str>, k: u8, seed: u64) -> Vec<(&'a str, u8)> {
    let mut order: Vec<&str> = names.collect();
    order.sort_by_key(|n| (tiebreak(n, seed), *n));
    order.dedup();
    let n = order.len();
    order
        .into_iter()
        .enumerate()
        .map(|(i, name)| (name, (i * k as usize / n) as u8))
        .collect()
}

/// One pass of pairwise swaps over `order`: a name trades parts with the
/// name in another part that gains the most kept faulty deployments, when
/// there is a gain. `meets[name]` are the names on the other side it has a
/// faulty deployment with; `other` their parts. Whether anything moved.
fn swap_pass<'a>(
    order: &[(&'a str, u8)],
    part: &mut std::collections::BTreeMap<&'a str, u8>,
    meets: &std::collections::BTreeMap<&str, Vec<&str>>,
    other: &std::collections::BTreeMap<&str, u8>,
) -> bool {
    let kept = |name: &str, x: u8| -> i64 {
        meets
            .get(name)
            .map_or(0, |m| m.iter().filter(|o| other[*o] == x).count() as i64)
    };
    let mut swapped = false;
    for (i, (a, _)) in order.iter().enumerate() {
        let pa = part[a];
        let best = order[i + 1..]
            .iter()
            .filter(|(b, _)| part[b] != pa)
            .map(|(b, _)| {
                let pb = part[b];
                (kept(a, pb) - kept(a, pa) + kept(b, pa) - kept(b, pb), *b)
            })
            .filter(|(gain, _)| *gain > 0)
            .max_by_key(|(gain, _)| *gain);
        if let Some((_, b)) = best {
            let pb = part[b];
            part.insert(a, pb);
            part.insert(b, pa);
            swapped = true;
        }
    }
    swapped
}

fn tiebreak(name: &str, seed: u64) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"order");
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    h.finalize()[..8].try_into().expect("8 bytes")
}

/// Packages and fault variants of a part.
pub fn names(ds: &[Record]) -> (BTreeSet<String>, BTreeSet<String>) {
    (
        ds.iter().map(|d| d.package.clone()).collect(),
        ds.iter()
            .filter(|d| d.variant != HEALTHY)
            .map(|d| d.variant.clone())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::corpus::{Outcome, synthetic};
    use std::collections::BTreeMap;

    /// No package and no fault variant in two parts of a split.
    fn assert_parts_share_nothing(s: &Split, which: &str) {
        let parts = [
            ("train", names(&s.train)),
            ("validation", names(&s.validation)),
            ("test", names(&s.test)),
        ];
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            let ((a, (ap, av)), (b, (bp, bv))) = (&parts[i], &parts[j]);
            let packages: Vec<_> = ap.intersection(bp).collect();
            let variants: Vec<_> = av.intersection(bv).collect();
            assert!(
                packages.is_empty() && variants.is_empty(),
                "{which}: {a} and {b} share packages {packages:?}, variants {variants:?}"
            );
        }
    }

    #[test]
    fn split_shares_no_package_and_no_variant() {
        let all = synthetic(7, 40, 12);
        let s = split(&all, 1);
        assert!(!s.train.is_empty() && !s.validation.is_empty() && !s.test.is_empty());
        assert_parts_share_nothing(&s, "seed 1");
        // Variants spread over many packages here: each part still gets
        // failures of its own.
        for (part, ds) in [("validation", &s.validation), ("test", &s.test)] {
            let failing = ds.iter().filter(|d| d.failing()).count();
            assert!(
                failing * 5 >= ds.len() && ds.iter().any(|d| !d.failing()),
                "{part}: {failing} failing of {}",
                ds.len()
            );
        }
    }

    #[test]
    fn folds_test_each_deployment_at_most_once_and_each_fold_shares_nothing() {
        let all = synthetic(7, 40, 12);
        let f = folds(&all, 5, 3);
        let mut tested: BTreeMap<String, usize> = BTreeMap::new();
        for t in 0..5 {
            let s = f.split(&all, t);
            assert_eq!(
                s.train.len() + s.validation.len() + s.test.len() + s.left_out,
                all.len()
            );
            assert_parts_share_nothing(&s, &format!("fold {t}"));
            for d in &s.test {
                *tested.entry(d.id.clone()).or_default() += 1;
            }
        }
        assert!(tested.values().all(|&n| n == 1), "tested twice: {tested:?}");
        // Every healthy deployment is tested once (its package's fold).
        // Here each variant spreads over eight packages, so many faulty
        // deployments cannot have package and variant in one fold; the
        // catalog-shaped corpus below keeps far more.
        let healthy = all.iter().filter(|d| d.variant == HEALTHY);
        assert!(healthy.clone().all(|d| tested.contains_key(&d.id)));
        let faulty = all.len() - healthy.count();
        let faulty_tested = tested.len() - all.iter().filter(|d| d.variant == HEALTHY).count();
        assert!(
            faulty_tested * 10 >= faulty * 4,
            "{faulty_tested} of {faulty} faulty deployments tested"
        );
    }

    #[test]
    fn split_keeps_most_deployments_when_variants_spread_over_packages() {
        // The shipped catalog's shape: per package 3 healthy installs and
        // 3 faults, each fault variant in two or three packages.
        let dep = |package: &str, variant: &str, i: usize| Record {
            id: format!("{package}-{variant}-{i}"),
            package: package.into(),
            family: variant.split('-').next().unwrap_or(HEALTHY).into(),
            variant: variant.into(),
            outcome: if variant == HEALTHY {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            onset_window: (variant != HEALTHY).then_some(0),
            visible_to_checks: variant != HEALTHY,
            window_ms: 250,
            schema: backstop_common::features::SCHEMA_VERSION.into(),
            windows: vec![vec![0.0; backstop_common::features::FEATURES.len()]],
            group: String::new(),
            held_out: false,
            host_condition: String::new(),
            cause: None,
            host: Vec::new(),
            room: None,
        };
        let mut all = Vec::new();
        for p in 0..70 {
            let package = format!("pkg{p}");
            for i in 0..3 {
                all.push(dep(&package, HEALTHY, i));
            }
            for j in 0..3 {
                // 90 variants over 210 faulty deployments.
                all.push(dep(
                    &package,
                    &format!("f{j}-v{}", (p * 7 + j * 11) % 30),
                    j,
                ));
            }
        }
        for seed in 1..=4 {
            let s = split(&all, seed);
            let n = all.len();
            assert_eq!(
                s.train.len() + s.validation.len() + s.test.len() + s.left_out,
                n
            );
            assert!(
                s.left_out * 100 <= 15 * n,
                "seed {seed}: {} of {n} left out",
                s.left_out
            );
            assert!(
                s.test.len() * 100 >= 15 * n,
                "seed {seed}: test has {}",
                s.test.len()
            );
            let failing = s.test.iter().filter(|d| d.failing()).count();
            assert!(
                failing >= 20,
                "seed {seed}: {failing} failing test deployments"
            );
            let failing = s.validation.iter().filter(|d| d.failing()).count();
            assert!(
                failing >= 20,
                "seed {seed}: {failing} failing validation deployments"
            );
        }
        // Cross-validation tests most failures once.
        let f = folds(&all, 5, 1);
        let tested: usize = (0..5)
            .map(|t| f.split(&all, t).test.iter().filter(|d| d.failing()).count())
            .sum();
        assert!(tested >= 180, "{tested} of 210 failing deployments tested");
    }
}
