//! The host a generated record ran on: a host of its own size per record
//! (10 GB to 10 TB of disk, 1 to 300 GB of memory, 1 to 64 CPUs, idle or
//! busy), whose free disk and memory fall by what the install consumes.
//!
//! Why: the generated corpus must look like records from a fleet of
//! different hosts, so that a model trained on it records a wide range of
//! host conditions, and the host-derived features (what was consumed,
//! `HostLevels::derive`) follow the install's own writes and memory.

use backstop_common::features::feature;
use backstop_common::hostlevels::HostLevels;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The levels of each of `windows` on a host drawn from `rng`, with the
/// host-derived features of `windows` set from them.
pub(super) fn levels(rng: &mut ChaCha8Rng, windows: &mut [Vec<f64>]) -> Vec<HostLevels> {
    let disk_total = 10f64.powf(rng.random_range(10.0..13.0));
    let mem_total = 10f64.powf(rng.random_range(9.0..11.5));
    let cpus = f64::from(rng.random_range(1u32..=64));
    let first = HostLevels {
        disk_free_bytes: disk_total * rng.random_range(0.05..0.95),
        disk_total_bytes: disk_total,
        mem_available_bytes: mem_total * rng.random_range(0.1..0.9),
        mem_total_bytes: mem_total,
        load1: cpus * rng.random_range(0.0..2.0),
        cpus,
        cpu_util: rng.random_range(0.0..0.9),
    };
    let mut written = 0.0;
    windows
        .iter_mut()
        .map(|w| {
            written += w[feature::PAGE_DIRTIED_BYTES];
            let now = HostLevels {
                disk_free_bytes: (first.disk_free_bytes - written).max(0.0),
                mem_available_bytes: (first.mem_available_bytes - w[feature::MEM_ANON_PEAK_BYTES])
                    .max(0.0),
                cpu_util: (first.cpu_util + rng.random_range(-0.05..0.05)).clamp(0.0, 1.0),
                ..first
            };
            now.derive(&first, w);
            now
        })
        .collect()
}
