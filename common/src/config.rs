//! Reading a daemon's config file: one lookup rule and one error type for
//! the agent (`/etc/backstop/agent.toml`) and the controller
//! (`/etc/backstop/controller.toml`).
//!
//! Why one: an SRE meets both files side by side, so a missing file, a
//! typo'd key and a bad value must read the same in both (the file, then
//! the key or field and the reason), and `--config` must mean the same
//! ("this file, which must exist") for both daemons.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

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
        field: String,
        reason: String,
    },
}

/// A config file's contents: every key optional (`Default` is an empty
/// file), and a check of the values after parsing.
pub trait ConfigFile: DeserializeOwned + Default {
    /// The first bad value: its field and why.
    fn check(&self) -> Result<(), (String, String)>;
}

/// `explicit` must exist; without it, `default_path` is read when it
/// exists, else the defaults.
pub fn load<T: ConfigFile>(explicit: Option<&Path>, default_path: &str) -> Result<T, ConfigError> {
    match explicit {
        Some(path) => read(path),
        None if Path::new(default_path).exists() => read(Path::new(default_path)),
        None => Ok(T::default()),
    }
}

pub fn read<T: ConfigFile>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parse and check; `path` only names the file in errors.
pub fn parse<T: ConfigFile>(text: &str, path: &Path) -> Result<T, ConfigError> {
    let cfg: T = toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    cfg.check()
        .map_err(|(field, reason)| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        })?;
    Ok(cfg)
}
