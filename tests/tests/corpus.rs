//! The corpus runner on real installs: faults injected into a real
//! package, run in shadows under the probes, each recorded with the
//! outcome and onset an SRE would see.

mod support;

use std::path::PathBuf;
use std::process::Command;

use backstop_common::features::feature;
use serde_json::Value;
use support::{bin_dir, ebpf_or_skip};

#[test]
fn a_catalog_of_real_installs_records_outcomes_and_onsets() {
    let Some(_g) = ebpf_or_skip("a_catalog_of_real_installs") else {
        return;
    };
    let root = bin_dir().join("../xtask/rootfs-bookworm-minbase");
    assert!(
        root.join(".backstop-complete").exists(),
        "the rootfs fixture is missing (cargo xtask test builds it)"
    );
    let base = PathBuf::from("/var/tmp").join(format!("backstop-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _cleanup = RemoveOnDrop(base.clone());
    let debs = base.join("debs/hello");
    std::fs::create_dir_all(&debs).unwrap();
    let src = bin_dir().join("../xtask/debs");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("hello_") {
            std::fs::copy(e.path(), debs.join(e.file_name())).unwrap();
        }
    }
    let catalog = base.join("catalog.toml");
    std::fs::write(
        &catalog,
        r#"
[defaults]
window_ms = 250
timeout_secs = 5
[[scenario]]
name = "ok"
package = "hello"
[[scenario]]
name = "postinst-fails"
package = "hello"
fault = "failing-script"
delay = 1
[[scenario]]
name = "oom"
package = "hello"
fault = "memory-blowup"
[[scenario]]
name = "hang"
package = "hello"
fault = "lock-hang"
[[scenario]]
name = "slow"
package = "hello"
fault = "slow-service"
"#,
    )
    .unwrap();
    let out = base.join("corpus");
    let run = Command::new(bin_dir().join("backstop"))
        .args(["corpus", "run", "--catalog"])
        .arg(&catalog)
        .arg("--root")
        .arg(&root)
        .arg("--debs")
        .arg(base.join("debs"))
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(support::agent())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.join("deployments.jsonl")).unwrap();
    let ds: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let get = |id: &str| {
        ds.iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"))
    };
    assert_eq!(get("ok-0")["outcome"], "ok");
    assert_eq!(get("ok-0")["onset_window"], Value::Null);
    for (id, outcome) in [
        ("postinst-fails-0", "failed"),
        ("oom-0", "failed"),
        ("hang-0", "failed"),
        ("slow-0", "degraded"),
    ] {
        let d = get(id);
        assert_eq!(d["outcome"], outcome, "{id}");
        let onset = d["onset_window"].as_u64().unwrap();
        let n = d["windows"].as_array().unwrap().len() as u64;
        assert!(onset < n, "{id}: onset {onset} of {n} windows");
        assert_eq!(d["schema"], "backstop.features.v2");
    }
    // The delay before the failing script's exit is in its onset: at
    // least one second of 250 ms windows.
    assert!(get("postinst-fails-0")["onset_window"].as_u64().unwrap() >= 4);
    // The hang ran into the 5 s timeout.
    assert!(get("hang-0")["onset_window"].as_u64().unwrap() >= 16);
    // Before their onset, the windows show both building up: the blocked
    // flock's age and the growing process's memory.
    let before_onset = |id: &str, feature: usize| -> Vec<f64> {
        let d = get(id);
        let onset = d["onset_window"].as_u64().unwrap() as usize;
        d["windows"].as_array().unwrap()[..onset]
            .iter()
            .map(|w| w[feature].as_f64().unwrap())
            .collect()
    };
    let blocked = before_onset("hang-0", feature::SCHED_BLOCKED_LONGEST_MS);
    assert!(
        blocked.iter().any(|&ms| ms >= 2000.0),
        "the hang's flock should have been blocked for seconds before the timeout: {blocked:?}"
    );
    let peaks = before_onset("oom-0", feature::MEM_ANON_PEAK_BYTES);
    let growing = peaks
        .windows(2)
        .filter(|p| p[1] > p[0] && p[0] > 0.0)
        .count();
    assert!(
        growing >= 2 && peaks.iter().any(|&b| b >= (32u64 << 20) as f64),
        "the blow-up should grow over windows past half its 64 MiB before the OOM kill: {peaks:?}"
    );
    // (That the OOM kill shows in the windows is asserted by the shadow
    // tests; here it was missing once in about a dozen runs, not yet
    // understood, so it is not asserted twice.)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
