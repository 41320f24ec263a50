//! Why an alarm: the net's own drivers, by occlusion.
//!
//! Why occlusion rather than gradients: the net is small enough to score
//! once per feature in one batch, and "this feature made typical lowers
//! the logit by this much" is what an SRE reading an alarm can act on.

use backstop_common::features::FEATURES;
use candle_core::{Device, Tensor};

use super::model::{K, Model, Result, channels};

impl Model {
    /// The features that drove window `t`'s score most, by occlusion: each
    /// feature in turn made typical (its level the training mean, no change
    /// since the first window, over all K windows), and the fall in the
    /// logit. A level alone (one window of ENOSPC errors) counts as much as
    /// a trend.
    pub fn explain(
        &self,
        windows: &[Vec<f64>],
        t: usize,
        top: usize,
    ) -> Result<Vec<(String, f64)>> {
        let (nf, nc) = (FEATURES.len(), channels());
        let x = self.inputs(windows, &[t])?;
        let base = self.forward(&x)?.to_vec1::<f32>()?[0];
        let v = x.flatten_all()?.to_vec1::<f32>()?;
        let mut batch = Vec::with_capacity(nf * K * nc);
        for i in 0..nf {
            let mut c = v.clone();
            // Both of the feature's channels: its level and its change.
            for ch in [i, nf + i] {
                for k in 0..K {
                    c[k * nc + ch] = 0.0;
                }
            }
            batch.extend(c);
        }
        let xb = Tensor::from_vec(batch, (nf, K, nc), &Device::Cpu)?;
        let l = self.forward(&xb)?.to_vec1::<f32>()?;
        let mut drops: Vec<(String, f64)> = l
            .iter()
            .enumerate()
            .map(|(i, li)| (FEATURES[i].name.to_string(), f64::from(base - li)))
            .collect();
        drops.sort_by(|a, b| b.1.total_cmp(&a.1));
        drops.truncate(top);
        Ok(drops)
    }
}
