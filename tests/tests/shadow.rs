//! Shadows on the cached Debian rootfs: real youki containers, real dpkg,
//! real OOM kills; after every test nothing of the shadow remains (mounts,
//! cgroups, state, processes).
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::{agent, ebpf_or_skip, eventually, rootfs, workload};

/// What a leak would change: our mounts, our cgroups, the shadows dir.
/// Only this test's own: mounts under its data dir or naming one of its
/// shadow ids, and the cgroups of those ids (other shadows may run beside
/// it on the same host).
#[derive(Debug, PartialEq, Eq)]
struct Traces {
    mounts: Vec<String>,
    cgroups: Vec<String>,
    state: Vec<String>,
}

fn traces(data: &Path, ids: &[String]) -> Traces {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts = info
        .lines()
        .filter(|l| {
            l.contains(data.to_str().unwrap()) || ids.iter().any(|id| l.contains(id.as_str()))
        })
        .map(String::from)
        .collect();
    let mut cgroups = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for id in ids {
            let d = h.path().join("backstop-shadow").join(id);
            if d.exists() {
                cgroups.push(d.display().to_string());
            }
        }
    }
    let shadows = data.join("agent/shadows");
    let state = std::fs::read_dir(&shadows)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    Traces {
        mounts,
        cgroups,
        state,
    }
}

/// A test's data dir and the ids of the shadows it ran there.
struct Data(PathBuf, std::cell::RefCell<Vec<String>>);

impl Data {
    fn new(name: &str) -> Data {
        let d = PathBuf::from("/var/tmp")
            .join(format!("backstop-shadow-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Data(d, std::cell::RefCell::default())
    }

    fn shadow(&self, args: &[&str]) -> (Output, Value) {
        let out = Command::new(agent())
            .args(["shadow", "--json", "--data"])
            .arg(&self.0)
            .arg("run")
            .args(args)
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "shadow run printed no JSON ({e}); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        self.note(&v);
        (out, v)
    }

    /// Remember the id of a shadow this test ran (from its JSON report).
    fn note(&self, report: &Value) {
        if let Some(id) = report["id"].as_str() {
            self.1.borrow_mut().push(id.to_string());
        }
    }

    fn assert_clean(&self, what: &str) {
        let t = traces(&self.0, &self.1.borrow());
        assert_eq!(
            t,
            Traces {
                mounts: vec![],
                cgroups: vec![],
                state: vec![]
            },
            "{what}: the shadow left something behind"
        );
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        // A test that failed midway may have left a shadow: sweep it
        // before the directory goes, so no mount or cgroup outlives it.
        let _ = Command::new(agent())
            .args(["shadow", "--data"])
            .arg(&self.0)
            .arg("sweep")
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Content hash and metadata of every entry under `root`.
fn hash_walk(root: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mut desc = format!("{:o} {}:{} {}", m.mode(), m.uid(), m.gid(), m.mtime());
            if m.is_dir() {
                stack.push(p.clone());
            } else if m.file_type().is_symlink() {
                write!(desc, " -> {}", std::fs::read_link(&p).unwrap().display()).unwrap();
            } else if m.is_file() {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                let mut buf = Vec::new();
                std::fs::File::open(&p)
                    .unwrap()
                    .read_to_end(&mut buf)
                    .unwrap();
                std::hash::Hash::hash(&buf, &mut h);
                write!(desc, " {:x}", std::hash::Hasher::finish(&h)).unwrap();
            }
            out.insert(p, desc);
        }
    }
    out
}

fn total(v: &Value, feature: &str) -> f64 {
    v["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["features"][feature].as_f64().unwrap_or(0.0))
        .sum()
}

#[test]
fn dpkg_in_a_shadow_changes_nothing_below_and_the_diff_lists_the_package() {
    let Some(_g) = ebpf_or_skip("dpkg_in_a_shadow") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("dpkg");
    let before = hash_walk(&root);
    let hello = support::deb_file("hello");
    let name = hello.file_name().unwrap().to_str().unwrap().to_string();
    let (out, v) = data.shadow(&[
        "--root",
        root.to_str().unwrap(),
        "--copy-in",
        hello.to_str().unwrap(),
        "--test",
        "hello",
        "--",
        "dpkg",
        "-i",
        &format!("/.backstop-shadow/in/{name}"),
    ]);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["cmd"]["exit_code"], 0, "{v}");
    assert_eq!(v["tests"][0]["exit_code"], 0, "{v}");
    assert!(
        v["tests"][0]["output_tail"]
            .as_str()
            .unwrap()
            .contains("Hello, world!"),
        "{v}"
    );
    let added: Vec<&str> = v["diff"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in [
        "/usr/bin/hello",
        "/usr/share/man/man1/hello.1.gz",
        "/var/lib/dpkg/info/hello.list",
    ] {
        assert!(added.contains(&p), "the diff lacks {p}: {added:?}");
    }
    assert!(
        v["diff"]["changed"]
            .as_array()
            .unwrap()
            .contains(&Value::from("/var/lib/dpkg/status")),
        "{v}"
    );
    assert_eq!(v["cleanup_problems"], serde_json::json!([]), "{v}");
    assert!(
        total(&v, "proc_execs") >= 3.0,
        "the shadow's windows saw no execs"
    );
    assert!(v["windows"][0]["stream"] == "shadow", "{}", v["windows"][0]);
    assert!(!root.join("usr/bin/hello").exists());
    let after = hash_walk(&root);
    assert!(before == after, "the lower root changed under the shadow");
    data.assert_clean("after dpkg -i in a shadow");
}

#[test]
fn a_service_in_a_shadow_does_not_collide_with_the_host() {
    let Some(_g) = ebpf_or_skip("a_service_in_a_shadow") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("port");
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let script = format!(
        "use IO::Socket::INET; my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1:{port}', Listen => 5, ReuseAddr => 1) or die \"bind: $!\"; my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1:{port}') or die \"connect: $!\"; print \"bound {port}\\n\";"
    );
    let (_, v) = data.shadow(&[
        "--root",
        root.to_str().unwrap(),
        "--",
        "perl",
        "-e",
        &script,
    ]);
    assert_eq!(v["cmd"]["exit_code"], 0, "{v}");
    assert!(
        v["cmd"]["output_tail"]
            .as_str()
            .unwrap()
            .contains(&format!("bound {port}")),
        "{v}"
    );
    // The host's listener is still ours.
    assert_eq!(host.local_addr().unwrap().port(), port);
    data.assert_clean("after a service in a shadow");
}

#[test]
fn past_its_memory_limit_a_shadow_command_is_oom_killed_and_its_windows_say_so() {
    let Some(_g) = ebpf_or_skip("past_its_memory_limit") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("oom");
    let (out, v) = data.shadow(&[
        "--root",
        root.to_str().unwrap(),
        "--memory",
        "32M",
        "--",
        "tail",
        "/dev/zero",
    ]);
    assert!(!out.status.success(), "{v}");
    assert_eq!(v["oom_killed"], true, "{v}");
    assert_eq!(v["cmd"]["exit_code"], 137, "{v}");
    assert!(
        total(&v, "proc_oom_kills") >= 1.0,
        "no OOM kill in the windows: {v}"
    );
    data.assert_clean("after an OOM kill");
}

/// A shadow ends when its root does, and the kernel then SIGKILLs what
/// the install left running (a daemon its postinst started): that is
/// the shadow's end, not the install's crash, so it is no death. A crash
/// before it still is one, and every process still counts as an exit.
#[test]
fn what_a_shadows_end_kills_is_no_death_but_a_crash_before_it_is() {
    let Some(_g) = ebpf_or_skip("what_a_shadows_end_kills_is_no_death") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("reaped");
    let (out, v) = data.shadow(&[
        "--root",
        root.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "sleep 1000 & sleep 2000 & sh -c 'kill -SEGV $$'; exit 0",
    ]);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["cmd"]["exit_code"], 0, "{v}");
    assert_eq!(
        total(&v, "proc_signal_deaths"),
        1.0,
        "only the SIGSEGV: {v}"
    );
    // The runner, sh, both sleeps and the crashed sh at least.
    assert!(total(&v, "proc_exits") >= 5.0, "{v}");
    data.assert_clean("after a shadow's end killed two sleeps");
}

/// A shadow's disk is its upper layer: what the install writes there is
/// what its windows say was consumed, and the size they report is the
/// upper's tmpfs, not the root's filesystem below (where the install's
/// writes never land, and the host's other work does).
#[test]
fn a_shadows_disk_is_its_upper_layer() {
    let Some(_g) = ebpf_or_skip("a_shadows_disk_is_its_upper_layer") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("upperdisk");
    let (out, v) = data.shadow(&[
        "--root",
        root.to_str().unwrap(),
        "--upper-size",
        "64M",
        "--window-ms",
        "100",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/filler bs=1M count=16 2>/dev/null; sleep 0.3",
    ]);
    assert!(out.status.success(), "{v}");
    let windows = v["windows"].as_array().unwrap();
    for w in windows {
        assert_eq!(w["host"]["disk_total_bytes"], f64::from(64u32 << 20), "{w}");
    }
    let last = &windows.last().unwrap()["features"];
    let fall = last["host_disk_free_fall_bytes"].as_f64().unwrap();
    assert!(
        (f64::from(16u32 << 20)..f64::from(20u32 << 20)).contains(&fall),
        "16 MiB written to the upper, {fall} bytes consumed: {last}"
    );
    data.assert_clean("after filling a shadow's upper");
}

#[test]
fn live_and_shadow_at_once_count_only_their_own_work() {
    let Some(_g) = ebpf_or_skip("live_and_shadow_at_once") else {
        return;
    };
    let data = Data::new("both");
    // The shadow's lower root is the host's, so the workload binary is there.
    let wl = workload();
    let live = Command::new(agent())
        .args(["watch", "--json", "--"])
        .arg(&wl)
        .args(["missing", "2000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (_, v) = data.shadow(&["--root", "/", "--", wl.to_str().unwrap(), "missing", "7000"]);
    let live = support::parse(live.wait_with_output().unwrap());
    assert_eq!(v["cmd"]["exit_code"], 0, "{v}");
    let shadow_enoent = total(&v, "syscall_errors_enoent");
    let live_enoent = live.total("syscall_errors_enoent");
    // Each stream: its own opens, plus what starting a process costs (a
    // few dozen lookups), never the other's thousands.
    assert!(
        (2000.0..2500.0).contains(&live_enoent),
        "live counted {live_enoent} ENOENT for 2000 missing opens"
    );
    assert!(
        (7000.0..7500.0).contains(&shadow_enoent),
        "shadow counted {shadow_enoent} ENOENT for 7000 missing opens"
    );
    data.assert_clean("after live and shadow at once");
}

#[test]
fn a_killed_agent_leaves_a_shadow_the_sweep_removes() {
    let Some(_g) = ebpf_or_skip("a_killed_agent_leaves_a_shadow") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    // Killed while the command runs, and killed between create and start
    // (the init still blocked in libcontainer, a child of the agent's
    // creator child).
    for hold in ["0", "60000"] {
        killed_agent_then_sweep(&root, hold);
    }
}

/// A shadow directory whose agent died before its container existed (no
/// youki state): the sweep removes it quietly. It used to print
/// libcontainer's ERROR "failed to open container state file" for each,
/// though it succeeded: noise an SRE reading a crash's aftermath should
/// not have to learn to ignore.
#[test]
fn a_shadow_without_container_state_is_swept_without_an_error() {
    let data = Data::new("stateless");
    let id = format!("s-stateless-{}", std::process::id());
    let dir = data.0.join("agent/shadows").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    // Owned by a pid that is not running with that start time.
    std::fs::write(dir.join("owner"), "1 1\n").unwrap();
    let out = support::shadow_sweep(&data.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["swept"], serde_json::json!([id]), "{v}");
    assert!(!dir.exists(), "the sweep left {}", dir.display());
    assert!(
        !stderr.contains("ERROR"),
        "the sweep logged an error: {stderr}"
    );
}

fn killed_agent_then_sweep(root: &Path, hold_ms: &str) {
    let data = Data::new(&format!("sweep{hold_ms}"));
    // Killed and reaped when dropped: a test that fails before it kills
    // the agent itself leaves no agent holding a shadow the sweep would
    // then have to leave alone.
    let mut agent_proc = support::agents::Proc::spawn(
        Command::new(agent())
            .env("BACKSTOP_TEST_HOLD_BEFORE_START_MS", hold_ms)
            .args(["shadow", "--data"])
            .arg(&data.0)
            .args([
                "run",
                "--root",
                root.to_str().unwrap(),
                "--",
                "sleep",
                "300",
            ]),
    );
    // This test's shadow: the one shadow directory in its own state dir
    // (beside libcontainer's `youki` root). Not the `.new-ID` it is made
    // as and renamed from: a CI run once read that name in the instant
    // before the rename, then waited 75 s on a cgroup that never existed
    // while the shadow ran.
    let shadows = data.0.join("agent/shadows");
    let own_id = || -> Option<String> {
        std::fs::read_dir(&shadows)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .find(|n| n != "youki" && !n.starts_with('.'))
    };
    assert!(
        eventually(Duration::from_secs(20), || own_id().is_some()),
        "the shadow was never created; the agent said:\n{}",
        agent_proc.log()
    );
    let id = own_id().unwrap();
    data.1.borrow_mut().push(id.clone());
    let procs = Path::new("/sys/fs/cgroup/pids/backstop-shadow")
        .join(&id)
        .join("cgroup.procs");
    let procs_of = || -> Vec<i32> {
        std::fs::read_to_string(&procs)
            .map(|s| s.lines().filter_map(|l| l.parse::<i32>().ok()).collect())
            .unwrap_or_default()
    };
    // Past the agent's own bound on creating a container (a minute), so a
    // creation that hangs fails with the agent's error, not this wait's.
    // Once, in CI, the init was not in its cgroup 20 s after the shadow's
    // directory appeared, with nothing logged: the process tree says where
    // each task was asleep, should that come back.
    let started = eventually(Duration::from_secs(75), || {
        !procs_of().is_empty() || !agent_proc.running()
    });
    assert!(
        started && !procs_of().is_empty(),
        "shadow {id} never started (nothing in {}); the agent said:\n{}\nits processes:\n{}",
        procs.display(),
        agent_proc.log(),
        agent_proc.tree()
    );
    let left = procs_of();
    agent_proc.child.kill().unwrap();
    agent_proc.child.wait().unwrap();
    // The shadow's processes die with the agent (its creator child kills
    // the init when the agent's end of its stdin closes); the rest (state,
    // cgroups, mounts) is the sweep's.
    assert!(!traces(&data.0, &data.1.borrow()).state.is_empty());
    let out = support::shadow_sweep(&data.0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["swept"].as_array().unwrap().len(), 1, "{v}");
    for pid in left {
        assert!(
            eventually(Duration::from_secs(5), || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map_or(true, |s| s.contains(") Z "))
            }),
            "pid {pid} of the shadow survived the sweep"
        );
    }
    data.assert_clean("after the sweep");
}

#[test]
fn a_shadow_past_its_timeout_is_killed_and_one_past_its_disk_fails_enospc() {
    let Some(_g) = ebpf_or_skip("a_shadow_past_its_timeout") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("limits");
    let t0 = std::time::Instant::now();
    let (out, v) = data.shadow(&[
        "--root",
        root.to_str().unwrap(),
        "--timeout-secs",
        "2",
        "--test",
        "true",
        "--",
        "sleep",
        "300",
    ]);
    assert!(!out.status.success(), "{v}");
    assert_eq!(v["timed_out"], true, "{v}");
    assert_eq!(v["cmd"]["exit_code"], Value::Null, "{v}");
    assert_eq!(v["tests"][0]["exit_code"], Value::Null, "{v}");
    assert!(
        t0.elapsed() < Duration::from_mins(1),
        "the timeout did not stop it"
    );
    data.assert_clean("after a timeout");

    let (out, v) = data.shadow(&[
        "--root",
        root.to_str().unwrap(),
        "--upper-size",
        "1M",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/var/big",
        "bs=1M",
        "count=4",
    ]);
    assert!(!out.status.success(), "{v}");
    assert_ne!(v["cmd"]["exit_code"], 0, "{v}");
    assert!(
        v["cmd"]["output_tail"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{v}"
    );
    assert!(total(&v, "syscall_errors_enospc") >= 1.0, "{v}");
    data.assert_clean("after a full upper layer");
}

/// `shadow run --root ROOT -- true` with `--data ARG`, from `data`: it
/// must succeed, and nothing of it may remain under `data` or under
/// `real`, the directory `ARG` is in truth.
fn true_in_a_shadow_leaves_nothing(data: &Data, root: &Path, arg: &Path, real: &Path, what: &str) {
    let out = Command::new(agent())
        .current_dir(&data.0)
        .args(["shadow", "--json", "--data"])
        .arg(arg)
        .args(["run", "--root"])
        .arg(root)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    data.note(&report);
    data.assert_clean(what);
    Data(real.to_path_buf(), data.1.clone()).assert_clean(what);
}

#[test]
fn a_shadow_with_a_relative_data_dir_runs_and_leaves_nothing() {
    let Some(_g) = ebpf_or_skip("a_shadow_with_a_relative_data_dir") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("relative");
    // The overlay is mounted at an absolute path; a teardown that looked
    // for the relative one left it mounted.
    let rel = data.0.join("rel");
    let what = "after a shadow under a relative --data";
    true_in_a_shadow_leaves_nothing(&data, &root, Path::new("rel"), &rel, what);
}

#[test]
fn a_shadow_under_a_symlinked_data_dir_runs_and_leaves_nothing() {
    let Some(_g) = ebpf_or_skip("a_shadow_under_a_symlinked_data_dir") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("symlinked");
    // /var/lib/backstop on another disk through a link is an ordinary
    // setup. The kernel lists mounts by their resolved path; a teardown
    // that looked for them under the link's found none, left them
    // mounted, and walked the mounted overlay to delete it.
    let real = data.0.join("real");
    std::fs::create_dir_all(&real).unwrap();
    let link = data.0.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let what = "after a shadow under a symlinked --data";
    true_in_a_shadow_leaves_nothing(&data, &root, &link, &real, what);
}

#[test]
fn a_shadow_root_is_volatile_unless_durable() {
    let Some(_g) = ebpf_or_skip("a_shadow_root_is_volatile_unless_durable") else {
        return;
    };
    let Some(root) = rootfs() else { return };
    let data = Data::new("sync");
    // The root's line of mountinfo, as the shadow sees it.
    let root_mount = |extra: &[&str]| -> String {
        let mut args = vec!["--root", root.to_str().unwrap()];
        args.extend(extra);
        args.extend(["--", "sh", "-c", "grep ' / / ' /proc/self/mountinfo"]);
        let (out, v) = data.shadow(&args);
        assert!(out.status.success(), "{v}");
        v["cmd"]["output_tail"].as_str().unwrap().to_string()
    };
    // Kernels before 6.12 print `volatile`, later ones `fsync=volatile`.
    let volatile = |line: &str| {
        let opts = line
            .split(" - overlay overlay ")
            .nth(1)
            .unwrap_or_else(|| panic!("not an overlay root: {line}"));
        opts.trim()
            .split(',')
            .any(|o| o == "volatile" || o == "fsync=volatile")
    };
    let default = root_mount(&[]);
    assert!(volatile(&default), "{default}");
    let durable = root_mount(&["--durable"]);
    assert!(!volatile(&durable), "{durable}");
    data.assert_clean("after volatile and durable shadows");
}
