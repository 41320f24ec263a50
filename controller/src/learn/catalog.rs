//! The corpus runner: each scenario of a catalog is a real `dpkg -i` of a
//! real package in a shadow on the Debian rootfs, watched by the probes,
//! with a fault injected or not. What it records (windows, outcome, onset)
//! is what the model learns from.
//!
//! Faults are injected the ways they happen: a maintainer script changed
//! by repacking the .deb (dpkg-deb -R / -b), a dependency left out, the
//! shadow's limits (memory, a small upper layer for a full disk), a
//! timeout. Every scenario is seeded: the same catalog gives the same
//! installs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use backstop_common::features::{FEATURES, SCHEMA_VERSION};
use serde::Deserialize;

use super::corpus::{HEALTHY, Outcome, Record};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("scenario {scenario}: {reason}")]
    Scenario { scenario: String, reason: String },
}

type Result<T> = std::result::Result<T, CatalogError>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(rename = "scenario")]
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Memory limit of every shadow, bytes.
    #[serde(default = "default_memory")]
    pub memory: u64,
}

fn default_window_ms() -> u64 {
    500
}
fn default_timeout() -> u64 {
    60
}
fn default_memory() -> u64 {
    1 << 30
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            window_ms: default_window_ms(),
            timeout_secs: default_timeout(),
            memory: default_memory(),
        }
    }
}

/// The fault families a scenario can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    None,
    /// The postinst does `work` seconds of its own work, then exits 1.
    FailingScript,
    /// Only the package's own .deb, none of the dependencies it needs.
    MissingDependency,
    /// The postinst writes a config with a syntax error and checks it.
    ConfigTypo,
    /// A service that answers, but slower with each request: the health
    /// probe's latency bound fails.
    SlowService,
    /// The upper layer is smaller than what the install writes.
    DiskFull,
    /// The postinst grows its memory until the limit.
    MemoryBlowup,
    /// The postinst waits on a lock a stray process holds, until the timeout.
    LockHang,
    /// The postinst spins on the CPU until the timeout.
    CpuRunaway,
    /// A service that crashes and is restarted, again and again; the
    /// health probe fails.
    CrashLoop,
    /// The postinst writes with O_DSYNC in small blocks for a long time.
    IoStall,
    /// The postinst retries a connection to an unreachable address, then fails.
    UnreachableNetwork,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::None => HEALTHY,
            Family::FailingScript => "failing-script",
            Family::MissingDependency => "missing-dependency",
            Family::ConfigTypo => "config-typo",
            Family::SlowService => "slow-service",
            Family::DiskFull => "disk-full",
            Family::MemoryBlowup => "memory-blowup",
            Family::LockHang => "lock-hang",
            Family::CpuRunaway => "cpu-runaway",
            Family::CrashLoop => "crash-loop",
            Family::IoStall => "io-stall",
            Family::UnreachableNetwork => "unreachable-network",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub package: String,
    #[serde(default = "none")]
    pub fault: Family,
    /// The fault's strength: seconds of work, MB of memory growth, delay
    /// steps; what it means is up to the family.
    #[serde(default = "one")]
    pub magnitude: u32,
    /// Seconds of normal work the postinst does before the fault starts.
    #[serde(default)]
    pub delay: u32,
    #[serde(default)]
    pub seed: u64,
    /// This scenario's timeout, for packages whose healthy install takes
    /// longer than the catalog's default allows.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

fn none() -> Family {
    Family::None
}
fn one() -> u32 {
    1
}

impl Scenario {
    /// The id of the deployment this scenario records.
    pub fn id(&self) -> String {
        format!("{}-{}", self.name, self.seed)
    }

    /// The fault variant: family, magnitude and timing (what a split keeps
    /// apart). Healthy installs have none.
    pub fn variant(&self) -> String {
        if self.fault == Family::None {
            HEALTHY.into()
        } else {
            format!("{}-m{}-d{}", self.fault.name(), self.magnitude, self.delay)
        }
    }
}

pub fn load(path: &Path) -> Result<Catalog> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
        context: format!("reading the catalog {}", path.display()),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// A catalog from its text (`source` names it in errors). Everything used
/// as a path component is checked here, before anything touches the disk:
/// a scenario name becomes OUT/work/NAME, which the runner empties with
/// remove_dir_all, and a package name DEBS/NAME and part of a postinst.
pub fn parse(text: &str, source: &str) -> Result<Catalog> {
    let bad = |reason: String| CatalogError::Bad {
        path: source.to_string(),
        reason,
    };
    let c: Catalog = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut seen = std::collections::HashSet::new();
    for (i, s) in c.scenarios.iter().enumerate() {
        for (field, value) in [("name", &s.name), ("package", &s.package)] {
            if !is_path_component(value) {
                return Err(bad(format!(
                    "scenario[{i}].{field} {value:?} is not a plain name: only letters, digits, '.', '_' and '-', and not '.' or '..'"
                )));
            }
        }
        if !seen.insert(&s.name) {
            return Err(bad(format!("scenario name {:?} appears twice", s.name)));
        }
    }
    Ok(c)
}

/// `[A-Za-z0-9._-]+`, and not `.` or `..`: a name that stays one path
/// component, and one word in a shell script.
fn is_path_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Where the runner finds things.
pub struct RunOptions {
    pub agent: PathBuf,
    pub root: PathBuf,
    /// DEBS/<package>/*.deb: the package and the dependencies the root lacks.
    pub debs: PathBuf,
    pub out: PathBuf,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CatalogError {
    let context = context.into();
    move |source| CatalogError::Io { context, source }
}

/// The postinst fragment that injects `s`'s fault, after `s.delay` seconds
/// of ordinary work (for a healthy scenario with a delay: the work alone).
fn fault_script(s: &Scenario) -> Option<String> {
    let m = s.magnitude.max(1);
    let work = format!(
        "i=0; end=$(( $(date +%s) + {d} )); while [ $(date +%s) -lt $end ]; do ls -R /usr/share/doc >/dev/null; i=$((i+1)); done\n",
        d = s.delay
    );
    let fault = match s.fault {
        // A healthy install with the same ordinary work as the faulty ones
        // do before their fault: the work alone must not look like one.
        Family::None if s.delay > 0 => String::new(),
        Family::None | Family::MissingDependency | Family::DiskFull => return None,
        Family::FailingScript => format!("sleep {m}\necho 'postinst: giving up' >&2\nexit 1\n"),
        Family::ConfigTypo => format!(
            "mkdir -p /etc/backstop-demo\nprintf 'if [ 1 ; then\\n  echo ok\\n' > /etc/backstop-demo/{p}.conf\nsleep {m}\nsh -n /etc/backstop-demo/{p}.conf || {{ echo 'postinst: configuration error' >&2; exit 1; }}\n",
            p = s.package
        ),
        Family::SlowService | Family::CrashLoop => {
            // Started here, probed by the scenario's health test.
            let body = if s.fault == Family::SlowService {
                format!(
                    "perl -MIO::Socket::INET -e '$l=IO::Socket::INET->new(LocalAddr=>\"127.0.0.1:8089\",Listen=>5,ReuseAddr=>1) or die; $n=0; while($c=$l->accept){{ select(undef,undef,undef,0.05*$n*{m}); $n++; print $c \"ok\\n\"; close $c }}' </dev/null >/dev/null 2>&1 &\n"
                )
            } else {
                format!(
                    "( while :; do perl -e 'open(F, \">/run/backstop-demo.pid\"); print F $$; close F; sleep {m}; kill SEGV => $$'; sleep 0.2; done ) </dev/null >/dev/null 2>&1 &\n"
                )
            };
            body + "sleep 1\n"
        }
        Family::MemoryBlowup => format!(
            "perl -e '$s = \"x\" x (1<<20); @a = (); while (1) {{ push @a, $s . rand(); select(undef,undef,undef,0.03/{m}) }}'\n"
        ),
        Family::LockHang => format!(
            "( exec 9>/run/lock/backstop-demo.lock; perl -e 'use Fcntl qw(:flock); open(F, \">&=9\"); flock(F, LOCK_EX); sleep 100000' ) &\nsleep {m}\nperl -e 'use Fcntl qw(:flock); open(F, \">/run/lock/backstop-demo.lock\"); flock(F, LOCK_EX)'\n"
        ),
        Family::CpuRunaway => "perl -e 'while (1) { $x++ }'\n".to_string(),
        Family::IoStall => format!(
            "dd if=/dev/zero of=/var/tmp/backstop-demo.io bs=4k count={} oflag=dsync 2>/dev/null\n",
            1_000_000 * m
        ),
        Family::UnreachableNetwork => format!(
            "for try in $(seq 1 {}); do perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr=>\"192.0.2.1:80\",Timeout=>1) or exit 1' && exit 0; sleep 1; done\necho 'postinst: cannot reach the license server' >&2\nexit 1\n",
            3 * m
        ),
    };
    Some(format!("{work}{fault}"))
}

/// The main .deb of `package` in DEBS/<package>/.
fn main_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let rd = std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
    rd.flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .ok_or_else(|| CatalogError::Scenario {
            scenario: package.into(),
            reason: format!("no {package}_*.deb in {}", dir.display()),
        })
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().map_err(io(what.to_string()))?;
    if !out.status.success() {
        return Err(CatalogError::Io {
            context: format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            source: std::io::Error::other("failed"),
        });
    }
    Ok(())
}

/// The compression of a .deb's data member, as `dpkg-deb -Z` names it,
/// read from the ar archive's member names.
fn data_compression(deb: &Path) -> Result<&'static str> {
    use std::io::{Read, Seek, SeekFrom};
    let read_err = |e| io(format!("reading {}", deb.display()))(e);
    let mut f = std::fs::File::open(deb).map_err(io(format!("opening {}", deb.display())))?;
    let bad = |reason: &str| CatalogError::Bad {
        path: deb.display().to_string(),
        reason: reason.into(),
    };
    // Only the member headers are read; the members are skipped.
    let mut magic = [0u8; 8];
    if f.read_exact(&mut magic).is_err() || &magic != b"!<arch>\n" {
        return Err(bad("not an ar archive"));
    }
    let mut header = [0u8; 60];
    loop {
        match f.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(read_err(e)),
        }
        let name = String::from_utf8_lossy(&header[..16]);
        let name = name.trim_end().trim_end_matches('/');
        let size: i64 = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| bad("bad ar member size"))?;
        if let Some(ext) = name.strip_prefix("data.tar") {
            return Ok(match ext {
                ".xz" => "xz",
                ".gz" => "gzip",
                ".zst" => "zstd",
                "" => "none",
                _ => return Err(bad(&format!("unknown data member {name}"))),
            });
        }
        f.seek(SeekFrom::Current(size + size % 2))
            .map_err(read_err)?;
    }
    Err(bad("no data.tar member"))
}

/// Repack `deb` into `dir` with `fragment` put first in its postinst
/// (created if absent; left alone if `fragment` is empty), compressed as
/// the original was. Every scenario's package goes through here, healthy
/// ones too: a detector must not tell a fault by how its .deb was built.
fn repack(deb: &Path, fragment: &str, dir: &Path) -> Result<PathBuf> {
    let compression = data_compression(deb)?;
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    run_ok(
        Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree),
        "dpkg-deb -R",
    )?;
    let postinst = tree.join("DEBIAN/postinst");
    if !fragment.is_empty() {
        let old = std::fs::read_to_string(&postinst).unwrap_or_default();
        let body = if old.is_empty() {
            format!("#!/bin/sh\n{fragment}")
        } else {
            // Ours first: a postinst may `exit 0` before its end.
            let (shebang, rest) = old.split_once('\n').unwrap_or((&old, ""));
            format!("{shebang}\n{fragment}{rest}")
        };
        std::fs::write(&postinst, body).map_err(io(format!("writing {}", postinst.display())))?;
        std::fs::set_permissions(
            &postinst,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(io(format!("chmod {}", postinst.display())))?;
    }
    let name = deb.file_name().unwrap_or_default();
    let out = dir.join(name);
    run_ok(
        Command::new("dpkg-deb")
            .arg("-b")
            .arg(format!("-Z{compression}"))
            .arg(&tree)
            .arg(&out),
        "dpkg-deb -b",
    )?;
    let _ = std::fs::remove_dir_all(&tree);
    Ok(out)
}

/// Run one scenario; the deployment it produced.
pub fn run_scenario(defaults: &Defaults, s: &Scenario, o: &RunOptions) -> Result<Record> {
    let fail = |reason: String| CatalogError::Scenario {
        scenario: s.name.clone(),
        reason,
    };
    let pkg_dir = o.debs.join(&s.package);
    let main = main_deb(&pkg_dir, &s.package)?;
    let work = o.out.join("work").join(&s.name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(format!("creating {}", work.display())))?;
    let mut debs: Vec<PathBuf> = if s.fault == Family::MissingDependency {
        vec![main.clone()]
    } else {
        std::fs::read_dir(&pkg_dir)
            .map_err(io(format!("reading {}", pkg_dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect()
    };
    debs.sort();
    let repacked = repack(&main, &fault_script(s).unwrap_or_default(), &work)?;
    for d in &mut debs {
        if *d == main {
            *d = repacked.clone();
        }
    }
    let total: u64 = debs
        .iter()
        .filter_map(|d| std::fs::metadata(d).ok())
        .map(|m| m.len())
        .sum();
    let mut cmd = Command::new(&o.agent);
    cmd.args(["shadow", "--json", "--data"])
        .arg(o.out.join("agent-data"))
        .arg("run")
        .arg("--root")
        .arg(&o.root)
        .args(["--window-ms", &defaults.window_ms.to_string()])
        .args([
            "--timeout-secs",
            &s.timeout_secs.unwrap_or(defaults.timeout_secs).to_string(),
        ])
        // Sync calls reach the disk, so the windows' I/O is a live install's.
        .arg("--durable");
    let memory = if s.fault == Family::MemoryBlowup {
        64 << 20
    } else {
        defaults.memory
    };
    cmd.args(["--memory", &memory.to_string()]);
    if s.fault == Family::DiskFull {
        // Room for a fraction of what unpacking writes.
        let size = (total / (2 * u64::from(s.magnitude.max(1)))).max(256 * 1024);
        cmd.args(["--upper-size", &size.to_string()]);
    }
    let health = match s.fault {
        Family::SlowService => Some(
            "for i in 1 2 3 4 5 6 7 8; do s=$(date +%s%N); perl -MIO::Socket::INET -e '$c=IO::Socket::INET->new(PeerAddr=>\"127.0.0.1:8089\") or exit 1; <$c>' || exit 1; e=$(date +%s%N); [ $(( (e-s)/1000000 )) -lt 200 ] || exit 1; done",
        ),
        // The service's process must live through 3 seconds.
        Family::CrashLoop => Some("p=$(cat /run/backstop-demo.pid) && sleep 3 && kill -0 $p"),
        _ => None,
    };
    if let Some(h) = health {
        cmd.args(["--test", h]);
    }
    for d in &debs {
        cmd.arg("--copy-in").arg(d);
    }
    let names: Vec<String> = debs
        .iter()
        .map(|d| {
            format!(
                "/.backstop-shadow/in/{}",
                d.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    cmd.args(["--", "dpkg", "-i"]).args(&names);
    let out = cmd
        .output()
        .map_err(io(format!("running {}", o.agent.display())))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "the shadow printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    let _ = std::fs::remove_dir_all(&work);
    deployment_from_report(s, &v, defaults.window_ms).map_err(fail)
}

/// Outcome and onset from a shadow report.
pub fn deployment_from_report(
    s: &Scenario,
    v: &serde_json::Value,
    window_ms: u64,
) -> std::result::Result<Record, String> {
    let windows: Vec<Vec<f64>> = v["windows"]
        .as_array()
        .ok_or("no windows in the report")?
        .iter()
        .map(|w| {
            FEATURES
                .iter()
                .map(|f| w["features"][f.name].as_f64().unwrap_or(0.0))
                .collect()
        })
        .collect();
    if windows.is_empty() {
        return Err("no windows in the report".into());
    }
    let cmd_ok = v["cmd"]["exit_code"] == 0;
    let timed_out = v["timed_out"] == true;
    let oom = v["oom_killed"] == true;
    let tests_ok = v["tests"]
        .as_array()
        .is_none_or(|t| t.iter().all(|t| t["exit_code"] == 0));
    let outcome = if !cmd_ok || timed_out || oom {
        Outcome::Failed
    } else if !tests_ok {
        Outcome::Degraded
    } else {
        Outcome::Ok
    };
    // When it showed: the failing step's end (CMD, or CMD then the test).
    let cmd_ms = v["cmd"]["duration_ms"].as_f64();
    let onset_ms = match outcome {
        Outcome::Ok => None,
        Outcome::Failed => Some(cmd_ms.unwrap_or(f64::MAX)),
        Outcome::Degraded => Some(
            cmd_ms.unwrap_or(0.0)
                + v["tests"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|t| t["duration_ms"].as_f64()).sum())
                    .unwrap_or(0.0),
        ),
    };
    let last = windows.len() - 1;
    let onset_window = onset_ms.map(|ms| ((ms / window_ms as f64) as usize).min(last));
    Ok(Record {
        id: s.id(),
        package: s.package.clone(),
        family: s.fault.name().into(),
        variant: s.variant(),
        outcome,
        onset_window,
        visible_to_checks: outcome != Outcome::Ok,
        window_ms,
        schema: SCHEMA_VERSION.into(),
        windows,
    })
}

/// Run every scenario, appending to OUT/deployments.jsonl as each ends
/// (a long run interrupted keeps what it did; a scenario already in the
/// corpus is not run again).
pub fn run(
    catalog: &Catalog,
    o: &RunOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Record>> {
    std::fs::create_dir_all(&o.out).map_err(io(format!("creating {}", o.out.display())))?;
    let ids: Vec<String> = catalog.scenarios.iter().map(Scenario::id).collect();
    let mut done: BTreeMap<String, Record> = BTreeMap::new();
    let earlier = if o.out.join("deployments.jsonl").exists() {
        super::corpus::read(&[&o.out]).unwrap_or_else(|e| {
            // Not silently: a whole corpus is about to be run again.
            progress(&format!(
                "not reusing the records in {}: {e}",
                o.out.display()
            ));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    for d in earlier {
        if ids.contains(&d.id) {
            done.insert(d.id.clone(), d);
        } else {
            // A scenario the catalog no longer has: its record goes.
            progress(&format!("dropping {}: not in the catalog", d.id));
        }
    }
    for (i, (s, id)) in catalog.scenarios.iter().zip(ids).enumerate() {
        if done.contains_key(&id) {
            continue;
        }
        progress(&format!(
            "[{}/{}] {} ({}, {})",
            i + 1,
            catalog.scenarios.len(),
            s.name,
            s.package,
            s.variant()
        ));
        let d = run_scenario(&catalog.defaults, s, o)?;
        done.insert(id, d);
        let all: Vec<Record> = done.values().cloned().collect();
        super::corpus::write(&o.out, &all).map_err(|e| CatalogError::Io {
            context: e.to_string(),
            source: std::io::Error::other("writing the corpus"),
        })?;
    }
    let _ = std::fs::remove_dir_all(o.out.join("work"));
    Ok(done.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ar archive of (name, content) members, as dpkg-deb writes one.
    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, body) in members {
            out.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    "100644",
                    body.len()
                )
                .bytes(),
            );
            out.extend(*body);
            if body.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn a_repack_keeps_the_original_compression() {
        let dir = std::env::temp_dir().join(format!("backstop-ar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let deb = dir.join("p.deb");
        for (member, z) in [
            ("data.tar.xz", "xz"),
            ("data.tar.zst", "zstd"),
            ("data.tar", "none"),
        ] {
            std::fs::write(
                &deb,
                ar(&[
                    ("debian-binary", b"2.0\n"),
                    ("control.tar.gz", b"odd"),
                    (member, b"x"),
                ]),
            )
            .unwrap();
            assert_eq!(data_compression(&deb).unwrap(), z, "{member}");
        }
        std::fs::write(&deb, ar(&[("debian-binary", b"2.0\n")])).unwrap();
        let e = data_compression(&deb).unwrap_err().to_string();
        assert!(e.contains("p.deb") && e.contains("no data.tar"), "{e}");
        std::fs::write(&deb, b"PK\x03\x04").unwrap();
        let e = data_compression(&deb).unwrap_err().to_string();
        assert!(e.contains("not an ar archive"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn catalog_parses_and_refuses_mistakes() {
        let dir = std::env::temp_dir().join(format!("backstop-cat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            "[defaults]\nwindow_ms = 250\n[[scenario]]\nname = \"a\"\npackage = \"hello\"\n[[scenario]]\nname = \"b\"\npackage = \"hello\"\nfault = \"memory-blowup\"\nmagnitude = 2\ndelay = 1\n",
        )
        .unwrap();
        let c = load(&p).unwrap();
        assert_eq!(c.defaults.window_ms, 250);
        assert_eq!(c.scenarios[0].variant(), "none");
        assert_eq!(c.scenarios[1].variant(), "memory-blowup-m2-d1");
        std::fs::write(
            &p,
            "[[scenario]]\nname = \"a\"\npackage = \"x\"\nfault = \"oops\"\n",
        )
        .unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("oops") && e.contains("c.toml"), "{e}");
        std::fs::write(&p, "[[scenario]]\nname = \"a\"\npackage = \"x\"\n[[scenario]]\nname = \"a\"\npackage = \"y\"\n").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("twice"));
        for (field, value) in [
            ("name", "../../../x"),
            ("name", ".."),
            ("name", "."),
            ("name", ""),
            ("name", "a/b"),
            ("package", "../p"),
            ("package", "p;rm"),
        ] {
            let (name, package) = if field == "name" {
                (value, "p")
            } else {
                ("ok", value)
            };
            let text = format!(
                "[[scenario]]\nname = \"fine\"\npackage = \"p\"\n[[scenario]]\nname = {name:?}\npackage = {package:?}\n"
            );
            let e = parse(&text, "c.toml").unwrap_err().to_string();
            assert!(
                e.contains(&format!("scenario[1].{field} {value:?}")) && e.contains("c.toml"),
                "{field} = {value:?}: {e}"
            );
        }
        assert!(
            parse(
                "[[scenario]]\nname = \"a-1.b_C\"\npackage = \"lib2.0-x\"\n",
                "c"
            )
            .is_ok()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outcome_and_onset_from_a_report() {
        let s = Scenario {
            name: "x".into(),
            package: "p".into(),
            fault: Family::FailingScript,
            magnitude: 1,
            delay: 2,
            seed: 0,
            timeout_secs: None,
        };
        let w = serde_json::json!({"features": {"syscalls_total": 5.0}});
        let v = serde_json::json!({
            "windows": [w, w, w, w, w, w],
            "cmd": {"exit_code": 1, "duration_ms": 1600.0},
            "tests": [], "timed_out": false, "oom_killed": false
        });
        let d = deployment_from_report(&s, &v, 500).unwrap();
        assert_eq!(d.outcome, Outcome::Failed);
        assert_eq!(d.onset_window, Some(3));
        assert_eq!(d.windows[0][0], 5.0);
        let v = serde_json::json!({
            "windows": [w, w, w],
            "cmd": {"exit_code": 0, "duration_ms": 100.0},
            "tests": [{"exit_code": 1, "duration_ms": 600.0}], "timed_out": false, "oom_killed": false
        });
        let d = deployment_from_report(&s, &v, 500).unwrap();
        assert_eq!(d.outcome, Outcome::Degraded);
        assert_eq!(d.onset_window, Some(1));
    }
}
