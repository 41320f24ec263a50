//! `backstop serve` and its config file, through the real binary: a
//! missing or misspelt file stops it before it binds (exit code 2, the
//! path and the key named); the file's values are used, and flags win.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn backstop() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps")
        .join("backstop");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first",
        p.display()
    );
    p
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "backstop-serve-config-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn serve(args: &[&str]) -> Command {
    let mut c = Command::new(backstop());
    c.args(args)
        .env_remove("BACKSTOP_DATA")
        .env_remove("BACKSTOP_CONFIG");
    c
}

#[test]
fn a_missing_or_misspelt_config_stops_serve_with_exit_code_2_naming_it() {
    let d = tmp("bad");
    let missing = d.join("nope.toml");
    let out = serve(&["serve", "--config", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(missing.to_str().unwrap()),
        "names the path: {err}"
    );

    let typo = d.join("typo.toml");
    std::fs::write(&typo, "[alerts]\nmax_agee = \"1h\"\n").unwrap();
    let out = serve(&["serve", "--config", typo.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("max_agee") && err.contains("typo.toml"),
        "names the key: {err}"
    );
    // Nothing was started: no data directory appeared anywhere we said.
    assert!(!d.join("data").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_config_sets_data_and_sinks_and_the_listen_flag_wins() {
    let d = tmp("ok");
    let data = d.join("data");
    let init = serve(&["--data", data.to_str().unwrap(), "init", "--host", "h1"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let cfg = d.join("controller.toml");
    // 192.0.2.1 (TEST-NET-1) is on no interface here: serve could not bind
    // it, so it starting at all shows --listen won over the file.
    std::fs::write(
        &cfg,
        format!(
            "listen = \"192.0.2.1:7870\"\ndata = \"{}\"\n[[alerts.sink]]\ntype = \"webhook\"\n\
             name = \"hook\"\nurl = \"http://127.0.0.1:9/\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = serve(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let listening = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("backstop: listening on ") => break Some(l),
            Some(Ok(l)) => seen.push(l),
            _ => break None,
        }
    };
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let listening = listening.unwrap_or_else(|| panic!("serve never listened: {seen:?}"));
    assert!(listening.contains("127.0.0.1:"), "{listening}");
    assert!(status.success(), "SIGTERM ends serve cleanly: {status}");
    // The file's data directory was used, with the sink's queue in it.
    assert!(Path::new(&data.join("alerts/queue/hook")).is_dir());
    let _ = std::fs::remove_dir_all(&d);
}
