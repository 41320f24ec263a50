//! What a finished shadow must not leave behind, checked for the ids and
//! directories a test made itself (never for the whole host: other
//! agents run shadows beside the test).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The shadows one agent ran, learnt by watching its own data directory
/// (DATA/agent/shadows/<id>, or `.new-<id>` while it is being made): the
/// wire's shadow summary carries no id, and the directory lives for the
/// shadow's whole run, far longer than the 5 ms between looks.
pub struct ShadowWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ShadowWatch {
    pub fn start(data: &Path) -> ShadowWatch {
        let shadows: PathBuf = data.join("agent/shadows");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(rd) = std::fs::read_dir(&shadows) {
                    for e in rd.flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let id = n.strip_prefix(".new-").unwrap_or(&n);
                        if id.starts_with("sh-") {
                            v.lock().unwrap().insert(id.to_string());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        ShadowWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// The shadow ids seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().cloned().collect()
    }

    /// Stop watching; the shadow ids seen.
    pub fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().iter().cloned().collect()
    }
}

/// No mount at or under `data` (the agent's data directory: the shadow's
/// bind, tmpfs, frozen layer and overlay all live there), no cgroup of
/// shadow `id` in any hierarchy, no directory of it under
/// DATA/agent/shadows.
pub fn assert_no_shadow_left(data: &Path, id: &str) {
    let data = std::fs::canonicalize(data).unwrap();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(&data))
        .collect();
    assert!(
        mounts.is_empty(),
        "mounts left under {}: {mounts:?}",
        data.display()
    );
    let mut cgroups = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = h.path().join("backstop-shadow").join(id);
        if d.exists() {
            cgroups.push(d);
        }
    }
    let direct = Path::new("/sys/fs/cgroup/backstop-shadow").join(id);
    if direct.exists() {
        cgroups.push(direct);
    }
    assert!(
        cgroups.is_empty(),
        "shadow {id}'s cgroups left: {cgroups:?}"
    );
    let shadows = data.join("agent/shadows");
    let left: Vec<String> = std::fs::read_dir(&shadows)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(id))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "shadow {id}'s directories left in {}: {left:?}",
        shadows.display()
    );
}
