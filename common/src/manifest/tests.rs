//! The manifest's specification as tests: a good manifest's defaults, each
//! refusal naming its field, the wire and JSON round trips, the examples.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A valid manifest using every table; the bad cases below each change
/// one thing in it.
const GOOD: &str = r#"
name = "web-1.2"
root = "/srv/rootfs"
mode = "concurrent"
package = { name = "hello", version = "2.10-3" }

[artifact]
debs = ["/var/cache/backstop/hello_2.10-3_amd64.deb"]

[[steps]]
name = "install"
run = ["dpkg", "-i", "{artifact}"]
timeout = "2m"
env = { DEBIAN_FRONTEND = "noninteractive" }

[[steps]]
name = "check"
run = ["hello", "--version"]

[scope]
paths = ["/etc", "/usr/bin/"]
exclude = ["/etc/*.bak", "/usr/bin/**/cache"]

[shadow]
tests = [{ name = "runs", run = ["hello"], timeout = "10s" }]
limits = { memory_mb = 512, pids = 256 }

[[probes]]
name = "web"
type = "http"
url = "http://127.0.0.1:8080/healthz"
interval = "1s"
timeout = "500ms"
latency_budget = "200ms"

[[probes]]
name = "port"
type = "tcp"
addr = "127.0.0.1:8080"

[monitor]
period = "1m30s"

[policy]
threshold = 0.7
guards = { min_windows = 3 }

[[rollback_hooks]]
name = "restart"
run = ["/usr/sbin/service", "web", "restart"]
"#;

fn good() -> Manifest {
    Manifest::from_toml(GOOD).unwrap_or_else(|e| panic!("the good manifest was refused: {e}"))
}

#[test]
fn a_good_manifest_parses_with_its_defaults() {
    let m = good();
    assert_eq!(m.root, PathBuf::from("/srv/rootfs"));
    assert_eq!(m.steps[0].timeout, Duration::from_mins(2));
    assert_eq!(
        m.steps[1].timeout,
        Duration::from_mins(5),
        "default step timeout"
    );
    assert_eq!(
        m.scope.paths[1],
        PathBuf::from("/usr/bin"),
        "trailing / normalised"
    );
    assert!(m.shadow.enabled, "shadow on by default");
    assert_eq!(m.shadow.limits.cpu_percent, None);
    assert_eq!(
        m.probes[1].interval,
        Duration::from_secs(5),
        "default interval"
    );
    assert_eq!(
        m.probes[1].timeout,
        Duration::from_secs(2),
        "default timeout"
    );
    assert_eq!(
        m.probes[0].kind,
        ProbeKind::Http {
            url: "http://127.0.0.1:8080/healthz".into(),
            expect_status: 200
        }
    );
    assert_eq!(m.monitor.period, Duration::from_secs(90));
    assert_eq!(m.policy.threshold, Some(0.7));
    assert_eq!(m.policy.guards.min_windows, 3);
    assert!(m.policy.guards.history, "history on by default");
    let argv = m.steps[0].argv(&[PathBuf::from("/a.deb"), PathBuf::from("/b.deb")]);
    assert_eq!(argv, ["dpkg", "-i", "/a.deb", "/b.deb"]);
}

#[test]
fn the_smallest_manifest_takes_every_default() {
    let m = Manifest::from_toml(
        "name = \"x\"\nartifact.dir = \"/srv/a\"\nscope.paths = [\"/opt\"]\n\
         steps = [{ name = \"s\", run = [\"true\"] }]\n",
    )
    .unwrap();
    assert_eq!(m.root, PathBuf::from("/"));
    assert_eq!(m.mode, Mode::Concurrent);
    assert_eq!(m.monitor.period, Duration::from_secs(30));
    assert_eq!(m.monitor.baseline_samples, 10);
    assert_eq!(m.policy.threshold, None, "None: the model's own threshold");
    assert_eq!(m.policy.guards, Guards::default());
    assert!(m.probes.is_empty() && m.rollback_hooks.is_empty() && m.package.is_none());
}

/// Replace the first `from` in GOOD with `to` (`to` may be empty), or
/// put `to` first (at the top level) when `from` is empty.
fn variant(from: &str, to: &str) -> String {
    if from.is_empty() {
        return format!("{to}\n{GOOD}");
    }
    assert!(GOOD.contains(from), "the table's {from:?} is not in GOOD");
    GOOD.replacen(from, to, 1)
}

/// (replace in GOOD, with, the field the error names, a word of the reason)
#[rustfmt::skip]
const BAD: &[(&str, &str, &str, &str)] = &[
    ("name = \"web-1.2\"", "", "name", "missing"),
    ("name = \"web-1.2\"", "name = \"-x\"", "name", "not first"),
    ("name = \"web-1.2\"", "name = \"a b\"", "name", "only letters"),
    ("", "colour = \"red\"", "colour", "unknown field"),
    ("root = \"/srv/rootfs\"", "root = \"srv\"", "root", "relative"),
    ("mode = \"concurrent\"", "mode = \"fast\"", "mode", "shadow-first"),
    ("version = \"2.10-3\"", "version = \"2 10\"", "package.version", "Debian version"),
    ("name = \"hello\"", "name = \"Hello\"", "package.name", "package name"),
    ("debs = [\"/var/cache/backstop/hello_2.10-3_amd64.deb\"]", "debs = [\"/x/hello.rpm\"]", "artifact.debs[0]", ".deb"),
    ("debs = [\"/var/cache/backstop/hello_2.10-3_amd64.deb\"]", "debs = [\"x.deb\"]", "artifact.debs[0]", "relative"),
    ("debs = [\"/var/cache/backstop/hello_2.10-3_amd64.deb\"]", "debs = [\"/a.deb\"]\ndir = \"/d\"", "artifact.dir", "not both"),
    ("debs = [\"/var/cache/backstop/hello_2.10-3_amd64.deb\"]", "", "artifact.debs", "missing"),
    ("debs = [\"/var/cache/backstop/hello_2.10-3_amd64.deb\"]", "debs = [\"/a.deb\", \"/a.deb\"]", "artifact.debs[1]", "twice"),
    ("debs = [\"/var/cache/backstop/hello_2.10-3_amd64.deb\"]", "debs = [\"/a.deb\"]\nbuild = { run = [\"make\", \"{artifact}\"] }", "artifact.build.run[1]", "build"),
    ("run = [\"dpkg\", \"-i\", \"{artifact}\"]", "run = []", "steps[0].run", "empty argv"),
    ("run = [\"dpkg\", \"-i\", \"{artifact}\"]", "run = \"dpkg -i x\"", "steps[0].run", "no shell"),
    ("run = [\"dpkg\", \"-i\", \"{artifact}\"]", "run = [\"dpkg\", \"\"]", "steps[0].run[1]", "empty argument"),
    ("run = [\"dpkg\", \"-i\", \"{artifact}\"]", "run = [\"a\\u0000b\"]", "steps[0].run[0]", "NUL"),
    ("timeout = \"2m\"", "timeout = \"0s\"", "steps[0].timeout", "shorter"),
    ("timeout = \"2m\"", "timeout = \"25h\"", "steps[0].timeout", "longer"),
    ("timeout = \"2m\"", "timeout = \"2 minutes\"", "steps[0].timeout", "not a duration"),
    ("timeout = \"2m\"", "timeout = -1", "steps[0].timeout", "expected a duration"),
    ("timeout = \"2m\"", "timeot = \"2m\"", "steps[0].timeot", "unknown field"),
    ("DEBIAN_FRONTEND =", "1X =", "steps[0].env.1X", "variable name"),
    ("name = \"check\"", "name = \"install\"", "steps[1].name", "twice"),
    ("name = \"check\"", "", "steps[1].name", "missing"),
    ("paths = [\"/etc\", \"/usr/bin/\"]", "paths = [\"etc\"]", "scope.paths[0]", "not an absolute path"),
    ("paths = [\"/etc\", \"/usr/bin/\"]", "paths = [\"/etc/../root\"]", "scope.paths[0]", "'..'"),
    ("paths = [\"/etc\", \"/usr/bin/\"]", "paths = []", "scope.paths", "at least one"),
    ("paths = [\"/etc\", \"/usr/bin/\"]", "paths = [\"/etc\", \"/etc/ssh\"]", "scope.paths[1]", "overlaps"),
    ("exclude = [\"/etc/*.bak\", \"/usr/bin/**/cache\"]", "exclude = [\"/var/log/**\"]", "scope.exclude[0]", "not under a scope path"),
    ("exclude = [\"/etc/*.bak\", \"/usr/bin/**/cache\"]", "exclude = [\"/**/*.bak\"]", "scope.exclude[0]", "not under a scope path"),
    ("exclude = [\"/etc/*.bak\", \"/usr/bin/**/cache\"]", "exclude = [\"etc/*.bak\"]", "scope.exclude[0]", "not absolute"),
    ("exclude = [\"/etc/*.bak\", \"/usr/bin/**/cache\"]", "exclude = [\"/etc/../var/*\"]", "scope.exclude[0]", "'..'"),
    ("exclude = [\"/etc/*.bak\", \"/usr/bin/**/cache\"]", "exclude = [\"/etc\"]", "scope.exclude[0]", "whole scope path"),
    ("exclude = [\"/etc/*.bak\", \"/usr/bin/**/cache\"]", "exclude = [\"/etc/[a-\"]", "scope.exclude[0]", "not a glob"),
    ("exclude = [\"/etc/*.bak\", \"/usr/bin/**/cache\"]", "exclude = [\"/etc/{a,b\"]", "scope.exclude[0]", "not a glob"),
    ("limits = { memory_mb = 512, pids = 256 }", "limits = { memory_mb = 1 }", "shadow.limits.memory_mb", "outside"),
    ("limits = { memory_mb = 512, pids = 256 }", "limits = { memory = 1 }", "shadow.limits.memory", "unknown field"),
    ("tests = [{ name = \"runs\", run = [\"hello\"], timeout = \"10s\" }]", "enabled = \"yes\"", "shadow.enabled", "true or false"),
    ("type = \"http\"", "type = \"udp\"", "probes[0].type", "not \"command\""),
    ("url = \"http://127.0.0.1:8080/healthz\"", "url = \"https://x/\"", "probes[0].url", "only http://"),
    ("url = \"http://127.0.0.1:8080/healthz\"", "url = \"http://u:p@x/\"", "probes[0].url", "user info"),
    ("url = \"http://127.0.0.1:8080/healthz\"", "url = \"http://x:0/\"", "probes[0].url", "port"),
    ("url = \"http://127.0.0.1:8080/healthz\"", "url = \"http:///\"", "probes[0].url", "no host"),
    ("url = \"http://127.0.0.1:8080/healthz\"", "url = \"http://x/\"\nexpect_status = 42", "probes[0].expect_status", "outside"),
    ("url = \"http://127.0.0.1:8080/healthz\"", "url = \"http://x/\"\naddr = \"1.2.3.4:5\"", "probes[0].addr", "an http probe"),
    ("timeout = \"500ms\"", "timeout = \"2s\"", "probes[0].timeout", "interval"),
    ("latency_budget = \"200ms\"", "latency_budget = \"600ms\"", "probes[0].latency_budget", "timeout"),
    ("interval = \"1s\"", "interval = \"10ms\"", "probes[0].interval", "shorter"),
    ("addr = \"127.0.0.1:8080\"", "addr = \"localhost\"", "probes[1].addr", "IP:PORT"),
    ("name = \"port\"", "name = \"web\"", "probes[1].name", "twice"),
    ("period = \"1m30s\"", "period = \"1m1h\"", "monitor.period", "units must go"),
    ("period = \"1m30s\"", "period = \"1m30s\"\nbaseline_samples = 3", "monitor.baseline_samples", "too few"),
    ("period = \"1m30s\"", "period = \"1m30s\"\nbaseline_samples = 1001", "monitor.baseline_samples", "outside"),
    ("period = \"1m30s\"", "period = \"1m30s\"\nbaseline_samples = \"ten\"", "monitor.baseline_samples", "integer"),
    ("threshold = 0.7", "threshold = 1.0", "policy.threshold", "(0, 1)"),
    ("threshold = 0.7", "threshold = 0", "policy.threshold", "(0, 1)"),
    ("threshold = 0.7", "threshold = nan", "policy.threshold", "(0, 1)"),
    ("guards = { min_windows = 3 }", "guards = { min_windows = 0 }", "policy.guards.min_windows", "outside"),
    ("guards = { min_windows = 3 }", "guards = { max_divergence = 2.0 }", "policy.guards.max_divergence", "outside"),
    ("guards = { min_windows = 3 }", "guards = { windows = 3 }", "policy.guards.windows", "unknown field"),
    ("guards = { min_windows = 3 }", "guards = { exhaustion = \"off\" }", "policy.guards.exhaustion", "true or false"),
    ("run = [\"/usr/sbin/service\", \"web\", \"restart\"]", "run = [\"x\"]\ntimeout = \"0ms\"", "rollback_hooks[0].timeout", "shorter"),
];

#[test]
fn each_bad_manifest_is_refused_naming_its_field() {
    for (from, to, field, reason) in BAD {
        let text = variant(from, to);
        let Err(err) = Manifest::from_toml(&text) else {
            panic!("accepted a manifest with {from:?} -> {to:?}");
        };
        let shown = err.to_string();
        assert_eq!(
            err.field(),
            Some(*field),
            "{from:?} -> {to:?}: got {shown:?}"
        );
        assert!(
            shown.contains(reason),
            "{from:?} -> {to:?}: {shown:?} lacks {reason:?}"
        );
    }
}

#[test]
fn shadow_first_needs_a_shadow() {
    let text = variant("mode = \"concurrent\"", "mode = \"shadow-first\"").replacen(
        "[shadow]\n",
        "[shadow]\nenabled = false\n",
        1,
    );
    let err = Manifest::from_toml(&text).unwrap_err();
    assert_eq!(err.field(), Some("mode"), "{err}");
    let text = variant("mode = \"concurrent\"", "mode = \"shadow-first\"");
    assert_eq!(Manifest::from_toml(&text).unwrap().mode, Mode::ShadowFirst);
}

#[test]
fn not_toml_names_the_line() {
    let err = Manifest::from_toml("name = \"x\"\nsteps = [\n").unwrap_err();
    assert!(
        matches!(err, ManifestError::Syntax { line: 2 | 3, .. }),
        "{err:?}"
    );
    let dup = Manifest::from_toml("name = \"x\"\nname = \"y\"\n").unwrap_err();
    assert!(
        matches!(dup, ManifestError::Syntax { line: 2, .. }),
        "{dup:?}"
    );
}

#[test]
fn oversized_manifests_and_lists_are_refused() {
    let big = format!("name = \"x\"\n# {}\n", "a".repeat(MAX_BYTES));
    assert!(matches!(
        Manifest::from_toml(&big),
        Err(ManifestError::TooLarge { .. })
    ));
    let argv = vec!["\"a\""; MAX_ARGV + 1].join(",");
    let text = variant(
        "run = [\"hello\", \"--version\"]",
        &format!("run = [{argv}]"),
    );
    let err = Manifest::from_toml(&text).unwrap_err();
    assert_eq!(err.field(), Some("steps[1].run"), "{err}");
    let long = "a".repeat(MAX_STRING + 1);
    let text = variant(
        "run = [\"hello\", \"--version\"]",
        &format!("run = [\"{long}\"]"),
    );
    assert_eq!(
        Manifest::from_toml(&text).unwrap_err().field(),
        Some("steps[1].run[0]")
    );
}

#[test]
fn a_manifest_survives_the_wire_and_json() {
    let m = good();
    let bytes = postcard::to_allocvec(&m).expect("postcard encodes a manifest");
    let back: Manifest = postcard::from_bytes(&bytes).expect("postcard decodes it");
    assert_eq!(back, m, "postcard round trip");
    let json = serde_json::to_string(&m).unwrap();
    assert!(
        json.contains("\"timeout\":\"2m\""),
        "durations are text in JSON: {json}"
    );
    let back: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m, "JSON round trip");
}

#[test]
fn durations_read_and_print_alike() {
    for (text, ms) in [
        ("500ms", 500),
        ("30s", 30_000),
        ("2m", 120_000),
        ("1h30m", 5_400_000),
        ("1m0s5ms", 60_005),
    ] {
        let d = parse_duration(text).unwrap();
        assert_eq!(d, Duration::from_millis(ms), "{text}");
        assert_eq!(
            parse_duration(&format_duration(d)).unwrap(),
            d,
            "{text} printed back"
        );
    }
    for bad in [
        "",
        "5",
        "s",
        "5x",
        "1s1h",
        "2s3s",
        "99999999999999999999h",
        "1.5s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn http_urls_split_into_host_port_and_target() {
    let s = |u| split_http_url(u).unwrap();
    assert_eq!(
        s("http://127.0.0.1:8080/h?x=1"),
        ("127.0.0.1".into(), 8080, "/h?x=1".into())
    );
    assert_eq!(s("http://example"), ("example".into(), 80, "/".into()));
    assert_eq!(s("http://[::1]:81/"), ("[::1]".into(), 81, "/".into()));
    assert_eq!(s("http://[::1]/"), ("[::1]".into(), 80, "/".into()));
}

#[test]
fn relative_paths_are_taken_from_the_base() {
    let text = variant(
        "debs = [\"/var/cache/backstop/hello_2.10-3_amd64.deb\"]",
        "debs = [\"pkgs/./a.deb\"]",
    );
    let m = Manifest::from_toml_in(&text, Some(std::path::Path::new("/srv/m"))).unwrap();
    assert_eq!(m.artifact.debs, [PathBuf::from("/srv/m/pkgs/a.deb")]);
    let text = variant("root = \"/srv/rootfs\"", "root = \"../rootfs/\"");
    let m = Manifest::from_toml_in(&text, Some(std::path::Path::new("/srv/m/../x"))).unwrap();
    assert_eq!(
        m.root,
        PathBuf::from("/srv/rootfs"),
        "host paths resolve '..' lexically"
    );
}

#[test]
fn every_example_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "expected at least 3 examples in {}, found {seen}",
        dir.display()
    );
}

#[test]
fn load_names_the_file_and_keeps_the_cause() {
    let dir = std::env::temp_dir().join(format!("backstop-manifest-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.toml");
    let err = Manifest::load(&missing).unwrap_err();
    assert!(
        matches!(&err, ManifestError::Read { path, .. } if *path == missing),
        "{err:?}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, variant("timeout = \"2m\"", "timeout = \"0s\"")).unwrap();
    let err = Manifest::load(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        bad.display().to_string(),
        "Display is this level only"
    );
    assert_eq!(err.field(), Some("steps[0].timeout"));
    let cause = std::error::Error::source(&err)
        .expect("the cause is the source")
        .to_string();
    assert!(cause.starts_with("steps[0].timeout: "), "{cause}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn baseline_samples_may_be_off_or_set() {
    let m = |n: u32| GOOD.replace("1m30s\"", &format!("1m30s\"\nbaseline_samples = {n}"));
    let read = |n| Manifest::from_toml(&m(n)).unwrap().monitor.baseline_samples;
    assert_eq!((read(0), read(5), read(1000)), (0, 5, 1000));
}
