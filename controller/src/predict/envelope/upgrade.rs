//! Envelopes saved by earlier builds, fitted to this one.
//!
//! Why: a fleet's models outlive a build. An envelope keeps what it
//! learnt of the features this build still watches; what this build no
//! longer watches (the module's docs say why) is dropped rather than
//! refusing the whole model.

use backstop_common::features::{FEATURES, feature};

use super::{Envelope, TOTALLED, WATCHED, floor_of};

/// The totals earlier builds watched, in their order, by how many there
/// were: before stop 23 (with ENOMEM's), and stop 23 (without it).
/// Totals carry no names in a model, so their count says which these are.
pub(super) const LEGACY_TOTALLED: [&[usize]; 2] = [
    &[
        feature::SYSCALL_ERRORS_ENOSPC,
        feature::SYSCALL_ERRORS_ENOMEM,
        feature::SYSCALL_ERRORS_EIO,
        feature::BLOCK_ERRORS,
        feature::PROC_SIGNAL_DEATHS,
        feature::PROC_OOM_KILLS,
        feature::NET_TCP_RETRANSMITS,
    ],
    &[
        feature::SYSCALL_ERRORS_ENOSPC,
        feature::SYSCALL_ERRORS_EIO,
        feature::BLOCK_ERRORS,
        feature::PROC_SIGNAL_DEATHS,
        feature::PROC_OOM_KILLS,
        feature::NET_TCP_RETRANSMITS,
    ],
];

impl Envelope {
    /// Fit an envelope of an earlier build to this one: the limits of the
    /// features this build watches, by name (ENOMEM errors, block latency,
    /// futex and pipe waits, and TCP retransmits are no longer watched:
    /// the module's docs say why); the totals this build watches, by
    /// their old order ([`LEGACY_TOTALLED`]); and every limit raised to
    /// its floor (a connect's latency,
    /// [`super::CONNECT_LATENCY_FLOOR_US`]). An envelope that is none of
    /// these is left for [`Self::check`] to refuse. One that fits this
    /// build already is left as it is.
    pub fn upgrade(&mut self) {
        let limit_of = |name: &str, features: &[String], limits: &[f64]| {
            let at = features.iter().position(|f| f == name)?;
            limits.get(at).copied()
        };
        let limits: Option<Vec<f64>> = WATCHED
            .iter()
            .map(|&i| limit_of(FEATURES[i].name, &self.features, &self.limits))
            .collect();
        if let Some(limits) = limits {
            self.features = WATCHED.iter().map(|&i| FEATURES[i].name.into()).collect();
            self.limits = limits;
        }
        if let Some(old) = LEGACY_TOTALLED
            .iter()
            .find(|o| o.len() == self.totals.len())
        {
            let totals: Option<Vec<f64>> = TOTALLED
                .iter()
                .map(|i| old.iter().position(|o| o == i).map(|at| self.totals[at]))
                .collect();
            if let Some(totals) = totals {
                self.totals = totals;
            }
        }
        if self.limits.len() == WATCHED.len() {
            for (l, &i) in self.limits.iter_mut().zip(&WATCHED) {
                *l = l.max(floor_of(i));
            }
        }
    }
}
