//! What the controller sends during a session, acted on: acknowledgements
//! trim the outbox, `exec` and `deploy` start work, a decision reaches
//! the deployment it names. Kept apart from `run.rs`, which owns the
//! session itself (connect, send, reconnect).

use std::time::Duration;

use backstop_common::wire::ControllerMsg;

use super::run_deploy;
use super::{OutboxHandle, RunOptions, start_deployment};
use crate::track::SharedProbes;

/// Act on one message of the controller's.
pub(super) async fn on_message(
    msg: ControllerMsg,
    opts: &RunOptions,
    outbox: &OutboxHandle,
    probes: &SharedProbes,
    running: &run_deploy::Running,
) {
    match msg {
        ControllerMsg::Ack {
            deployment,
            through_seq,
            finished,
        } => {
            outbox
                .with(move |s| s.ack(&deployment, through_seq, finished))
                .await;
        }
        ControllerMsg::Exec {
            deployment,
            argv,
            window_ms,
        } => start_deployment(probes.clone(), outbox.clone(), deployment, argv, window_ms),
        ControllerMsg::Deploy {
            deployment,
            manifest,
            window_ms,
            dry_run,
        } => {
            // A dry run needs little of the agent: the controller orders
            // a commit whatever it would have decided, and the one refusal
            // the agent makes on its own (the room check) is only reported.
            let ctx = crate::deploy::Context {
                probes: probes.clone(),
                data: opts.data.clone(),
                window: Duration::from_millis(u64::from(window_ms.max(10))),
            };
            run_deploy::start(
                ctx,
                outbox.clone(),
                running.clone(),
                deployment,
                &manifest,
                dry_run,
            );
        }
        ControllerMsg::Decision { deployment, order } => {
            if !running.order(&deployment, order) {
                tracing::warn!(
                    deployment,
                    "an order for a deployment this agent does not run"
                );
            }
        }
        ControllerMsg::Welcome { .. } => {}
    }
}

/// Marks the session down when dropped.
pub(super) struct SessionDown<'a>(pub(super) &'a run_deploy::Running);

impl Drop for SessionDown<'_> {
    fn drop(&mut self) {
        self.0.session(false);
    }
}
