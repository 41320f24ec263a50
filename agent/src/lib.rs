//! backstop's host agent as a library: load the probes, track process
//! trees, fold what they count into feature windows. The `backstop-agent`
//! binary only parses flags and calls in here.

pub mod btf;
pub mod changes;
pub mod config;
pub mod datadir;
pub mod deploy;
pub mod doctor;
pub mod error;
pub mod fold;
pub mod host;
pub mod metrics;
pub mod outbox;
pub mod probes;
pub mod run;
pub mod shadow;
pub mod snapshot;
pub mod syscall_class;
pub mod tracefs;
pub mod track;
pub mod tree;
pub mod treestat;
pub mod watch;

pub use error::{AgentError, Result};
