//! The two pieces of the normal distribution the judge and the calibration
//! need, so that neither pulls in a statistics crate.

/// Standard normal CDF (Abramowitz and Stegun 7.1.26 for erf; error below
/// 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

/// The z with `normal_cdf(z) == q`, by bisection (within 1e-9 of the
/// CDF's own inverse; q outside (0, 1) gives -8 or 8).
pub fn normal_quantile(q: f64) -> f64 {
    let (mut lo, mut hi) = (-8.0, 8.0);
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_inverts_the_cdf_at_known_points() {
        for (q, z) in [
            (0.5, 0.0),
            (0.975, 1.959_964),
            (0.99, 2.326_348),
            (0.01, -2.326_348),
        ] {
            assert!(
                (normal_quantile(q) - z).abs() < 1e-5,
                "q {q}: {}",
                normal_quantile(q)
            );
        }
    }
}
