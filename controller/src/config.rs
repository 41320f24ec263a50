//! The controller's config file (TOML): where `backstop serve` listens,
//! where its data lives, and where its alerts go. It is read before
//! anything binds, so a typo is an exit-code-2 error naming the file and
//! the key, not a daemon that silently runs without its alerts. Unknown
//! keys are refused for the same reason. Command-line flags override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::alert::alertmanager::AlertmanagerConfig;
use crate::alert::webhook::WebhookConfig;

/// Read when `backstop serve` is given no `--config` and the file exists.
pub const DEFAULT_PATH: &str = "/etc/backstop/controller.toml";
/// Where agents connect when neither a flag nor the config says.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7870";
/// DATA when neither a flag, BACKSTOP_DATA nor the config says.
pub const DEFAULT_DATA: &str = "/var/lib/backstop";

/// The whole file. Every key is optional: an empty file is the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// QUIC address for agents (`--listen` wins).
    pub listen: Option<SocketAddr>,
    /// Data directory (`--data` / `BACKSTOP_DATA` win).
    pub data: Option<PathBuf>,
    /// Database URL (`--database` wins).
    pub database: Option<String>,
    /// Where `/metrics` is served over HTTP (`--http` wins); off if unset.
    pub http: Option<SocketAddr>,
    /// The bearer token's file, required off loopback (`--http-token-file` wins).
    pub http_token_file: Option<PathBuf>,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// `[alerts]`: the delivery policy and the sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// First retry delay; it doubles each failed attempt.
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// Cap of the retry delay.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// An alert still undelivered this long after it was raised is moved
    /// to DATA/alerts/dead/ and logged.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// Each HTTP request's time limit (connect, send, answer).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// A firing alert's endsAt is its start plus this, so Alertmanager keeps
    /// it firing (it would resolve an alert without endsAt after its
    /// resolve_timeout, 5 min by default) until a commit resolves it.
    #[serde(with = "duration")]
    pub firing_for: Duration,
    #[serde(rename = "sink")]
    pub sinks: Vec<SinkConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_mins(5),
            max_age: Duration::from_hours(24),
            timeout: Duration::from_secs(10),
            firing_for: Duration::from_hours(168),
            sinks: Vec::new(),
        }
    }
}

/// `[[alerts.sink]]`: the `type` key picks the sink; each has its own keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    Alertmanager(AlertmanagerConfig),
    Webhook(WebhookConfig),
}

impl SinkConfig {
    /// The sink's name: its queue directory's name and its log field.
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Alertmanager(c) => &c.name,
            SinkConfig::Webhook(c) => &c.name,
        }
    }
}

pub use backstop_common::config::ConfigError;
use backstop_common::config::{self, ConfigFile};

impl ControllerConfig {
    /// The config `backstop serve` uses: `explicit` must exist; without
    /// it, [`DEFAULT_PATH`] is read when it exists, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<ControllerConfig, ConfigError> {
        config::load(explicit, DEFAULT_PATH)
    }

    pub fn read(path: &Path) -> Result<ControllerConfig, ConfigError> {
        config::read(path)
    }

    /// Parse and check; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ControllerConfig, ConfigError> {
        config::parse(text, path)
    }
}

impl ConfigFile for ControllerConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let a = &self.alerts;
        let bad = |f: &str, r: &str| Err((f.to_string(), r.to_string()));
        if a.initial_backoff.is_zero() {
            return bad("alerts.initial_backoff", "must be more than 0");
        }
        if a.max_backoff < a.initial_backoff {
            return bad("alerts.max_backoff", "must be at least initial_backoff");
        }
        if a.timeout.is_zero() {
            return bad("alerts.timeout", "must be more than 0");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, s) in a.sinks.iter().enumerate() {
            let field = format!("alerts.sink[{i}].name");
            let name = s.name();
            // The name is a directory under DATA/alerts/queue/.
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err((field, format!("{name:?} must match [A-Za-z0-9_-]{{1,64}}")));
            }
            if !seen.insert(name) {
                return Err((field, format!("{name:?} is used by two sinks")));
            }
            let url = match s {
                SinkConfig::Alertmanager(c) => &c.url,
                SinkConfig::Webhook(c) => &c.url,
            };
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| (format!("alerts.sink[{i}].url"), format!("{url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err((
                    format!("alerts.sink[{i}].url"),
                    format!("{url:?}: only http and https"),
                ));
            }
        }
        Ok(())
    }
}

/// Durations as `"500ms"`, `"30s"`, `"5m"`, `"24h"` or `"7d"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{s:?} has no unit (ms, s, m, h, d)"))?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{s:?} does not start with a whole number"))?;
        let ms = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
        };
        n.checked_mul(ms)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("{s:?} is too long"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// The error as the CLI prints it: every source, one after another.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            let _ = write!(s, ": {c}");
            cur = c.source();
        }
        s
    }

    fn parse(text: &str) -> Result<ControllerConfig, ConfigError> {
        ControllerConfig::parse(text, Path::new("c.toml"))
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert!(c.listen.is_none() && c.alerts.sinks.is_empty());
        assert_eq!(c.alerts.max_age, Duration::from_hours(24));
    }

    #[test]
    fn unknown_keys_are_refused_by_name_at_every_level() {
        for (text, key) in [
            ("lisen = \"1.2.3.4:5\"", "lisen"),
            ("[alerts]\nmax_agee = \"1s\"", "max_agee"),
            (
                "[[alerts.sink]]\ntype = \"webhook\"\nname = \"w\"\nurl = \"http://x/\"\ntokn = \"t\"",
                "tokn",
            ),
            (
                "[[alerts.sink]]\ntype = \"alertmanager\"\nname = \"a\"\nurl = \"http://x/\"\nheaders = {}",
                "headers",
            ),
        ] {
            let e = chain(&parse(text).unwrap_err());
            assert!(e.contains(key) && e.contains("c.toml"), "{text:?}: {e}");
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field) in [
            ("[alerts]\ntimeout = \"0s\"", "alerts.timeout"),
            ("[alerts]\nmax_age = \"3 weeks\"", "max_age"),
            (
                "[[alerts.sink]]\ntype = \"webhook\"\nname = \"../x\"\nurl = \"http://x/\"",
                "alerts.sink[0].name",
            ),
            (
                "[[alerts.sink]]\ntype = \"webhook\"\nname = \"w\"\nurl = \"ftp://x/\"",
                "alerts.sink[0].url",
            ),
            ("[[alerts.sink]]\ntype = \"pager\"\nname = \"w\"", "pager"),
        ] {
            let e = chain(&parse(text).unwrap_err());
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }

    #[test]
    fn durations_read_as_an_sre_writes_them() {
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("5m"), Ok(Duration::from_mins(5)));
        assert_eq!(duration::parse("7d"), Ok(Duration::from_hours(168)));
        assert!(duration::parse("5").is_err() && duration::parse("m").is_err());
    }

    #[test]
    fn the_shipped_example_parses_and_names_both_sinks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/controller.toml");
        let c = ControllerConfig::read(&path).unwrap();
        let names: Vec<&str> = c.alerts.sinks.iter().map(SinkConfig::name).collect();
        assert_eq!(names, ["alertmanager", "ops-webhook"]);
        assert!(matches!(c.alerts.sinks[0], SinkConfig::Alertmanager(_)));
        assert!(matches!(c.alerts.sinks[1], SinkConfig::Webhook(_)));
    }

    #[test]
    fn an_explicit_config_that_is_missing_is_an_error_naming_it() {
        let e = ControllerConfig::load(Some(Path::new("/nonexistent/backstop.toml"))).unwrap_err();
        let e = chain(&e);
        assert!(
            e.contains("/nonexistent/backstop.toml") && e.contains("No such file"),
            "{e}"
        );
    }
}
