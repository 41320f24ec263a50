//! The control channel between the `backstop` CLI and its daemon: a Unix
//! socket (DATA/control.sock, 0600) carrying JSON lines. These types are
//! the whole protocol; the daemon and the CLI both build and read them, so
//! neither writes JSON by hand.
//!
//! The line protocol, one connection per request:
//! 1. the CLI writes one [`Request`] line (`{"op":...}`);
//! 2. the daemon answers with [`Reply`] lines (`{"reply":...}`):
//!    - `exec`: `started` at once, then zero or more `progress` lines, then
//!      one final `ended` (or `error`);
//!    - `ping`: `pong`; `revoked`: `revoked` with whether a session closed;
//!    - a request that does not parse, or cannot be done: `error`.
//!
//! A reply is final unless it is `started` or `progress`
//! ([`Reply::is_final`]); the daemon closes the connection after it.
//! Fields added later carry serde defaults, so an older reader still
//! reads a newer line.

use serde::{Deserialize, Serialize};

use crate::window::DEFAULT_WINDOW_MS;

/// What the CLI asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run `argv` on `host` as a tracked deployment.
    Exec {
        host: String,
        argv: Vec<String>,
        #[serde(default = "default_window_ms")]
        window_ms: u32,
    },
    Ping,
    /// Sent by `backstop revoke`: close `host`'s live session if its
    /// certificate is no longer good.
    Revoked {
        host: String,
    },
    /// `backstop deploy`: answered by `Started`, then (with `wait`) one
    /// `Event` per deployment event until the final one.
    Deploy(DeployRequest),
    /// `backstop cancel ID`: order the deployment rolled back; answered by
    /// `Cancelled` or `Error`.
    Cancel {
        id: String,
        /// `--force`: mark it abandoned at once, freeing its root, whether
        /// or not its agent is there to roll it back.
        #[serde(default)]
        force: bool,
    },
}

fn default_window_ms() -> u32 {
    DEFAULT_WINDOW_MS
}

/// What the daemon answers, one per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The deployment exists; more lines follow.
    Started {
        deployment: String,
    },
    /// Where a deployment is now; several per request, more lines follow.
    Progress(Progress),
    /// How the deployment ended: the last line.
    Ended {
        deployment: String,
        end: ExecEnd,
    },
    Pong,
    /// Whether `revoked` closed a live session.
    Revoked {
        closed: bool,
    },
    /// The request failed: the last line.
    Error {
        message: String,
        /// The manifest field at fault, when the error is a refused
        /// manifest (the CLI exits 2 then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// One event of a deployment being watched (`deploy --wait`).
    Event(DeployLine),
    /// A slow watcher missed this many events (the daemon never waits for
    /// a watcher); `backstop show` has them all.
    Missed {
        count: u64,
    },
    /// `backstop cancel`: the rollback order is sent (with `--force`:
    /// the deployment is abandoned, and `ordered` says whether its agent
    /// was there to be told to roll back).
    Cancelled {
        id: String,
        #[serde(default)]
        abandoned: bool,
        #[serde(default)]
        ordered: bool,
    },
}

/// `backstop deploy`'s request. The manifest travels as its TOML text and
/// is validated by the daemon again: it acts only on a manifest that passed
/// every check, whoever wrote the request. `base` is the directory relative
/// artifact paths are read against (the manifest file's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    pub host: String,
    pub manifest: String,
    pub base: Option<std::path::PathBuf>,
    /// `None`: the length the daemon's model was trained on, else
    /// [`DEFAULT_WINDOW_MS`].
    #[serde(default)]
    pub window_ms: Option<u32>,
    pub dry_run: bool,
    pub wait: bool,
}

/// One stored event of a deployment, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployLine {
    pub deployment: String,
    pub seq: u64,
    /// `DeployEvent::kind`, repeated so a script needs no knowledge of the
    /// event's shape to follow the steps.
    pub kind: String,
    /// The deployment's last event: nothing follows.
    #[serde(rename = "final")]
    pub last: bool,
    pub event: crate::deploy::DeployEvent,
}

/// How an `exec` deployment ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecEnd {
    /// The command ran and exited.
    Finished {
        exit_code: i32,
        windows: u64,
        lost_events: u64,
    },
    /// The command could not be started.
    Failed { reason: String },
    /// The host went away for good before the deployment ended; it may
    /// still end if the host comes back.
    Interrupted { reason: String },
}

/// One progress line of a running deployment: what `deploy --wait` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub deployment: String,
    /// The step running now, as the manifest names it.
    pub step: Option<String>,
    /// Since the deployment started.
    pub elapsed_ms: u64,
    /// The model's probability of failure, per stream, from the last window.
    pub p_failure_live: Option<f64>,
    pub p_failure_shadow: Option<f64>,
    /// The decision threshold those are held against.
    pub threshold: Option<f64>,
    /// The manifest's health probes, latest result each.
    pub probes: Vec<ProbeStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeStatus {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Request {
    /// The request as one line, newline included.
    pub fn line(&self) -> String {
        to_line(self)
    }
}

impl Reply {
    /// The reply as one line, newline included.
    pub fn line(&self) -> String {
        to_line(self)
    }

    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error {
            message: message.into(),
            field: None,
        }
    }

    /// No line follows this one.
    pub fn is_final(&self) -> bool {
        match self {
            Reply::Started { .. } | Reply::Progress(_) | Reply::Missed { .. } => false,
            Reply::Event(line) => line.last,
            _ => true,
        }
    }
}

fn to_line(v: &impl Serialize) -> String {
    // Plain enums of strings and numbers: serialising cannot fail.
    let mut s = serde_json::to_string(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_on_the_socket() {
        let req = Request::Exec {
            host: "web-1".into(),
            argv: vec!["true".into()],
            window_ms: 100,
        };
        assert_eq!(
            req.line(),
            "{\"op\":\"exec\",\"host\":\"web-1\",\"argv\":[\"true\"],\"window_ms\":100}\n"
        );
        let by_hand: Request =
            serde_json::from_str(r#"{"op":"exec","host":"h","argv":["a"]}"#).unwrap();
        assert!(matches!(
            by_hand,
            Request::Exec {
                window_ms: DEFAULT_WINDOW_MS,
                ..
            }
        ));
        assert_eq!(Request::Ping.line(), "{\"op\":\"ping\"}\n");
        let ended = Reply::Ended {
            deployment: "d1".into(),
            end: ExecEnd::Finished {
                exit_code: 3,
                windows: 2,
                lost_events: 0,
            },
        };
        assert_eq!(
            ended.line(),
            "{\"reply\":\"ended\",\"deployment\":\"d1\",\"end\":{\"finished\":{\"exit_code\":3,\"windows\":2,\"lost_events\":0}}}\n"
        );
        assert_eq!(Reply::Pong.line(), "{\"reply\":\"pong\"}\n");
    }

    #[test]
    fn progress_streams_until_a_final_reply() {
        let lines = [
            Reply::Started {
                deployment: "d1".into(),
            },
            Reply::Progress(Progress {
                deployment: "d1".into(),
                step: Some("install".into()),
                elapsed_ms: 1500,
                p_failure_live: Some(0.2),
                threshold: Some(0.9),
                ..Progress::default()
            }),
            Reply::error("the daemon stopped"),
        ];
        for (i, r) in lines.iter().enumerate() {
            let back: Reply = serde_json::from_str(r.line().trim_end()).unwrap();
            assert_eq!(&back, r);
            assert_eq!(r.is_final(), i == lines.len() - 1, "{r:?}");
        }
        // A progress line from a newer daemon, with a field this build
        // lacks and without ones it has, still reads.
        let newer: Reply = serde_json::from_str(
            r#"{"reply":"progress","deployment":"d1","elapsed_ms":7,"rollback_eta_ms":3}"#,
        )
        .unwrap();
        assert!(matches!(
            newer,
            Reply::Progress(Progress { elapsed_ms: 7, .. })
        ));
    }
}
