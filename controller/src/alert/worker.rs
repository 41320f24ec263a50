//! One delivery task per sink: it takes the oldest queued alert, delivers
//! it, and only then the next one (so a resolve never arrives before the
//! alert it resolves). A failure that may pass is retried after a capped,
//! jittered exponential backoff; an alert older than `max_age`, or one the
//! receiver refuses for good (a 4xx), is moved to dead/ and logged. The
//! task never holds anything `Alerts::fire` needs: a receiver that hangs
//! delays only its own sink's deliveries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use super::queue::{Entry, Layout, read_json};
use super::{AlertSink, DeliveryError, chain};

/// The retry policy, from `[alerts]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_age: Duration,
    /// Also enforced around each delivery, whatever the sink does.
    pub timeout: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dead: AtomicU64,
    pub queued: AtomicU64,
}

pub(crate) struct Shared {
    pub layout: Layout,
    pub policy: Policy,
    pub counters: Counters,
}

/// The delay before retry number `attempt` (1 for the first retry):
/// `initial * 2^(attempt-1)` capped at `max`, then "equal jitter" (half
/// of it fixed, half random) so many controllers retrying one receiver do
/// not arrive in step.
pub(crate) fn backoff(p: &Policy, attempt: u32) -> Duration {
    let exp = p.initial_backoff.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX),
    );
    let d = exp.min(p.max_backoff);
    let half = d / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// Run `f` on the blocking pool (queue files are plain blocking I/O).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Deliver SINK's queue until `stop` says so (or its sender is gone).
pub(crate) async fn run<S: AlertSink>(
    name: String,
    sink: S,
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt: u32 = 0;
    let mut last: Option<PathBuf> = None;
    while !*stop.borrow() {
        let (layout, n) = (shared.layout.clone(), name.clone());
        let wait = match blocking(move || layout.head(&n)).await {
            Ok(Some(path)) => {
                if last.as_ref() != Some(&path) {
                    attempt = 0;
                    last = Some(path.clone());
                }
                match one(&name, &sink, &shared, &path, attempt).await {
                    Step::Done => None,
                    Step::Retry => {
                        attempt += 1;
                        Some(backoff(&shared.policy, attempt))
                    }
                }
            }
            Ok(None) => {
                tokio::select! {
                    () = wake.notified() => {}
                    r = stop.changed() => if r.is_err() { return },
                }
                None
            }
            Err(error) => {
                tracing::error!(sink = %name, %error, "alert queue unreadable; trying again");
                Some(shared.policy.max_backoff)
            }
        };
        if let Some(d) = wait {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                r = stop.changed() => if r.is_err() { return },
            }
        }
    }
}

enum Step {
    /// Delivered, buried, or gone: go on with the next.
    Done,
    Retry,
}

async fn one<S: AlertSink>(
    name: &str,
    sink: &S,
    shared: &Shared,
    path: &Path,
    attempt: u32,
) -> Step {
    let c = &shared.counters;
    let p = path.to_path_buf();
    let entry = match blocking(move || read_json::<Entry>(&p)).await {
        Ok(e) => e,
        Err(error) => {
            tracing::error!(sink = %name, %error, "an unreadable queued alert: moved to dead");
            bury(name, shared, path).await;
            return Step::Done;
        }
    };
    let age = OffsetDateTime::now_utc() - entry.enqueued_at;
    if age > shared.policy.max_age {
        tracing::error!(sink = %name, deployment = %entry.alert.deployment,
            package = %entry.alert.package, attempts = attempt, age = %age,
            max_age = ?shared.policy.max_age, "alert undelivered for too long: moved to dead");
        bury(name, shared, path).await;
        return Step::Done;
    }
    let result = match tokio::time::timeout(shared.policy.timeout, sink.deliver(&entry.alert)).await
    {
        Ok(r) => r,
        Err(_) => Err(DeliveryError::TimedOut {
            after: shared.policy.timeout,
        }),
    };
    match result {
        Ok(()) => {
            let (layout, p) = (shared.layout.clone(), path.to_path_buf());
            if let Err(error) = blocking(move || layout.remove(&p)).await {
                tracing::error!(sink = %name, %error, "a delivered alert could not be removed");
            }
            c.delivered.fetch_add(1, Ordering::Relaxed);
            crate::metrics::AlertDelivery {
                sink: name,
                ok: true,
            }
            .emit();
            dec(&c.queued);
            tracing::info!(sink = %name, deployment = %entry.alert.deployment,
                state = ?entry.alert.state, "alert delivered");
            Step::Done
        }
        Err(error) if error.retry() => {
            c.failed.fetch_add(1, Ordering::Relaxed);
            crate::metrics::AlertDelivery {
                sink: name,
                ok: false,
            }
            .emit();
            tracing::warn!(sink = %name, deployment = %entry.alert.deployment, error = %chain(&error),
                attempt = attempt + 1, "alert delivery failed; will retry");
            Step::Retry
        }
        Err(error) => {
            c.failed.fetch_add(1, Ordering::Relaxed);
            crate::metrics::AlertDelivery {
                sink: name,
                ok: false,
            }
            .emit();
            tracing::error!(sink = %name, deployment = %entry.alert.deployment, error = %chain(&error),
                "alert refused by the receiver: moved to dead");
            bury(name, shared, path).await;
            Step::Done
        }
    }
}

async fn bury(name: &str, shared: &Shared, path: &Path) {
    let (layout, n, p) = (shared.layout.clone(), name.to_string(), path.to_path_buf());
    match blocking(move || layout.bury(&n, &p)).await {
        Ok(to) => tracing::warn!(sink = %name, path = %to.display(), "dead alert kept"),
        // Removing it is the only way on: a head that cannot move blocks
        // the whole queue.
        Err(error) => {
            tracing::error!(sink = %name, %error, "a dead alert could not be moved: removed");
            let (layout, p) = (shared.layout.clone(), path.to_path_buf());
            let _ = blocking(move || layout.remove(&p)).await;
        }
    }
    shared.counters.dead.fetch_add(1, Ordering::Relaxed);
    dec(&shared.counters.queued);
}

/// A gauge never wraps below zero, whoever else touched the queue.
fn dec(a: &AtomicU64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(1))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let p = Policy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_age: Duration::from_mins(1),
            timeout: Duration::from_secs(1),
        };
        for (attempt, full) in [(1, 100), (2, 200), (4, 800), (5, 1000), (40, 1000)] {
            for _ in 0..50 {
                let d = backoff(&p, attempt).as_millis();
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d} ms not in [{}, {full}]",
                    full / 2
                );
            }
        }
    }
}
