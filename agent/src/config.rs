//! The agent's config file (TOML), read by `backstop-agent run` and
//! `doctor`: the controller to reach, this host's identity, the data
//! directory. It is read before anything is created or bound, so a typo
//! stops the agent with exit code 2 naming the file and the key instead of
//! an agent quietly running with defaults. Unknown keys are refused for the
//! same reason. Command-line flags override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Read when no `--config` is given and the file exists.
pub const DEFAULT_PATH: &str = "/etc/backstop/agent.toml";
/// DATA when neither a flag, BACKSTOP_DATA nor the config says.
pub const DEFAULT_DATA: &str = "/var/lib/backstop";
/// The name on the controller's certificate (`backstop init` makes it).
pub const DEFAULT_SERVER_NAME: &str = "backstop-controller";

/// The whole file. Every key is optional: an empty file is the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The controller's QUIC address (`--controller` wins).
    pub controller: Option<SocketAddr>,
    /// This host's bundle from `backstop init` / `backstop enroll` (`--bundle` wins).
    pub bundle: Option<PathBuf>,
    /// The name on the controller's certificate (`--server-name` wins).
    pub server_name: Option<String>,
    /// Data directory (`--data` / `BACKSTOP_DATA` win).
    pub data: Option<PathBuf>,
    /// The on-disk outbox's cap in bytes (`--outbox-max-bytes` wins).
    pub outbox_max_bytes: Option<u64>,
    /// Forward the probes' aya-log diagnostics to the log (`--probe-log`).
    pub probe_log: Option<bool>,
}

pub use backstop_common::config::ConfigError;
use backstop_common::config::{self, ConfigFile};

impl AgentConfig {
    /// `explicit` must exist; without it, [`DEFAULT_PATH`] is read when it
    /// exists, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        config::load(explicit, DEFAULT_PATH)
    }

    pub fn read(path: &Path) -> Result<AgentConfig, ConfigError> {
        config::read(path)
    }

    /// Parse and check; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
        config::parse(text, path)
    }
}

impl ConfigFile for AgentConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let invalid = |field: &str, reason: &str| Err((field.to_string(), reason.to_string()));
        if self.server_name.as_deref().is_some_and(str::is_empty) {
            return invalid("server_name", "must not be empty");
        }
        if self.outbox_max_bytes == Some(0) {
            return invalid("outbox_max_bytes", "must be more than 0");
        }
        for (field, p) in [("bundle", &self.bundle), ("data", &self.data)] {
            if p.as_ref().is_some_and(|p| !p.is_absolute()) {
                return invalid(
                    field,
                    "must be an absolute path (the unit's working directory is /)",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("a.toml"))
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert!(c.controller.is_none() && c.data.is_none());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = parse("controler = \"1.2.3.4:5\"").unwrap_err();
        assert!(format!("{e}: {}", std::error::Error::source(&e).unwrap()).contains("controler"));
        for (text, field) in [
            ("server_name = \"\"", "server_name"),
            ("outbox_max_bytes = 0", "outbox_max_bytes"),
            ("data = \"var/lib\"", "data"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("a.toml"), "{text}: {e}");
        }
    }
}
