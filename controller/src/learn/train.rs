//! Training: the model fitted to a corpus's training part, its threshold
//! calibrated on the validation part.
//!
//! Determinism: candle cannot seed its CPU initializer, so every parameter
//! is overwritten from our own seeded RNG, in name order, before training;
//! batches are shuffled with the same RNG. Training twice with one seed
//! gives the same bytes.

use backstop_common::features::{FEATURES, SCHEMA_VERSION, feature};
use backstop_common::progress::{Progress, Silent};
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::corpus::{self, Record};
use crate::predict::calibrate::calibrate_probability;
use crate::predict::envelope::Envelope;
use crate::predict::model::{K, Model, ModelError, ModelMeta, Normalizer, Result};
use crate::predict::normalizer::mask_of;

/// Features the net is given as zero, level and change alike: the corpus
/// cannot teach them. Its installs run without a network (as a shadow
/// does), so no healthy one opens a TCP connection; the only installs
/// that did were one fault family's health probes, and a net shown these
/// learned "a TCP connect means failure": given one 30 ms connect and a
/// 2 MB download, 8% of healthy installs alarmed (stop 24). A connect
/// that waits on lost SYNs is still watched, by the envelope
/// (`predict::envelope`). The bytes sent and received too: no install of
/// the corpus moves more than 7 KB (netlink and loopback), and stop 30's
/// net, trained on the corpus recorded again, learnt a download as a
/// failure: given the same connect and 2 MB, 11 more of 278 healthy
/// installs alarmed, each on `net_rx_bytes` first.
/// And one file's growth in a window: the corpus's healthy closures are
/// small (20 .debs, 40 MB), so none writes a big file; without the fills'
/// tmpfs mark (stop 25's twins) the net learnt "a big file" as a fill and
/// alarmed on 4 of 14 big healthy installs. A fill shows as ENOSPC (the
/// envelope) and, live, as the disk trend (`decide::trend`).
pub const MASKED: [usize; 7] = [
    feature::NET_TX_BYTES,
    feature::NET_RX_BYTES,
    feature::NET_TCP_RETRANSMITS,
    feature::NET_CONNECT_ATTEMPTS,
    feature::NET_CONNECT_FAILURES,
    feature::NET_CONNECT_LATENCY_P99_US,
    feature::TREE_TOP_FILE_GROWTH_BYTES,
];

/// [`MASKED`] by name, as a model records it.
fn masked_names() -> Vec<String> {
    MASKED.iter().map(|&i| FEATURES[i].name.into()).collect()
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub hidden: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    pub target_fpr: f64,
    /// Windows before the onset that count as failing: the model learns
    /// "fails within this many windows", not "this install will fail some
    /// day" (early windows of a failing install look healthy).
    pub horizon: usize,
    /// How much a window of a healthy install weighs in the loss, against
    /// one of a failing install. A false alarm on a healthy install rolls
    /// back good software; the windows of a failing install before its
    /// horizon are labelled healthy but are often already building up, so
    /// fitting them as hard as the healthy ones teaches the model to wait.
    pub healthy_weight: f64,
    /// Fit the healthy envelope beside the net (`predict::envelope`).
    /// Off: the net alone, as models before it (for comparison).
    pub envelope: bool,
    /// Calibrate the envelope's threshold in-sample, on the installs that
    /// set its limits, rather than cross-fitted (`Envelope::fit`).
    pub envelope_in_sample: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        // hidden, epochs, batch, lr and horizon were chosen on the
        // validation split of the shipped corpus (mean of split seeds
        // 1-4); healthy_weight by cross-validation (seeds 1-3, README).
        TrainConfig {
            hidden: 64,
            epochs: 100,
            batch: 64,
            lr: 1e-3,
            seed: 1,
            target_fpr: 0.01,
            horizon: 4,
            healthy_weight: 10.0,
            envelope: true,
            envelope_in_sample: false,
        }
    }
}

/// Every parameter from our seeded RNG, in name order: U(±1/sqrt(fan_in)).
fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let fan_in = if dims.len() >= 2 {
            dims[1..].iter().product::<usize>()
        } else {
            let prefix = name.rsplit_once('.').map_or("", |(p, _)| p);
            data.get(&format!("{prefix}.weight"))
                .map_or(dims[0], |w| w.dims()[1..].iter().product())
        };
        let bound = 1.0 / (fan_in as f64).sqrt();
        let v: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        var.set(&Tensor::from_vec(v, dims.as_slice(), var.device())?)?;
    }
    Ok(())
}

/// Stable binary cross-entropy on logits, max(x,0) - x*y + log(1+exp(-|x|)),
/// averaged with weights `w`.
fn bce_with_logits(logits: &Tensor, y: &Tensor, w: &Tensor) -> Result<Tensor> {
    let l = ((logits.relu()? - (logits * y)?)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok(((l * w)?.sum_all()? / w.sum_all()?)?)
}

/// Every window is a sample: failing when its record fails within the
/// horizon (or already has). Inputs [n, K, F], labels [n], weights [n].
fn samples(model: &Model, train: &[Record], cfg: &TrainConfig) -> Result<(Tensor, Tensor, Tensor)> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut weights = Vec::new();
    for d in train {
        let ts: Vec<usize> = (0..d.windows.len()).collect();
        xs.push(model.inputs(&d.windows, &ts)?);
        let from = match (d.failing(), d.onset_window) {
            (true, Some(o)) => o.saturating_sub(cfg.horizon),
            (true, None) => 0,
            (false, _) => usize::MAX,
        };
        ys.extend(ts.iter().map(|&t| if t >= from { 1f32 } else { 0f32 }));
        let w = if d.failing() {
            1.0
        } else {
            cfg.healthy_weight as f32
        };
        weights.extend(ts.iter().map(|_| w));
    }
    let x = Tensor::cat(&xs, 0)?;
    let n = ys.len();
    let y = Tensor::from_vec(ys, n, &Device::Cpu)?;
    let w = Tensor::from_vec(weights, n, &Device::Cpu)?;
    Ok((x, y, w))
}

/// The seeded, shuffled AdamW epochs over the samples, in place.
fn fit(
    model: &Model,
    (x, y, w): (&Tensor, &Tensor, &Tensor),
    cfg: &TrainConfig,
    progress: &dyn Progress,
) -> Result<()> {
    progress.total(cfg.epochs as u64);
    let n = y.dim(0)?;
    let mut opt = AdamW::new(
        model.varmap.all_vars(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed);
    for epoch in 0..cfg.epochs {
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut total = 0.0;
        for chunk in order.chunks(cfg.batch) {
            let ids = Tensor::from_slice(chunk, chunk.len(), &Device::Cpu)?;
            let loss = bce_with_logits(
                &model.forward(&x.index_select(&ids, 0)?)?,
                &y.index_select(&ids, 0)?,
                &w.index_select(&ids, 0)?,
            )?;
            opt.backward_step(&loss)?;
            total += f64::from(loss.to_scalar::<f32>()?);
        }
        tracing::debug!(
            epoch,
            loss = total / n.div_ceil(cfg.batch) as f64,
            "training"
        );
        progress.advance(1);
    }
    Ok(())
}

/// The healthy records' windows.
fn healthy(ds: &[Record]) -> Vec<&[Vec<f64>]> {
    (ds.iter().filter(|d| !d.failing()))
        .map(|d| d.windows.as_slice())
        .collect()
}

/// The window length all of `train` shares: a model of per-window counts
/// learns one window length, so a corpus that mixes them is refused.
fn one_window_length(train: &[Record]) -> Result<u32> {
    let first = train.first().map_or(0, |d| d.window_ms);
    match train.iter().find(|d| d.window_ms != first) {
        None => Ok(first),
        Some(d) => Err(ModelError::Data(format!(
            "the training split mixes window lengths: {} has {} ms windows, {} has {first} ms; record the corpus with one `window_ms`",
            d.id, d.window_ms, train[0].id
        ))),
    }
}

/// Train on `train`, calibrate the threshold on `validation` (to the
/// target share of healthy deployments alarmed at any window).
pub fn train(
    train: &[Record],
    validation: &[Record],
    cfg: &TrainConfig,
    corpus_digest: String,
) -> Result<Model> {
    train_with(train, validation, cfg, corpus_digest, &Silent)
}

/// [`train`], reporting each epoch to `progress`.
pub fn train_with(
    train: &[Record],
    validation: &[Record],
    cfg: &TrainConfig,
    corpus_digest: String,
    progress: &dyn Progress,
) -> Result<Model> {
    if !train.iter().any(super::corpus::Record::failing) || !train.iter().any(|d| !d.failing()) {
        return Err(ModelError::Data(
            "the training split needs both healthy and failing deployments".into(),
        ));
    }
    let window_ms = one_window_length(train)?;
    let masked = masked_names();
    let mask = mask_of(&masked).map_err(ModelError::Data)?;
    let normalizer = Normalizer::fit(train.iter().flat_map(|d| d.windows.iter()));
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let (conv, head) = Model::build(cfg.hidden, vb)?;
    seeded_init(&varmap, cfg.seed)?;
    let mut model = Model {
        conv,
        head,
        meta: ModelMeta {
            schema: SCHEMA_VERSION.into(),
            features: FEATURES.iter().map(|f| f.name.to_string()).collect(),
            k: K,
            hidden: cfg.hidden,
            normalizer,
            threshold: 0.5,
            target_fpr: cfg.target_fpr,
            seed: cfg.seed,
            horizon: cfg.horizon,
            healthy_weight: cfg.healthy_weight,
            corpus_digest,
            split_rule: corpus::SPLIT_RULE.into(),
            trained_on: train.len(),
            window_ms: Some(window_ms),
            masked,
            host_range: crate::predict::range::HostRange::fit(
                train.iter().flat_map(|d| d.host.iter()),
            ),
            // Half the false-alarm budget (the net has the other half).
            envelope: cfg
                .envelope
                .then(|| {
                    let h = healthy(train);
                    Envelope::fit(&h, cfg.target_fpr / 2.0, !cfg.envelope_in_sample)
                })
                .flatten(),
            evaluation: None,
        },
        varmap,
        mask,
    };
    let (x, y, w) = samples(&model, train, cfg)?;
    fit(&model, (&x, &y, &w), cfg, progress)?;
    let healthy_max: Vec<f64> = validation
        .iter()
        .filter(|d| !d.failing())
        .map(|d| {
            model
                .predict(&d.windows)
                .map(|p| p.into_iter().fold(0.0, f64::max))
        })
        .collect::<Result<_>>()?;
    // With an envelope beside it the net gets half the false-alarm
    // budget, the envelope the other half: the model as a whole, which
    // alarms when either does, stays within the target.
    let net_target = if model.meta.envelope.is_some() {
        cfg.target_fpr / 2.0
    } else {
        cfg.target_fpr
    };
    model.meta.threshold = calibrate_probability(&healthy_max, net_target);
    Ok(model)
}

#[cfg(test)]
#[path = "train_tests.rs"]
mod tests;
