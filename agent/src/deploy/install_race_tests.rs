//! The race between a hard failure and the controller's session going
//! down: whatever order the two arrive in, `decide` gives exactly one
//! rollback, and once the local policy took over, a late order from the
//! controller finds the channel closed (so it cannot start a second one).
//! Deterministic: the states are set before `decide` runs, or flipped
//! while it waits.

use tokio::sync::mpsc::unbounded_channel;
use tokio::sync::watch;

use super::{Orders, decide};
use crate::deploy::Order;

const HARD: &str = "step install exited 1";

fn rollback(reason: &str) -> Order {
    Order::Rollback {
        reason: reason.into(),
    }
}

#[tokio::test]
async fn a_hard_failure_with_the_session_already_down_rolls_back_once_locally() {
    let (otx, orx) = unbounded_channel();
    let (ctx, crx) = watch::channel(true);
    // The controller's own rollback is queued and the session drops at
    // the same instant the step fails.
    otx.send(rollback("controller: live step failed")).unwrap();
    ctx.send_replace(false);
    let mut orders = Orders {
        rx: Some(orx),
        connected: Some(crx),
        decided_locally: false,
    };
    let order = decide(&mut orders, Some(HARD.into())).await.unwrap();
    assert_eq!(order, rollback(HARD));
    assert!(orders.decided_locally);
    assert!(orders.rx.is_none());
    // The controller's order, redelivered when it returns, is refused.
    assert!(otx.send(rollback("controller again")).is_err());
}

#[tokio::test]
async fn a_session_lost_while_waiting_rolls_back_once_locally() {
    let (otx, orx) = unbounded_channel();
    let (ctx, crx) = watch::channel(true);
    let mut orders = Orders {
        rx: Some(orx),
        connected: Some(crx),
        decided_locally: false,
    };
    let drop_session = tokio::spawn(async move {
        tokio::task::yield_now().await;
        ctx.send_replace(false);
        ctx
    });
    let order = decide(&mut orders, Some(HARD.into())).await.unwrap();
    let _ctx = drop_session.await.unwrap();
    assert_eq!(order, rollback(HARD));
    assert!(orders.decided_locally);
    assert!(otx.send(rollback("late")).is_err());
}

#[tokio::test]
async fn the_controllers_order_before_the_drop_is_the_one_rollback() {
    let (otx, orx) = unbounded_channel();
    let (ctx, crx) = watch::channel(true);
    otx.send(rollback("controller: live step failed")).unwrap();
    let mut orders = Orders {
        rx: Some(orx),
        connected: Some(crx),
        decided_locally: false,
    };
    let order = decide(&mut orders, Some(HARD.into())).await.unwrap();
    // Dropped after the order was taken: nothing more happens here.
    ctx.send_replace(false);
    assert_eq!(order, rollback("controller: live step failed"));
    assert!(!orders.decided_locally);
}
