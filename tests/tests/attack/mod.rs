//! Helpers of the hostile-shadow tests (shadow_attacks.rs): scratch
//! directories, the sentinel (walked by support::sentinel), a shadow run with a hang
//! watchdog, the leak check, and the host's disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{agent, eventually};

pub use crate::support::rootfs;

/// A scratch directory under /var/tmp, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let d = PathBuf::from(format!(
            "/var/tmp/backstop-attack-{what}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lazily unmounts a test's own mount on drop, panics included.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A directory outside everything the shadow is given, with a file, a
/// setuid file, a hard link, a symlink and a subdirectory.
pub fn sentinel(s: &Scratch) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = s.0.join("sentinel");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("file"), b"sentinel content\n").unwrap();
    std::fs::write(d.join("sub/setuid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        d.join("sub/setuid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(d.join("file"), d.join("sub/link")).unwrap();
    std::os::unix::fs::symlink("../file", d.join("sub/sym")).unwrap();
    d
}

/// What a leak would leave: our mounts, our shadow's cgroups (by its id,
/// in every hierarchy) and its state.
pub fn assert_clean(data: &Path, v: &Value, what: &str) {
    let id = v["id"].as_str().expect("the report names its shadow");
    let mut cgroups = vec![PathBuf::from("/sys/fs/cgroup/backstop-shadow").join(id)];
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        cgroups.push(h.path().join("backstop-shadow").join(id));
    }
    let left: Vec<_> = cgroups.iter().filter(|c| c.exists()).collect();
    assert!(left.is_empty(), "{what}: cgroups left: {left:?}");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<&str> = info
        .lines()
        .filter(|l| l.contains(data.to_str().unwrap()))
        .collect();
    assert!(mounts.is_empty(), "{what}: mounts left: {mounts:?}");
    let state: Vec<_> = std::fs::read_dir(data.join("agent/shadows"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(state.is_empty(), "{what}: shadow state left: {state:?}");
}

/// `backstop-agent shadow run --json ARGS`, killed (and failed) when it
/// takes longer than `limit`: a hang is a failure, not a stuck suite.
pub fn shadow_run(data: &Path, args: &[&str], limit: Duration) -> (Output, Value) {
    let child = Command::new(agent())
        .args(["shadow", "--json", "--data"])
        .arg(data)
        .arg("run")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let watchdog = std::thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < limit {
            if d2.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: plain kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        true
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !watchdog.join().unwrap(),
        "shadow run {args:?} hung past {limit:?} and was killed; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "shadow run printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, v)
}

pub fn tail(v: &Value, step: usize) -> String {
    let s = if step == 0 {
        &v["cmd"]
    } else {
        &v["tests"][step - 1]
    };
    s["output_tail"].as_str().unwrap_or_default().to_string()
}

/// major:minor of the block device behind the host's root filesystem.
pub fn root_disk() -> (u32, u32) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let from_mountinfo = info
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .and_then(|f| f[2].split_once(':').map(|(a, b)| (a.parse(), b.parse())))
        .and_then(|(a, b)| Some((a.ok()?, b.ok()?)))
        .filter(|&(major, _)| major != 0);
    from_mountinfo.unwrap_or_else(|| {
        // A root on a virtual fs (overlay, tmpfs): the first real disk.
        let mut disks: Vec<_> = std::fs::read_dir("/sys/block")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
            .collect();
        disks.sort();
        let dev = std::fs::read_to_string(format!("/sys/block/{}/dev", disks[0])).unwrap();
        let (a, b) = dev.trim().split_once(':').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    })
}

pub fn mknod_block(path: &Path, (major, minor): (u32, u32)) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string; plain mknod(2).
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The shadow's directory under `data`, once the step runner says ready.
pub fn wait_ready(data: &Path) -> PathBuf {
    let shadows = data.join("agent/shadows");
    let mut found = None;
    assert!(
        eventually(Duration::from_mins(1), || {
            found = std::fs::read_dir(&shadows).ok().and_then(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .find(|p| p.join("io/ready").exists())
            });
            found.is_some()
        }),
        "the shadow never said ready"
    );
    found.unwrap()
}

pub fn run_as_nobody(prog: &Path) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(prog)
        .arg("-u")
        .output()
        .unwrap()
}
