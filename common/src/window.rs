//! A window: the feature vector of one stream over one interval.
//!
//! Values are `f64` rather than the `f32` a model consumes: byte counters
//! pass 2^24 within a second of real I/O and must stay exact on the wire and
//! in the store. The model narrows at its own boundary.

use serde::{Deserialize, Serialize};

use crate::features::{FEATURES, SCHEMA_VERSION};
use crate::hostlevels::HostLevels;

/// A window's length when nobody says otherwise. Lengths are `u32`
/// milliseconds everywhere (CLI flags, control requests, the wire, training
/// records): the wire carries a `u32`, and 49 days is long enough.
pub const DEFAULT_WINDOW_MS: u32 = 1000;
/// The shortest window the agent takes (a shorter `--window-ms` is refused).
pub const MIN_WINDOW_MS: u32 = 10;

/// Which install a window describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Live,
    Shadow,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Live => "live",
            Stream::Shadow => "shadow",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub schema: String,
    pub stream: Stream,
    pub seq: u64,
    /// CLOCK_MONOTONIC (the probes' clock, bpf_ktime_get_ns).
    pub start_ns: u64,
    pub end_ns: u64,
    /// Events the probes could not record in this window (never hidden).
    pub lost_events: u64,
    /// In [`FEATURES`] order.
    pub features: Vec<f64>,
    /// The host's absolute levels, beside the features and never a model
    /// input (schema v3; zeros in older windows).
    pub host: HostLevels,
}

impl Window {
    pub fn new(stream: Stream, seq: u64, start_ns: u64, end_ns: u64) -> Self {
        Window {
            schema: SCHEMA_VERSION.to_string(),
            stream,
            seq,
            start_ns,
            end_ns,
            lost_events: 0,
            features: vec![0.0; FEATURES.len()],
            host: HostLevels::default(),
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        crate::features::index_of(name).and_then(|i| self.features.get(i).copied())
    }

    /// `{"seq":..,"stream":..,"start_ns":..,"end_ns":..,"lost_events":..,"features":{name:value},"host":{..}}`:
    /// the line format of `backstop-agent watch --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let features: serde_json::Map<String, serde_json::Value> = FEATURES
            .iter()
            .zip(&self.features)
            .map(|(f, v)| (f.name.to_string(), json_number(*v)))
            .collect();
        serde_json::json!({
            "seq": self.seq,
            "stream": self.stream.as_str(),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "lost_events": self.lost_events,
            "features": features,
            "host": self.host,
        })
    }
}

/// Integers print as integers (exact counters stay greppable), others as floats.
fn json_number(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_every_feature_by_name() {
        let mut w = Window::new(Stream::Live, 3, 10, 20);
        w.features[crate::features::feature::BLOCK_WRITE_BYTES] = 8_388_608.0;
        w.features[crate::features::feature::HOST_DISK_FREE_FALL] = 0.25;
        w.host.disk_free_bytes = 4096.0;
        let j = w.to_json();
        assert_eq!(j["seq"], 3);
        assert_eq!(j["stream"], "live");
        assert_eq!(j["features"]["block_write_bytes"], 8_388_608);
        assert_eq!(j["features"]["host_disk_free_fall_bytes"], 0.25);
        assert_eq!(j["host"]["disk_free_bytes"], 4096.0);
        assert_eq!(j["features"].as_object().unwrap().len(), FEATURES.len());
    }
}
