//! The trend rule's projection, case by case.

use super::*;

const MB: f64 = 1024.0 * 1024.0;

/// One sample a second from `values` (in MB).
fn levels(values: &[f64]) -> Vec<Level> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Level {
            index: i as u64 + 1,
            at_ms: (i as f64 + 1.0) * 1000.0,
            value: v * MB,
        })
        .collect()
}

fn with(values: &[f64], deadline_ms: Option<f64>) -> Resources {
    Resources {
        disk_free: levels(values),
        deadline_ms,
        ..Resources::default()
    }
}

/// 64 MB filling at 2 MB/s for `secs` seconds, then flat.
fn fill(secs: usize, total: usize) -> Vec<f64> {
    (0..total)
        .map(|t| 64.0 - 2.0 * t.min(secs) as f64)
        .collect()
}

#[test]
fn a_steady_fill_is_caught_once_half_is_gone_with_the_rest_as_lead() {
    let e = disk(&with(&fill(32, 33), None)).expect("a fill to zero is projected");
    let Reason::Exhaustion {
        window,
        rate_per_s,
        full_in_ms,
        ..
    } = e.reason
    else {
        panic!("{:?}", e.reason)
    };
    // Free 64 - 2t hits zero at t = 32 s (window 33); projected once
    // the time to full is no more than the 2t s watched: at window 17.
    assert_eq!(window, 17, "caught at the half, not before");
    assert!((rate_per_s - 2.0 * MB).abs() < 1.0, "{rate_per_s}");
    assert!((full_in_ms - 16_000.0).abs() < 1.0, "{full_in_ms}");
}

#[test]
fn a_fill_that_stops_at_a_quarter_is_never_projected() {
    assert_eq!(disk(&with(&fill(8, 60), None)), None);
    // Even stopping just short of half: never "full sooner than seen",
    // and once it stopped its past speed projects nothing.
    assert_eq!(disk(&with(&fill(15, 60), None)), None);
    // Slowing down to a crawl near the half: the recent rate decides.
    let mut slow = fill(15, 16);
    slow.extend((1..30).map(|t| 34.0 - 0.05 * f64::from(t)));
    assert_eq!(disk(&with(&slow, None)), None);
}

#[test]
fn too_few_windows_project_nothing() {
    // Four windows that fall 15 MB each would be full in the fifth.
    assert_eq!(disk(&with(&[64.0, 49.0, 34.0, 19.0], None)), None);
    assert!(disk(&with(&[64.0, 49.0, 34.0, 19.0, 4.0], None)).is_some());
}

#[test]
fn a_level_that_wobbles_is_not_a_fall() {
    let noisy: Vec<f64> = (0..40)
        .map(|t| 10.0 + if t % 2 == 0 { 3.0 } else { -3.0 })
        .collect();
    assert_eq!(disk(&with(&noisy, None)), None);
    // A falling level with every other step a rise is not sustained.
    let saw: Vec<f64> = (0..40)
        .map(|t| 40.0 - f64::from(t) + if t % 2 == 0 { 0.0 } else { 1.5 })
        .collect();
    assert_eq!(disk(&with(&saw, None)), None);
}

#[test]
fn one_odd_sample_does_not_move_a_robust_rate() {
    let mut v = fill(32, 25);
    v[8] = 20.0; // a momentary dip (a burst freed a second later)
    let e = disk(&with(&v, None)).expect("still a fill");
    let Reason::Exhaustion {
        rate_per_s, window, ..
    } = e.reason
    else {
        panic!("{:?}", e.reason)
    };
    assert_eq!(window, 17);
    assert!((rate_per_s / MB - 2.0).abs() < 0.1, "{rate_per_s}");
}

#[test]
fn short_windows_are_read_a_second_apart_so_a_writers_pauses_are_no_wobble() {
    // 2 MB/s written in the first half of each second: in 250 ms
    // windows half the steps are flat, which the raw reading takes for
    // a wobble; paced, it is the steady fill of one-second windows.
    let quarter: Vec<Level> = (0..132)
        .map(|q| Level {
            index: q + 1,
            at_ms: (q as f64 + 1.0) * 250.0,
            value: (64.0 - (q / 4 * 2 + (q % 4).min(2)) as f64) * MB,
        })
        .collect();
    let raw = (MIN_SAMPLES..=quarter.len()).find_map(|n| project(&quarter[..n], None, "disk"));
    assert_eq!(raw, None, "unpaced, the pauses hide the fill");
    let r = Resources {
        disk_free: quarter,
        ..Resources::default()
    };
    let e = disk(&r).expect("paced, the fill is projected");
    let at_s = e.last as f64 / 4.0;
    assert!(
        (16.0..=18.0).contains(&at_s),
        "caught at {at_s} s, as at 1 s windows"
    );
}

#[test]
fn a_small_fall_of_a_large_disk_is_not_projected() {
    // 10 GB free losing 20 MB/s for 30 s: full in minutes, watched
    // for seconds.
    let big: Vec<f64> = (0..30).map(|t| 10_000.0 - 20.0 * f64::from(t)).collect();
    assert_eq!(disk(&with(&big, None)), None);
}

#[test]
fn a_fall_too_small_to_measure_is_noise() {
    let tiny: Vec<f64> = (0..20).map(|t| 1.0 - 0.04 * f64::from(t)).collect();
    assert_eq!(disk(&with(&tiny, None)), None, "0.8 MB in all");
}

#[test]
fn a_rise_starts_a_new_fall() {
    let mut v = fill(32, 20); // 64 -> 26 by window 20
    v.extend([60.0, 58.0, 56.0]); // space freed: the fall starts over
    assert_eq!(
        disk(&with(&v[..16], None)).map(|e| e.last),
        None,
        "not yet at half"
    );
    let e = disk(&with(&v, None)).expect("the first fall reached its half");
    assert_eq!(
        e.last, 17,
        "the first moment it held, kept as evidence grows"
    );
}

#[test]
fn a_deadline_before_the_projected_end_leaves_it_to_the_timeout() {
    // Full at 33 s; the step's timeout ends at 25 s.
    assert_eq!(disk(&with(&fill(32, 33), Some(25_000.0))), None);
    assert!(disk(&with(&fill(32, 33), Some(40_000.0))).is_some());
}
