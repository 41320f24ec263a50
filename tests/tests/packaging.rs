//! Running backstop in production: the default configs under
//! packaging/etc/backstop parse with the daemons' real loaders and show
//! their real defaults; `cargo xtask package` makes .debs that dpkg
//! installs in the cached Debian rootfs inside a shadow, where both
//! binaries then run from their installed paths; the systemd units pass
//! `systemd-analyze verify` against the packaged binaries; and the agent's
//! documented minimal capability set is enough for its own work.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use backstop_agent::config::{AgentConfig, DEFAULT_DATA, DEFAULT_SERVER_NAME};
use backstop_controller::config::{AlertsConfig, ControllerConfig, DEFAULT_LISTEN, SinkConfig};
use serde_json::Value;
use support::{agent, bin_dir, ebpf_or_skip, rootfs};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn packaged(file: &str) -> PathBuf {
    repo().join("packaging").join(file)
}

/// The file with every commented-out example line (`# key = value`,
/// `# [[table]]`) switched on.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_agent_config_shows_the_real_defaults_and_every_key() {
    let path = packaged("etc/backstop/agent.toml");
    let c = AgentConfig::read(&path).unwrap();
    assert_eq!(c.data.as_deref(), Some(Path::new(DEFAULT_DATA)));
    assert_eq!(c.server_name.as_deref(), Some(DEFAULT_SERVER_NAME));
    assert_eq!(
        c.outbox_max_bytes,
        Some(backstop_agent::outbox::DEFAULT_MAX_BYTES)
    );
    assert_eq!(c.probe_log, Some(false));
    // controller and bundle have no default: shown commented out, and
    // valid once uncommented.
    assert!(c.controller.is_none() && c.bundle.is_none());
    let all = AgentConfig::parse(
        &uncommented(&std::fs::read_to_string(&path).unwrap()),
        &path,
    )
    .unwrap();
    let dbg = format!("{all:?}");
    assert!(
        !dbg.contains("None"),
        "a key of AgentConfig is missing from {}: {dbg}",
        path.display()
    );
}

#[test]
fn the_controller_config_shows_the_real_defaults_and_its_examples_parse() {
    let path = packaged("etc/backstop/controller.toml");
    let c = ControllerConfig::read(&path).unwrap();
    assert_eq!(c.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
    assert_eq!(
        c.data.as_deref(),
        Some(Path::new(backstop_controller::config::DEFAULT_DATA))
    );
    let d = AlertsConfig::default();
    let a = &c.alerts;
    assert_eq!(
        (
            a.initial_backoff,
            a.max_backoff,
            a.max_age,
            a.timeout,
            a.firing_for
        ),
        (
            d.initial_backoff,
            d.max_backoff,
            d.max_age,
            d.timeout,
            d.firing_for
        ),
        "{} must show the built-in alert defaults",
        path.display()
    );
    assert!(a.sinks.is_empty(), "no sink is on by default");
    let all = ControllerConfig::parse(
        &uncommented(&std::fs::read_to_string(&path).unwrap()),
        &path,
    )
    .unwrap();
    assert!(all.database.is_some());
    let names: Vec<&str> = all.alerts.sinks.iter().map(SinkConfig::name).collect();
    assert_eq!(names, ["alertmanager", "ops-webhook"]);
}

/// `cargo xtask package` of this build's binaries, once per test run.
fn debs() -> &'static [PathBuf] {
    static DEBS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DEBS.get_or_init(|| {
        let xtask = bin_dir().join("xtask");
        assert!(
            xtask.exists(),
            "{} is missing: cargo build --workspace --bins builds it",
            xtask.display()
        );
        // Under target/, replaced each run, so nothing piles up.
        let out = bin_dir().join("../xtask/package-test");
        let _ = std::fs::remove_dir_all(&out);
        let run = Command::new(&xtask)
            .args(["package", "--bin-dir"])
            .arg(bin_dir())
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "xtask package: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let mut debs: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        debs.sort();
        assert_eq!(debs.len(), 2, "two packages: {debs:?}");
        debs
    })
}

fn deb(name: &str) -> &'static Path {
    debs()
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{name}_"))
        })
        .unwrap()
}

#[test]
fn the_debs_install_with_dpkg_in_a_shadow_and_both_binaries_run() {
    let Some(_g) = ebpf_or_skip("the_debs_install_with_dpkg_in_a_shadow_and_both_binaries_run")
    else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let (ctl, agt) = (deb("backstop"), deb("backstop-agent"));
    let in_shadow = |p: &Path| {
        format!(
            "/.backstop-shadow/in/{}",
            p.file_name().unwrap().to_str().unwrap()
        )
    };
    let data =
        PathBuf::from("/var/tmp").join(format!("backstop-pkg-shadow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let out = Command::new(agent())
        .args(["shadow", "--json", "--data"])
        .arg(&data)
        .args(["run", "--root", root.to_str().unwrap()])
        .args([
            "--copy-in",
            ctl.to_str().unwrap(),
            "--copy-in",
            agt.to_str().unwrap(),
        ])
        .args(["--test", "/usr/bin/backstop --version"])
        .args(["--test", "/usr/bin/backstop-agent --version"])
        .args([
            "--test",
            "dpkg-query -W -f='${Status} ${Conffiles}\\n' backstop-agent backstop",
        ])
        .args(["--", "dpkg", "-i", &in_shadow(ctl), &in_shadow(agt)])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&data);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "shadow run printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["cmd"]["exit_code"], 0, "dpkg -i failed: {}", v["cmd"]);
    let version = env!("CARGO_PKG_VERSION");
    for (i, want) in [
        format!("backstop {version}"),
        format!("backstop-agent {version}"),
    ]
    .iter()
    .enumerate()
    {
        let t = &v["tests"][i];
        assert_eq!(t["exit_code"], 0, "{t}");
        assert!(
            t["output_tail"].as_str().unwrap().contains(want.as_str()),
            "{t}"
        );
    }
    let status = v["tests"][2]["output_tail"].as_str().unwrap();
    assert_eq!(
        status.matches("install ok installed").count(),
        2,
        "both packages installed: {status}"
    );
    assert!(
        status.contains("/etc/backstop/agent.toml")
            && status.contains("/etc/backstop/controller.toml"),
        "the default configs are conffiles: {status}"
    );
    let added: Vec<&str> = v["diff"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for path in [
        "/usr/bin/backstop",
        "/usr/bin/backstop-agent",
        "/usr/lib/systemd/system/backstop-agent.service",
        "/usr/lib/systemd/system/backstop-controller.service",
    ] {
        assert!(
            added.iter().any(|a| a.ends_with(path)),
            "{path} not installed: {added:?}"
        );
    }
}

/// `systemd-analyze verify` of each packaged unit, with the packaged
/// binaries at the unit's ExecStart paths (an overlay on /usr/bin in a
/// private mount namespace: the host's /usr/bin is not changed).
#[test]
fn the_packaged_units_pass_systemd_analyze_verify() {
    let Some(_g) = ebpf_or_skip("the_packaged_units_pass_systemd_analyze_verify") else {
        return;
    };
    if !Path::new("/usr/bin/systemd-analyze").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "systemd-analyze is missing under CI (cargo xtask setup installs systemd)"
        );
        eprintln!("*** SKIPPED: systemd-analyze is missing (apt-get install systemd) ***");
        return;
    }
    let tree = PathBuf::from("/var/tmp").join(format!("backstop-pkg-tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    for d in debs() {
        let x = Command::new("dpkg-deb")
            .arg("-x")
            .arg(d)
            .arg(&tree)
            .status()
            .unwrap();
        assert!(x.success(), "dpkg-deb -x {}", d.display());
    }
    let units = tree.join("usr/lib/systemd/system");
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/usr/bin:{}/usr/bin /usr/bin && \
         systemd-analyze verify {}/backstop-agent.service {}/backstop-controller.service",
        tree.display(),
        units.display(),
        units.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&tree);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // verify exits 0 on an unknown key or a bad value: it only warns.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
}

/// The bounding set commented out in backstop-agent.service, as setpriv
/// takes it (`+bpf,+perfmon,...`).
fn unit_capabilities() -> String {
    let unit = std::fs::read_to_string(packaged("systemd/backstop-agent.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("#CapabilityBoundingSet="))
        .expect("backstop-agent.service documents its minimal CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn the_units_minimal_capability_set_runs_doctor_watch_and_a_shadow() {
    let Some(_g) = ebpf_or_skip("the_units_minimal_capability_set_runs_doctor_watch_and_a_shadow")
    else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let bounding = format!("--bounding-set=-all,{}", unit_capabilities());
    let data = PathBuf::from("/var/tmp").join(format!("backstop-pkg-caps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let capped = |args: &[&str]| {
        Command::new("setpriv")
            .arg(&bounding)
            .arg(agent())
            .args(args)
            .output()
            .unwrap()
    };
    let out = capped(&[
        "doctor",
        "--json",
        "--config",
        "/dev/null",
        "--data",
        data.to_str().unwrap(),
    ]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in r["checks"].as_array().unwrap() {
        if c["name"] != "controller" {
            assert_eq!(c["status"], "ok", "{c}");
        }
    }
    let out = capped(&["watch", "--json", "--", "true"]);
    assert!(
        out.status.success(),
        "watch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = capped(&[
        "shadow",
        "--data",
        data.to_str().unwrap(),
        "run",
        "--root",
        root.to_str().unwrap(),
        "--test",
        "dpkg -s dpkg",
        "--",
        "true",
    ]);
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        out.status.success(),
        "shadow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And it is a real limit: without the three BPF may need (the kernel
    // takes CAP_SYS_ADMIN in place of CAP_BPF and CAP_PERFMON) the doctor
    // says BPF is refused.
    let no_bpf = ["+bpf,", "+perfmon,", "+sys_admin,"]
        .iter()
        .fold(bounding.clone(), |b, cap| b.replace(cap, ""));
    let out = Command::new("setpriv")
        .arg(no_bpf)
        .arg(agent())
        .args(["doctor", "--json", "--config", "/dev/null"])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bpf = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bpf.load")
        .unwrap();
    assert_eq!(bpf["status"], "fail", "{bpf}");
    assert_eq!(out.status.code(), Some(1));
}

/// The packaged agent.toml, with the controller and bundle filled in, is
/// all `backstop-agent run` needs: no flag names the controller, and the
/// agent connects. A misspelt key stops it with exit code 2 naming it.
#[test]
fn run_takes_its_controller_and_bundle_from_the_config_file() {
    let Some(_g) = ebpf_or_skip("run_takes_its_controller_and_bundle_from_the_config_file") else {
        return;
    };
    let fleet = support::agents::Fleet::new("pkgcfg");
    let _serve = fleet.serve();
    let shipped = std::fs::read_to_string(packaged("etc/backstop/agent.toml")).unwrap();
    let bundle = fleet.data.join("pki/agents/web-1.bundle");
    let agent_data = fleet.data.join("agent-data");
    let text = shipped
        .replace(
            "# controller = \"192.0.2.10:7870\"",
            &format!("controller = \"{}\"", fleet.addr),
        )
        .replace(
            "# bundle = \"/etc/backstop/agent.bundle\"",
            &format!("bundle = \"{}\"", bundle.display()),
        )
        .replace(
            "data = \"/var/lib/backstop\"",
            &format!("data = \"{}\"", agent_data.display()),
        );
    assert_ne!(text, shipped, "the example lines moved: update this test");
    let config = fleet.data.join("agent.toml");
    std::fs::write(&config, &text).unwrap();
    let agent_proc = support::agents::Proc::spawn(
        Command::new(agent())
            .args(["--log", "info", "run", "--config"])
            .arg(&config)
            .env_remove("BACKSTOP_DATA"),
    );
    fleet.wait_connected(&agent_proc);
    assert!(
        agent_data.join("agent").is_dir(),
        "the config's data directory is used"
    );
    drop(agent_proc);

    let typo = fleet.data.join("typo.toml");
    std::fs::write(&typo, text.replace("server_name =", "server_nam =")).unwrap();
    let out = Command::new(agent())
        .args(["run", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("server_nam") && err.contains(typo.to_str().unwrap()),
        "names the key and the file: {err}"
    );
}
