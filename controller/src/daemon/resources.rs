//! The levels [`crate::decide::trend`] projects, from the stored live
//! windows, whether or not a model is loaded: a disk filling is evidence
//! the engine reads from the raw measure, not from P(failure).
//!
//! The samples' clock is the first live window's start: the agent starts
//! tracking the live install with its first step, so the running step
//! began about the sum of the finished steps' durations after it (the
//! runner's few ms between steps are not counted, which moves the
//! deadline earlier, never later).

use backstop_common::deploy::DeployEvent;
use backstop_common::manifest::Manifest;
use backstop_common::window::{Stream, Window};

use crate::decide::trend::{Level, Resources};

/// One free-space sample per live window (in seq order, once each), the
/// deadline in force after the live steps `events` report, and a dry
/// run's room refusal.
pub fn resources(windows: &[Window], events: &[DeployEvent], manifest: &Manifest) -> Resources {
    let mut live: Vec<&Window> = windows
        .iter()
        .filter(|w| w.stream == Stream::Live)
        .collect();
    live.sort_by_key(|w| w.seq);
    live.dedup_by_key(|w| w.seq);
    let origin = live.iter().map(|w| w.start_ns).min().unwrap_or(0);
    // The absolute level, from the window's host record (never a model
    // input since schema v3); a window that measured no filesystem (a
    // zero size: older windows) gives no sample.
    let disk_free = live
        .iter()
        .filter(|w| w.host.disk_total_bytes > 0.0)
        .map(|w| Level {
            index: w.seq,
            at_ms: w.end_ns.saturating_sub(origin) as f64 / 1e6,
            value: w.host.disk_free_bytes,
        })
        .collect();
    Resources {
        disk_free,
        memory_room: super::memory::room(events),
        deadline_ms: deadline_ms(events, manifest),
        no_room: events.iter().find_map(|e| match e {
            DeployEvent::WouldRefuse { reason } => Some(reason.clone()),
            _ => None,
        }),
    }
}

/// The running live step's timeout end, or (all steps done) the end of
/// monitoring, in ms since the install began.
fn deadline_ms(events: &[DeployEvent], manifest: &Manifest) -> Option<f64> {
    let done: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            DeployEvent::Step {
                stream: Stream::Live,
                step,
            } => Some(step.duration_ms),
            _ => None,
        })
        .collect();
    let started: f64 = done.iter().sum();
    let more = match manifest.steps.get(done.len()) {
        Some(step) => step.timeout,
        None if done.is_empty() => return None,
        None => manifest.monitor.period,
    };
    Some(started + more.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use backstop_common::deploy::StepResult;
    use backstop_common::manifest::Manifest;

    use super::*;

    fn manifest() -> Manifest {
        let text = r#"
name = "app"
[artifact]
debs = ["/tmp/app.deb"]
[[steps]]
name = "unpack"
run = ["true"]
timeout = "10s"
[[steps]]
name = "configure"
run = ["true"]
timeout = "60s"
[scope]
paths = ["/etc"]
[monitor]
period = "30s"
"#;
        Manifest::from_toml(text).expect("a valid manifest")
    }

    fn window(stream: Stream, seq: u64, free: f64) -> Window {
        let s = 5_000_000_000 + (seq - 1) * 1_000_000_000;
        let mut w = Window::new(stream, seq, s, s + 1_000_000_000);
        w.host.disk_free_bytes = free;
        w.host.disk_total_bytes = 100.0;
        w
    }

    fn step(duration_ms: f64) -> DeployEvent {
        DeployEvent::Step {
            stream: Stream::Live,
            step: StepResult {
                duration_ms,
                exit_code: Some(0),
                ..StepResult::default()
            },
        }
    }

    #[test]
    fn live_windows_give_one_sample_each_on_the_install_clock() {
        let ws = vec![
            window(Stream::Live, 2, 80.0),
            window(Stream::Shadow, 1, 1.0),
            window(Stream::Live, 1, 90.0),
            window(Stream::Live, 2, 80.0),
        ];
        let r = resources(&ws, &[], &manifest());
        let got: Vec<(u64, f64, f64)> = r
            .disk_free
            .iter()
            .map(|l| (l.index, l.at_ms, l.value))
            .collect();
        assert_eq!(got, vec![(1, 1000.0, 90.0), (2, 2000.0, 80.0)]);
        assert_eq!(r.deadline_ms, Some(10_000.0), "the first step's timeout");
    }

    #[test]
    fn the_deadline_follows_the_running_step_then_monitoring() {
        let m = manifest();
        let one = resources(&[], &[step(2500.0)], &m);
        assert_eq!(one.deadline_ms, Some(62_500.0));
        let both = resources(&[], &[step(2500.0), step(500.0)], &m);
        assert_eq!(both.deadline_ms, Some(33_000.0));
    }

    /// A dry run's room refusal reaches the engine, which rolls back on
    /// it with the guard on, and not with it off.
    #[test]
    fn a_dry_runs_room_refusal_is_a_rollback_under_the_exhaustion_guard() {
        use crate::decide::{Params, Reason, Verdict, decide, evidence};
        let why = "no room: the artifact's files need more than the 64.0 KiB free";
        let events = [DeployEvent::WouldRefuse { reason: why.into() }, step(10.0)];
        let r = resources(&[], &events, &manifest());
        assert_eq!(r.no_room.as_deref(), Some(why));
        let e = evidence::Evidence {
            resources: r,
            ..crate::daemon::decider::evidence(&events, 1)
        };
        let d = decide(&e, &Params::default());
        assert_eq!(d.verdict, Verdict::Rollback, "{d:?}");
        assert_eq!(d.reasons[0], Reason::NoRoom { reason: why.into() });
        let text = d.reasons[0].to_string();
        assert!(
            text.contains("would have refused") && text.ends_with(why),
            "{text}"
        );
        let off = Params {
            exhaustion: false,
            ..Params::default()
        };
        let d = decide(&e, &off);
        assert_eq!(d.verdict, Verdict::Continue, "still installing: {d:?}");
        assert!(!d.reasons.iter().any(|r| matches!(r, Reason::NoRoom { .. })));
    }
}
