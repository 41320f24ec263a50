//! The performance check, judged as Kayenta judges a canary metric: the
//! samples during monitoring against the samples just before the
//! deployment, a two-sided Mann-Whitney U test, and an effect-size guard.
//!
//! Why both: with enough samples any shift is significant (a 2% slower
//! median over 200 probes gives a tiny p), and rolling a host back for 2%
//! would make every deployment a coin toss; the effect guard says how much
//! change matters. Why Mann-Whitney: latencies are skewed and have tails,
//! and a rank test assumes no distribution. Why the median for the effect:
//! one slow outlier moves a mean, not a median. Kayenta's defaults are
//! 98% confidence and a 25% tolerance; our alpha and effect come from
//! [`super::Params`] (the manifest's `max_latency_increase`).

use super::evidence::PerfSeries;
use crate::predict::stats::{mann_whitney_p, median};

/// One measure's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub before_median: f64,
    pub during_median: f64,
    /// Relative rise of the median: (during - before) / max(|before|,
    /// noise floor).
    pub effect: f64,
    pub p_value: f64,
    /// Significant at `alpha` and risen by at least the guard.
    pub regressed: bool,
}

/// Judges one series, or `None` when either side has fewer than
/// `min_samples` finite samples (too few to tell: not a regression).
pub fn judge(s: &PerfSeries, alpha: f64, min_effect: f64, min_samples: usize) -> Option<Judgement> {
    let finite = |v: &[f64]| -> Vec<f64> { v.iter().copied().filter(|x| x.is_finite()).collect() };
    let (before, during) = (finite(&s.before), finite(&s.during));
    if before.len() < min_samples.max(1) || during.len() < min_samples.max(1) {
        return None;
    }
    let (b, d) = (median(&before), median(&during));
    let scale = b.abs().max(s.noise_floor.abs()).max(f64::MIN_POSITIVE);
    let effect = (d - b) / scale;
    let p_value = mann_whitney_p(&during, &before);
    Some(Judgement {
        before_median: b,
        during_median: d,
        effect,
        p_value,
        regressed: p_value < alpha && effect >= min_effect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(before: Vec<f64>, during: Vec<f64>) -> PerfSeries {
        PerfSeries {
            metric: "probe `http` latency".into(),
            unit: "ms".into(),
            noise_floor: 1.0,
            before,
            during,
        }
    }

    /// Deterministic jitter in [-1, 1): no two samples equal, no rng.
    fn jitter(i: usize) -> f64 {
        ((i * 7919) % 200) as f64 / 100.0 - 1.0
    }

    fn around(centre: f64, n: usize, spread: f64) -> Vec<f64> {
        (0..n).map(|i| centre + spread * jitter(i)).collect()
    }

    #[test]
    fn a_large_significant_rise_regresses() {
        let j = judge(
            &series(around(100.0, 20, 5.0), around(150.0, 20, 5.0)),
            0.05,
            0.2,
            5,
        )
        .expect("enough samples");
        assert!(j.regressed, "{j:?}");
        assert!((j.effect - 0.5).abs() < 0.1, "{j:?}");
        assert!(j.p_value < 1e-4, "{j:?}");
    }

    #[test]
    fn a_tiny_significant_shift_does_not_regress() {
        // +2% over 200 samples a side: significant, and not worth a rollback.
        let j = judge(
            &series(around(100.0, 200, 1.0), around(102.0, 200, 1.0)),
            0.05,
            0.2,
            5,
        )
        .expect("enough samples");
        assert!(j.p_value < 0.05, "the shift is significant: {j:?}");
        assert!(!j.regressed, "{j:?}");
    }

    #[test]
    fn a_large_rise_of_a_few_noisy_samples_is_not_significant() {
        // Medians 100 -> 130, but the two samples overlap widely.
        let before = vec![40.0, 100.0, 160.0, 70.0, 130.0];
        let during = vec![60.0, 130.0, 190.0, 90.0, 150.0];
        let j = judge(&series(before, during), 0.05, 0.2, 5).expect("five a side");
        assert!(j.effect >= 0.2 && j.p_value >= 0.05, "{j:?}");
        assert!(!j.regressed);
    }

    #[test]
    fn a_fall_is_not_a_regression() {
        let j = judge(
            &series(around(150.0, 20, 5.0), around(100.0, 20, 5.0)),
            0.05,
            0.2,
            5,
        )
        .expect("enough samples");
        assert!(j.p_value < 0.05 && !j.regressed, "{j:?}");
    }

    #[test]
    fn too_few_samples_cannot_judge_and_nan_is_not_a_sample() {
        let s = series(around(100.0, 4, 1.0), around(500.0, 20, 1.0));
        assert!(judge(&s, 0.05, 0.2, 5).is_none());
        let mut s = series(around(100.0, 5, 1.0), around(500.0, 5, 1.0));
        s.during[0] = f64::NAN;
        assert!(judge(&s, 0.05, 0.2, 5).is_none());
    }

    #[test]
    fn an_idle_service_is_measured_against_the_noise_floor() {
        // CPU 0 before: a rise to 0.5 (under the 1.0 floor) is +50%, not
        // infinite.
        let j = judge(&series(vec![0.0; 10], vec![0.5; 10]), 0.05, 0.2, 5).expect("ten a side");
        assert!((j.effect - 0.5).abs() < 1e-12, "{j:?}");
    }
}
