//! A thread asleep in one syscall is a stall only while the rest of its
//! tree is idle too.
//!
//! Why: the envelope watches the longest time a thread of the tree has
//! been asleep in one syscall (waits on others aside: children, timers,
//! clients; the agent's `syscall_class.rs`), for the
//! failures that leave a thread waiting on something that never comes: a
//! lock a stray process holds, a prompt no one answers. A healthy install
//! also keeps a thread asleep for long, while the tree works: a shell
//! reading a pipe from a child that builds TeX formats for 19 s
//! (texlive-latex-base) or an initramfs for 39 s (linux-image-amd64).
//! Both alarmed on the stop 24 model. What tells the two apart is the
//! rest of the tree: in a hang nothing runs (the lock's holder sleeps
//! too), in the healthy installs the children compute and make syscalls.
//!
//! So the envelope reads a stall, not the longest sleep: how much longer
//! the longest-asleep thread has been asleep since the whole tree went
//! idle (under [`IDLE_MAX_CPU_NS`] on a CPU and under
//! [`IDLE_MAX_SYSCALLS`] syscalls in a window), and 0 in a window where
//! the tree works. A thread that slept through the work does not bring
//! its age into the quiet that follows (a healthy twin's shell asleep
//! 4.8 s while the prelude worked, then a 1 s pause: a stall of 0.75 s).
//!
//! Measured on the corpus's non-lockbox records: 99.6% of the lock-hang
//! and prompt-hang windows with a thread asleep for over 2 s entered no
//! syscall at all, and all of them spent under 20 ms on a CPU; in the two
//! healthy installs, no window with a thread that long asleep was idle
//! by both measures (at least 6.7 ms on a CPU and 111 syscalls, or 37 ms
//! and 5). Every gate from 10 to 25 ms and 20 to 100 syscalls caught the
//! same hangs. Read as the sleep's growth since the tree went idle, the
//! healthy installs' highest stalls are their idle pauses (99th
//! percentile 1.75 s, against 2.9 s for the longest sleep in an idle
//! window), and, replayed at a factor of 1.89, one lock hang and one
//! prompt hang more were caught before their onset.

use backstop_common::features::feature;

/// A window in which the tree ran at least this long on a CPU is not
/// idle (20 ms: 8% of the default 250 ms window).
pub const IDLE_MAX_CPU_NS: f64 = 20e6;

/// A window in which the tree entered at least this many syscalls is not
/// idle.
pub const IDLE_MAX_SYSCALLS: f64 = 50.0;

/// The stall's limit is never below this. Why: few healthy installs stall
/// at all (about 1% of a corpus's: a maintainer script's `sleep 1`, a
/// trigger waiting on a lock a moment), so the 99th percentile of their
/// highest stalls can be 0, and a limit of one millisecond would make any
/// pause of a few a hang. Stop 28 saw it in a re-recorded corpus: one of
/// the five cross-fitting blocks fitted a stall limit of 1 ms against
/// about 750 ms in the others, and the factor calibrated on them was 750
/// (2.24 with this floor). A second asleep while nothing else runs is
/// what healthy installs do; a hang stays asleep for many.
pub const STALL_FLOOR_MS: f64 = 1000.0;

/// Whether the tree made no progress in window `w`.
fn idle(w: &[f64]) -> bool {
    let at = |i: usize| w.get(i).copied().unwrap_or(0.0);
    at(feature::SCHED_ON_CPU_NS) < IDLE_MAX_CPU_NS
        && at(feature::SYSCALLS_TOTAL) < IDLE_MAX_SYSCALLS
}

/// The stall along a stream, window by window.
#[derive(Debug, Clone, Default)]
pub struct Stall {
    /// The longest sleep when the tree went idle (None while it works).
    base: Option<f64>,
    /// The longest sleep in the window before.
    prev: f64,
    /// The stall after the latest window, in ms.
    pub ms: f64,
}

impl Stall {
    /// Take window `w` in.
    pub fn step(&mut self, w: &[f64]) {
        let asleep = w
            .get(feature::SCHED_BLOCKED_LONGEST_MS)
            .copied()
            .unwrap_or(0.0);
        if idle(w) {
            let base = *self.base.get_or_insert(self.prev);
            // A sleep shorter than the base is another thread's, begun
            // since: all of it is stall.
            self.ms = if asleep >= base {
                asleep - base
            } else {
                asleep
            };
        } else {
            self.base = None;
            self.ms = 0.0;
        }
        self.prev = asleep;
    }
}

/// The highest stall anywhere in one deployment.
pub fn highest_stall(windows: &[Vec<f64>]) -> f64 {
    let mut s = Stall::default();
    windows
        .iter()
        .map(|w| {
            s.step(w);
            s.ms
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::super::Envelope;
    use super::super::tests::window;
    use backstop_common::features::feature;

    /// texlive-latex-base's and linux-image-amd64's shape: a shell asleep on
    /// a pipe for 39 s while its children build an initramfs.
    #[test]
    fn a_thread_that_waits_while_its_tree_works_is_no_stall() {
        let healthy: Vec<Vec<Vec<f64>>> = (0..200)
            .map(|i| vec![window(f64::from(i) * 10.0, 10.0); 3])
            .collect();
        let refs: Vec<&[Vec<f64>]> = healthy.iter().map(Vec::as_slice).collect();
        let e = Envelope::fit(&refs, 0.01, false).unwrap();
        let working = |cpu_ms: f64, syscalls: f64| {
            let mut w = window(39_000.0, 10.0);
            w[feature::SCHED_ON_CPU_NS] = cpu_ms * 1e6;
            w[feature::SYSCALLS_TOTAL] = syscalls;
            w
        };
        // The children compute, or make syscalls: no alarm.
        assert_eq!(e.beyond(&[working(200.0, 20_000.0)], 0), None);
        assert_eq!(e.beyond(&[working(37.0, 5.0)], 0), None);
        assert_eq!(e.beyond(&[working(6.7, 111.0)], 0), None);
        // Nothing runs (a lock's holder asleep too): the stall alarms.
        let b = e.beyond(&[working(0.5, 3.0)], 0).unwrap();
        assert_eq!(b.feature, "sched_blocked_longest_ms");
        // A window's gate is its own: a long wait that ends while the tree
        // is busy does not raise the limit the healthy installs set.
        let busy_healthy: Vec<Vec<Vec<f64>>> = (0..200)
            .map(|i| vec![working(200.0, 20_000.0), window(f64::from(i) * 10.0, 10.0)])
            .collect();
        let refs: Vec<&[Vec<f64>]> = busy_healthy.iter().map(Vec::as_slice).collect();
        let f = Envelope::fit(&refs, 0.01, false).unwrap();
        let at = f
            .features
            .iter()
            .position(|n| n == "sched_blocked_longest_ms")
            .unwrap();
        assert_eq!(f.limits[at], e.limits[at]);
        // A thread asleep through the work brings none of its age into the
        // quiet after it: 20 s asleep while the tree worked, then a second of
        // quiet, is a stall of a second; ten more quiet seconds alarm.
        let asleep = |ms: f64, cpu_ms: f64| {
            let mut w = working(cpu_ms, if cpu_ms > 0.0 { 20_000.0 } else { 0.0 });
            w[feature::SCHED_BLOCKED_LONGEST_MS] = ms;
            w
        };
        let mut stream: Vec<Vec<f64>> = (1..=80)
            .map(|k| asleep(f64::from(k) * 250.0, 200.0))
            .collect();
        stream.extend((81..=84).map(|k| asleep(f64::from(k) * 250.0, 0.0)));
        let t = stream.len() - 1;
        assert_eq!(e.beyond(&stream, t), None, "{:?}", e.drivers(&stream, t, 3));
        stream.extend((85..=124).map(|k| asleep(f64::from(k) * 250.0, 0.0)));
        let b = e.beyond(&stream, stream.len() - 1).unwrap();
        assert_eq!(
            (b.feature.as_str(), b.value),
            ("sched_blocked_longest_ms", 11_000.0)
        );
    }
}
