//! backstop's controller as a library: the PKI, the store, the daemon that
//! agents connect to, and the local control channel the CLI uses. The
//! `backstop` binary only parses flags and calls in here.

pub mod alert;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod http;
pub mod learn;
pub mod metrics;
pub mod pki;
pub mod predict;
pub mod private;
pub mod report;
pub mod schema;
pub mod store;
