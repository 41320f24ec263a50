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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message names the key (an unknown one included) and the line.
    #[error("config file {}", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config file {}: {field}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
}

impl AgentConfig {
    /// `explicit` must exist; without it, [`DEFAULT_PATH`] is read when it
    /// exists, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        match explicit {
            Some(path) => Self::read(path),
            None if Path::new(DEFAULT_PATH).exists() => Self::read(Path::new(DEFAULT_PATH)),
            None => Ok(AgentConfig::default()),
        }
    }

    pub fn read(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse and check; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |field, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason: reason.to_string(),
        };
        if cfg.server_name.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("server_name", "must not be empty"));
        }
        if cfg.outbox_max_bytes == Some(0) {
            return Err(invalid("outbox_max_bytes", "must be more than 0"));
        }
        for (field, p) in [("bundle", &cfg.bundle), ("data", &cfg.data)] {
            if p.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(invalid(
                    field,
                    "must be an absolute path (the unit's working directory is /)",
                ));
            }
        }
        Ok(cfg)
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
