//! A shadow's report: what `backstop-agent shadow run --json` prints and
//! what every reader of it (the catalog runner today, the correlation
//! engine next) deserialises. The verdict is computed here and only here
//! ([`ShadowReport::verdict`]), so the agent's exit code and a training
//! record's label cannot disagree about the same run.
//!
//! The JSON is a contract (tests/tests/shadow.rs reads it): the windows are
//! in `watch --json`'s line format (features by name, see
//! [`Window::to_json`]), and a reader gets them back in [`FEATURES`] order.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::features::{FEATURES, SCHEMA_VERSION};
use crate::fsdiff::FsDiff;
use crate::hostlevels::HostLevels;
use crate::window::{Stream, Window};
use crate::wire::ProcEvent;

/// One step the shadow ran: CMD or a test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub command: String,
    /// None when the step never finished (the shadow was killed).
    pub exit_code: Option<i32>,
    pub duration_ms: Option<f64>,
    pub output_tail: String,
}

impl StepResult {
    fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    pub id: String,
    pub root: PathBuf,
    pub cmd: StepResult,
    pub tests: Vec<StepResult>,
    /// The timeout ran out and the shadow was killed.
    pub timed_out: bool,
    /// The memory cgroup OOM-killed something in the shadow.
    pub oom_killed: bool,
    pub oom_kills: u64,
    pub diff: FsDiff,
    /// Stream `shadow`, in seq order.
    #[serde(serialize_with = "named_out", deserialize_with = "named_in")]
    pub windows: Vec<Window>,
    /// Lifecycle records of the shadow's tree.
    pub events: Vec<ProcEvent>,
    pub lost_events: u64,
    /// Whatever teardown could not do (should be empty).
    pub cleanup_problems: Vec<String>,
}

/// How a shadow run went, the first that applies in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Killed when the timeout ran out.
    TimedOut,
    /// The memory cgroup OOM-killed something.
    OomKilled,
    /// CMD did not exit 0 (or never finished).
    StepFailed,
    /// CMD exited 0, a test did not.
    TestFailed,
    /// CMD and every test exited 0, nothing was killed.
    Passed,
}

/// An install's label: what a training record says happened, and what a
/// shadow's verdict amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// The install itself failed (or was killed).
    Failed,
    /// The install succeeded and its health checks did not.
    Degraded,
}

impl Verdict {
    pub fn passed(self) -> bool {
        self == Verdict::Passed
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Verdict::Passed => Outcome::Ok,
            Verdict::TestFailed => Outcome::Degraded,
            Verdict::TimedOut | Verdict::OomKilled | Verdict::StepFailed => Outcome::Failed,
        }
    }
}

impl ShadowReport {
    pub fn verdict(&self) -> Verdict {
        if self.timed_out {
            Verdict::TimedOut
        } else if self.oom_killed {
            Verdict::OomKilled
        } else if !self.cmd.ok() {
            Verdict::StepFailed
        } else if !self.tests.iter().all(StepResult::ok) {
            Verdict::TestFailed
        } else {
            Verdict::Passed
        }
    }
}

fn named_out<S: Serializer>(windows: &[Window], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(windows.iter().map(Window::to_json))
}

/// A window in `watch --json`'s format. A feature this build does not
/// know is skipped, and one the report lacks (or gives as null) is 0, as
/// readers of that format have always taken it.
#[derive(Deserialize)]
struct Named {
    seq: u64,
    stream: Stream,
    start_ns: u64,
    end_ns: u64,
    lost_events: u64,
    features: serde_json::Map<String, serde_json::Value>,
    /// Absent in reports from before schema v3.
    #[serde(default)]
    host: HostLevels,
}

fn named_in<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Window>, D::Error> {
    let named = Vec::<Named>::deserialize(d)?;
    Ok(named
        .into_iter()
        .map(|n| Window {
            schema: SCHEMA_VERSION.to_string(),
            stream: n.stream,
            seq: n.seq,
            start_ns: n.start_ns,
            end_ns: n.end_ns,
            lost_events: n.lost_events,
            features: FEATURES
                .iter()
                .map(|f| {
                    n.features
                        .get(f.name)
                        .and_then(serde_json::Value::as_f64)
                        .unwrap_or(0.0)
                })
                .collect(),
            host: n.host,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::feature;

    fn step(exit_code: Option<i32>) -> StepResult {
        StepResult {
            command: "true".into(),
            exit_code,
            duration_ms: Some(1.0),
            output_tail: String::new(),
        }
    }

    fn report(cmd: Option<i32>, tests: &[Option<i32>], oom: bool, timed_out: bool) -> ShadowReport {
        ShadowReport {
            id: "sh-1".into(),
            root: "/".into(),
            cmd: step(cmd),
            tests: tests.iter().map(|&c| step(c)).collect(),
            timed_out,
            oom_killed: oom,
            oom_kills: u64::from(oom),
            diff: FsDiff::default(),
            windows: Vec::new(),
            events: Vec::new(),
            lost_events: 0,
            cleanup_problems: Vec::new(),
        }
    }

    #[test]
    fn verdict_table() {
        use Verdict::*;
        let table: &[(&str, ShadowReport, Verdict, Outcome)] = &[
            (
                "clean",
                report(Some(0), &[Some(0), Some(0)], false, false),
                Passed,
                Outcome::Ok,
            ),
            (
                "no tests",
                report(Some(0), &[], false, false),
                Passed,
                Outcome::Ok,
            ),
            (
                "step failed",
                report(Some(1), &[Some(0)], false, false),
                StepFailed,
                Outcome::Failed,
            ),
            (
                "step killed",
                report(None, &[], false, false),
                StepFailed,
                Outcome::Failed,
            ),
            (
                "test failed",
                report(Some(0), &[Some(0), Some(3)], false, false),
                TestFailed,
                Outcome::Degraded,
            ),
            (
                "test killed",
                report(Some(0), &[None], false, false),
                TestFailed,
                Outcome::Degraded,
            ),
            (
                "oom",
                report(Some(0), &[Some(0)], true, false),
                OomKilled,
                Outcome::Failed,
            ),
            (
                "timeout",
                report(None, &[], false, true),
                TimedOut,
                Outcome::Failed,
            ),
            (
                "timeout beats oom",
                report(Some(0), &[], true, true),
                TimedOut,
                Outcome::Failed,
            ),
            (
                "oom beats a failed step",
                report(Some(137), &[Some(1)], true, false),
                OomKilled,
                Outcome::Failed,
            ),
        ];
        for (name, r, verdict, outcome) in table {
            assert_eq!(r.verdict(), *verdict, "{name}");
            assert_eq!(r.verdict().outcome(), *outcome, "{name}");
            assert_eq!(r.verdict().passed(), *verdict == Passed, "{name}");
        }
    }

    #[test]
    fn windows_round_trip_by_feature_name() {
        let mut r = report(Some(0), &[], false, false);
        let mut w = Window::new(Stream::Shadow, 4, 10, 20);
        w.features[feature::BLOCK_WRITE_BYTES] = 8_388_608.0;
        w.features[feature::HOST_DISK_FREE_FALL] = 0.25;
        w.lost_events = 2;
        r.windows.push(w);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["windows"][0]["features"]["block_write_bytes"], 8_388_608);
        assert_eq!(v["windows"][0]["stream"], "shadow");
        let back: ShadowReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn an_unknown_feature_is_skipped_and_a_missing_one_is_zero() {
        let mut v = serde_json::to_value(report(Some(0), &[], false, false)).unwrap();
        v["windows"] = serde_json::json!([{"seq": 0, "stream": "shadow", "start_ns": 1,
            "end_ns": 2, "lost_events": 0, "features": {"syscalls_total": 5, "from_the_future": 1}}]);
        let r: ShadowReport = serde_json::from_value(v).unwrap();
        let w = &r.windows[0];
        assert_eq!(w.features.len(), FEATURES.len());
        assert_eq!(w.get("syscalls_total"), Some(5.0));
        assert_eq!(w.features.iter().sum::<f64>(), 5.0);
    }
}
