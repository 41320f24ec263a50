//! [`Alerts`]: the entry points the deployment flow calls, and the
//! delivery tasks they feed. `fire` and `resolve` return once the alert is
//! on disk; delivery happens later, elsewhere.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::alertmanager::AlertmanagerSink;
use super::queue::{Entry, Layout};
use super::webhook::WebhookSink;
use super::worker::{self, Counters, Policy, Shared};
use super::{Alert, AlertError, AlertState};
use crate::config::{AlertsConfig, SinkConfig};

/// A snapshot of the delivery counters (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AlertCounters {
    /// Deliveries a receiver accepted.
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failed: u64,
    /// Deliveries given up and moved to dead/.
    pub dead: u64,
    /// Deliveries waiting now, over all sinks.
    pub queued: u64,
}

struct SinkTask {
    name: String,
    wake: Arc<Notify>,
}

/// The controller's alerts: a durable queue per sink and a task per sink
/// that drains it. Dropping it stops the tasks; queued alerts stay on
/// disk for the next start.
pub struct Alerts {
    shared: Arc<Shared>,
    sinks: Vec<SinkTask>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    /// fire and resolve change the queue and the firing records together.
    disk: Arc<Mutex<()>>,
}

impl Alerts {
    /// Open DATA/alerts/ and start one delivery task per configured sink;
    /// what an earlier run left queued is delivered first.
    pub async fn start(data: &Path, cfg: &AlertsConfig) -> Result<Alerts, AlertError> {
        let layout = Layout::new(data);
        let names: Vec<String> = cfg.sinks.iter().map(|s| s.name().to_string()).collect();
        let (task_layout, task_names, task_cfg) = (layout.clone(), names.clone(), cfg.clone());
        // Opening the queue and building the sinks read files (CA bundles,
        // token files): blocking work.
        let (built, queued) = tokio::task::spawn_blocking(move || {
            task_layout
                .open(&task_names)
                .map_err(|source| AlertError::Io {
                    path: task_layout.root.clone(),
                    source,
                })?;
            let mut queued = 0;
            for s in &task_names {
                queued += task_layout.depth(s).map_err(|source| AlertError::Io {
                    path: task_layout.queue(s),
                    source,
                })? as u64;
            }
            Ok::<_, AlertError>((build(&task_cfg)?, queued))
        })
        .await
        .map_err(|source| AlertError::Join { source })??;
        let shared = Arc::new(Shared {
            layout,
            policy: Policy {
                initial_backoff: cfg.initial_backoff,
                max_backoff: cfg.max_backoff,
                max_age: cfg.max_age,
                timeout: cfg.timeout,
            },
            counters: Counters::default(),
        });
        shared.counters.queued.store(queued, Ordering::Relaxed);
        let (stop, rx) = watch::channel(false);
        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        for (name, sink) in names.into_iter().zip(built) {
            let wake = Arc::new(Notify::new());
            let (task_name, task_shared, task_wake, task_rx) =
                (name.clone(), shared.clone(), wake.clone(), rx.clone());
            tasks.push(match sink {
                Built::Alertmanager(k) => {
                    tokio::spawn(worker::run(task_name, k, task_shared, task_wake, task_rx))
                }
                Built::Webhook(k) => {
                    tokio::spawn(worker::run(task_name, k, task_shared, task_wake, task_rx))
                }
            });
            sinks.push(SinkTask { name, wake });
        }
        if queued > 0 {
            tracing::info!(queued, "alerts left queued by an earlier run: delivering");
        }
        Ok(Alerts {
            shared,
            sinks,
            tasks,
            stop,
            disk: Arc::new(Mutex::new(())),
        })
    }

    /// Queue a firing alert for every sink and remember it until
    /// [`Alerts::resolve`]. Returns once it is on disk (a few fsyncs);
    /// never waits on a receiver.
    pub async fn fire(&self, alert: Alert) -> Result<(), AlertError> {
        let alert = Alert {
            state: AlertState::Firing,
            ends_at: None,
            ..alert
        };
        let (layout, disk, names) = (self.shared.layout.clone(), self.disk.clone(), self.names());
        self.write(move || {
            let _held = disk
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = enqueue_all(&layout, &names, &alert)?;
            layout
                .keep_firing(&alert)
                .map_err(|source| AlertError::Io {
                    path: layout.firing(),
                    source,
                })?;
            Ok(n)
        })
        .await
        .map(|_| ())
    }

    /// Resolve every firing alert about `package` (on any host): each is
    /// queued again with the same labels and its end set to now. Returns
    /// how many were resolved.
    pub async fn resolve(&self, package: &str) -> Result<usize, AlertError> {
        let (layout, disk, names) = (self.shared.layout.clone(), self.disk.clone(), self.names());
        let package = package.to_string();
        self.write(move || {
            let _held = disk
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let io = |source| AlertError::Io {
                path: layout.firing(),
                source,
            };
            let now = super::now_ms();
            let mut n = 0;
            for (path, alert) in layout.firing_of(&package).map_err(io)? {
                enqueue_all(&layout, &names, &alert.resolved(now))?;
                layout.remove(&path).map_err(io)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    /// Run a queue write on the blocking pool, then wake the sinks.
    async fn write(
        &self,
        f: impl FnOnce() -> Result<usize, AlertError> + Send + 'static,
    ) -> Result<usize, AlertError> {
        let n = tokio::task::spawn_blocking(f)
            .await
            .map_err(|source| AlertError::Join { source })??;
        if n > 0 {
            let queued = (n * self.sinks.len()) as u64;
            self.shared
                .counters
                .queued
                .fetch_add(queued, Ordering::Relaxed);
            for s in &self.sinks {
                s.wake.notify_one();
            }
        }
        Ok(n)
    }

    fn names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name.clone()).collect()
    }

    pub fn counters(&self) -> AlertCounters {
        let c = &self.shared.counters;
        AlertCounters {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead: c.dead.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
        }
    }

    /// Where the queue lives (DATA/alerts).
    pub fn dir(&self) -> &Path {
        &self.shared.layout.root
    }

    /// Stop the delivery tasks (an attempt in flight is abandoned and
    /// stays queued), waiting at most `deadline` for them.
    pub async fn shutdown(mut self, deadline: Duration) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(deadline, t).await;
        }
    }
}

impl Drop for Alerts {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One queue file per sink. Returns 1 (one alert queued) for the caller's
/// count, whatever the number of sinks.
fn enqueue_all(layout: &Layout, sinks: &[String], alert: &Alert) -> Result<usize, AlertError> {
    let entry = Entry {
        enqueued_at: OffsetDateTime::now_utc(),
        alert: alert.clone(),
    };
    for s in sinks {
        layout.enqueue(s, &entry).map_err(|source| AlertError::Io {
            path: layout.queue(s),
            source,
        })?;
    }
    Ok(1)
}

enum Built {
    Alertmanager(AlertmanagerSink),
    Webhook(WebhookSink),
}

fn build(cfg: &AlertsConfig) -> Result<Vec<Built>, AlertError> {
    cfg.sinks
        .iter()
        .map(|s| match s {
            SinkConfig::Alertmanager(c) => {
                AlertmanagerSink::new(c, cfg.timeout, cfg.firing_for).map(Built::Alertmanager)
            }
            SinkConfig::Webhook(c) => WebhookSink::new(c, cfg.timeout).map(Built::Webhook),
        })
        .collect()
}
