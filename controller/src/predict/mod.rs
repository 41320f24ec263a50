//! Inference: what the daemon runs per window. The model (normalization,
//! the net, load/save, the calibrated threshold) scores a stream's feature
//! windows and explains a score.
//!
//! Nothing here knows of corpora, catalogs, baselines or training: those
//! live in [`crate::learn`], which adapts its training records to the
//! windows this module takes.

pub mod calibrate;
pub mod envelope;
mod explain;
pub mod model;
pub mod normalizer;
pub mod range;
pub mod stats;
