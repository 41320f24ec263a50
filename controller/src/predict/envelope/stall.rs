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
//! So a window's longest block counts only when the tree spent less than
//! [`IDLE_MAX_CPU_NS`] on a CPU and entered fewer than
//! [`IDLE_MAX_SYSCALLS`] syscalls in it. On the corpus's non-lockbox
//! records, 99.6% of the lock-hang and prompt-hang windows with a thread
//! asleep for over 2 s entered no syscall at all, and all of them spent
//! under 20 ms on a CPU. In the two healthy installs, no window with a
//! thread that long asleep was idle by both measures (at least 6.7 ms on
//! a CPU and 111 syscalls, or 37 ms and 5). Every gate from 10 to 25 ms
//! and 20 to 100 syscalls caught the same hangs there, each at the same
//! window, as the ungated feature did, and one lock-hang more.

use backstop_common::features::feature;

/// A window in which the tree ran at least this long on a CPU is not
/// idle (20 ms: 8% of the default 250 ms window).
pub const IDLE_MAX_CPU_NS: f64 = 20e6;

/// A window in which the tree entered at least this many syscalls is not
/// idle.
pub const IDLE_MAX_SYSCALLS: f64 = 50.0;

/// Whether the tree made no progress in window `w`.
fn idle(w: &[f64]) -> bool {
    let at = |i: usize| w.get(i).copied().unwrap_or(0.0);
    at(feature::SCHED_ON_CPU_NS) < IDLE_MAX_CPU_NS
        && at(feature::SYSCALLS_TOTAL) < IDLE_MAX_SYSCALLS
}

/// The value of watched feature `i` in window `w`, as the envelope reads
/// it: the feature's own, but a thread's longest block only in an idle
/// window (0 otherwise).
pub fn watched_value(i: usize, w: &[f64]) -> f64 {
    let v = w.get(i).copied().unwrap_or(0.0);
    if i == feature::SCHED_BLOCKED_LONGEST_MS && !idle(w) {
        0.0
    } else {
        v
    }
}
