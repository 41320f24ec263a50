//! The agent <-> controller protocol: plain, versioned messages, postcard
//! encoded, each in a length-prefixed frame.
//!
//! Why postcard: its 1.x wire format is frozen and documented, and bincode's
//! last release is a `compile_error!` (RUSTSEC-2025-0141). Why a length
//! prefix: a reader knows a frame's size before it allocates, so an
//! oversized or truncated frame is refused without reading it.
//!
//! Compatibility rule: a change that an older peer cannot decode is a new
//! [`PROTOCOL_VERSION`]. The first frame of a connection (the agent's
//! [`AgentMsg::Hello`]) carries the version, and the controller refuses
//! versions it does not speak.

use serde::{Deserialize, Serialize};

use crate::window::Window;

// 2: AgentMsg::Dropped.
// 3: ControllerMsg::Deploy / Decision, AgentMsg::Deployment.
// 4: DeployEvent::Baseline, Manifest monitor.baseline_samples.
// 5: DeployEvent::LiveMemory / Service, Manifest monitor.memory_limit_mb /
//    service_cgroup.
// 6: Window::host (feature schema v3 keeps the host's levels apart).
// 7: Manifest policy.guards.exhaustion, ProbeResult::window,
//    DeployEvent::ShadowFailed.
// 8: DeployEvent::WouldRefuse (a dry run's room check).
pub const PROTOCOL_VERSION: u32 = 8;

/// Frames larger than this are refused before they are read. A batch of
/// windows is small (a window is ~400 bytes); the limit only bounds memory.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// Facts an agent reports about its host when it connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub kernel: String,
    pub os: String,
    pub agent_version: String,
}

/// Agent to controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// First frame of every connection.
    Hello {
        protocol: u32,
        facts: HostFacts,
        /// Windows the agent dropped since it started because its on-disk
        /// buffer was full (oldest first). Never hidden.
        dropped_windows: u64,
    },
    /// Windows of one deployment, in seq order. Redelivery after a
    /// reconnect is normal; the controller stores each (stream, seq) once.
    Windows {
        deployment: String,
        windows: Vec<Window>,
    },
    /// The deployment's command has exited; every window before this frame
    /// has been sent.
    Finished {
        deployment: String,
        exit_code: i32,
        windows: u64,
        lost_events: u64,
    },
    /// The deployment's command could not be started.
    Failed { deployment: String, reason: String },
    /// Lifecycle records of a deployment's tree (exec, exit, OOM kill),
    /// sent before the window they fall in.
    Events {
        deployment: String,
        events: Vec<ProcEvent>,
    },
    /// The agent's count of dropped windows went up since its Hello (its
    /// outbox was full or its disk refused writes). Sent live, not kept in
    /// the outbox: the next Hello carries the count anyway.
    Dropped { dropped_windows: u64 },
    /// Something happened in a deployment the controller ordered with
    /// `ControllerMsg::Deploy`. `seq` counts this deployment's events from
    /// 0, so a redelivered event is stored once.
    Deployment {
        deployment: String,
        seq: u64,
        /// Boxed: a rollback's report is large next to the other variants.
        event: Box<crate::deploy::DeployEvent>,
    },
}

/// One lifecycle record of a tracked tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcEvent {
    /// "exec", "exit" or "oom_kill".
    pub kind: String,
    pub pid: u32,
    pub tgid: u32,
    /// CLOCK_MONOTONIC nanoseconds, as windows.
    pub ts_ns: u64,
    pub comm: String,
    /// The executed file (exec only).
    pub filename: Option<String>,
    /// Exit status (exit only).
    pub exit_code: Option<i32>,
    /// Killing signal, 0 for a normal exit (exit only).
    pub signal: Option<i32>,
}

/// The kernel's record in wire form: the one conversion point, at the edge
/// where a record leaves the agent.
impl From<&crate::kernel::ProcRecord> for ProcEvent {
    fn from(ev: &crate::kernel::ProcRecord) -> Self {
        use crate::kernel::{EVENT_EXEC, EVENT_EXIT, EVENT_OOM_KILL, c_str};
        let cstr = |b: &[u8]| String::from_utf8_lossy(c_str(b)).into_owned();
        let kind = match ev.kind {
            EVENT_EXEC => "exec",
            EVENT_EXIT => "exit",
            EVENT_OOM_KILL => "oom_kill",
            _ => "unknown",
        };
        let exit = ev.kind == EVENT_EXIT;
        ProcEvent {
            kind: kind.to_string(),
            pid: ev.pid,
            tgid: ev.tgid,
            ts_ns: ev.ts_ns,
            comm: cstr(&ev.comm),
            filename: (ev.kind == EVENT_EXEC).then(|| cstr(&ev.filename)),
            exit_code: exit.then_some((ev.exit_code >> 8) & 0xff),
            signal: exit.then_some(ev.exit_code & 0x7f),
        }
    }
}

/// Controller to agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerMsg {
    Welcome {
        protocol: u32,
    },
    /// Run `argv` as a tracked tree and stream its windows as `deployment`.
    Exec {
        deployment: String,
        argv: Vec<String>,
        window_ms: u32,
    },
    /// Everything of `deployment` up to and including `through_seq` (or its
    /// `Finished`, when `finished`) is stored; the agent may forget it.
    Ack {
        deployment: String,
        through_seq: Option<u64>,
        finished: bool,
    },
    /// Carry out `manifest` as `deployment`: snapshot, install live and in
    /// the shadow, stream windows (`window_ms` each) and events, and wait
    /// for a `Decision`. With `dry_run` the agent never rolls back on its
    /// own either: the controller only records what it would have decided.
    Deploy {
        deployment: String,
        /// Boxed: a manifest is large next to the other variants.
        manifest: Box<crate::manifest::Manifest>,
        window_ms: u32,
        dry_run: bool,
    },
    /// The controller's decision about a running deployment.
    Decision {
        deployment: String,
        order: crate::deploy::Order,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: u32, max: u32 },
    #[error("connection ended inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("peer speaks protocol {got}, this side speaks {want}")]
    Version { got: u32, want: u32 },
}

/// One frame: little-endian u32 length, then the postcard bytes.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(msg).expect("wire messages always serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Check a frame's length prefix before reading its body.
pub fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix);
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(len as usize)
}

/// Decode a frame body. Trailing bytes are an error: a frame holds exactly
/// one message.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Decode every complete frame at the front of `buf`, returning the
/// messages and how many bytes they used. A partial frame at the end is
/// left for later; `Truncated` is for the caller to raise at end of input.
pub fn decode_stream<T: for<'de> Deserialize<'de>>(
    buf: &[u8],
) -> Result<(Vec<T>, usize), FrameError> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 4 {
        let len = check_len(
            buf[at..at + 4]
                .try_into()
                .expect("a 4-byte slice is a [u8; 4]"),
        )?;
        if buf.len() - at - 4 < len {
            break;
        }
        out.push(decode(&buf[at + 4..at + 4 + len])?);
        at += 4 + len;
    }
    Ok((out, at))
}

/// The version check every controller does on the first frame.
pub fn check_hello(msg: &AgentMsg) -> Result<(), FrameError> {
    match msg {
        AgentMsg::Hello { protocol, .. } if *protocol == PROTOCOL_VERSION => Ok(()),
        AgentMsg::Hello { protocol, .. } => Err(FrameError::Version {
            got: *protocol,
            want: PROTOCOL_VERSION,
        }),
        _ => Err(FrameError::Decode(
            "the first frame of a connection must be Hello".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Stream;

    fn hello() -> AgentMsg {
        AgentMsg::Hello {
            protocol: PROTOCOL_VERSION,
            facts: HostFacts {
                kernel: "6.18".into(),
                os: "Debian 12".into(),
                agent_version: "0.1.0".into(),
            },
            dropped_windows: 0,
        }
    }

    #[test]
    fn round_trips_and_streams() {
        let mut w = Window::new(Stream::Live, 7, 1, 2);
        w.features[0] = 16_777_217.0; // not representable in f32
        let msgs = vec![
            hello(),
            AgentMsg::Windows {
                deployment: "d1".into(),
                windows: vec![w],
            },
            AgentMsg::Finished {
                deployment: "d1".into(),
                exit_code: 3,
                windows: 1,
                lost_events: 0,
            },
        ];
        let mut buf: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let partial = encode(&hello());
        buf.extend_from_slice(&partial[..5]);
        let (got, used) = decode_stream::<AgentMsg>(&buf).unwrap();
        assert_eq!(got, msgs);
        assert_eq!(used, buf.len() - 5, "the partial frame is left");
    }

    #[test]
    fn refuses_bad_frames() {
        assert_eq!(
            check_len((MAX_FRAME_BYTES + 1).to_le_bytes()),
            Err(FrameError::TooLarge {
                len: MAX_FRAME_BYTES + 1,
                max: MAX_FRAME_BYTES
            })
        );
        assert!(matches!(
            decode::<AgentMsg>(&[0xff, 0xff, 0xff]),
            Err(FrameError::Decode(_))
        ));
        let mut body = encode(&hello())[4..].to_vec();
        body.push(0);
        assert!(
            matches!(decode::<AgentMsg>(&body), Err(FrameError::Decode(m)) if m.contains("after"))
        );
        let old = AgentMsg::Hello {
            protocol: 99,
            facts: HostFacts {
                kernel: String::new(),
                os: String::new(),
                agent_version: String::new(),
            },
            dropped_windows: 0,
        };
        assert_eq!(
            check_hello(&old),
            Err(FrameError::Version {
                got: 99,
                want: PROTOCOL_VERSION
            })
        );
        assert!(check_hello(&hello()).is_ok());
    }

    /// A bounded, seeded fuzz of the decoder: random bytes and mutated
    /// valid frames must give a message or an error, never a panic. (The
    /// coverage-guided target is fuzz/fuzz_targets/frame.rs.)
    #[test]
    fn decoder_never_panics_on_mutations() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = encode(&AgentMsg::Windows {
            deployment: "d".into(),
            windows: vec![Window::new(Stream::Shadow, 1, 2, 3)],
        });
        for _ in 0..20_000 {
            let mut buf = valid.clone();
            for _ in 0..(rnd() % 8) {
                let i = (rnd() as usize) % buf.len();
                buf[i] = rnd() as u8;
            }
            buf.truncate((rnd() as usize) % (buf.len() + 1));
            let _ = decode_stream::<AgentMsg>(&buf);
            let _ = decode_stream::<ControllerMsg>(&buf);
        }
    }
}
