//! Two trees tracked at once by one agent (as `backstop-agent run` does
//! with concurrent deployments) share the probes' ring buffers; each must
//! still get every lifecycle record of its own and none of the other's.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: an unwrap that fails is the test failing, with the panic's location"
)]

mod support;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backstop_agent::probes::{ProbeOptions, Probes};
use backstop_agent::track::{SharedProbes, TrackOptions, WindowSink, track};
use backstop_agent::tree::Stdout;
use backstop_common::window::{Stream, Window};
use backstop_common::{EVENT_EXEC, ProcRecord, c_str};
use support::ebpf_or_skip;

#[derive(Default)]
struct Execs(Vec<String>);

impl WindowSink for Execs {
    fn window(&mut self, _w: &Window) -> backstop_agent::error::Result<()> {
        Ok(())
    }
    fn event(&mut self, ev: &ProcRecord) -> backstop_agent::error::Result<()> {
        if ev.kind == EVENT_EXEC {
            self.0
                .push(String::from_utf8_lossy(c_str(&ev.filename)).into_owned());
        }
        Ok(())
    }
}

#[test]
fn concurrent_trees_each_get_all_their_own_exec_records() {
    let Some(_g) = ebpf_or_skip("concurrent_trees_each_get_all_their_own_exec_records") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let probes: SharedProbes = Arc::new(Mutex::new(
            Probes::load(&ProbeOptions { probe_log: false }).unwrap(),
        ));
        let opts = TrackOptions {
            stream: Stream::Live,
            window: Duration::from_millis(50),
            scope: PathBuf::from("/"),
            stdout: Stdout::Stderr,
            kill_grace: Duration::from_secs(1),
            changes: None,
            timeout: Some(Duration::from_mins(2)),
        };
        // 300 execs each, of a binary only that tree runs, overlapping.
        let argv = |bin: &str| -> Vec<OsString> {
            vec![
                "sh".into(),
                "-c".into(),
                format!("i=0; while [ $i -lt 300 ]; do {bin}; i=$((i+1)); done").into(),
            ]
        };
        let (a_argv, b_argv) = (argv("/bin/true"), argv("/bin/false || :"));
        let (mut a, mut b) = (Execs::default(), Execs::default());
        let (ra, rb) = tokio::join!(
            track(&probes, &a_argv, &opts, None, &mut a),
            track(&probes, &b_argv, &opts, None, &mut b),
        );
        ra.unwrap();
        rb.unwrap();
        let count = |e: &Execs, f: &str| e.0.iter().filter(|x| x.as_str() == f).count();
        assert_eq!(count(&a, "/bin/true"), 300, "tree A's execs");
        assert_eq!(count(&b, "/bin/false"), 300, "tree B's execs");
        assert_eq!(count(&a, "/bin/false"), 0, "B's records reached A");
        assert_eq!(count(&b, "/bin/true"), 0, "A's records reached B");
    });
}
