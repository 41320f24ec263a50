//! The normaliser: log1p, then a z-score with the training split's
//! statistics, each deviation floored by unit and each score clipped.
//!
//! Why log1p: levels differ between packages by orders of magnitude. Why
//! the floor and the clip: see [`sd_floor`] and [`Z_CLIP`] (issue 16).

use backstop_common::features::FEATURES;
use serde::{Deserialize, Serialize};

/// The smallest standard deviation (of log1p values) a feature of `unit`
/// gets. Why a floor: a feature that barely moved in training (the v2
/// model's free disk had 0.001) turns any other value into a z-score in
/// the hundreds (issue 16). With 0.5, a count, size or duration must
/// change by a factor of 1.65 to move one deviation; a ratio (0..1, where
/// log1p is nearly linear) by 0.05.
pub fn sd_floor(unit: &str) -> f64 {
    match unit {
        "ratio" => 0.05,
        _ => 0.5,
    }
}

/// z-scores beyond this are clipped: a value far outside training says
/// "far", not "infinitely far", and one feature cannot outvote the rest.
pub const Z_CLIP: f64 = 8.0;

/// log1p, then z-score with statistics of the training split (each
/// deviation at least [`sd_floor`] of its unit), clipped to ±[`Z_CLIP`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Normalizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalizer {
    pub fn fit<'a>(windows: impl Iterator<Item = &'a Vec<f64>>) -> Normalizer {
        let n = FEATURES.len();
        let (mut sum, mut sq, mut count) = (vec![0.0; n], vec![0.0; n], 0usize);
        for w in windows {
            for (i, v) in w.iter().enumerate().take(n) {
                let x = v.max(0.0).ln_1p();
                sum[i] += x;
                sq[i] += x * x;
            }
            count += 1;
        }
        let c = count.max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / c).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .zip(FEATURES)
            .map(|((q, m), f)| (q / c - m * m).max(0.0).sqrt().max(sd_floor(f.unit)))
            .collect();
        Normalizer { mean, std }
    }

    pub fn apply(&self, i: usize, v: f64) -> f32 {
        ((v.max(0.0).ln_1p() - self.mean[i]) / self.std[i]).clamp(-Z_CLIP, Z_CLIP) as f32
    }
}

/// Which of this build's features a model names as masked (given to the
/// net as zero, level and change alike: `learn::train::MASKED` says why),
/// in feature order; an error names one this build does not have.
pub fn mask_of(masked: &[String]) -> Result<Vec<bool>, String> {
    if let Some(m) = masked
        .iter()
        .find(|m| !FEATURES.iter().any(|f| f.name == *m))
    {
        return Err(format!(
            "its masked features name {m:?}, which this build does not have"
        ));
    }
    Ok(FEATURES
        .iter()
        .map(|f| masked.iter().any(|m| m == f.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizer_log_scales_and_centres() {
        let ws = [
            vec![0.0; FEATURES.len()],
            vec![(std::f64::consts::E - 1.0) * 1.0; FEATURES.len()],
        ];
        let n = Normalizer::fit(ws.iter());
        // log1p gives 0 and 1: mean 0.5, std 0.5.
        assert!((n.mean[0] - 0.5).abs() < 1e-9 && (n.std[0] - 0.5).abs() < 1e-9);
        assert!((n.apply(0, 0.0) + 1.0).abs() < 1e-6);
        assert!((n.apply(0, std::f64::consts::E - 1.0) - 1.0).abs() < 1e-6);
        // Negative values (never valid counts) are clamped, not NaN.
        assert!(n.apply(0, -5.0).is_finite());
    }

    #[test]
    fn a_feature_that_never_moved_gets_the_floor_and_far_values_are_clipped() {
        let ws = [vec![49e9; FEATURES.len()], vec![49e9; FEATURES.len()]];
        let n = Normalizer::fit(ws.iter());
        assert!(n.std.iter().all(|s| *s >= 0.05), "{:?}", n.std);
        assert_eq!(n.std[0], 0.5, "a count's floor");
        // 75 GB where training saw 49 GB: v2's +385 becomes under one SD.
        let z = n.apply(0, 75e9);
        assert!(z > 0.8 && z < 0.9, "{z}");
        assert_eq!(n.apply(0, 1e30), Z_CLIP as f32);
        assert_eq!(n.apply(0, 0.0), -Z_CLIP as f32);
    }

    #[test]
    fn a_mask_names_features_of_this_build_or_is_refused() {
        let m = mask_of(&["net_connect_attempts".to_string()]).unwrap();
        assert_eq!(m.len(), FEATURES.len());
        assert_eq!(m.iter().filter(|x| **x).count(), 1);
        assert!(m[backstop_common::features::feature::NET_CONNECT_ATTEMPTS]);
        assert!(mask_of(&[]).unwrap().iter().all(|x| !x));
        let e = mask_of(&["net_pigeons".to_string()]).unwrap_err();
        assert!(e.contains("net_pigeons"), "{e}");
    }
}
