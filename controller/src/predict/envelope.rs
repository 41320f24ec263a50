//! The healthy envelope: the part of a model that needs no failure to have
//! been seen before.
//!
//! Why: the net learns the failures of the families it trained on, and
//! leaving one family out of training showed it mostly blind to the one
//! left out (README, "Benchmarks"). A failure it never met still shows as
//! something no healthy install does: a syscall taking a second, a thread
//! asleep for minutes, a process killed by a signal, descriptors or
//! processes piling up. So the envelope learns only from healthy
//! installs: for each feature whose high values mean trouble on any
//! package, how high the healthy ones went, and a window beyond that,
//! by more than a calibrated factor, alarms (a rule whose healthy tail
//! reaches further has its limit scaled first: `fit.rs` says why).
//!
//! The features it watches are chosen by what they measure, not by which
//! fault families they catch: latencies, errors that mean a resource ran
//! out, a thread stuck asleep, deaths, and what a tree holds (processes,
//! descriptors, memory growth). No watched feature is
//! a host level. Left out, each for what it measures (README, "train",
//! has the figures):
//! - volumes (syscalls, bytes, CPU time): a big package does more;
//! - run-queue delay and block I/O latency (bio queued to completed):
//!   the host's contention and the device's queue, which a big unpack's
//!   own writes build (17 s on healthy closures of 132-326 packages);
//!   what a slow device does to the install shows in its own syscall
//!   latency and time blocked;
//! - time in futex and pipe waits, summed over the tree's threads: a
//!   volume too (a JVM's first run: 4.6 s of futex waits in one 250 ms
//!   window from 18 threads; a shell's pipe read for every `$(...)`); a
//!   deadlock or a prompt shows as the longest time asleep in one call;
//! - one file's growth in a window: a volume too (linux-image-amd64
//!   writes its 68 MB initramfs in one window); a fill shows as ENOSPC,
//!   and on a live host as the disk trend (`decide::trend`);
//! - ENOMEM errors, in a window or in total: the count holds EAGAIN,
//!   which non-blocking calls return as a matter of course (the JVM: 16
//!   in a window against a limit of 6); memory that runs out shows as
//!   OOM kills and RSS growth;
//! - failed connects, network errors and TCP retransmits: they say
//!   whether the package talks to the network and whether the host's
//!   network lets it (a shadow has none), not whether the install is in
//!   trouble. Watched, failed connects set the factor to 10 (mail and
//!   proxy daemons failing to connect in a shadow).
//!
//! Stop 24 dropped block latency, the waits, ENOMEM's window count and
//! retransmits; on the corpus's non-lockbox records the envelope then
//! caught the same failing installs, each at the same window. A
//! connect's latency is watched, but above what a healthy network can
//! take ([`CONNECT_LATENCY_FLOOR_US`]): no healthy install of the corpus
//! connects at all, and fitted to it alone, one loopback connect alarmed.
//!
//! Counts of things that should not happen (errors, deaths, kills) are
//! watched twice: per window, and as a running total since the deployment
//! began. A service that dies every second piles them up; the window
//! maxima alone missed every crash loop (README, "Benchmarks"). Where no
//! healthy training install had one at all, the first one alarms
//! ([`FIRST_EVENT`]). Why: a limit floored at one event, times the factor,
//! let through a crash loop's first two deaths, a memory blow-up's OOM
//! kill and a fill's first ENOSPC, and stop 30's corpus has none of these
//! in any of its 1212 healthy installs (nor its big healthy ones). Where a
//! fleet's own healthy history has them (a postinst that ends its helper
//! with SIGTERM), the rule is fitted like any other.
//!
//! A loop that never enters the kernel is watched as a spin
//! (`running.rs` says why): how long the tree has been on a CPU without
//! one syscall, in consecutive windows. A thread's longest sleep counts
//! only in a window where the whole tree idled (`stall.rs` says why).

use backstop_common::features::{FEATURES, feature};
use serde::{Deserialize, Serialize};

mod fit;
mod running;
mod stall;
mod upgrade;
use running::Running;
pub use running::{SPIN_FLOOR_MS, SPIN_MIN_CPU_NS, SPIN_NAME};
pub use stall::{IDLE_MAX_CPU_NS, IDLE_MAX_SYSCALLS, STALL_FLOOR_MS};
#[cfg(test)]
use upgrade::LEGACY_TOTALLED;

/// The features the envelope watches (see the module's docs for why these).
pub const WATCHED: [usize; 12] = [
    feature::SYSCALL_ERRORS_ENOSPC,
    feature::SYSCALL_ERRORS_EIO,
    feature::SYSCALL_LATENCY_P50_US,
    feature::SYSCALL_LATENCY_P99_US,
    feature::BLOCK_ERRORS,
    feature::SCHED_BLOCKED_LONGEST_MS,
    feature::PROC_SIGNAL_DEATHS,
    feature::PROC_OOM_KILLS,
    feature::NET_CONNECT_LATENCY_P99_US,
    feature::TREE_PROCESSES,
    feature::TREE_OPEN_FDS,
    feature::TREE_RSS_GROWTH_BYTES,
];

/// The counts the envelope also watches as running totals (see the
/// module's docs). Nor TCP retransmits' (the module's docs say why).
pub const TOTALLED: [usize; 5] = [
    feature::SYSCALL_ERRORS_ENOSPC,
    feature::SYSCALL_ERRORS_EIO,
    feature::BLOCK_ERRORS,
    feature::PROC_SIGNAL_DEATHS,
    feature::PROC_OOM_KILLS,
];

/// The least limit of a connect's latency, in µs: TCP's initial
/// retransmission timeout (RFC 6298, 1 s; Linux's TCP_TIMEOUT_INIT). A
/// connect slower than that waited for a lost or ignored SYN to be sent
/// again; any faster one is a network doing its job, near or far.
pub const CONNECT_LATENCY_FLOOR_US: f64 = 1_000_000.0;

/// The least limit of watched feature `i`: one unit (a feature no healthy
/// install moved does not make one count, byte or microsecond infinite),
/// or what a healthy host can show whatever the corpus saw.
pub(super) fn floor_of(i: usize) -> f64 {
    match i {
        feature::NET_CONNECT_LATENCY_P99_US => CONNECT_LATENCY_FLOOR_US,
        feature::SCHED_BLOCKED_LONGEST_MS => STALL_FLOOR_MS,
        _ => 1.0,
    }
}

/// How a running total is named beside its window feature.
fn total_name(i: usize) -> String {
    format!("{} (total)", FEATURES[i].name)
}

/// Each watched feature's limit is this quantile of the highest value each
/// healthy training install reached: the 99th percentile, as the static
/// thresholds baseline starts from (0.95 and 1.0 were looked at too, on
/// the whole corpus, before it was chosen: README, "Benchmarks").
pub const LIMIT_QUANTILE: f64 = 0.99;

/// The least factor over a limit that alarms. The limits are the 99th
/// percentile of small installs (closures of at most 20 .debs); at the
/// factor of 1.24 calibration gave in stop 25, 3 of 14 big and heavy
/// healthy installs alarmed on p50 syscall latency (initdb's and an
/// initramfs's syncs: 1.25 and 1.5 times its limit), and the package
/// folds' silent faults alarmed 14 times in their quiet windows before
/// their exit. Earlier calibrations gave 1.9 to 2.4.
pub const MIN_FACTOR: f64 = 2.0;

/// Where no healthy training install ever had one of a running count
/// ([`TOTALLED`]), the count at which it alarms, in events: half of one,
/// so the first is twice past the factor (and ranks as far past the
/// envelope as a rule twice past its limit's alarm level). Its scale is
/// what brings the limit there: below 1, which marks such a rule.
pub const FIRST_EVENT: f64 = 0.5;

/// Folds of the cross-fitted threshold ([`Envelope::fit`]).
pub const FOLDS: usize = 5;

/// What the envelope was fitted to: per watched feature, its limit, and
/// the factor over a limit that alarms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Feature names, in [`WATCHED`] order (checked at load against this
    /// build's schema with the rest of the model).
    pub features: Vec<String>,
    pub limits: Vec<f64>,
    /// The running totals' limits, in [`TOTALLED`] order. Empty in a
    /// model from before totals were watched: it watches windows alone.
    #[serde(default)]
    pub totals: Vec<f64>,
    /// The spin's limit, in ms ([`SPIN_NAME`]). None in a model from
    /// before the spin was watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spin: Option<f64>,
    /// Per rule, in [`Self::names`] order: how far the rule's own healthy
    /// tail reaches past its limit (at least 1; `fit.rs` says why), or,
    /// below 1, what brings a count no healthy install had to
    /// [`FIRST_EVENT`]. A rule's limit is its fitted limit times its
    /// scale. Empty in a model from before scales: every scale is 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scales: Vec<f64>,
    /// A window alarms when a watched feature is above `threshold` times
    /// its limit.
    pub threshold: f64,
    /// The share of healthy training installs the threshold was set to
    /// alarm on.
    pub target_fpr: f64,
}

/// A window beyond the envelope: the feature furthest past its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beyond {
    pub feature: String,
    pub value: f64,
    /// The rule's limit, times its scale.
    pub limit: f64,
    /// `value / limit`; above the envelope's threshold.
    pub ratio: f64,
}

impl Envelope {
    /// Per window of a deployment, in order: the largest ratio of a
    /// watched feature (or running total) to its limit, and which one
    /// (an index into [`Self::names`]).
    fn ratios(&self, windows: &[Vec<f64>]) -> Vec<(f64, usize)> {
        (self.furthest(windows).into_iter())
            .map(|(j, v, l)| (v / l, j))
            .collect()
    }

    /// Per window of a deployment, in order, in one pass (the running
    /// values run along): (index into [`Self::names`], value, limit) of
    /// the watched feature or running value furthest past its limit.
    fn furthest(&self, windows: &[Vec<f64>]) -> Vec<(usize, f64, f64)> {
        let mut run = Running::new(self);
        windows
            .iter()
            .map(|w| {
                run.step(w);
                (self.values(w, &run)).fold((0, 0.0, 1.0), |a, b| {
                    if b.1 / b.2 > a.1 / a.2 { b } else { a }
                })
            })
            .collect()
    }

    /// (index, value, limit) of every watched feature in `w`, then every
    /// running value in `run`.
    fn values<'a>(
        &'a self,
        w: &'a [f64],
        run: &'a Running,
    ) -> impl Iterator<Item = (usize, f64, f64)> + 'a {
        let windowed = (WATCHED.iter().zip(&self.limits)).map(|(&i, &l)| (run.watched(i, w), l));
        windowed
            .chain(run.values(self))
            .enumerate()
            .map(|(j, (v, l))| (j, v, l * self.scale(j)))
    }

    /// The scale of rule `j` (an index into [`Self::names`]): 1 in a
    /// model from before scales.
    pub fn scale(&self, j: usize) -> f64 {
        self.scales.get(j).copied().unwrap_or(1.0)
    }

    /// Whether rule `j` alarms at its first event: a running count no
    /// healthy training install had ([`FIRST_EVENT`]).
    pub fn first_event(&self, j: usize) -> bool {
        self.scale(j) < 1.0
    }

    /// What [`Self::ratios`]' indices name: the watched features, then
    /// the running totals (`FEATURE (total)`), then the spin.
    pub fn names(&self) -> Vec<String> {
        let totals = TOTALLED
            .iter()
            .take(self.totals.len())
            .map(|&i| total_name(i));
        let spin = self.spin.map(|_| SPIN_NAME.to_string());
        self.features
            .iter()
            .cloned()
            .chain(totals)
            .chain(spin)
            .collect()
    }

    /// Per window of a deployment, in order: the watched feature or
    /// running total furthest past its limit, when beyond the threshold.
    /// One pass, for a daemon that scores a whole stream at each decision.
    pub fn beyond_all(&self, windows: &[Vec<f64>]) -> Vec<Option<Beyond>> {
        let names = self.names();
        (self.furthest(windows).into_iter())
            .map(|(j, value, limit)| {
                let ratio = value / limit;
                (ratio > self.threshold).then(|| Beyond {
                    feature: names[j].clone(),
                    value,
                    limit,
                    ratio,
                })
            })
            .collect()
    }

    /// [`Self::beyond_all`] at window `t` alone.
    pub fn beyond(&self, windows: &[Vec<f64>], t: usize) -> Option<Beyond> {
        if t >= windows.len() {
            return None;
        }
        self.beyond_all(&windows[..=t]).pop().flatten()
    }

    /// Every watched feature or running total beyond the threshold at
    /// window `t`, furthest first, as (name, ratio): an alarm's drivers.
    pub fn drivers(&self, windows: &[Vec<f64>], t: usize, top: usize) -> Vec<(String, f64)> {
        let Some(w) = windows.get(t) else {
            return Vec::new();
        };
        let run = Running::upto(self, windows, t);
        let names = self.names();
        let mut v: Vec<(String, f64)> = (self.values(w, &run))
            .map(|(j, v, l)| (names[j].clone(), v / l))
            .filter(|(_, r)| *r > self.threshold)
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(top);
        v
    }

    /// Refuse an envelope that does not fit this build's schema.
    pub fn check(&self) -> Result<(), String> {
        let ours: Vec<&str> = WATCHED.iter().map(|&i| FEATURES[i].name).collect();
        let totals_fit = self.totals.is_empty() || self.totals.len() == TOTALLED.len();
        if self.features != ours || self.limits.len() != ours.len() || !totals_fit {
            return Err(format!(
                "its envelope watches {:?}; this build watches {ours:?}",
                self.features
            ));
        }
        let positive = |l: &f64| l.is_finite() && *l > 0.0;
        let scales_fit = self.scales.is_empty() || self.scales.len() == self.names().len();
        if !(self.threshold.is_finite()
            && scales_fit
            && self.limits.iter().all(positive)
            && self.totals.iter().all(positive)
            && self.spin.iter().all(positive)
            && self.scales.iter().all(|s| s.is_finite() && *s > 0.0))
        {
            return Err(
                "its envelope has a limit, scale or threshold that is not a positive number (or too few scales)".into(),
            );
        }
        Ok(())
    }

    /// The alarm score the evaluation ranks windows by, on the net's
    /// scale: the net's P(failure) `p` of each window, raised above
    /// `net_threshold` where the window is beyond the envelope (further
    /// beyond: higher, below 1). So "score > net_threshold" is exactly
    /// "the net or the envelope alarms".
    pub fn combine(&self, p: &[f64], windows: &[Vec<f64>], net_threshold: f64) -> Vec<f64> {
        p.iter()
            .zip(self.ratios(windows))
            .map(|(&p, (ratio, _))| {
                if ratio <= self.threshold {
                    return p;
                }
                let lifted =
                    net_threshold + (1.0 - net_threshold) * (1.0 - self.threshold / ratio) + 1e-9;
                p.max(lifted.min(1.0))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
