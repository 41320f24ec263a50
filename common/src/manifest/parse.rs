//! The manifest's TOML shape: which tables hold which fields, their
//! defaults, and the per-field checks (through `read.rs`, which names the
//! field in every error).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::read::{Obj, Result, absolute, array, host_path, invalid, name, string};
use super::{
    Artifact, DEFAULT_BASELINE_SAMPLES, Guards, Limits, MAX_ARGV, MAX_BASELINE_SAMPLES,
    MAX_COMMANDS, MAX_MEMORY_LIMIT_MB, MAX_PATHS, MIN_BASELINE_SAMPLES, MIN_MEMORY_LIMIT_MB,
    Manifest, ManifestError, Mode, Monitor, PackageRef, Policy, Scope, ShadowPlan, Step,
};

pub(super) const MS: Duration = Duration::from_millis(1);

/// TOML text as a table, or the line and reason it is not TOML.
fn toml_table(text: &str) -> Result<Table> {
    text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(1, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        });
        ManifestError::Syntax {
            line,
            reason: e.message().trim().to_string(),
        }
    })
}

fn mode(field: &str, v: Value) -> Result<Mode> {
    match string(field, v)?.as_str() {
        "concurrent" => Ok(Mode::Concurrent),
        "shadow-first" => Ok(Mode::ShadowFirst),
        other => Err(invalid(
            field,
            format!("{other:?} is not \"concurrent\" or \"shadow-first\""),
        )),
    }
}

pub(super) fn manifest(text: &str, base: Option<&Path>) -> Result<Manifest> {
    let table = toml_table(text)?;
    let known = [
        "name",
        "package",
        "root",
        "mode",
        "artifact",
        "steps",
        "scope",
        "shadow",
        "probes",
        "monitor",
        "policy",
        "rollback_hooks",
    ];
    let mut o = Obj::open("", Value::Table(table), &known)?;
    let deployment = name("name", o.req_string("name")?)?;
    let package = o.take("package").map(|(f, v)| package(&f, v)).transpose()?;
    let root = match o.take("root") {
        Some((f, v)) => host_path(&f, &string(&f, v)?, base)?,
        None => PathBuf::from("/"),
    };
    let mode = match o.take("mode") {
        Some((f, v)) => mode(&f, v)?,
        None => Mode::Concurrent,
    };
    let (f, v) = o.req("artifact")?;
    let artifact = artifact(&f, v, base)?;
    let (f, v) = o.req("steps")?;
    let steps = commands(&f, v)?;
    if steps.is_empty() {
        return Err(invalid(&f, "at least one step is needed"));
    }
    let (f, v) = o.req("scope")?;
    let scope = scope(&f, v)?;
    let shadow = match o.take("shadow") {
        Some((f, v)) => shadow(&f, v)?,
        None => shadow("shadow", Value::Table(Table::new()))?,
    };
    let probes = o
        .array("probes", MAX_COMMANDS)?
        .into_iter()
        .map(|(f, v)| super::probe::probe(&f, v))
        .collect::<Result<Vec<_>>>()?;
    let monitor = match o.take("monitor") {
        Some((f, v)) => monitor(&f, v)?,
        None => monitor("monitor", Value::Table(Table::new()))?,
    };
    let policy = match o.take("policy") {
        Some((f, v)) => policy(&f, v)?,
        None => policy("policy", Value::Table(Table::new()))?,
    };
    let rollback_hooks = match o.take("rollback_hooks") {
        Some((f, v)) => commands(&f, v)?,
        None => Vec::new(),
    };
    Ok(Manifest {
        name: deployment,
        package,
        root,
        mode,
        artifact,
        steps,
        scope,
        shadow,
        probes,
        monitor,
        policy,
        rollback_hooks,
    })
}

fn package(path: &str, v: Value) -> Result<PackageRef> {
    let mut o = Obj::open(path, v, &["name", "version"])?;
    let pkg = o.req_string("name")?;
    let ok_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c);
    if pkg.len() < 2
        || pkg.len() > 128
        || !pkg.chars().all(ok_name)
        || !pkg.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(invalid(
            &o.field("name"),
            format!(
                "{pkg:?} is not a Debian package name (lowercase letters, digits, '+', '-', '.'; 2 to 128, first a letter or digit)"
            ),
        ));
    }
    let version = o.string("version")?;
    if let Some(v) = &version {
        let ok = |c: char| c.is_ascii_alphanumeric() || ".+~:-".contains(c);
        if v.is_empty() || v.len() > 128 || !v.chars().all(ok) {
            return Err(invalid(
                &o.field("version"),
                format!(
                    "{v:?} is not a Debian version (letters, digits, '.', '+', '~', ':', '-'; 1 to 128)"
                ),
            ));
        }
    }
    Ok(PackageRef { name: pkg, version })
}

fn artifact(path: &str, v: Value, base: Option<&Path>) -> Result<Artifact> {
    let mut o = Obj::open(path, v, &["debs", "dir", "build"])?;
    let debs_given = o.field("debs");
    let mut debs = Vec::new();
    for (f, v) in o.array("debs", MAX_PATHS)? {
        let p = host_path(&f, &string(&f, v)?, base)?;
        if p.extension().is_none_or(|e| e != "deb") {
            return Err(invalid(&f, format!("{} does not end in .deb", p.display())));
        }
        if debs.contains(&p) {
            return Err(invalid(&f, format!("{} is named twice", p.display())));
        }
        debs.push(p);
    }
    let dir_field = o.field("dir");
    let dir = match o.take("dir") {
        Some((f, v)) => Some(host_path(&f, &string(&f, v)?, base)?),
        None => None,
    };
    match (debs.is_empty(), dir.is_some()) {
        (false, true) => return Err(invalid(&dir_field, "give debs or dir, not both")),
        (true, false) => {
            return Err(invalid(
                &debs_given,
                "missing: give debs (a non-empty list of .deb files) or dir",
            ));
        }
        _ => {}
    }
    let build = match o.take("build") {
        Some((f, v)) => Some(command(&f, v, Some("build"))?),
        None => None,
    };
    Ok(Artifact { debs, dir, build })
}

/// An array of commands (steps, tests, hooks).
fn commands(path: &str, v: Value) -> Result<Vec<Step>> {
    array(path, v, MAX_COMMANDS)?
        .into_iter()
        .map(|(f, v)| command(&f, v, None))
        .collect()
}

/// One command; `default_name` is used when the table has no `name`
/// (only a build, which is alone of its kind, may omit it).
fn command(path: &str, v: Value, default_name: Option<&str>) -> Result<Step> {
    let mut o = Obj::open(path, v, &["name", "run", "timeout", "env"])?;
    let step_name = match (o.string("name")?, default_name) {
        (Some(n), _) => name(&o.field("name"), n)?,
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            return Err(invalid(
                &o.field("name"),
                "missing (this field is required)",
            ));
        }
    };
    let (f, v) = o.req("run")?;
    let run = argv(&f, v)?;
    let timeout = o.duration("timeout", Duration::from_mins(5), MS)?;
    let mut env = BTreeMap::new();
    if let Some((f, v)) = o.take("env") {
        let Value::Table(t) = v else {
            return Err(invalid(&f, "expected a table of NAME = \"value\""));
        };
        if t.len() > MAX_COMMANDS {
            return Err(invalid(
                &f,
                format!("{} variables, over the limit of {MAX_COMMANDS}", t.len()),
            ));
        }
        for (k, v) in t {
            let kf = format!("{f}.{k}");
            let ok = !k.is_empty()
                && k.len() <= 128
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(invalid(&kf, "not a variable name ([A-Za-z_][A-Za-z0-9_]*)"));
            }
            env.insert(k, string(&kf, v)?);
        }
    }
    Ok(Step {
        name: step_name,
        run,
        timeout,
        env,
    })
}

/// A non-empty argv of non-empty strings.
pub(super) fn argv(path: &str, v: Value) -> Result<Vec<String>> {
    if let Value::String(s) = &v {
        return Err(invalid(
            path,
            format!(
                "expected an argv list like [\"sh\", \"-c\", {s:?}], found a string (no shell is implied)"
            ),
        ));
    }
    let items = array(path, v, MAX_ARGV)?;
    if items.is_empty() {
        return Err(invalid(path, "empty argv: name a program to run"));
    }
    items
        .into_iter()
        .map(|(f, v)| {
            let s = string(&f, v)?;
            if s.is_empty() {
                return Err(invalid(&f, "empty argument"));
            }
            Ok(s)
        })
        .collect()
}

fn scope(path: &str, v: Value) -> Result<Scope> {
    let mut o = Obj::open(path, v, &["paths", "exclude"])?;
    let paths_field = o.field("paths");
    let mut paths = Vec::new();
    for (f, v) in o.array("paths", MAX_PATHS)? {
        paths.push(absolute(&f, &string(&f, v)?)?);
    }
    if paths.is_empty() {
        return Err(invalid(
            &paths_field,
            "missing: at least one path to snapshot is needed",
        ));
    }
    let mut exclude = Vec::new();
    for (f, v) in o.array("exclude", MAX_PATHS)? {
        exclude.push(string(&f, v)?);
    }
    Ok(Scope { paths, exclude })
}

fn shadow(path: &str, v: Value) -> Result<ShadowPlan> {
    let mut o = Obj::open(path, v, &["enabled", "tests", "limits"])?;
    let enabled = o.bool("enabled", true)?;
    let tests = match o.take("tests") {
        Some((f, v)) => commands(&f, v)?,
        None => Vec::new(),
    };
    let lv = o
        .take("limits")
        .map_or(Value::Table(Table::new()), |(_, v)| v);
    let mut l = Obj::open(
        &o.field("limits"),
        lv,
        &["memory_mb", "pids", "cpu_percent", "disk_mb"],
    )?;
    let limits = Limits {
        memory_mb: l.int("memory_mb", 16, 1 << 20)?.unwrap_or(1024) as u64,
        pids: l.int("pids", 16, 1 << 20)?.unwrap_or(1024) as u64,
        cpu_percent: l.int("cpu_percent", 1, 100_000)?.map(|n| n as u32),
        disk_mb: l.int("disk_mb", 1, 1 << 24)?.map(|n| n as u64),
    };
    Ok(ShadowPlan {
        enabled,
        tests,
        limits,
    })
}

fn monitor(path: &str, v: Value) -> Result<Monitor> {
    let known = [
        "period",
        "baseline_samples",
        "memory_limit_mb",
        "service_cgroup",
    ];
    let mut o = Obj::open(path, v, &known)?;
    let period = o.duration("period", Duration::from_secs(30), Duration::ZERO)?;
    let field = o.field("baseline_samples");
    let baseline_samples = match o.int("baseline_samples", 0, i64::from(MAX_BASELINE_SAMPLES))? {
        None => DEFAULT_BASELINE_SAMPLES,
        Some(n) if n != 0 && n < i64::from(MIN_BASELINE_SAMPLES) => {
            let reason = format!(
                "{n} is too few for the performance check: 0 (no baseline) or {MIN_BASELINE_SAMPLES} to {MAX_BASELINE_SAMPLES}"
            );
            return Err(invalid(&field, reason));
        }
        Some(n) => n as u32,
    };
    let memory_limit_mb = o
        .int(
            "memory_limit_mb",
            MIN_MEMORY_LIMIT_MB as i64,
            MAX_MEMORY_LIMIT_MB as i64,
        )?
        .map(|n| n as u64);
    let service_cgroup = match o.take("service_cgroup") {
        Some((f, v)) => Some(super::read::cgroup_path(&f, &string(&f, v)?)?),
        None => None,
    };
    Ok(Monitor {
        period,
        baseline_samples,
        memory_limit_mb,
        service_cgroup,
    })
}

fn policy(path: &str, v: Value) -> Result<Policy> {
    let mut o = Obj::open(path, v, &["threshold", "guards"])?;
    let threshold = o.number(
        "threshold",
        |x| x > 0.0 && x < 1.0,
        "(0, 1), both ends excluded",
    )?;
    let gv = o
        .take("guards")
        .map_or(Value::Table(Table::new()), |(_, v)| v);
    let known = [
        "min_windows",
        "max_divergence",
        "history",
        "max_latency_increase",
        "exhaustion",
    ];
    let mut g = Obj::open(&o.field("guards"), gv, &known)?;
    let d = Guards::default();
    let guards = Guards {
        min_windows: g
            .int("min_windows", 1, 1000)?
            .map_or(d.min_windows, |n| n as u32),
        max_divergence: g.number("max_divergence", |x| x > 0.0 && x <= 1.0, "(0, 1]")?,
        history: g.bool("history", d.history)?,
        max_latency_increase: g
            .number(
                "max_latency_increase",
                |x| x > 0.0 && x <= 100.0,
                "(0, 100]",
            )?
            .unwrap_or(d.max_latency_increase),
        exhaustion: g.bool("exhaustion", d.exhaustion)?,
    };
    Ok(Policy { threshold, guards })
}
