//! The alarm threshold: calibrated once on healthy validation installs,
//! stored in the model, and compared against at inference.

use super::stats::normal_quantile;

/// The model's threshold: the P(failure) above which at most `target_fpr`
/// of healthy deployments alarm, from the highest scores of healthy
/// validation deployments.
///
/// With at least five allowed alarms among them (500 healthy deployments
/// at 1%), their empirical quantile ([`calibrate`]). With fewer, the
/// quantile of a normal fitted to their log-odds, but never below the
/// empirical quantile. Why the fit: 45 healthy validation installs cannot
/// show a 1% rate, and the empirical rule then falls back to the highest
/// of them, which is set by whichever unusual package landed in
/// validation (one package's installs look alike, so 45 installs of 15
/// packages are nearer 15 samples than 45). Why never below (stop 22): the
/// healthy log-odds have a heavier tail than a normal, so the fit alone
/// often lay below validation installs it should not alarm on, and on
/// kinds of failure the model never saw the folds alarmed on 1.35% of
/// healthy installs against a 1% target; with the floor 0.99%, and no
/// early alarm on a silent fault (README).
pub fn calibrate_probability(healthy_max: &[f64], target_fpr: f64) -> f64 {
    let n = healthy_max.len();
    if n < 2 || target_fpr <= 0.0 || target_fpr * n as f64 >= 5.0 {
        return calibrate(healthy_max, target_fpr);
    }
    let logits: Vec<f64> = healthy_max
        .iter()
        .map(|p| {
            let p = p.clamp(1e-6, 1.0 - 1e-6);
            (p / (1.0 - p)).ln()
        })
        .collect();
    let mean = logits.iter().sum::<f64>() / n as f64;
    let var = logits.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let z = mean + normal_quantile(1.0 - target_fpr) * var.sqrt();
    let fit = 1.0 / (1.0 + (-z).exp());
    fit.max(calibrate(healthy_max, target_fpr))
}

/// The threshold (alarm when a score is above it) at which a new healthy
/// deployment, alike to those whose highest scores are given, alarms
/// with a probability of at most `target_fpr`: the k-th highest score,
/// k = floor(target x (n + 1)). With too few healthy deployments for the
/// target (k = 0), the highest: nothing healthy alarms.
///
/// Why n + 1: a new deployment is above the k-th highest of n others
/// when it ranks among the k highest of all n + 1, which, none of them
/// special, it does with probability k / (n + 1). Until stop 31 this took
/// the (floor(target x n) + 1)-th highest, which alarms on the target
/// share of the given deployments but on more of new ones: at 0.5% of
/// 220 healthy validation installs the second highest, which a new one
/// passes 0.9% of the time. The package folds' net alarmed on 0.99% of
/// unseen healthy installs against its 0.5% budget.
pub fn calibrate(healthy_max: &[f64], target_fpr: f64) -> f64 {
    let mut s = healthy_max.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let k = (target_fpr * (s.len() + 1) as f64).floor() as usize;
    s.get(k.saturating_sub(1)).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_fits_the_tail_when_too_few_healthy_deployments_show_the_target() {
        // Log-odds at the normal's quantiles: the fit finds the normal.
        let logit_quantiles: Vec<f64> = (1..=45)
            .map(|i| -2.0 + 0.5 * normal_quantile(f64::from(i) / 46.0))
            .collect();
        let p = |l: f64| 1.0 / (1.0 + (-l).exp());
        let healthy: Vec<f64> = logit_quantiles.iter().map(|&l| p(l)).collect();
        let thr = calibrate_probability(&healthy, 0.01);
        let want = p(-2.0 + 0.5 * 2.326);
        // (Evenly spaced quantiles understate the spread a little.)
        assert!(
            (thr - want).abs() < 0.03,
            "threshold {thr}, want about {want}"
        );
        // Above the highest of the 45 (about the 98th percentile).
        assert!(healthy.iter().all(|&s| s < thr));
        // A tail heavier than the fit's: one unusual deployment far above
        // it. The fit alone would alarm on it, more than the target allows
        // of these 45 (none); the threshold is never below it.
        let mut odd = healthy.clone();
        odd[44] = p(0.0);
        let thr_odd = calibrate_probability(&odd, 0.01);
        assert!(thr_odd >= odd[44], "{thr_odd} alarms on {}", odd[44]);
        assert!(odd.iter().all(|&s| s <= thr_odd));
        // With enough healthy deployments, the empirical quantile.
        let many: Vec<f64> = (0..1000).map(|i| f64::from(i) / 1000.0).collect();
        assert_eq!(calibrate_probability(&many, 0.01), calibrate(&many, 0.01));
    }

    #[test]
    fn calibration_alarms_at_most_the_target_share_of_new_deployments() {
        // 199 healthy at 1%: the second highest, which one of the 199 is
        // above, and a new one, ranked anywhere among all 200, with a
        // probability of 2 in 200.
        let healthy: Vec<f64> = (0..199).map(|i| f64::from(i) / 200.0).collect();
        let thr = calibrate(&healthy, 0.01);
        let alarmed = healthy.iter().filter(|&&s| s > thr).count();
        assert_eq!(alarmed, 1, "threshold {thr}");
        // Each of 200 equally likely ranks for a new one (between the
        // given, or past either end): 2 of them alarm.
        let ranks = (-1..199).map(|i| (f64::from(i) + 0.5) / 200.0);
        assert_eq!(ranks.filter(|&s| s > thr).count(), 2);
        // One fewer, and a new one would alarm 2 times in 199: only the
        // highest holds the target.
        assert_eq!(calibrate(&healthy[1..], 0.01), healthy[198]);
        // Fewer than 100 healthy: none may alarm at 1%.
        let thr = calibrate(&healthy[..50], 0.01);
        assert!(healthy[..50].iter().all(|&s| s <= thr));
    }
}
