//! Why a deployment's windows and scores are kept between its decisions:
//! the daemon reads every stored window and scores it again before each
//! decision (see `scoring.rs` for why). In the model's 250 ms windows a
//! ten-minute deployment has 2400 live and 2400 shadow windows: about
//! 30 ms to read them from the store and 130 ms through the net, four
//! decisions a second or more: more than half a core for one deployment.
//!
//! Windows are stored once and a running deployment's are never removed,
//! so the windows read before are kept and only rows stored since are
//! read (`Store::windows_since`). The same holds for its events, which
//! grow as fast (a memory sample with every window): only those stored
//! since are read (`Store::deploy_events_since`).
//!
//! A window's P(failure) is made of its stream's windows up to it alone
//! (the first window and the K before it), and an alarm's drivers of the
//! live stream up to it and the threshold in force. So the scores of a
//! prefix the last decision scored, unchanged (the same seqs with the same
//! features), are kept, and only windows past it go through the net. A
//! window that arrives late (the outbox redelivers) changes the prefix
//! from its position on, and everything from there is scored again: the
//! evidence is the same as scoring afresh, whatever the arrival order.
//!
//! The cache is the deciding deployment's alone (its decisions take turns,
//! `turns.rs`), is dropped when the deployment ends, and at
//! most [`KEPT`] deployments are kept, the least recently scored dropped
//! first (a decision still scoring when its deployment's final event
//! arrives puts its cache back after the drop; the bound is what removes
//! that one).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use backstop_common::deploy::DeployEvent;
use backstop_common::window::Window;

use crate::predict::model::{Model, ModelError};
use crate::store::{Store, StoreError};

/// Deployments whose windows and scores are kept at once.
pub const KEPT: usize = 64;
/// Windows and events kept across deployments at most (about 50 MB):
/// beyond it the least recently decided deployments are dropped first.
pub const KEPT_WINDOWS: usize = 100_000;

/// A window's identity for the cache: its seq and a hash of its features.
type Key = (u64, u64);

fn key(w: &Window) -> Key {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &w.features {
        f.to_bits().hash(&mut h);
    }
    (w.seq, h.finish())
}

/// One stream's P(failure), per window in seq order, with the windows
/// they were scored from.
#[derive(Debug, Default)]
pub struct StreamScores {
    keys: Vec<Key>,
    p: Vec<f64>,
}

impl StreamScores {
    /// P(failure) of every window of `ws` (ordered, once each; `rows` their
    /// features): the kept scores of the unchanged prefix, the net's for
    /// the rest. Returns how many windows kept their score.
    pub(super) fn update(
        &mut self,
        model: &Model,
        ws: &[&Window],
        rows: &[Vec<f64>],
    ) -> Result<usize, ModelError> {
        let keys: Vec<Key> = ws.iter().map(|w| key(w)).collect();
        let kept = common_prefix(&self.keys, &keys);
        let fresh = model.predict_from(rows, kept)?;
        self.p.truncate(kept);
        self.p.extend(fresh);
        self.keys = keys;
        Ok(kept)
    }

    pub fn p(&self) -> &[f64] {
        &self.p
    }
}

fn common_prefix(a: &[Key], b: &[Key]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What one deployment's last decision leaves for its next: the windows
/// and events it read and the scores it made of them.
#[derive(Debug, Default)]
pub struct Cache {
    /// The deployment's stored windows, in the order they were stored.
    pub(super) stored: Vec<Window>,
    /// The last store row read into `stored`.
    after: i64,
    /// The deployment's events in seq order, and their seqs.
    events: Vec<DeployEvent>,
    seqs: Vec<u64>,
    /// The last store row read into `events`.
    events_after: i64,
    pub(super) scores: Scores,
    /// When it was last used, by [`Caches`]' clock.
    used: u64,
}

impl Cache {
    /// Read the windows stored since the last read.
    pub async fn refresh(&mut self, store: &Store, id: &str) -> Result<(), StoreError> {
        let (new, after) = store.windows_since(id, self.after).await?;
        self.stored.extend(new);
        self.after = after;
        Ok(())
    }

    /// Read the events stored since the last read, each into its place
    /// by seq (a late one from the outbox lands where it belongs).
    pub async fn refresh_events(&mut self, store: &Store, id: &str) -> Result<(), StoreError> {
        let (new, after) = store.deploy_events_since(id, self.events_after).await?;
        for row in new {
            let at = self.seqs.partition_point(|&s| s < row.seq);
            if self.seqs.get(at) == Some(&row.seq) {
                continue;
            }
            self.seqs.insert(at, row.seq);
            self.events.insert(at, row.event);
        }
        self.events_after = after;
        Ok(())
    }

    /// The deployment's events read so far, in seq order.
    pub fn events(&self) -> &[DeployEvent] {
        &self.events
    }

    /// The windows read so far (in the order they were stored), and the
    /// scores made of them, which `scoring::score_cached` keeps.
    pub fn parts(&mut self) -> (&[Window], &mut Scores) {
        (&self.stored, &mut self.scores)
    }
}

/// The scores of one deployment's windows, kept for its next scoring.
#[derive(Debug, Default)]
pub struct Scores {
    pub(super) live: StreamScores,
    pub(super) shadow: StreamScores,
    /// Drivers of alarming live windows, by position, for the threshold
    /// they were explained against; valid below the live stream's kept
    /// prefix.
    pub(super) drivers: HashMap<usize, Vec<String>>,
    drivers_threshold: Option<f64>,
}

impl Scores {
    /// Forget the drivers of windows from `kept` on, and all of them when
    /// the threshold in force changed.
    pub(super) fn keep_drivers(&mut self, kept: usize, threshold: f64) {
        if self.drivers_threshold != Some(threshold) {
            self.drivers.clear();
            self.drivers_threshold = Some(threshold);
        }
        self.drivers.retain(|&t, _| t < kept);
    }
}

/// The kept scores of the deployments being decided.
#[derive(Default)]
pub(super) struct Caches {
    map: HashMap<String, Cache>,
    clock: u64,
}

impl Caches {
    /// Deployment `id`'s cache, taken out while it is scored (an empty one
    /// the first time).
    pub fn take(&mut self, id: &str) -> Cache {
        self.map.remove(id).unwrap_or_default()
    }

    /// Give `id`'s cache back, dropping the least recently used beyond
    /// [`KEPT`] deployments or [`KEPT_WINDOWS`] windows (never the one
    /// given back).
    pub fn put(&mut self, id: &str, mut c: Cache) {
        self.clock += 1;
        c.used = self.clock;
        self.map.insert(id.to_string(), c);
        let windows = |m: &HashMap<String, Cache>| {
            (m.values())
                .map(|c| c.stored.len() + c.events.len())
                .sum::<usize>()
        };
        while self.map.len() > KEPT || (self.map.len() > 1 && windows(&self.map) > KEPT_WINDOWS) {
            let Some(oldest) = (self.map.iter())
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.map.remove(&oldest);
        }
    }

    pub fn forget(&mut self, id: &str) {
        self.map.remove(id);
    }

    #[cfg(test)]
    pub fn holds(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}
