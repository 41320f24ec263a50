//! What the envelope carries along a deployment, window by window: the
//! running totals of counts that should not happen, the spin, and the
//! stall (`stall.rs`).
//!
//! Why a spin: a loop that never enters the kernel (a runaway, a retry
//! loop on a value that never changes) does no I/O and asks for nothing,
//! so no error, latency or wait shows it; what shows is the tree on a
//! CPU, window after window, without one syscall. Healthy installs
//! compute too, but a compiler, a compressor or an index rebuild reads,
//! writes or maps memory every few milliseconds. On the v4 corpus's
//! non-lockbox records, two healthy installs of 977 spun at all (courier-mta
//! generating a key: 0.7 and 0.9 s) and every cpu-runaway did, for the
//! whole of its run (README, "Benchmarks").

use backstop_common::features::feature;

use super::stall::{Stall, highest_stall};
use super::{Envelope, TOTALLED};

/// A window counts toward a spin when the tree spent at least this much
/// CPU in it and entered no syscall: an absolute figure, so that a window
/// in which a thread merely woke up and went back to sleep never counts,
/// whatever the window's length (the default 250 ms window holds it
/// 2.5 times).
pub const SPIN_MIN_CPU_NS: f64 = 100e6;

/// The spin's limit is never below this: a healthy install may compute a
/// key for a second without a syscall (courier-mta in the corpus, 0.9 s;
/// an RSA key's prime search takes about that).
pub const SPIN_FLOOR_MS: f64 = 1000.0;

/// How the spin is named in reasons and drivers.
pub const SPIN_NAME: &str = "spin_ms (on CPU, no syscall)";

/// The spin after a window `w`, the spin before it being `prev`: the CPU
/// milliseconds of the consecutive windows, up to this one, in which the
/// tree ran at least [`SPIN_MIN_CPU_NS`] and entered no syscall.
fn spin_after(prev: f64, w: &[f64]) -> f64 {
    let at = |i: usize| w.get(i).copied().unwrap_or(0.0);
    let cpu = at(feature::SCHED_ON_CPU_NS);
    if at(feature::SYSCALLS_TOTAL) == 0.0 && cpu >= SPIN_MIN_CPU_NS {
        prev + cpu / 1e6
    } else {
        0.0
    }
}

/// The running values after each window, in order: the totals of
/// [`TOTALLED`] (as many as the envelope has limits for), then the spin
/// (when it has a limit for it).
pub struct Running {
    pub sums: Vec<f64>,
    pub spin: f64,
    /// What the envelope reads for `sched_blocked_longest_ms`
    /// (`stall.rs` says why).
    pub stall: Stall,
}

impl Running {
    pub fn new(e: &Envelope) -> Running {
        Running {
            sums: vec![0.0; e.totals.len()],
            spin: 0.0,
            stall: Stall::default(),
        }
    }

    /// Take window `w` in.
    pub fn step(&mut self, w: &[f64]) {
        for (s, &i) in self.sums.iter_mut().zip(&TOTALLED) {
            *s += w.get(i).copied().unwrap_or(0.0);
        }
        self.spin = spin_after(self.spin, w);
        self.stall.step(w);
    }

    /// After `windows[..=t]`.
    pub fn upto(e: &Envelope, windows: &[Vec<f64>], t: usize) -> Running {
        let mut r = Running::new(e);
        for w in &windows[..=t.min(windows.len().saturating_sub(1))] {
            r.step(w);
        }
        r
    }

    /// What the envelope reads for watched feature `i` in window `w`, the
    /// window this was last stepped with: the stall for a thread's
    /// longest sleep, the window's own value for the rest.
    pub fn watched(&self, i: usize, w: &[f64]) -> f64 {
        if i == feature::SCHED_BLOCKED_LONGEST_MS {
            self.stall.ms
        } else {
            w.get(i).copied().unwrap_or(0.0)
        }
    }

    /// (value, limit) of each running value the envelope has a limit for.
    pub fn values<'a>(&'a self, e: &'a Envelope) -> impl Iterator<Item = (f64, f64)> + 'a {
        let totals = self.sums.iter().copied().zip(e.totals.iter().copied());
        totals.chain(e.spin.map(|l| (self.spin, l)))
    }
}

/// The highest value the envelope reads for watched feature `i`
/// anywhere in one deployment.
pub fn highest_watched(i: usize, windows: &[Vec<f64>]) -> f64 {
    if i == feature::SCHED_BLOCKED_LONGEST_MS {
        highest_stall(windows)
    } else {
        windows.iter().map(|w| w[i]).fold(0.0, f64::max)
    }
}

/// The highest spin anywhere in one deployment.
pub fn highest_spin(windows: &[Vec<f64>]) -> f64 {
    let mut spin = 0.0;
    let mut top = 0.0_f64;
    for w in windows {
        spin = spin_after(spin, w);
        top = top.max(spin);
    }
    top
}
