//! The detectors' own tests.

use super::*;
use crate::learn::eval;

#[test]
fn a_packages_healthy_history_is_its_floor_and_only_its_own() {
    use crate::learn::baselines::tests::{Echo, dep};
    // Package f's healthy installs peak at 0.8 (over the 0.5
    // threshold); package g's stay low.
    let f_ok1 = dep("f1", "f", &[0.2, 0.8], false);
    let f_ok2 = dep("f2", "f", &[0.7, 0.3], false);
    let f_bad = dep("f3", "f", &[0.6, 0.95], true);
    let f_meek = dep("f4", "f", &[0.6, 0.75], true);
    let g_ok = dep("g1", "g", &[0.1, 0.2], false);
    let g_bad = dep("g2", "g", &[0.6, 0.6], true);
    let ds = [f_ok1, f_ok2, f_bad, f_meek, g_ok, g_bad];
    let h = WithHistory::new(&Echo, &ds, &ds);
    let first = |d: &Record| h.scores(d).iter().position(|&v| v > h.threshold());
    // f's healthy installs are judged against each other's peak.
    assert_eq!(first(&ds[0]), Some(1), "0.8 over f2's 0.7");
    assert_eq!(first(&ds[1]), None, "0.7 under f1's 0.8");
    // f's faults must beat 0.8; g is judged as before.
    assert_eq!(first(&ds[2]), Some(1));
    assert_eq!(first(&ds[3]), None);
    assert_eq!(first(&ds[5]), Some(0));
    let none = WithHistory::new(&Echo, &ds, &[]);
    assert_eq!(
        none.scores(&ds[1]),
        Echo.scores(&ds[1]),
        "no history: as before"
    );
    let m = eval::evaluate(&h, h.threshold(), &ds);
    assert_eq!(m.false_positive_rate, 1.0 / 3.0);
}

#[test]
fn model_or_checks_alarms_at_the_earlier_of_the_two() {
    use crate::learn::baselines::tests::{Echo, dep};
    let quiet_failure = dep("a", "p", &[0.1, 0.1, 0.1, 0.1], true);
    let predicted = dep("b", "p", &[0.1, 0.9, 0.9, 0.9], true);
    let healthy = dep("c", "p", &[0.1, 0.2], false);
    let false_alarm = dep("d", "p", &[0.7, 0.2], false);
    let ds = [quiet_failure, predicted, healthy, false_alarm];
    let echo = Scored::of(&Echo, &ds);
    let both = ModelOrChecks(&echo);
    let first = |d: &Record| both.scores(d).iter().position(|&v| v > both.threshold());
    // The checks see the quiet failure at its onset, the model the
    // other one a window in.
    assert_eq!(first(&ds[0]), Some(3));
    assert_eq!(first(&ds[1]), Some(1));
    // Healthy installs: the checks add nothing, the model's false
    // alarm stays one.
    assert_eq!(first(&ds[2]), None);
    assert_eq!(first(&ds[3]), Some(0));
    let m = eval::evaluate(&both, both.threshold(), &ds);
    assert_eq!((m.recall, m.false_positive_rate), (1.0, 0.5));
    assert_eq!(m.caught_before_onset, 1);
}

#[test]
fn model_or_trend_alarms_where_the_disk_would_run_out_and_only_there() {
    use crate::learn::baselines::tests::{Echo, dep};
    use backstop_common::hostlevels::HostLevels;
    const MIB: f64 = 1024.0 * 1024.0;
    let with_free = |mut d: Record, free: &[f64]| {
        d.host = (free.iter())
            .map(|&f| HostLevels {
                disk_free_bytes: f * MIB,
                disk_total_bytes: 64.0 * MIB,
                ..HostLevels::default()
            })
            .collect();
        d
    };
    let fill: Vec<f64> = (0..10).map(|i| 10.0 - f64::from(i)).collect();
    // A quiet model, and the scope losing 1 MiB a second from 10 MiB:
    // at window 5 (1000 ms windows) 5 MiB are left and it has been
    // falling for 5 s, so it runs out within the time it fell.
    let flood = with_free(dep("a", "p", &[0.1; 10], true), &fill);
    // The same fall that stops at a quarter of the room, and a flat one.
    let stops = [10.0, 9.5, 9.0, 8.5, 8.0, 7.5, 7.5, 7.5, 7.5, 7.5];
    let writer = with_free(dep("b", "p", &[0.1; 10], false), &stops);
    let flat = with_free(dep("c", "p", &[0.1; 10], false), &[10.0; 10]);
    // No host levels (a corpus from before schema v3): the model alone.
    let bare = dep("d", "p", &[0.1, 0.9, 0.1], true);
    let ds = [flood, writer, flat, bare];
    let both = ModelOrTrend(&Echo);
    let first = |d: &Record| both.scores(d).iter().position(|&v| v > both.threshold());
    assert_eq!(trend_window(&ds[0]), Some(5));
    assert_eq!(first(&ds[0]), Some(5));
    assert_eq!(first(&ds[1]), None, "a fill that stops is never projected");
    assert_eq!(first(&ds[2]), None);
    assert_eq!(trend_window(&ds[3]), None);
    assert_eq!(first(&ds[3]), Some(1), "the model's own alarm");
    let m = eval::evaluate(&both, both.threshold(), &ds);
    assert_eq!((m.recall, m.false_positive_rate), (1.0, 0.0));
    assert_eq!(m.caught_before_onset, 2, "window 5 of 9, window 1 of 2");
}

/// README, "Stop 32's figures first": on the shipped corpora the disk
/// trend alone alarms on 23 of the 30 log floods, 20 of them before
/// onset, and on no healthy install (1212 in the corpus, 14 big ones)
/// nor any real failure (which fill nothing).
#[test]
fn the_disk_trend_on_the_shipped_corpora_finds_floods_and_nothing_healthy() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/recorded");
    let read = |name: &str| {
        let path = root.join(name);
        crate::learn::corpus::read(&[path.as_path()]).expect("a shipped corpus")
    };
    let corpus = read("deployments.jsonl.gz");
    let mut healthy = 0;
    for name in ["big-healthy.jsonl.gz", "real-failures.jsonl.gz"] {
        for d in read(name) {
            assert_eq!(trend_window(&d), None, "{}", d.id);
        }
    }
    let (mut floods, mut caught, mut early) = (0, 0, 0);
    for d in &corpus {
        let at = trend_window(d);
        if !d.failing() {
            healthy += 1;
            assert_eq!(at, None, "{}: a healthy install projected full", d.id);
        } else if d.family == "log-flood" {
            floods += 1;
            caught += usize::from(at.is_some());
            early += usize::from(at.zip(d.onset_window).is_some_and(|(a, o)| a < o));
        }
    }
    assert_eq!((healthy, floods), (1212, 30));
    assert_eq!((caught, early), (23, 20), "the README's figures");
}

/// A refusal by the room check is an alarm before window 0: early even
/// where the fault shows in window 0, with a lead of the onset window
/// and one more; on a healthy install it is a false alarm, and a record
/// the check let through or never saw keeps the inner detector's alarms.
#[test]
fn a_room_refusal_alarms_before_the_first_window() {
    use crate::learn::baselines::tests::{Echo, dep};
    use crate::learn::corpus::Room;
    let with = |mut d: Record, room: Option<Room>| {
        d.room = room;
        d
    };
    let no = || {
        Some(Room::Refused {
            reason: "no room".into(),
        })
    };
    let mut full = with(dep("a", "p", &[0.1, 0.1], true), no());
    full.onset_window = Some(0);
    let ds = [
        full,
        with(dep("b", "p", &[0.1, 0.9], true), Some(Room::Fits)),
        with(dep("c", "p", &[0.1, 0.1], false), no()),
        with(dep("d", "p", &[0.1, 0.1], false), None),
    ];
    let room = WithRoom(&Echo);
    assert!(room.name().contains("room check"), "{}", room.name());
    assert_eq!(
        (ds.iter().map(|d| room.refuses(d)).collect::<Vec<_>>()),
        [true, false, true, false]
    );
    let firsts: Vec<Option<i64>> = (eval::outcomes(&room, room.threshold(), &ds).into_iter())
        .map(|o| o.2)
        .collect();
    assert_eq!(firsts, [Some(-1), Some(1), Some(-1), None]);
    let m = eval::evaluate(&room, room.threshold(), &ds);
    assert_eq!((m.recall, m.false_positive_rate), (1.0, 0.5));
    // a: onset 0, refused before it (lead 1 window of 1000 ms); b: the
    // model at window 1, its onset (dep's last window), not early.
    assert_eq!(m.caught_before_onset, 1);
    assert_eq!(m.lead_time_median_ms, Some(1000.0));
    // The inner detector alone: a is never alarmed.
    let plain = eval::evaluate(&Echo, Echo.threshold(), &ds);
    assert_eq!((plain.recall, plain.caught_before_onset), (0.5, 0));
}

/// README, "Stop 35's figures first": every record of the shipped
/// corpora carries its room check (`backstop corpus room`), which refuses
/// 28 of the 30 disk-full installs and no healthy one, nor any other
/// fault (a log flood's log is no .deb's file).
#[test]
fn the_room_check_on_the_shipped_corpora_refuses_disk_fulls_and_nothing_healthy() {
    use crate::learn::corpus::Room;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/recorded");
    let mut refused = std::collections::BTreeMap::<&str, usize>::new();
    let mut records = 0;
    for name in [
        "deployments.jsonl.gz",
        "big-healthy.jsonl.gz",
        "real-failures.jsonl.gz",
    ] {
        let path = root.join(name);
        for d in crate::learn::corpus::read(&[path.as_path()]).expect("a shipped corpus") {
            records += 1;
            match &d.room {
                None => panic!("{name} {}: no room check", d.id),
                Some(Room::Fits) => {}
                Some(Room::Refused { reason }) => {
                    assert!(d.failing(), "{}: a healthy install refused: {reason}", d.id);
                    let family = if d.family == "disk-full" {
                        "disk-full"
                    } else {
                        "other"
                    };
                    *refused.entry(family).or_default() += 1;
                }
            }
        }
    }
    assert_eq!(records, 1752 + 14 + 4);
    assert_eq!(refused, [("disk-full", 28)].into_iter().collect());
}
