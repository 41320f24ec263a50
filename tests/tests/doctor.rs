//! `backstop-agent doctor` through the real binary: as root here every
//! check that must pass does (asserted by name, not as a snapshot of the
//! host); as `nobody` it names what is missing and exits non-zero; in a
//! private mount namespace without tracefs it says tracefs is mountable
//! and that the agent mounts it itself; against a real controller it makes
//! a real QUIC/TLS handshake with the host's bundle, and says no to a
//! revoked one.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::fleet::Ctl;
use support::{agent, ebpf_or_skip};

/// The parsed `--json` report and the exit code.
fn report(out: &Output) -> (Value, i32) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().unwrap_or(-1))
}

fn check<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {r:#}"))
}

fn assert_status(r: &Value, name: &str, want: &str) {
    let c = check(r, name);
    assert_eq!(c["status"], want, "{name}: {c:#}");
}

/// Doctor with a data dir of our own and no config file of the host's.
fn doctor(prefix: &[&str], args: &[&str]) -> Output {
    let data = std::env::temp_dir().join(format!("backstop-doctor-{}", std::process::id()));
    let (program, rest) = match prefix.split_first() {
        Some((p, rest)) => (p.to_string(), rest.to_vec()),
        None => (agent().display().to_string(), Vec::new()),
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    if !prefix.is_empty() {
        cmd.arg(agent());
    }
    cmd.args(["doctor", "--json", "--data", data.to_str().unwrap()])
        // An empty config: never the host's /etc/backstop/agent.toml.
        .args(["--config", "/dev/null"])
        .args(args)
        .env_remove("BACKSTOP_DATA")
        .output()
        .unwrap()
}

/// Every check that must pass on a host that runs the agent.
const MUST_PASS: [&str; 11] = [
    "kernel.version",
    "kernel.btf",
    "tracefs",
    "bpf.load",
    "cgroup.v2",
    "cgroup.live_parent",
    "shadow.overlayfs",
    "shadow.namespaces",
    "shadow.target",
    "disk.data",
    "deploy.room_check",
];

#[test]
fn as_root_here_every_check_the_agent_needs_passes() {
    let Some(_g) = ebpf_or_skip("as_root_here_every_check_the_agent_needs_passes") else {
        return;
    };
    let (r, code) = report(&doctor(&[], &[]));
    for name in MUST_PASS {
        assert_status(&r, name, "ok");
    }
    // One check per hook the probe loader attaches, all present here.
    let hooks: Vec<&Value> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("hook."))
        .collect();
    assert!(hooks.len() >= 10, "too few hooks listed: {hooks:#?}");
    for h in &hooks {
        assert_eq!(h["status"], "ok", "{h:#}");
    }
    for hook in [
        "hook.sys_enter",
        "hook.sched_process_exec",
        "hook.block_rq_complete",
    ] {
        assert_status(&r, hook, "ok");
    }
    // No controller given: a warning saying how to check it, not a failure.
    assert_status(&r, "controller", "warn");
    assert!(
        check(&r, "controller")["fix"]
            .as_str()
            .unwrap()
            .contains("--controller")
    );
    assert_eq!(r["verdict"], "warn", "{r:#}");
    assert_eq!(code, 0, "no check failed, so exit 0: {r:#}");
}

#[test]
fn as_nobody_it_names_what_is_missing_and_exits_non_zero() {
    let Some(_g) = ebpf_or_skip("as_nobody_it_names_what_is_missing_and_exits_non_zero") else {
        return;
    };
    let out = doctor(
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ],
        &[],
    );
    let (r, code) = report(&out);
    assert_eq!(r["verdict"], "fail", "{r:#}");
    assert_eq!(code, 1, "a failed check exits 1: {r:#}");
    let bpf = check(&r, "bpf.load");
    assert_eq!(bpf["status"], "fail", "{bpf:#}");
    let detail = bpf["detail"].as_str().unwrap();
    assert!(
        detail.contains("uid 65534") && detail.contains("Operation not permitted"),
        "names who and the kernel's refusal: {detail}"
    );
    assert!(bpf["fix"].as_str().unwrap().contains("CAP_BPF"), "{bpf:#}");
    assert_status(&r, "cgroup.live_parent", "fail");
    assert_status(&r, "tracefs", "fail");
    // What does not need privilege is still judged on its merits.
    for name in [
        "kernel.version",
        "kernel.btf",
        "shadow.overlayfs",
        "disk.data",
    ] {
        assert_status(&r, name, "ok");
    }
    // The human form says the same, with the fix.
    let text = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(agent())
        .args(["doctor", "--data", "/tmp", "--config", "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("fail  bpf.load") && text.contains("fix: run the agent as root"),
        "{text}"
    );
}

#[test]
fn without_tracefs_it_says_the_agent_mounts_it_and_leaves_the_host_alone() {
    let Some(_g) =
        ebpf_or_skip("without_tracefs_it_says_the_agent_mounts_it_and_leaves_the_host_alone")
    else {
        return;
    };
    // As ../shared/tools/fresh-demo does: a private mount namespace where
    // tracefs and debugfs are unmounted, as on a freshly booted VM.
    let script = format!(
        "for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do umount -l $m 2>/dev/null; done; \
         if [ -n \"$(ls -A /sys/kernel/tracing 2>/dev/null)\" ]; then echo 'tracefs still mounted' >&2; exit 99; fi; \
         {} doctor --json --data /tmp --config /dev/null || exit $?; \
         if [ -n \"$(ls -A /sys/kernel/tracing 2>/dev/null)\" ]; then echo 'doctor left tracefs mounted' >&2; exit 98; fi",
        agent().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(99),
        "could not unmount tracefs: {stderr}"
    );
    assert_ne!(out.status.code(), Some(98), "{stderr}");
    let (r, code) = report(&out);
    let t = check(&r, "tracefs");
    assert_eq!(t["status"], "ok", "{t:#}");
    let detail = t["detail"].as_str().unwrap();
    assert!(
        detail.contains("not mounted, but mountable")
            && detail.contains("the agent mounts it itself"),
        "{detail}"
    );
    // The hooks are still checked (through BTF), and all present.
    assert_status(&r, "hook.sched_process_exec", "ok");
    assert_status(&r, "bpf.load", "ok");
    assert_eq!(code, 0, "{r:#}");
}

#[test]
fn it_handshakes_with_a_real_controller_and_refuses_a_revoked_bundle() {
    let Some(_g) =
        ebpf_or_skip("it_handshakes_with_a_real_controller_and_refuses_a_revoked_bundle")
    else {
        return;
    };
    let mut ctl = Ctl::new("doctor");
    ctl.serve();
    let bundle = ctl.enroll("doctor-host");
    let addr = ctl.addr.to_string();
    let args = ["--controller", &addr, "--bundle", bundle.to_str().unwrap()];
    let (r, code) = report(&doctor(&[], &args));
    let c = check(&r, "controller");
    assert_eq!(c["status"], "ok", "{c:#}\ncontroller log: {}", ctl.log());
    assert_eq!(code, 0, "{r:#}");
    // The doctor sent no Hello: the controller does not count it as the
    // host's agent (a host is listed from its first Hello, so it is absent).
    let host = ctl.host("doctor-host");
    assert_ne!(host["connected"], true, "{host:#}");

    ctl.ok(&["revoke", "doctor-host"]);
    let (r, code) = report(&doctor(&[], &args));
    let c = check(&r, "controller");
    assert_eq!(c["status"], "fail", "a revoked bundle must not pass: {c:#}");
    assert_eq!(code, 1);

    // Nothing listening: fails and names the address.
    ctl.stop();
    let (r, _) = report(&doctor(&[], &args));
    let c = check(&r, "controller");
    assert_eq!(c["status"], "fail", "{c:#}");
    assert!(c["detail"].as_str().unwrap().contains(&addr), "{c:#}");
}
