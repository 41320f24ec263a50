//! The daemon `backstop serve` runs, one file per side:
//! - `start.rs`: start-up and shutdown, in order (config, store, PKI, then
//!   the QUIC endpoint and the control socket);
//! - `agents.rs`: the agents' side, one task per QUIC connection;
//! - `control.rs`: the CLI's side, the Unix socket DATA/control.sock;
//! - `identity.rs`: the checks that make a certificate speak for one host;
//! - `state.rs`: what both sides share ([`Daemon`]).

mod abandon;
pub mod agents;
mod alerting;
pub mod control;
pub mod decider;
pub mod deploy;
pub mod history;
pub mod identity;
#[cfg(test)]
mod invariance_tests;
pub mod memory;
pub mod perf;

pub mod reconcile;
pub mod record;
pub mod resources;
pub mod score_cache;
pub mod scoring;
pub mod service;
mod shadow_wait;
pub mod start;
mod state;
mod turns;

pub use state::{Daemon, ExecError, HOST_GONE_GRACE};
