//! `backstop deploy` end to end: the real controller and the real agent
//! over QUIC with mutual TLS, real probes, real dpkg in a copy of the
//! cached Debian rootfs as the target root, and a sentinel outside it.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::agents::{Fleet, Proc};
use support::sentinel;
use support::{deb_file, ebpf_or_skip, eventually, rootfs};

#[test]
fn a_healthy_real_package_is_committed_through_the_controller() {
    let Some(_g) = ebpf_or_skip("deploy through the controller") else {
        return;
    };
    let Some(cached) = rootfs() else { return };
    let fleet = Fleet::new("deploy-e2e");
    let base = PathBuf::from("/var/tmp").join(format!("backstop-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let root = base.join("root");
    let copied = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the rootfs");
    let outside = base.join("sentinel");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"outside the root").unwrap();
    let before = sentinel::walk(&outside);
    let manifest = base.join("hello.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "hello"
root = {:?}
[artifact]
debs = [{:?}]
[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "2m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}
[scope]
paths = ["/usr/bin", "/usr/share/doc", "/usr/share/info", "/usr/share/locale", "/usr/share/man", "/var/lib/dpkg", "/var/log"]
[shadow]
enabled = false
[monitor]
period = "0s"
"#,
            root.display().to_string(),
            deb_file("hello").display().to_string()
        ),
    )
    .unwrap();
    let _serve = fleet.serve();
    let agent = Proc::spawn(&mut fleet.agent_cmd(&base.join("agent-data")));
    fleet.wait_connected(&agent);
    let out = fleet
        .backstop()
        .args([
            "deploy",
            manifest.to_str().unwrap(),
            "--host",
            "web-1",
            "--wait",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "committed exits 0\n{stdout}\n{}\nagent: {}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let id = serde_json::from_str::<serde_json::Value>(stdout.lines().next().unwrap()).unwrap()
        ["deployment"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(eventually(Duration::from_secs(10), || {
        fleet.json(&["show", &id, "--json"])["deployment"]["state"] == "committed"
    }));
    let hello = Command::new("chroot")
        .arg(&root)
        .arg("hello")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hello.stdout), "Hello, world!\n");
    sentinel::assert_untouched(&outside, &before, "deploy");
    assert_eq!(fleet.cli(&["replay", &id]).status.code(), Some(0));
    drop(agent);
    let _ = std::fs::remove_dir_all(&base);
}
