//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! the few dozen lines it takes are less than a registry crate, and both
//! binaries (which share no other metrics code) write it the same way.
//! Names are the caller's (`backstop_` prefixed, units in the name); this
//! module gets the format right: one HELP and TYPE per family before its
//! samples, escaping in HELP text and label values, `+Inf` buckets.
//! Reference: <https://prometheus.io/docs/instrumenting/exposition_formats/>.

use std::fmt::Write;

/// A metric family's type, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One histogram's state: cumulative counts per upper bound (the last,
/// `+Inf`, is `count`), the sum and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Observations at or below each bound (not cumulative; summed when written).
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// `bounds` ascending; `+Inf` is implied.
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            buckets: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// A text body being written, family by family.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Self {
        Text::default()
    }

    /// Start a family: its HELP and TYPE lines. Its samples follow.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample of the current family (`name` may add a suffix such as
    /// `_bucket`).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        write_labels(&mut self.out, labels);
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let mut cumulative = 0;
        for (bound, n) in h.bounds.iter().zip(&h.buckets) {
            cumulative += n;
            let le = number(*bound);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
}

/// Integers without a fraction (counters read better), the format's own
/// spellings for infinities and NaN.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut t = Text::new();
        t.family("backstop_x_total", "a \\ b\nc", Kind::Counter)
            .sample("backstop_x_total", &[("host", "a\"b\\c\nd")], 3.0);
        assert_eq!(
            t.finish(),
            "# HELP backstop_x_total a \\\\ b\\nc\n# TYPE backstop_x_total counter\n\
             backstop_x_total{host=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_at_inf() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.5, 0.7, 5.0] {
            h.observe(v);
        }
        let mut t = Text::new();
        t.family("backstop_d_seconds", "d", Kind::Histogram)
            .histogram("backstop_d_seconds", &[], &h);
        let body = t.finish();
        assert!(
            body.contains("backstop_d_seconds_bucket{le=\"0.1\"} 1\n"),
            "{body}"
        );
        assert!(
            body.contains("backstop_d_seconds_bucket{le=\"1\"} 3\n"),
            "{body}"
        );
        assert!(
            body.contains("backstop_d_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{body}"
        );
        assert!(body.contains("backstop_d_seconds_sum 6.25\n"), "{body}");
        assert!(body.contains("backstop_d_seconds_count 4\n"), "{body}");
    }
}
