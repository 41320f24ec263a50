//! `backstop-agent run --metrics`: hands `/metrics` what it reads of the
//! running agent at scrape time (the probes, the outbox, the deployments).
//! A child of `run.rs`, as `run_deploy.rs` is, to reach its private parts.

use std::sync::{Arc, PoisonError};

use super::run_deploy::Running;
use super::{OutboxHandle, RunOptions};
use crate::error::Result;
use crate::metrics::{Serving, Sources, serve};
use crate::track::SharedProbes;

/// Serve `/metrics` when `--metrics` was given; it stops when dropped.
pub(super) async fn start(
    opts: &RunOptions,
    probes: &SharedProbes,
    outbox: &OutboxHandle,
    running: &Running,
) -> Result<Option<Serving>> {
    let Some(access) = opts.metrics.clone() else {
        return Ok(None);
    };
    let (outbox, running) = (outbox.outbox.clone(), running.clone());
    let sources = Sources {
        probes: probes.clone(),
        outbox: Arc::new(move || {
            let o = outbox.lock().unwrap_or_else(PoisonError::into_inner);
            (o.len(), o.dropped())
        }),
        deployments: Arc::new(move || running.len()),
    };
    Ok(Some(serve(access, sources).await?))
}
