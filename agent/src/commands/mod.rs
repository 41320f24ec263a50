//! One file per verb, as youki lays out its CLI: each holds the verb's
//! flags (clap) and turns them into one call into the `backstop_agent`
//! library. They live in the binary crate because flags are the binary's
//! business; the library never sees clap. Each returns the process's exit
//! code, or the library's typed error for `main` to print and map with
//! [`AgentError::exit_code`](backstop_agent::AgentError::exit_code).

pub mod deploy;
pub mod doctor;
pub mod room;
pub mod run;
pub mod shadow;
pub mod shadow_exec;
pub mod snapshot;
pub mod watch;

use std::path::PathBuf;

/// What a verb's call ends in: an exit code, or an error `main` reports.
pub type Outcome = Result<i32, backstop_agent::AgentError>;

/// Where a subcommand keeps its state, and how it prints.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Data directory.
    #[arg(
        long,
        env = "BACKSTOP_DATA",
        default_value = "/var/lib/backstop",
        global = true
    )]
    pub data: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

pub use backstop_agent::config::{DEFAULT_DATA, DEFAULT_SERVER_NAME};

/// Print a config file error with its cause (toml's names the key and
/// line); exit code 2, as for anything that cannot run here.
pub fn config_error(e: &backstop_agent::config::ConfigError) -> i32 {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    eprintln!("backstop-agent: {msg}");
    2
}
