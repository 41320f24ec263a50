//! The turns a deployment's decisions take, and how window batches share
//! one.
//!
//! One decision at a time per deployment: two triggers never both store a
//! decision, while other deployments decide beside it (one lock for all
//! of them let a long stream's scoring hold up every other deployment's
//! rollback).
//!
//! Why window batches share a turn: each batch the agent sends is a
//! trigger, and in 250 ms windows a deployment sends about eight a second
//! (live and shadow), and with a memory limit a sample a window besides
//! (samples queue the same way). A decision reads everything stored when
//! it starts, so a trigger that arrives while another waits for its turn
//! adds nothing but a second wait: it is dropped. A trigger that arrives once
//! the waiting decision has started reading queues the next one, so no
//! stored window goes undecided.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};

#[derive(Default)]
pub struct Turns {
    serial: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Deployments with a queued decision (after windows or a sample)
    /// waiting for its turn.
    queued: Mutex<HashSet<String>>,
}

impl Turns {
    /// The lock deployment `id`'s decisions take turns on. A lock nobody
    /// holds is dropped from the map at the next call.
    pub fn deciding(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(l) = map.get(id).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id.to_string(), Arc::downgrade(&l));
        l
    }

    /// A batch of `id`'s windows or a sample was stored: true when a
    /// decision must be queued for it, false when one already waits for
    /// its turn and will read it.
    pub fn queue(&self, id: &str) -> bool {
        let mut q = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        q.insert(id.to_string())
    }

    /// The queued decision of `id` has its turn and reads what is stored
    /// from now: a batch stored after this queues another.
    pub fn started(&self, id: &str) {
        let mut q = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        q.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One deployment's decisions take turns; another's do not wait.
    #[tokio::test]
    async fn decisions_take_turns_per_deployment_not_across_them() {
        let turns = Turns::default();
        let a = turns.deciding("a");
        let held = a.lock().await;
        assert!(
            turns.deciding("a").try_lock().is_err(),
            "a's second trigger waits"
        );
        assert!(turns.deciding("b").try_lock().is_ok(), "b decides beside a");
        drop(held);
        assert!(turns.deciding("a").try_lock().is_ok());
        // Locks nobody holds do not pile up.
        drop(a);
        for i in 0..100 {
            drop(turns.deciding(&format!("d{i}")));
        }
        let _c = turns.deciding("c");
        assert_eq!(turns.serial.lock().unwrap().len(), 1);
    }

    /// Batches stored while a decision waits share it; a batch stored
    /// once it started queues the next; deployments queue apart.
    #[test]
    fn batches_share_a_waiting_decision_and_queue_the_next_once_it_started() {
        let turns = Turns::default();
        assert!(turns.queue("a"), "the first batch queues a decision");
        for _ in 0..10 {
            assert!(!turns.queue("a"), "later batches share it");
        }
        assert!(turns.queue("b"), "b's batch queues its own");
        turns.started("a");
        assert!(turns.queue("a"), "a batch after the start queues the next");
        assert!(!turns.queue("a"));
        turns.started("a");
        turns.started("b");
        assert!(turns.queued.lock().unwrap().is_empty(), "nothing left over");
    }
}
