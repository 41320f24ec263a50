//! What the engine answers: a verdict and the evidence behind it, each
//! reason a sentence an SRE reads in an alert or `backstop report`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::evidence::StepStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Put the host back: the evidence says the install failed or harms.
    Rollback,
    /// The install is done, monitored and healthy: keep it.
    Commit,
    /// Monitoring is over, something alarmed and nothing confirmed it: the
    /// install stays and a human looks at the reasons.
    Inconclusive,
    /// No decision yet: the deployment is still running.
    Continue,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Rollback => "rollback",
            Verdict::Commit => "commit",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Continue => "continue",
        })
    }
}

/// A verdict and its reasons, most decisive first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
}

/// One piece of evidence the verdict rests on, with its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A live install step failed (exit, signal, timeout, OOM kill).
    LiveStep {
        name: String,
        status: StepStatus,
    },
    /// A run of live windows over the threshold or beyond the healthy
    /// envelope, from `window`.
    LiveModel {
        window: u64,
        windows: u32,
        p: f64,
        threshold: f64,
        /// The run's furthest window beyond the healthy envelope, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        beyond: Option<crate::predict::envelope::Beyond>,
        /// What drove the run's highest window, most first (empty when the
        /// window was not explained).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        drivers: Vec<String>,
    },
    /// A shadow window over the threshold.
    ShadowModel {
        window: u64,
        p: f64,
        threshold: f64,
    },
    ShadowStep {
        name: String,
        status: StepStatus,
    },
    ShadowTest {
        name: String,
        status: StepStatus,
    },
    /// The shadow's memory cgroup killed processes.
    ShadowOom {
        kills: u64,
    },
    /// Live and shadow behaved apart at `window`.
    Divergence {
        window: u64,
        share: f64,
        limit: f64,
        feature: String,
        live_minus_shadow: f64,
    },
    /// A health probe failed `failures` times in a row, the last at
    /// `window`.
    Probe {
        name: String,
        window: u64,
        failures: u32,
        detail: String,
    },
    /// A measure rose during monitoring against before the deployment.
    Performance {
        metric: String,
        unit: String,
        before_median: f64,
        during_median: f64,
        effect: f64,
        p_value: f64,
    },
    /// The fleet's history of this package.
    History {
        version_rolled_back: u32,
        version_committed: u32,
        package_recent_rollbacks: u32,
    },
    /// A resource falling steadily runs out before the deadline in force
    /// ([`super::trend`]): `free` bytes left at `window`, falling at
    /// `rate_per_s` for `falling_ms`, gone in `full_in_ms`.
    Exhaustion {
        resource: String,
        window: u64,
        free: f64,
        rate_per_s: f64,
        full_in_ms: f64,
        falling_ms: f64,
    },
    /// The model's votes at `windows` windows from `window` were not
    /// counted: the host's `feature` lay `z` training standard deviations
    /// from anything the model was trained on.
    ModelOutOfRange {
        window: u64,
        windows: u32,
        feature: String,
        z: f64,
    },
    /// Windows whose host conditions lie outside the model's training
    /// range: a note, the model's vote still counts.
    HostOutsideTraining {
        window: u64,
        windows: u32,
        condition: String,
        value: f64,
        min: f64,
        max: f64,
    },
    /// The live windows are not as long as the model's training windows:
    /// a note, the vote still counts.
    WindowLength {
        live_ms: u32,
        model_ms: u32,
    },
    /// No model scored the deployment; the decision rests on the rest.
    NoModel {
        why: String,
    },
    /// Something that must have finished by the end had not.
    Unfinished {
        what: String,
    },
    /// An input the engine cannot read (a P(failure) that is not a
    /// number): never committed on.
    BadEvidence {
        what: String,
    },
    /// A dry run's room check would have refused the deployment.
    NoRoom {
        reason: String,
    },
    /// Why a commit is a commit: what was checked and found healthy.
    Clean {
        windows: u64,
        probes: u32,
        shadow: bool,
    },
}

/// A run of live windows: over the threshold, beyond the healthy
/// envelope, or both; with what drove it when it was explained.
fn live_model(
    f: &mut fmt::Formatter<'_>,
    (window, windows): (u64, u32),
    (p, threshold): (f64, f64),
    beyond: Option<&crate::predict::envelope::Beyond>,
    drivers: &[String],
) -> fmt::Result {
    let run = format!("for {windows} window(s) from window {window}");
    match beyond {
        Some(b) if p > threshold => write!(
            f,
            "live P(failure) {p:.2} over threshold {threshold:.2} and {} {:.0} beyond the healthy envelope ({:.1}x its limit {:.0}) {run}",
            b.feature, b.value, b.ratio, b.limit
        ),
        Some(b) => write!(
            f,
            "live {} {:.0} beyond the healthy envelope ({:.1}x its limit {:.0}; P(failure) {p:.2}, under threshold {threshold:.2}) {run}",
            b.feature, b.value, b.ratio, b.limit
        ),
        None => {
            write!(
                f,
                "live P(failure) {p:.2} over threshold {threshold:.2} {run}"
            )?;
            if !drivers.is_empty() {
                write!(f, " (driven by {})", drivers.join(", "))?;
            }
            Ok(())
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::LiveStep { name, status: s } => {
                write!(f, "live step `{name}` ")?;
                s.describe(f)
            }
            Reason::ShadowStep { name, status: s } => {
                write!(f, "shadow step `{name}` ")?;
                s.describe(f)
            }
            Reason::ShadowTest { name, status: s } => {
                write!(f, "shadow test `{name}` ")?;
                s.describe(f)
            }
            Reason::ShadowOom { kills } => {
                write!(f, "the OOM killer killed {kills} process(es) in the shadow")
            }
            Reason::LiveModel {
                window,
                windows,
                p,
                threshold,
                beyond,
                drivers,
            } => live_model(
                f,
                (*window, *windows),
                (*p, *threshold),
                beyond.as_ref(),
                drivers,
            ),
            Reason::ShadowModel {
                window,
                p,
                threshold,
            } => write!(
                f,
                "shadow P(failure) {p:.2} over threshold {threshold:.2} at window {window}"
            ),
            Reason::Unfinished { what } => write!(f, "not finished when monitoring ended: {what}"),
            Reason::Exhaustion { .. } | Reason::NoRoom { .. } => super::trend::fmt_reason(self, f),
            Reason::BadEvidence { what } => write!(f, "unreadable evidence: {what}"),
            Reason::ModelOutOfRange {
                window,
                windows,
                feature,
                z,
            } => write!(
                f,
                "model not counted at {windows} window(s) from window {window}: the host's \
                 {feature} lies {z:+.0} training standard deviations outside what it was trained on"
            ),
            Reason::HostOutsideTraining {
                window,
                windows,
                condition,
                value,
                min,
                max,
            } => write!(
                f,
                "the host lies outside the model's training range at {windows} window(s) from \
                 window {window}: {condition} {value:.3}, trained on {min:.3}..{max:.3} \
                 (its vote still counts: no model input is a host level)"
            ),
            Reason::NoModel { why } => {
                write!(
                    f,
                    "no model scored this deployment ({why}): decided without P(failure)"
                )
            }
            Reason::Divergence { .. }
            | Reason::Probe { .. }
            | Reason::Performance { .. }
            | Reason::History { .. }
            | Reason::Clean { .. }
            | Reason::WindowLength { .. } => self.fmt_signal(f),
        }
    }
}

impl Reason {
    /// The signals' sentences (split from `fmt` to keep each short).
    fn fmt_signal(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Divergence {
                window,
                share,
                limit,
                feature,
                live_minus_shadow,
            } => write!(
                f,
                "live and shadow diverge at window {window}: {:.0}% of behaviour features apart (limit {:.0}%), most `{feature}` ({} higher)",
                share * 100.0,
                limit * 100.0,
                if *live_minus_shadow >= 0.0 {
                    "live"
                } else {
                    "shadow"
                }
            ),
            Reason::Probe {
                name,
                window,
                failures,
                detail,
            } => write!(
                f,
                "health probe `{name}` failed {failures} time(s) in a row to window {window} (last: {detail})"
            ),
            Reason::Performance {
                metric,
                unit,
                before_median,
                during_median,
                effect,
                p_value,
            } => write!(
                f,
                "{metric} regressed: median {before_median:.3} -> {during_median:.3} {unit} ({:+.0}%, Mann-Whitney p {p_value:.4})",
                effect * 100.0
            ),
            Reason::History {
                version_rolled_back,
                version_committed,
                package_recent_rollbacks,
            } => write!(
                f,
                "history: this version was rolled back on {version_rolled_back} other host(s) and committed on {version_committed}; the package was rolled back {package_recent_rollbacks} time(s) in the fleet recently"
            ),
            Reason::Clean {
                windows,
                probes,
                shadow,
            } => write!(
                f,
                "{windows} live window(s) under threshold, {probes} health probe(s) healthy at the end{}",
                if *shadow {
                    ", shadow passed"
                } else {
                    ", no shadow"
                }
            ),
            Reason::WindowLength { live_ms, model_ms } => {
                super::range::fmt_window_length(f, *live_ms, *model_ms)
            }
            // `fmt` sends only the arms above here.
            other => write!(f, "{other:?}"),
        }
    }
    /// Where an SRE should look next when this reason left a deployment
    /// inconclusive.
    pub fn look_at(&self) -> Option<String> {
        Some(match self {
            Reason::LiveModel { window, .. } => format!(
                "the features that drove the live score at window {window} (`backstop report`), and whether the service behaves"
            ),
            Reason::ShadowModel { window, .. } => format!(
                "the shadow's windows near window {window}: the shadow has no network and its own limits, so it may be the odd one"
            ),
            Reason::Divergence {
                window, feature, ..
            } => format!(
                "`{feature}` in the live and the shadow stream side by side near window {window}"
            ),
            Reason::Probe { name, .. } => {
                format!("probe `{name}`'s last results and the service's logs")
            }
            Reason::Unfinished { what } => format!("why {what} did not finish"),
            Reason::BadEvidence { what } => format!("the model and the stored windows: {what}"),
            _ => return None,
        })
    }
}
