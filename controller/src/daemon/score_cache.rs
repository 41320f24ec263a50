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

/// A multiply-rotate hash of the features' bits, not SipHash: every
/// decision keys every window of its deployment (4800 in ten minutes of
/// 250 ms windows), and SipHash's resistance buys nothing here (stop 22
/// thought it most of a kept decision's time; measured, the store's read
/// was, and `windows_since` has an index now). No adversary gains by a
/// collision: the store keeps the first window of a
/// seq and never replaces it, so a kept prefix's features cannot change
/// under the same seq; the hash only guards callers that feed windows
/// by hand.
fn key(w: &Window) -> Key {
    let h = (w.features.iter()).fold(0xcbf2_9ce4_8422_2325_u64, |h, f| {
        (h.rotate_left(5) ^ f.to_bits()).wrapping_mul(0x517c_c1b7_2722_0a95)
    });
    (w.seq, h)
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

/// What the daemon keeps of its deployments between their decisions:
/// each one's [`Cache`], with or without a model (the trend rules read
/// the windows and the evidence the events too).
#[derive(Default)]
pub struct Kept(std::sync::Mutex<Caches>);

impl Kept {
    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        (self.0.lock()).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Deployment `id`'s windows, events and scores as its last decision
    /// left them, taken out while it decides (an empty cache the first
    /// time).
    pub fn take(&self, id: &str) -> Cache {
        self.lock().take(id)
    }

    /// Give `id`'s cache back (see [`Caches::put`] for the bound).
    pub fn put(&self, id: &str, cache: Cache) {
        self.lock().put(id, cache);
    }

    /// Drop deployment `id`'s cache: it ended.
    pub fn forget(&self, id: &str) {
        self.lock().forget(id);
    }

    /// How many deployments' caches are kept.
    #[cfg(test)]
    fn deployments(&self) -> usize {
        self.lock().map.len()
    }

    #[cfg(test)]
    fn holds(&self, id: &str) -> bool {
        self.lock().map.contains_key(id)
    }
}

/// The caches of the deployments being decided.
#[derive(Default)]
struct Caches {
    map: HashMap<String, Cache>,
    clock: u64,
}

impl Caches {
    /// Deployment `id`'s cache, taken out while it is scored (an empty one
    /// the first time).
    fn take(&mut self, id: &str) -> Cache {
        self.map.remove(id).unwrap_or_default()
    }

    /// Give `id`'s cache back, dropping the least recently used beyond
    /// [`KEPT`] deployments or [`KEPT_WINDOWS`] windows (never the one
    /// given back).
    fn put(&mut self, id: &str, mut c: Cache) {
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

    fn forget(&mut self, id: &str) {
        self.map.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_common::window::Stream;

    /// A window's key changes with any one feature, its seq, or the order
    /// of two values, and not otherwise.
    #[test]
    fn a_key_changes_with_any_feature_and_the_seq() {
        let mut w = Window::new(Stream::Live, 7, 0, 1);
        w.features = (0..50).map(|i| f64::from(i) * 1.5).collect();
        let same = w.clone();
        assert_eq!(key(&w), key(&same));
        for i in 0..w.features.len() {
            let mut v = w.clone();
            v.features[i] += 1e-9 * (1.0 + v.features[i]);
            assert_ne!(key(&w), key(&v), "feature {i}");
        }
        let mut swapped = w.clone();
        swapped.features.swap(3, 4);
        assert_ne!(key(&w).1, key(&swapped).1, "order counts");
        let mut later = w.clone();
        later.seq = 8;
        assert_ne!(key(&w), key(&later));
    }

    #[test]
    fn kept_scores_are_bounded_and_dropped_when_a_deployment_ends() {
        let slot = Kept::default();
        for i in 0..KEPT + 10 {
            let id = format!("d{i}");
            let c = slot.take(&id);
            slot.put(&id, c);
        }
        let kept = KEPT;
        assert_eq!(slot.deployments(), kept);
        // The least recently used went first.
        assert!(!slot.holds("d9") && slot.holds("d10"));
        assert!(slot.holds(&format!("d{}", kept + 9)));
        slot.forget("d10");
        assert!(!slot.holds("d10"));
        assert_eq!(slot.deployments(), kept - 1);
        // Bounded in windows too: the most windows held at once is
        // KEPT_WINDOWS, the deployment given back is never the one dropped.
        let big = || Cache {
            stored: vec![Window::new(Stream::Live, 1, 0, 1); KEPT_WINDOWS / 2],
            ..Cache::default()
        };
        slot.put("big1", big());
        slot.put("big2", big());
        assert!(slot.holds("big1") && slot.holds("big2"));
        assert_eq!(slot.deployments(), kept, "at the bound, not over it");
        // Over it: the least recently used go first (the small ones, then
        // big1) until it holds.
        slot.put("big3", big());
        assert!(!slot.holds("big1") && slot.holds("big2"));
        assert_eq!(slot.deployments(), 2);
        let mut alone = big();
        alone.stored.extend(big().stored);
        alone.stored.push(Window::new(Stream::Live, 2, 0, 1));
        slot.put("huge", alone);
        assert!(slot.holds("huge"), "kept though over the bound alone");
        assert_eq!(slot.deployments(), 1);
    }
}
