//! The envelope on hand-made installs: limits, totals, the spin, the cross-fitted
//! scales and factor, and what a model of another build carries.

use super::*;

pub(super) fn window(blocked_ms: f64, fds: f64) -> Vec<f64> {
    let mut w = vec![0.0; FEATURES.len()];
    w[feature::SCHED_BLOCKED_LONGEST_MS] = blocked_ms;
    w[feature::TREE_OPEN_FDS] = fds;
    // A volume: never watched, however large.
    w[feature::PAGE_DIRTIED_BYTES] = 1e9 * blocked_ms;
    w
}

#[test]
fn a_window_beyond_every_healthy_install_alarms_naming_its_feature() {
    // 200 healthy installs: blocked up to 0-1990 ms, 10-19 fds.
    let healthy: Vec<Vec<Vec<f64>>> = (0..200)
        .map(|i| vec![window(f64::from(i) * 10.0, f64::from(10 + i % 10)); 3])
        .collect();
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let e = Envelope::fit(&refs, 0.01, false).unwrap();
    e.check().unwrap();
    let at = |n: &str| e.features.iter().position(|f| f == n).unwrap();
    assert_eq!(e.limits[at("sched_blocked_longest_ms")], 1980.0);
    assert_eq!(e.limits[at("tree_open_fds")], 19.0);
    // At most 1% of the healthy installs it was fitted to alarm.
    let alarmed = refs
        .iter()
        .filter(|ws| (0..ws.len()).any(|t| e.beyond(ws, t).is_some()))
        .count();
    assert!(alarmed <= 2, "{alarmed} healthy installs alarm");
    // A thread asleep 200 s alarms, named; huge volumes alone do not.
    let b = e.beyond(&[window(200_000.0, 12.0)], 0).unwrap();
    assert_eq!(b.feature, "sched_blocked_longest_ms");
    assert!(b.ratio > 50.0, "{b:?}");
    let mut busy = window(50.0, 12.0);
    busy[feature::BLOCK_WRITE_BYTES] = 1e12;
    assert_eq!(e.beyond(&[busy], 0), None);
    // Descriptors piling up alarm too, and the drivers say both.
    let d = e.drivers(&[window(10_000.0, 5_000.0)], 0, 3);
    assert_eq!(d[0].0, "tree_open_fds");
    assert_eq!(d[1].0, "sched_blocked_longest_ms");
}

#[test]
fn the_combined_score_passes_the_nets_threshold_exactly_when_either_alarms() {
    let healthy: Vec<Vec<Vec<f64>>> = (0..100).map(|i| vec![window(f64::from(i), 10.0)]).collect();
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let e = Envelope::fit(&refs, 0.01, false).unwrap();
    let t = 0.12;
    let one = |p: f64, w: Vec<f64>| e.combine(&[p], &[w], t)[0];
    // Inside the envelope: the net's own P.
    assert_eq!(one(0.05, window(10.0, 10.0)), 0.05);
    assert_eq!(one(0.5, window(10.0, 10.0)), 0.5);
    // Beyond it: above the threshold, below 1, rising with the ratio.
    let a = one(0.01, window(3_000.0, 10.0));
    let b = one(0.01, window(100_000.0, 10.0));
    assert!(t < a && a < b && b <= 1.0, "{a} {b}");
    // Nothing healthy to fit: no envelope.
    assert!(Envelope::fit(&[], 0.01, true).is_none());
}

#[test]
fn deaths_that_pile_up_alarm_on_their_total_where_one_window_would_not() {
    // 200 healthy installs of 20 windows; one in four sees one death.
    let healthy: Vec<Vec<Vec<f64>>> = (0..200)
        .map(|i| {
            let mut ws = vec![window(f64::from(i), 10.0); 20];
            ws[5][feature::PROC_SIGNAL_DEATHS] = f64::from(u8::from(i % 4 == 0));
            ws
        })
        .collect();
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let e = Envelope::fit(&refs, 0.01, false).unwrap();
    e.check().unwrap();
    let deaths = TOTALLED
        .iter()
        .position(|&i| i == feature::PROC_SIGNAL_DEATHS)
        .unwrap();
    assert_eq!(e.totals[deaths], 1.0);
    // A crash loop: a death every window. The first is within the
    // envelope; the total passes it a few windows on, named.
    let mut run = vec![window(10.0, 10.0); 10];
    for w in &mut run {
        w[feature::PROC_SIGNAL_DEATHS] = 1.0;
    }
    assert_eq!(e.beyond(&run, 0), None);
    let first = (0..run.len())
        .find(|&t| e.beyond(&run, t).is_some())
        .unwrap();
    let b = e.beyond(&run, first).unwrap();
    assert_eq!(b.feature, "proc_signal_deaths (total)");
    assert_eq!(b.value, (first + 1) as f64);
    assert!(first <= 4, "alarmed only at window {first}: {e:?}");
    // The daemon's one pass says what each window alone would.
    let each: Vec<Option<Beyond>> = (0..run.len()).map(|t| e.beyond(&run, t)).collect();
    assert_eq!(e.beyond_all(&run), each);
    assert_eq!(e.beyond(&run, run.len()), None);
    // The ranked score lifts exactly the windows beyond.
    let lifted = e.combine(&[0.0; 10], &run, 0.5);
    assert!(lifted[..first].iter().all(|&p| p == 0.0), "{lifted:?}");
    assert!(lifted[first..].iter().all(|&p| p > 0.5), "{lifted:?}");
    // A model from before totals (none stored) watches windows alone.
    let mut old = e.clone();
    old.totals.clear();
    old.scales.clear();
    old.check().unwrap();
    assert_eq!(old.beyond(&run, 9), None);
    let json = serde_json::to_value(&old).unwrap();
    let mut json = json.as_object().unwrap().clone();
    json.remove("totals");
    let back: Envelope = serde_json::from_value(json.into()).unwrap();
    assert_eq!(back, old);
}

#[test]
fn an_envelope_of_another_build_is_refused() {
    let healthy = [vec![window(1.0, 1.0)]];
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let mut e = Envelope::fit(&refs, 0.01, false).unwrap();
    e.features.swap(0, 1);
    assert!(e.check().unwrap_err().contains("watches"));
    let mut e = Envelope::fit(&refs, 0.01, false).unwrap();
    e.limits[0] = 0.0;
    assert!(e.check().is_err());
    let mut e = Envelope::fit(&refs, 0.01, false).unwrap();
    e.totals.pop();
    assert!(e.check().unwrap_err().contains("watches"));
}

/// A window in which the tree ran `cpu_ms` on a CPU and entered
/// `syscalls` syscalls.
fn computing(cpu_ms: f64, syscalls: f64) -> Vec<f64> {
    let mut w = window(10.0, 10.0);
    w[feature::SCHED_ON_CPU_NS] = cpu_ms * 1e6;
    w[feature::SYSCALLS_TOTAL] = syscalls;
    w
}

#[test]
fn a_loop_that_never_enters_the_kernel_alarms_as_a_spin_and_a_key_does_not() {
    // 200 healthy installs computing hard, with syscalls; two of them
    // generate a key: 0.9 s on a CPU without one.
    let healthy: Vec<Vec<Vec<f64>>> = (0..200)
        .map(|i| {
            let mut ws = vec![computing(250.0, 40.0); 12];
            if i < 2 {
                ws[3..7].fill(computing(225.0, 0.0));
            }
            ws
        })
        .collect();
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let e = Envelope::fit(&refs, 0.01, false).unwrap();
    e.check().unwrap();
    // No healthy install reached the floor, so the floor is the limit.
    assert_eq!(e.spin, Some(SPIN_FLOOR_MS));
    assert!(e.names().last().is_some_and(|n| n == SPIN_NAME));
    for ws in &refs {
        assert!((0..ws.len()).all(|t| e.beyond(ws, t).is_none()));
    }
    // A runaway: a second of syscalls, then the CPU, window after window.
    let mut run = vec![computing(250.0, 500.0); 4];
    run.extend(vec![computing(249.0, 0.0); 20]);
    let first = (0..run.len())
        .find(|&t| e.beyond(&run, t).is_some())
        .unwrap();
    let b = e.beyond(&run, first).unwrap();
    assert_eq!(b.feature, SPIN_NAME);
    assert!(b.value > e.threshold * SPIN_FLOOR_MS, "{b:?}");
    // Past the one-second floor times the least factor: nine windows of
    // 249 ms on the CPU.
    assert_eq!(first, 4 + 8, "alarmed at window {first}");
    assert_eq!(e.drivers(&run, first, 1)[0].0, SPIN_NAME);
    let each: Vec<Option<Beyond>> = (0..run.len()).map(|t| e.beyond(&run, t)).collect();
    assert_eq!(e.beyond_all(&run), each);
    // One syscall ends a spin, and so does a window of little CPU (a
    // thread that only woke up): neither piles up.
    let mut broken = run.clone();
    for t in (4..broken.len()).step_by(3) {
        broken[t] = if t % 2 == 0 {
            computing(249.0, 1.0)
        } else {
            computing(SPIN_MIN_CPU_NS / 1e6 - 1.0, 0.0)
        };
    }
    assert!((0..broken.len()).all(|t| e.beyond(&broken, t).is_none()));
    // A model from before the spin (none stored) does not watch it.
    let mut old = e.clone();
    old.spin = None;
    old.scales.clear();
    old.check().unwrap();
    assert_eq!(old.beyond(&run, run.len() - 1), None);
    let json = serde_json::to_value(&old).unwrap();
    assert!(json.get("spin").is_none(), "{json}");
    let back: Envelope = serde_json::from_value(json).unwrap();
    assert_eq!(back, old);
    let mut bad = e.clone();
    bad.spin = Some(0.0);
    assert!(bad.check().is_err());
}

/// EAGAINs (ENOMEM's count holds them) are no alarm, piling up over a
/// long install or in a burst, as a JVM's first run returns them: a
/// non-blocking program's calls say how busy it is, not that memory ran
/// out.
#[test]
fn eagain_is_no_alarm_in_a_burst_or_piling_up() {
    let healthy: Vec<Vec<Vec<f64>>> = (0..200)
        .map(|i| {
            let mut ws = vec![window(10.0, 10.0); 4];
            ws[1][feature::SYSCALL_ERRORS_ENOMEM] = f64::from(i % 5);
            ws
        })
        .collect();
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let e = Envelope::fit(&refs, 0.01, false).unwrap();
    let mut long = vec![window(10.0, 10.0); 300];
    for w in &mut long {
        w[feature::SYSCALL_ERRORS_ENOMEM] = 3.0;
    }
    long[200][feature::SYSCALL_ERRORS_ENOMEM] = 500.0;
    assert!(e.beyond_all(&long).iter().all(Option::is_none));
    // What is watched still alarms in that stream.
    long[250][feature::TREE_OPEN_FDS] = 5_000.0;
    assert_eq!(e.beyond(&long, 250).unwrap().feature, "tree_open_fds");
}

/// The features stop 22 and stop 23 watched, in their order.
const WATCHED_BEFORE_STOP_24: [&str; 18] = [
    "syscall_errors_enospc",
    "syscall_errors_enomem",
    "syscall_errors_eio",
    "syscall_latency_p50_us",
    "syscall_latency_p99_us",
    "block_errors",
    "block_latency_p99_us",
    "sched_blocked_longest_ms",
    "sched_futex_wait_ms",
    "sched_pipe_wait_ms",
    "proc_signal_deaths",
    "proc_oom_kills",
    "net_tcp_retransmits",
    "net_connect_latency_p99_us",
    "tree_processes",
    "tree_open_fds",
    "tree_rss_growth_bytes",
    "tree_top_file_growth_bytes",
];

/// `e` as stop 22 and stop 23 saved it: the features they watched, with
/// `e`'s limits where this build watches them too, and the totals of
/// `legacy` (its layout in [`LEGACY_TOTALLED`]).
fn saved_before_stop_24(e: &Envelope, legacy: usize) -> Envelope {
    let mut old = e.clone();
    old.features = WATCHED_BEFORE_STOP_24.map(String::from).to_vec();
    old.limits = (WATCHED_BEFORE_STOP_24.iter())
        .map(|n| match e.features.iter().position(|f| f == n) {
            // Fitted then, a connect's limit was the one-unit floor.
            Some(_) if *n == "net_connect_latency_p99_us" => 1.0,
            Some(at) => e.limits[at],
            None => 2_900.0,
        })
        .collect();
    old.totals = LEGACY_TOTALLED[legacy]
        .iter()
        .map(|i| match TOTALLED.iter().position(|t| t == i) {
            Some(at) => e.totals[at],
            None => 10.0,
        })
        .collect();
    old
}

/// Models of stop 22 (seven totals, ENOMEM's second) and stop 23 (six)
/// load as this build's: the features and totals no longer watched are
/// dropped, the rest keep their limits, and a connect's limit is raised
/// to its floor.
#[test]
fn envelopes_of_earlier_builds_load_as_this_ones() {
    let healthy: Vec<Vec<Vec<f64>>> = (0..50).map(|i| vec![window(f64::from(i), 10.0)]).collect();
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let ours = Envelope::fit(&refs, 0.01, false).unwrap();
    for legacy in 0..LEGACY_TOTALLED.len() {
        let mut old = saved_before_stop_24(&ours, legacy);
        assert!(old.check().is_err(), "an old layout does not fit as it is");
        old.upgrade();
        old.check().unwrap();
        assert_eq!(old, ours, "layout {legacy}");
        // One that fits already is left alone.
        old.upgrade();
        assert_eq!(old, ours);
    }
    // One that is no layout at all is still refused.
    let mut odd = ours.clone();
    odd.totals.pop();
    odd.upgrade();
    assert!(odd.check().is_err());
}

/// A connect over loopback or a healthy network is no alarm, whatever
/// the corpus saw (no healthy install of it connects at all); a connect
/// that waited for its SYN to be sent again, twice, is.
#[test]
fn a_connect_alarms_only_when_its_syn_was_sent_again() {
    let healthy: Vec<Vec<Vec<f64>>> = (0..100).map(|i| vec![window(f64::from(i), 10.0)]).collect();
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let e = Envelope::fit(&refs, 0.01, false).unwrap();
    let connect = |us: f64, retransmits: f64| {
        let mut w = window(10.0, 10.0);
        w[feature::NET_CONNECT_ATTEMPTS] = 1.0;
        w[feature::NET_CONNECT_LATENCY_P99_US] = us;
        w[feature::NET_TCP_RETRANSMITS] = retransmits;
        w
    };
    // 0.1 ms on loopback, 80 ms across an ocean, with a lossy path's
    // retransmits in every window: nothing.
    let lossy: Vec<Vec<f64>> = (0..40).map(|_| connect(80_000.0, 5.0)).collect();
    assert!(e.beyond_all(&[connect(100.0, 0.0)])[0].is_none());
    assert!(e.beyond_all(&lossy).iter().all(Option::is_none));
    // 1 s + 2 s of SYN retries: beyond.
    let b = e
        .beyond(&[connect(3.1e6, 0.0)], 0)
        .expect("a connect of 3.1 s");
    assert_eq!(b.feature, "net_connect_latency_p99_us");
}

/// A corpus in which about 1% of healthy installs pause at all: the
/// stall's limit is the floor, in the whole fit and in each cross-fitting
/// block, so a block that happens to hold no pause does not make a
/// millisecond's quiet a hang, nor the factor calibrated on it huge.
#[test]
fn a_stall_limit_never_falls_below_its_floor() {
    // The two pauses (750 ms while the tree idled) both fall in the last
    // cross-fitting block; fitted without it, no install paused.
    let healthy: Vec<Vec<Vec<f64>>> = (0..200)
        .map(|i| vec![window(if i >= 198 { 750.0 } else { 0.0 }, 10.0); 3])
        .collect();
    let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
    let e = Envelope::fit(&refs, 0.01, true).unwrap();
    let at = e
        .features
        .iter()
        .position(|n| n == "sched_blocked_longest_ms")
        .unwrap();
    assert_eq!(e.limits[at], STALL_FLOOR_MS);
    assert_eq!(e.threshold, MIN_FACTOR, "{e:?}");
    // A pause of under twice the floor is none; ten seconds of quiet is.
    assert_eq!(e.beyond(&[window(1_900.0, 10.0)], 0), None);
    let b = e.beyond(&[window(10_000.0, 10.0)], 0).unwrap();
    assert_eq!(b.feature, "sched_blocked_longest_ms");
}
