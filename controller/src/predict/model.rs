//! The model: a small temporal convolution over the last K windows of a
//! stream, giving P(failure) per window.
//!
//! Why this shape: a failure that builds up (memory, disk, latency) is a
//! trend, not a level, and levels differ wildly between packages; so the
//! input is log-scaled and normalized, and the head sees both the largest
//! activation over time and the last-minus-first change. It is small
//! enough for ~10 µs per window on one core and a file of tens of KB.
//!
//! Training lives in `crate::learn::train`; this file is what inference
//! needs: the net, its normalization, load/save and the threshold.

use std::path::Path;

use backstop_common::features::{FEATURES, SCHEMA_VERSION};
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

/// Windows of context per prediction.
pub const K: usize = 8;

/// Input channels per window: each feature's normalized level, and its
/// log change since the deployment's first window. Levels differ between
/// packages by orders of magnitude; the change is what a building failure
/// shows on any package.
pub(super) fn channels() -> usize {
    2 * FEATURES.len()
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
    #[error(
        "the model in {path} was trained on feature schema {model:?} ({model_features} features); this build has {ours:?} ({our_features}): retrain it"
    )]
    Schema {
        path: String,
        model: String,
        model_features: usize,
        ours: String,
        our_features: usize,
    },
    #[error("{0}")]
    Data(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

pub use super::normalizer::{Normalizer, Z_CLIP, sd_floor};

/// Saved beside the weights: everything needed to use them, and what they
/// were made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    pub schema: String,
    pub features: Vec<String>,
    pub k: usize,
    pub hidden: usize,
    pub normalizer: Normalizer,
    /// P(failure) above this alarms. Calibrated on validation data to
    /// `target_fpr` of healthy deployments.
    pub threshold: f64,
    pub target_fpr: f64,
    pub seed: u64,
    /// See [`TrainConfig::horizon`].
    pub horizon: usize,
    /// See [`TrainConfig::healthy_weight`]; models from before it weighed
    /// every window alike.
    #[serde(default = "one")]
    pub healthy_weight: f64,
    pub corpus_digest: String,
    /// [`crate::learn::corpus::SPLIT_RULE`] when it was trained; models from
    /// before the rule was recorded have none.
    #[serde(default)]
    pub split_rule: String,
    pub trained_on: usize,
    /// The window length of every training deployment, in ms (models from
    /// before it was recorded: none). The features are per-window counts
    /// and peaks, so a deployment in other windows is scored outside what
    /// the calibration measured; a decision notes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u32>,
    /// The host conditions the training corpus ran on (none recorded:
    /// empty); a decision notes a window outside them.
    #[serde(default)]
    pub host_range: super::range::HostRange,
    /// Features the net is given as zero (`learn::train::MASKED` says
    /// why); models from before stop 24 mask none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
    /// The healthy envelope (`predict::envelope`); models from before it
    /// have none and alarm on the net alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<super::envelope::Envelope>,
    /// The evaluation on the test split, as `backstop eval --json` prints it.
    pub evaluation: Option<serde_json::Value>,
}

fn one() -> f64 {
    1.0
}

pub struct Model {
    // pub(crate): learn::train builds a model and trains these in place.
    pub(crate) conv: candle_nn::Conv1d,
    pub(crate) head: candle_nn::Linear,
    pub meta: ModelMeta,
    pub(crate) varmap: VarMap,
    /// `meta.masked` by feature index.
    pub(crate) mask: Vec<bool>,
}

/// The K windows ending at `t`, the first window repeated before the start.
pub fn context(windows: &[Vec<f64>], t: usize) -> impl Iterator<Item = &Vec<f64>> {
    (0..K).map(move |j| {
        let i = (t + j + 1).saturating_sub(K);
        &windows[i.min(windows.len() - 1)]
    })
}

impl Model {
    #[expect(
        clippy::needless_pass_by_value,
        reason = "candle hands VarBuilder (a shared handle) by value, as candle_nn's own builders do"
    )]
    pub(crate) fn build(
        hidden: usize,
        vb: VarBuilder,
    ) -> Result<(candle_nn::Conv1d, candle_nn::Linear)> {
        let conv = candle_nn::conv1d(
            channels(),
            hidden,
            3,
            candle_nn::Conv1dConfig::default(),
            vb.pp("conv"),
        )?;
        let head = candle_nn::linear(2 * hidden, 1, vb.pp("head"))?;
        Ok((conv, head))
    }

    /// `xs`: [B, K, F] normalized -> logits [B].
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self
            .conv
            .forward(&xs.transpose(1, 2)?.contiguous()?)?
            .relu()?;
        let steps = h.dim(2)?;
        let trend = (h.narrow(2, steps - 1, 1)? - h.narrow(2, 0, 1)?)?.squeeze(2)?;
        let pooled = Tensor::cat(&[h.max(D::Minus1)?, trend], 1)?;
        Ok(self.head.forward(&pooled)?.squeeze(1)?)
    }

    /// Inputs for windows `ts` of a stream's `windows` (one row of feature
    /// values each): [len, K, F].
    pub fn inputs(&self, windows: &[Vec<f64>], ts: &[usize]) -> Result<Tensor> {
        let nc = channels();
        let first = &windows[0];
        let mut v = Vec::with_capacity(ts.len() * K * nc);
        for &t in ts {
            for w in context(windows, t) {
                let shown = |i: usize, z: f32| if self.mask[i] { 0.0 } else { z };
                v.extend(
                    w.iter()
                        .enumerate()
                        .map(|(i, x)| shown(i, self.meta.normalizer.apply(i, *x))),
                );
                v.extend(
                    w.iter().zip(first).enumerate().map(|(i, (x, f))| {
                        shown(i, (x.max(0.0).ln_1p() - f.max(0.0).ln_1p()) as f32)
                    }),
                );
            }
        }
        Ok(Tensor::from_vec(v, (ts.len(), K, nc), &Device::Cpu)?)
    }

    /// P(failure) for every window of a stream (one row of feature values
    /// per window, in order).
    pub fn predict(&self, windows: &[Vec<f64>]) -> Result<Vec<f64>> {
        self.predict_from(windows, 0)
    }

    /// [`Self::predict`] for the windows from `from` on alone (each still
    /// seen with the windows before it): a stream scored before up to
    /// `from` is scored on without the net seeing the prefix again.
    pub fn predict_from(&self, windows: &[Vec<f64>], from: usize) -> Result<Vec<f64>> {
        if from >= windows.len() {
            return Ok(Vec::new());
        }
        let ts: Vec<usize> = (from..windows.len()).collect();
        let x = self.inputs(windows, &ts)?;
        let p = candle_nn::ops::sigmoid(&self.forward(&x)?)?.to_vec1::<f32>()?;
        Ok(p.into_iter().map(f64::from).collect())
    }

    /// The alarm score of every window: the net's P(failure), lifted above
    /// the threshold where a window is beyond the healthy envelope
    /// ([`super::envelope::Envelope::combine`]). What evaluation ranks.
    pub fn score(&self, windows: &[Vec<f64>]) -> Result<Vec<f64>> {
        let p = self.predict(windows)?;
        let Some(e) = &self.meta.envelope else {
            return Ok(p);
        };
        Ok(e.combine(&p, windows, self.meta.threshold))
    }

    /// The watched feature (or running total) furthest beyond the healthy
    /// envelope at window `t` of `windows`, when one is.
    pub fn beyond(&self, windows: &[Vec<f64>], t: usize) -> Option<super::envelope::Beyond> {
        self.meta.envelope.as_ref()?.beyond(windows, t)
    }

    /// [`Self::beyond`] at every window, in one pass.
    pub fn beyond_all(&self, windows: &[Vec<f64>]) -> Vec<Option<super::envelope::Beyond>> {
        match &self.meta.envelope {
            Some(e) => e.beyond_all(windows),
            None => vec![None; windows.len()],
        }
    }

    /// An alarm's drivers at window `t`: the features beyond the healthy
    /// envelope first (named `envelope:FEATURE`, with their ratio to its
    /// limit), then the net's ([`Self::explain`]), `top` in all.
    pub fn explain_alarm(&self, windows: &[Vec<f64>], t: usize, top: usize) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = (self.meta.envelope.as_ref())
            .map(|e| e.drivers(windows, t, top))
            .unwrap_or_default()
            .into_iter()
            .map(|(f, r)| (format!("envelope:{f}"), r))
            .collect();
        if v.len() < top {
            v.extend(self.explain(windows, t, top).unwrap_or_default());
        }
        v.truncate(top);
        v
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let io = |source| ModelError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        self.varmap.save(dir.join("model.safetensors"))?;
        let meta = serde_json::to_string_pretty(&self.meta).expect("plain data serializes");
        std::fs::write(dir.join("model.json"), meta).map_err(io)
    }

    /// Load a model directory; refuses one trained on another feature schema.
    pub fn load(dir: &Path) -> Result<Model> {
        let mp = dir.join("model.json");
        let path = mp.display().to_string();
        let text = std::fs::read_to_string(&mp).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let wp = dir.join("model.safetensors");
        let weights = std::fs::read(&wp).map_err(|source| ModelError::Io {
            path: wp.display().to_string(),
            source,
        })?;
        Model::from_parts(&path, &text, &weights)
    }

    /// The model in use: DATA/models/current when the fleet has trained one,
    /// else the default built into this binary (trained on the shipped
    /// catalog), else an error that says how to get one.
    pub fn current(data: &Path) -> Result<(Model, String)> {
        let dir = data.join("models/current");
        if dir.join("model.json").exists() {
            return Ok((Model::load(&dir)?, dir.display().to_string()));
        }
        #[cfg(default_model)]
        {
            let m = Model::from_parts(
                "the built-in default model (models/default)",
                include_str!("../../../models/default/model.json"),
                include_bytes!("../../../models/default/model.safetensors"),
            )
            .map_err(|e| match e {
                ModelError::Schema { .. } => ModelError::Bad {
                    path: dir.display().to_string(),
                    reason: format!(
                        "no usable model: {e}. Get one on schema {SCHEMA_VERSION}: record a corpus \
                         (`cargo xtask corpus`), then `cargo xtask train-default` and rebuild, or \
                         `backstop train --out DATA/models/current`"
                    ),
                },
                e => e,
            })?;
            Ok((m, "built-in default (models/default)".into()))
        }
        #[cfg(not(default_model))]
        Err(ModelError::Bad {
            path: dir.display().to_string(),
            reason: "no model: train one (backstop train --out DATA/models/current); this build has no default".into(),
        })
    }

    /// A model from its metadata (JSON) and weights (safetensors).
    pub fn from_parts(path: &str, meta_json: &str, weights: &[u8]) -> Result<Model> {
        let path = path.to_string();
        let mut meta: ModelMeta = serde_json::from_str(meta_json).map_err(|e| ModelError::Bad {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let ours: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
        if meta.schema != SCHEMA_VERSION || meta.features != ours {
            return Err(ModelError::Schema {
                path,
                model: meta.schema,
                model_features: meta.features.len(),
                ours: SCHEMA_VERSION.into(),
                our_features: ours.len(),
            });
        }
        if meta.k != K || meta.normalizer.mean.len() != ours.len() {
            return Err(ModelError::Bad {
                path,
                reason: format!(
                    "k {} / {} normalizer values do not fit this build",
                    meta.k,
                    meta.normalizer.mean.len()
                ),
            });
        }
        let mask = super::normalizer::mask_of(&meta.masked).map_err(|reason| ModelError::Bad {
            path: path.clone(),
            reason,
        })?;
        if let Some(e) = &mut meta.envelope {
            e.upgrade();
            e.check().map_err(|reason| ModelError::Bad {
                path: path.clone(),
                reason,
            })?;
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let (conv, head) = Model::build(meta.hidden, vb)?;
        let saved = candle_core::safetensors::load_buffer(weights, &Device::Cpu)?;
        {
            let vars = varmap
                .data()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (name, var) in vars.iter() {
                let t = saved.get(name).ok_or_else(|| ModelError::Bad {
                    path: path.clone(),
                    reason: format!("the weights lack {name}"),
                })?;
                var.set(t)?;
            }
        }
        Ok(Model {
            conv,
            head,
            meta,
            varmap,
            mask,
        })
    }
}
