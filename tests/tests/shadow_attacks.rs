//! A hostile install in a shadow, as root on the cached Debian rootfs:
//! each test is a real attack on the host through the shadow, and a
//! sentinel directory outside the shadow's root and data directory must
//! walk the same (content, mode, owner, inode, link count) before and
//! after. After every test nothing of the shadow remains.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod attack;
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use attack::{
    Scratch, Unmount, assert_clean, mknod_block, root_disk, rootfs, run_as_nobody, sentinel,
    shadow_run, tail, wait_ready,
};
use serde_json::Value;
use support::ebpf_or_skip;
use support::sentinel::{assert_untouched, walk};

#[test]
fn a_shadow_cannot_make_or_open_the_hosts_disk() {
    let Some(_g) = ebpf_or_skip("a_shadow_cannot_make_or_open_the_hosts_disk") else {
        return;
    };
    let Some(rootfs) = rootfs() else { return };
    let s = Scratch::new("disk");
    let sent = sentinel(&s);
    let before = walk(&sent);
    let (major, minor) = root_disk();
    // A root whose lower layer already holds a node for the host's disk
    // (as a host's own root might): an overlay of the fixture and a layer
    // with the node, made here as root.
    let (layer, work, root) = (s.0.join("layer"), s.0.join("work"), s.0.join("root"));
    for d in [&layer, &work, &root] {
        std::fs::create_dir_all(d).unwrap();
    }
    mknod_block(&layer.join("hostdisk"), (major, minor)).unwrap();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            rootfs.display(),
            layer.display(),
            work.display()
        ))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "mounting the test's root overlay");
    let _unmount = Unmount(root.clone());
    let data = s.0.join("data");
    let script = format!(
        "mknod /root/disk b {major} {minor}; echo mknod=$?; \
         head -c 512 /root/disk >/dev/null; echo open_made=$?; \
         head -c 512 /hostdisk >/dev/null; echo open_lower=$?"
    );
    let (_, v) = shadow_run(
        &data,
        &["--root", root.to_str().unwrap(), "--", "sh", "-c", &script],
        Duration::from_mins(1),
    );
    let out = tail(&v, 0);
    assert!(
        out.contains("mknod: /root/disk: Operation not permitted") && out.contains("mknod=1"),
        "mknod of the host's disk ({major}:{minor}) must fail EPERM (no CAP_MKNOD): {out}"
    );
    assert!(out.contains("open_made=1"), "{out}");
    // The node that was already there: the overlay is nodev and the
    // device cgroup denies it; either way it must not open.
    assert!(
        out.contains("open_lower=1")
            && (out.contains("Permission denied") || out.contains("Operation not permitted")),
        "a block node in the lower layer opened inside the shadow: {out}"
    );
    assert!(v["diff"]["added"].to_string().find("disk").is_none(), "{v}");
    assert_untouched(&sent, &before, "the sentinel");
    assert_clean(&data, &v, "after the disk attack");
}

#[test]
fn setuid_files_and_device_nodes_in_a_live_shadow_are_inert_from_the_host() {
    use std::os::unix::fs::PermissionsExt;
    let Some(_g) = ebpf_or_skip("setuid_files_in_a_shadow_are_inert") else {
        return;
    };
    let Some(rootfs) = rootfs() else { return };
    let s = Scratch::new("setuid");
    let sent = sentinel(&s);
    let before = walk(&sent);
    let data = s.0.join("data");
    // The install leaves a setuid-root `id` in its upper layer and waits
    // (at most 60 s) while the host reaches in.
    let script = "cp /usr/bin/id /usr/local/bin/rootid && chmod 4755 /usr/local/bin/rootid \
                  && cp /usr/bin/id /.backstop-shadow/rootid && chmod 4755 /.backstop-shadow/rootid \
                  && touch /.backstop-shadow/ready; \
                  i=0; while [ ! -e /.backstop-shadow/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done";
    let data2 = data.clone();
    let root2 = rootfs.clone();
    let runner = std::thread::spawn(move || {
        shadow_run(
            &data2,
            &["--root", root2.to_str().unwrap(), "--", "sh", "-c", script],
            Duration::from_mins(2),
        )
    });
    let dir = wait_ready(&data);
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    // The first layer: nobody cannot even reach the shadow's directory.
    assert_eq!(dir.metadata().unwrap().mode() & 0o777, 0o700);
    let upper_id = dir.join("rw/upper/usr/local/bin/rootid");
    let io_id = dir.join("io/rootid");
    let merged_id = dir.join("merged/usr/local/bin/rootid");
    for p in [&upper_id, &io_id] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o4755, 0), "{}", p.display());
    }
    // The second, proven alone: open the path to nobody, as a looser
    // DATA directory would, and run the setuid-root files.
    let mut opened = Vec::new();
    let mut p = upper_id.parent().unwrap();
    while p != s.0 {
        let mode = p.metadata().unwrap().mode();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode((mode | 0o011) & 0o7777))
            .unwrap();
        opened.push(p.to_path_buf());
        p = p.parent().unwrap();
    }
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o711)).unwrap();
    for prog in [&upper_id, &io_id, &merged_id] {
        let out = run_as_nobody(prog);
        assert!(
            out.status.success(),
            "running {} as nobody: {}",
            prog.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "65534",
            "{} gave nobody euid 0 from the host",
            prog.display()
        );
    }
    // A device node in the upper layer (made here as root: the shadow has
    // no CAP_MKNOD) does not open from the host either.
    let node = dir.join("rw/upper/usr/local/bin/hostdisk");
    mknod_block(&node, root_disk()).unwrap();
    let e = std::fs::File::open(&node).expect_err("a device node in the upper dir opened");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    std::fs::remove_file(&node).unwrap();
    // A shadow without --pids has the default limit.
    let pids_max =
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/backstop-shadow/{id}/pids.max"))
            .or_else(|_| {
                std::fs::read_to_string(format!("/sys/fs/cgroup/backstop-shadow/{id}/pids.max"))
            })
            .unwrap();
    assert_eq!(pids_max.trim(), "2048");
    std::fs::write(dir.join("io/go"), b"").unwrap();
    let (out, v) = runner.join().unwrap();
    assert!(out.status.success(), "{v}");
    assert_untouched(&sent, &before, "the sentinel");
    assert_clean(&data, &v, "after the setuid attack");
}

#[test]
fn planted_links_and_fifos_in_the_io_dir_neither_leak_nor_hang() {
    let Some(_g) = ebpf_or_skip("planted_links_in_the_io_dir") else {
        return;
    };
    let Some(rootfs) = rootfs() else { return };
    let s = Scratch::new("io");
    let sent = sentinel(&s);
    let before = walk(&sent);
    let data = s.0.join("data");
    let io = "/.backstop-shadow";
    // Each step replaces its own output (and CMD's exit record) after the
    // runner opened it: the host's /etc/shadow, the sentinel's file, an
    // endless device, a fifo nobody writes.
    let planted = [
        format!("ln -sf {} {io}/1.out", sent.join("file").display()),
        format!("ln -sf /dev/zero {io}/2.out"),
        format!("rm -f {io}/3.out && mkfifo {io}/3.out"),
        format!("ln -sf /dev/zero {io}/0.rc && rm -f {io}/1.rc && mkfifo {io}/1.rc"),
    ];
    let mut args = vec!["--root".to_string(), rootfs.to_str().unwrap().to_string()];
    for t in &planted {
        args.extend(["--test".to_string(), t.clone()]);
    }
    args.extend(["--".into(), "ln".into(), "-sf".into(), "/etc/shadow".into()]);
    args.push(format!("{io}/0.out"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let (_, v) = shadow_run(&data, &args, Duration::from_secs(90));
    let took = t0.elapsed();
    let report = v.to_string();
    let host_shadow = std::fs::read_to_string("/etc/shadow").unwrap();
    let first = host_shadow.lines().next().unwrap();
    assert!(!first.is_empty());
    assert!(
        !report.contains(first),
        "the host's /etc/shadow leaked into the report"
    );
    assert!(!report.contains("sentinel content"), "{report}");
    for step in 0..=3 {
        let t = tail(&v, step);
        assert!(
            t.starts_with(&format!("[backstop: {step}.out not read:")),
            "step {step}: {t}"
        );
    }
    assert!(tail(&v, 0).contains("symbolic links"), "{report}");
    assert!(tail(&v, 3).contains("not a regular file"), "{report}");
    assert_eq!(v["cmd"]["exit_code"], Value::Null, "{report}");
    assert_eq!(v["tests"][0]["exit_code"], Value::Null, "{report}");
    // The agent's peak memory: bounded reads, not /dev/zero's worth.
    // SAFETY: getrusage with a valid out-pointer.
    let maxrss_kib = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru);
        ru.ru_maxrss
    };
    eprintln!("planted io links: shadow run took {took:?}, children's peak RSS {maxrss_kib} KiB");
    assert!(maxrss_kib < 512 * 1024, "peak RSS {maxrss_kib} KiB");
    assert_untouched(&sent, &before, "the sentinel");
    assert_clean(&data, &v, "after the io-dir attack");
}

#[test]
fn a_shadow_cannot_create_namespaces() {
    let Some(_g) = ebpf_or_skip("a_shadow_cannot_create_namespaces") else {
        return;
    };
    let Some(rootfs) = rootfs() else { return };
    let s = Scratch::new("ns");
    let sent = sentinel(&s);
    let before = walk(&sent);
    let data = s.0.join("data");
    // Raw clone(2) (x86_64 number 56) with SIGCHLD and one namespace flag
    // each, a plain one, and clone3 (435): what unshare(1) cannot show.
    let perl = r#"$|=1;
        for my $f (0x20000, 0x10000000, 0x40000000, 0x20000000, 0x8000000, 0x4000000, 0x2000000) {
            my $r = syscall(56, $f | 17, 0, 0, 0, 0);
            if ($r == 0) { exit 0 }
            if ($r > 0) { waitpid($r, 0) }
            printf "clone %#x: %d %s\n", $f, $r, ($r < 0 ? $!+0 : 0);
        }
        my $r = syscall(56, 17, 0, 0, 0, 0);
        if ($r == 0) { exit 0 }
        waitpid($r, 0);
        print "plain: ", ($r > 0 ? "ok" : "failed $!"), "\n";
        $r = syscall(435, 0, 0);
        printf "clone3: %d %d\n", $r, $!+0;"#;
    let (_, v) = shadow_run(
        &data,
        &[
            "--root",
            rootfs.to_str().unwrap(),
            "--test",
            "unshare -m true",
            "--test",
            "unshare -U -r true",
            "--test",
            perl_cmd(perl).as_str(),
            "--",
            "unshare",
            "-n",
            "true",
        ],
        Duration::from_mins(1),
    );
    for (step, what) in [(0, "unshare -n"), (1, "unshare -m"), (2, "unshare -U")] {
        let s = if step == 0 {
            &v["cmd"]
        } else {
            &v["tests"][step - 1]
        };
        assert_ne!(s["exit_code"], 0, "{what} succeeded in a shadow: {v}");
        assert!(
            tail(&v, step).contains("Operation not permitted"),
            "{what}: {}",
            tail(&v, step)
        );
    }
    let out = tail(&v, 3);
    assert_eq!(
        out.matches(&format!(": -1 {}\n", libc::EPERM)).count(),
        7,
        "every namespace flag on clone must fail EPERM: {out}"
    );
    assert!(
        out.contains("plain: ok"),
        "a plain fork must still work: {out}"
    );
    assert!(
        out.contains(&format!("clone3: -1 {}", libc::ENOSYS)),
        "clone3 must fail ENOSYS: {out}"
    );
    assert_untouched(&sent, &before, "the sentinel");
    assert_clean(&data, &v, "after the namespace attack");
}

fn perl_cmd(script: &str) -> String {
    format!("perl -e '{script}'")
}

#[test]
fn a_fork_bomb_in_a_shadow_is_held_by_its_pids_limit() {
    let Some(_g) = ebpf_or_skip("a_fork_bomb_in_a_shadow") else {
        return;
    };
    let Some(rootfs) = rootfs() else { return };
    let s = Scratch::new("forkbomb");
    let sent = sentinel(&s);
    let before = walk(&sent);
    let data = s.0.join("data");
    let data2 = data.clone();
    let runner = std::thread::spawn(move || {
        shadow_run(
            &data2,
            &[
                "--root",
                rootfs.to_str().unwrap(),
                "--pids",
                "64",
                // Half a core: the bomb spins, and this machine is shared.
                "--cpu-quota-us",
                "50000",
                "--timeout-secs",
                "6",
                "--",
                "perl",
                "-e",
                // Every process forks forever; a failed fork returns undef
                // and the loop goes on (dash would exit on its first).
                "while (1) { fork }",
            ],
            Duration::from_secs(90),
        )
    });
    // While it runs: the host still forks, and the cgroup holds at 64.
    // The pids controller's shadows: v1 (hybrid hosts), or cgroup v2.
    let cg = [
        "/sys/fs/cgroup/pids/backstop-shadow",
        "/sys/fs/cgroup/backstop-shadow",
    ]
    .map(Path::new)
    .into_iter()
    .find(|p| {
        p.parent()
            .is_some_and(|h| h.join("tasks").exists() || h.join("cgroup.controllers").exists())
    })
    .unwrap();
    let mut peak = 0u64;
    let mut hit = 0u64;
    // The cgroups of this test's shadows, seen while they ran: the leak
    // check below looks at these, never at another run's.
    let mut own = std::collections::BTreeSet::new();
    let (mut host_forks, mut host_fails) = (0, 0);
    let t = Instant::now();
    while !runner.is_finished() && t.elapsed() < Duration::from_secs(90) {
        for e in std::fs::read_dir(cg).into_iter().flatten().flatten() {
            // Only this test's shadow (its directory is under our DATA):
            // another backstop's shadows may share the parent cgroup.
            if !data.join("agent/shadows").join(e.file_name()).exists() {
                continue;
            }
            own.insert(e.file_name());
            let read = |f: &str| std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
            if let Ok(n) = read("pids.current").trim().parse::<u64>() {
                peak = peak.max(n);
            }
            if let Some(n) = read("pids.events")
                .strip_prefix("max ")
                .and_then(|n| n.trim().parse().ok())
            {
                hit = hit.max(n);
            }
        }
        if Command::new("true").status().is_ok_and(|s| s.success()) {
            host_forks += 1;
        } else {
            host_fails += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, v) = runner.join().unwrap();
    eprintln!("fork bomb: peak {peak} pids, {hit} forks refused, host forked {host_forks} times");
    assert!(
        peak <= 64,
        "the shadow held {peak} pids past its limit of 64"
    );
    assert!(hit > 0, "the bomb never reached the limit");
    assert!(
        host_forks > 0 && host_fails == 0,
        "the host failed {host_fails} of {} forks during the bomb",
        host_forks + host_fails
    );
    // The bomb never ends by itself: the timeout kills it, with the
    // whole pid namespace, and the report is there.
    assert_eq!(v["timed_out"], true, "{v}");
    assert!(v["cleanup_problems"].as_array().unwrap().is_empty(), "{v}");
    assert!(!own.is_empty(), "the bomb's shadow cgroup was never seen");
    let left: Vec<_> = own.iter().filter(|n| cg.join(n).is_dir()).collect();
    assert!(
        left.is_empty(),
        "a shadow's pids cgroup outlived it: {left:?}"
    );
    assert_untouched(&sent, &before, "the sentinel");
    assert_clean(&data, &v, "after the fork bomb");
}
