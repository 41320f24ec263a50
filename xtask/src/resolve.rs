//! `cargo xtask corpus-resolve`: the corpus's package closures, resolved
//! from bookworm's Packages list instead of by hand.
//!
//! For each candidate package: the Depends and Pre-Depends the minbase
//! rootfs lacks, followed transitively (the first alternative that minbase
//! or the closure already satisfies, else the first one the archive has;
//! a virtual package by its first provider in name order), pinned by
//! version and SHA-256 as the Packages list gives them. With `--check`
//! each closure is downloaded (verified) and installed with one `dpkg -i`
//! on an overlay over minbase in a throw-away mount namespace; only those
//! that install become corpus/closures/<pkg>.txt, and every verdict, with
//! the reason a package was dropped, goes to corpus/resolve.tsv.
//! Packages whose own maintainer scripts fail there are the corpus's real
//! failures (`real-failure` lines), kept with their cause.
//!
//! Resumable: verdicts already in resolve.tsv are not checked again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};

use crate::util;

pub const MIRROR: &str = "http://deb.debian.org/debian";
const PACKAGES_URL: &str = "dists/bookworm/main/binary-amd64/Packages.xz";

/// Sections whose packages are not installs an SRE runs on their own
/// (libraries come in as dependencies; debug symbols, kernels, desktops
/// and documentation are not what the corpus is about).
const SKIP_SECTIONS: [&str; 14] = [
    "libs",
    "oldlibs",
    "libdevel",
    "kernel",
    "debug",
    "doc",
    "localization",
    "fonts",
    "introspection",
    "x11",
    "gnome",
    "kde",
    "xfce",
    "graphics",
];

/// One binary package of the archive.
#[derive(Debug, Clone, Default)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub section: String,
    pub depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub essential: bool,
    /// The Depends and Pre-Depends fields as written: what orders an
    /// install in stages (`backstop_common::dpkg`).
    pub control: backstop_common::dpkg::Control,
}

/// The archive: packages by name, and providers of virtual names.
pub struct Archive {
    pub pkgs: BTreeMap<String, Pkg>,
    pub providers: HashMap<String, Vec<String>>,
}

/// `a (>= 1), b:any | c` -> [[a], [b, c]]: names only (minbase and the
/// archive are the same release, so versions are dpkg's to check).
fn dep_groups(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|g| {
            g.split('|')
                .filter_map(|alt| {
                    let name = alt.split_whitespace().next()?;
                    Some(name.split(':').next().unwrap_or(name).to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Paragraphs of a Packages or status file.
pub fn parse_paragraphs(text: &str) -> Vec<Pkg> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut p = Pkg::default();
        let mut status_ok = true;
        for line in para.lines() {
            let Some((k, v)) = line.split_once(": ") else {
                continue;
            };
            match k {
                "Package" => {
                    p.name = v.to_string();
                    p.control.package = v.to_string();
                }
                "Version" => p.version = v.to_string(),
                "Section" => p.section = v.rsplit('/').next().unwrap_or(v).to_string(),
                "Depends" | "Pre-Depends" => {
                    p.depends.extend(dep_groups(v));
                    let raw = if k == "Depends" {
                        &mut p.control.depends
                    } else {
                        &mut p.control.pre_depends
                    };
                    v.clone_into(raw);
                }
                "Provides" => p.provides = dep_groups(v).into_iter().flatten().collect(),
                "Filename" => p.filename = v.to_string(),
                "Size" => p.size = v.parse().unwrap_or(0),
                "SHA256" => p.sha256 = v.to_string(),
                "Essential" => p.essential = v == "yes",
                "Status" => status_ok = v.ends_with(" installed"),
                _ => {}
            }
        }
        if !p.name.is_empty() && status_ok {
            out.push(p);
        }
    }
    out
}

impl Archive {
    pub fn new(pkgs: Vec<Pkg>) -> Archive {
        let mut providers: HashMap<String, Vec<String>> = HashMap::new();
        for p in &pkgs {
            for v in &p.provides {
                providers.entry(v.clone()).or_default().push(p.name.clone());
            }
        }
        for v in providers.values_mut() {
            v.sort();
        }
        Archive {
            pkgs: pkgs.into_iter().map(|p| (p.name.clone(), p)).collect(),
            providers,
        }
    }

    /// The packages `root` lacks for `name`, dependencies before their
    /// dependents, `name` last; Err names the dependency nothing provides.
    pub fn closure(&self, name: &str, installed: &BTreeSet<String>) -> Result<Vec<&Pkg>, String> {
        let mut have: BTreeSet<String> = installed.clone();
        let mut order = Vec::new();
        self.visit(name, &mut have, &mut order)?;
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        have: &mut BTreeSet<String>,
        order: &mut Vec<&'a Pkg>,
    ) -> Result<(), String> {
        let p = self
            .pkgs
            .get(name)
            .ok_or_else(|| format!("{name} is not in the archive"))?;
        // Marked before its dependencies: a cycle (Pre-Depends aside, dpkg
        // configures a cycle together) ends here.
        have.insert(p.name.clone());
        have.extend(p.provides.iter().cloned());
        for group in &p.depends {
            if group.iter().any(|a| have.contains(a)) {
                continue;
            }
            let pick = group
                .iter()
                .find(|a| self.pkgs.contains_key(*a))
                .cloned()
                .or_else(|| {
                    group
                        .iter()
                        .find_map(|a| self.providers.get(a).and_then(|v| v.first()).cloned())
                })
                .ok_or_else(|| format!("nothing provides {}", group.join(" | ")))?;
            if !have.contains(&pick) {
                self.visit(&pick, have, order)?;
            }
        }
        order.push(p);
        Ok(())
    }
}

/// The Packages list, downloaded once into DIR/Packages.xz.
fn archive(dir: &Path) -> Result<Archive> {
    let xz = dir.join("Packages.xz");
    if !xz.exists() {
        let mut c = Command::new("curl");
        c.args(["-sSfL", "-o"])
            .arg(&xz)
            .arg(format!("{MIRROR}/{PACKAGES_URL}"));
        util::step("downloading bookworm's Packages list", c)?;
    }
    let text = util::output(Command::new("xz").arg("-dc").arg(&xz))?;
    Ok(Archive::new(parse_paragraphs(&text)))
}

/// What minbase has: package names and the virtual names they provide.
fn installed(root: &Path) -> Result<BTreeSet<String>> {
    let status = root.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status)
        .with_context(|| format!("reading {}", status.display()))?;
    Ok(parse_paragraphs(&text)
        .into_iter()
        .flat_map(|p| std::iter::once(p.name).chain(p.provides))
        .collect())
}

/// Options of `cargo xtask corpus-resolve`.
pub struct ResolveOptions {
    /// How many candidates to take (after the filters, in seeded order).
    pub max: usize,
    /// Largest closure, in .debs and in bytes.
    pub max_debs: usize,
    pub max_bytes: u64,
    /// Install each closure on minbase and keep only those that install.
    pub check: bool,
    /// Orders the candidates (so a `--max` is not the alphabet's start).
    pub seed: u64,
    /// Packages checked whatever their section or place in the order
    /// (daemons known to fail on a bare minbase: the real failures).
    pub include: Vec<String>,
}

/// FNV-1a of the seed and a name: a stable, seeded order.
fn rank(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub fn resolve(o: &ResolveOptions) -> Result<()> {
    let root = crate::fixtures::rootfs()?;
    let dir = util::cache_dir().join("resolve");
    std::fs::create_dir_all(&dir)?;
    let arch = archive(&dir)?;
    let have = installed(&root)?;
    let mut cands: Vec<(&Pkg, Vec<&Pkg>)> = arch
        .pkgs
        .values()
        .filter(|p| !have.contains(&p.name) && !p.essential)
        .filter(|p| !SKIP_SECTIONS.contains(&p.section.as_str()))
        .filter(|p| {
            !["-dbgsym", "-dev", "-doc", "-dbg"]
                .iter()
                .any(|s| p.name.ends_with(s))
        })
        .filter_map(|p| Some((p, arch.closure(&p.name, &have).ok()?)))
        .filter(|(_, c)| {
            c.len() <= o.max_debs && c.iter().map(|d| d.size).sum::<u64>() <= o.max_bytes
        })
        .collect();
    cands.sort_by_key(|(p, _)| (rank(o.seed, &p.name), p.name.clone()));
    cands.truncate(o.max);
    for name in &o.include {
        let c = arch
            .closure(name, &have)
            .map_err(|e| anyhow::anyhow!("--include {name}: {e}"))?;
        let p = arch
            .pkgs
            .get(name)
            .context("--include: not in the archive")?;
        if !cands.iter().any(|(q, _)| q.name == *name) {
            // First: they are few, and the point of --include.
            cands.insert(0, (p, c));
        }
    }
    eprintln!(
        "corpus-resolve: {} packages in the archive, {} in minbase; {} candidates",
        arch.pkgs.len(),
        have.len(),
        cands.len()
    );
    let closures = util::root().join("corpus/closures");
    std::fs::create_dir_all(&closures)?;
    let tsv = util::root().join("corpus/resolve.tsv");
    let mut done = crate::resolve_check::Verdicts::load(&tsv);
    let pool = util::cache_dir().join("corpus-debs/pool");
    let total = cands.len();
    for (i, (p, closure)) in cands.into_iter().enumerate() {
        if done.has(&p.name) {
            continue;
        }
        let t0 = std::time::Instant::now();
        let verdict = if o.check {
            crate::resolve_check::check(&root, &pool, &dir, &closure)?
        } else {
            crate::resolve_check::Verdict::Unchecked
        };
        if verdict.keeps() {
            write_closure(&closures.join(format!("{}.txt", p.name)), &p.name, &closure)?;
        }
        let bytes: u64 = closure.iter().map(|d| d.size).sum();
        eprintln!(
            "[{}/{total}] {}: {} ({} debs, {} KB, {:.1} s)",
            i + 1,
            p.name,
            verdict.label(),
            closure.len(),
            bytes / 1024,
            t0.elapsed().as_secs_f64()
        );
        done.append(&tsv, &p.name, &verdict, closure.len(), bytes, t0.elapsed())?;
    }
    let kept = done.kept();
    eprintln!(
        "corpus-resolve: {kept} closures kept; verdicts in {}",
        tsv.display()
    );
    if o.check && kept < 300 {
        bail!(
            "corpus-resolve: only {kept} packages install on minbase (the corpus needs 300): raise --max"
        );
    }
    Ok(())
}

fn write_closure(path: &PathBuf, name: &str, closure: &[&Pkg]) -> Result<()> {
    let mut s = format!(
        "# closure of {name} on top of debootstrap --variant=minbase bookworm rootfs (cargo xtask corpus-resolve: Depends and Pre-Depends from the Packages list, dependencies first)\n# name=version\tfilename\tsize\tsha256\n"
    );
    for d in closure {
        let file = d.filename.rsplit('/').next().unwrap_or(&d.filename);
        let _ = writeln!(
            s,
            "{}={}\t{file}\t{}\t{}",
            d.name, d.version, d.size, d.sha256
        );
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCHIVE: &str = "Package: app\nVersion: 1\nDepends: libfoo (>= 2), mta | postfix, base:any\nFilename: pool/a/app_1.deb\nSize: 10\nSHA256: aa\n\nPackage: libfoo\nVersion: 2\nPre-Depends: libc6\nFilename: pool/l/libfoo_2.deb\nSize: 5\nSHA256: bb\n\nPackage: exim\nVersion: 4\nProvides: mta\nDepends: app\nFilename: pool/e/exim_4.deb\nSize: 7\nSHA256: cc\n\nPackage: lonely\nVersion: 1\nDepends: ghost\n";

    #[test]
    fn a_closure_is_what_minbase_lacks_dependencies_first() {
        let a = Archive::new(parse_paragraphs(ARCHIVE));
        let have: BTreeSet<String> = ["libc6", "base"].iter().map(ToString::to_string).collect();
        let c: Vec<&str> = a
            .closure("app", &have)
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        // mta is virtual: its provider comes in; the cycle back to app ends.
        assert_eq!(c, ["libfoo", "exim", "app"]);
        let e = a.closure("lonely", &have).unwrap_err();
        assert!(e.contains("nothing provides ghost"), "{e}");
    }

    #[test]
    fn status_paragraphs_count_only_installed_packages() {
        let s = "Package: a\nStatus: install ok installed\nProvides: x\n\nPackage: b\nStatus: deinstall ok config-files\n";
        let names: Vec<String> = parse_paragraphs(s).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a"]);
    }
}
