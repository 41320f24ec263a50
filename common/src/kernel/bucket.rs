//! Histogram bucketing and errno classes: computed in the probes and read
//! back in the agent, so both halves share one definition.

use super::{HIST_BUCKETS, counter};

/// Map a nanosecond value to its histogram bucket. Written without loops or
/// `leading_zeros` so the eBPF verifier and LLVM's BPF backend accept it.
#[expect(
    clippy::inline_always,
    reason = "called from the eBPF hooks, where it must be inlined rather than a BPF-to-BPF call"
)]
#[inline(always)]
pub fn hist_bucket(v: u64) -> usize {
    if v < 4 {
        return v as usize;
    }
    let mut msb = 0u64;
    let mut x = v;
    if x >= 1 << 32 {
        x >>= 32;
        msb += 32;
    }
    if x >= 1 << 16 {
        x >>= 16;
        msb += 16;
    }
    if x >= 1 << 8 {
        x >>= 8;
        msb += 8;
    }
    if x >= 1 << 4 {
        x >>= 4;
        msb += 4;
    }
    if x >= 1 << 2 {
        x >>= 2;
        msb += 2;
    }
    if x >= 1 << 1 {
        msb += 1;
    }
    let sub = (v >> (msb - 2)) & 3;
    let idx = (4 * (msb - 1) + sub) as usize;
    if idx >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        idx
    }
}

/// The smallest value that lands in bucket `idx` (inverse of [`hist_bucket`]).
pub fn hist_bucket_floor(idx: usize) -> u64 {
    if idx < 4 {
        return idx as u64;
    }
    let msb = (idx / 4 + 1) as u32;
    let sub = (idx % 4) as u64;
    (4 + sub) << (msb - 2)
}

/// Errno classes for failed syscalls, shared so the kernel's choice and the
/// feature names cannot disagree.
#[expect(
    clippy::inline_always,
    reason = "called from the eBPF hooks, where it must be inlined rather than a BPF-to-BPF call"
)]
#[inline(always)]
pub fn errno_counter(errno: i64) -> usize {
    match errno {
        2 => counter::ERR_ENOENT,
        1 | 13 => counter::ERR_EACCES,
        28 | 122 => counter::ERR_ENOSPC,
        11 | 12 => counter::ERR_ENOMEM,
        5 => counter::ERR_EIO,
        // EADDRINUSE, ENETDOWN, ENETUNREACH, ECONNABORTED, ECONNRESET,
        // ETIMEDOUT, ECONNREFUSED, EHOSTDOWN, EHOSTUNREACH
        98 | 100 | 101 | 103 | 104 | 110 | 111 | 112 | 113 => counter::ERR_NET,
        _ => counter::ERR_OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_invert() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 1 << 30, (1 << 40) - 1]) {
            let b = hist_bucket(v);
            assert!(b >= last, "bucket went down at {v}");
            last = b;
            assert!(hist_bucket_floor(b) <= v, "floor of bucket {b} above {v}");
            if b + 1 < HIST_BUCKETS {
                assert!(
                    hist_bucket_floor(b + 1) > v,
                    "{v} belongs in a later bucket than {b}"
                );
            }
        }
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn errno_classes() {
        assert_eq!(errno_counter(2), counter::ERR_ENOENT);
        assert_eq!(errno_counter(1), counter::ERR_EACCES);
        assert_eq!(errno_counter(122), counter::ERR_ENOSPC);
        assert_eq!(errno_counter(111), counter::ERR_NET);
        assert_eq!(errno_counter(9), counter::ERR_OTHER);
    }
}
