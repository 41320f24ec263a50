//! The live install: the manifest's steps, in order, on the host itself.
//!
//! One step runner (the host's /bin/sh running a script written here) is
//! the root of the tracked tree, so the probes see every step as one
//! stream `live` with one window sequence and one change log. It is placed
//! in the deployment's own cgroup while stopped before its exec, so
//! nothing of the install runs outside that group. The runner says
//! `start N` and `end N RC` on a pipe; the agent times each step from
//! those lines, and a step over its timeout gets the whole group killed.
//!
//! With a target root other than "/", each step runs chrooted into it
//! (chroot(1) from the host). chroot and not a container: the live install
//! IS the host's change (its files, its services, its network), so it must
//! not be fenced off from them; the chroot only makes the root the install's
//! "/" (a test's Debian rootfs, a host's mounted image). It is not a
//! security boundary, and nothing here treats it as one.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backstop_common::window::Stream;
use tokio::io::AsyncBufReadExt;

use super::cgroup::LiveCgroup;
use super::{Cmd, DeployError, EventTx, StepResult, StreamSink};
use crate::track::{SharedProbes, Summary, TrackOptions, track_with};
use crate::tree::{self, Exit, Stdout};

/// The PATH steps, hooks and command probes run with: the install's own
/// directories, not whatever the agent was started with.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Last bytes of a step's output kept in its result.
const TAIL_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct LivePlan {
    pub root: PathBuf,
    pub steps: Vec<Cmd>,
    /// Where the runner script and the steps' outputs go (private).
    pub io: PathBuf,
    /// The change log the probes write for the restore.
    pub changes: PathBuf,
    pub window: Duration,
    /// Whose filesystem `host_disk_free_bytes` reports (`disk.rs`).
    pub disk: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LiveOutcome {
    pub steps: Vec<StepResult>,
    pub summary: Summary,
    /// The step whose timeout ran out.
    pub timed_out: Option<usize>,
}

impl LiveOutcome {
    /// The first step that did not exit 0 (killed, timed out or failed).
    pub fn failed_step(&self) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.exit_code != Some(0))
    }
}

/// The words that run `argv` in `root` with `env`: `env K=V... chroot
/// ROOT argv...` (no chroot when the root is "/").
fn wrap(argv: &[String], root: &Path, env: &[(String, String)]) -> Vec<OsString> {
    let mut w: Vec<OsString> = vec!["env".into(), format!("PATH={PATH}").into()];
    w.extend(env.iter().map(|(k, v)| OsString::from(format!("{k}={v}"))));
    if root != Path::new("/") {
        w.push("chroot".into());
        w.push(root.as_os_str().to_owned());
    }
    w.extend(argv.iter().map(OsString::from));
    w
}

/// A command for a hook or a command probe, run like a step.
pub fn std_command(
    argv: &[String],
    root: &Path,
    env: &[(String, String)],
) -> std::process::Command {
    let w = wrap(argv, root, env);
    let mut c = std::process::Command::new(&w[0]);
    c.args(&w[1..]).current_dir("/");
    c
}

/// The runner: each step's output to `IO/N.out`, `start N` and `end N RC`
/// on stdout (the agent's pipe), and a stop at the first step that fails.
pub fn runner_script(io: &Path, root: &Path, steps: &[Cmd]) -> Vec<u8> {
    let mut s = b"#!/bin/sh\n# backstop live step runner\nIO=".to_vec();
    s.extend(crate::shadow::sh_quote(io.as_os_str().as_bytes()));
    s.extend_from_slice(
        b"\nstep() {\n  n=$1; shift\n  echo \"start $n\"\n  \"$@\" </dev/null >\"$IO/$n.out\" 2>&1\n  rc=$?\n  echo \"end $n $rc\"\n  [ \"$rc\" -eq 0 ] || exit \"$rc\"\n}\ncd /\n",
    );
    for (i, step) in steps.iter().enumerate() {
        s.extend(format!("step {i}").as_bytes());
        for w in wrap(&step.argv, root, &step.env) {
            s.push(b' ');
            s.extend(crate::shadow::sh_quote(w.as_bytes()));
        }
        s.push(b'\n');
    }
    s
}

/// Run the steps as the tracked tree `live`, in `cgroup`.
pub async fn install(
    probes: &SharedProbes,
    plan: &LivePlan,
    cgroup: &LiveCgroup,
    tx: &EventTx,
) -> Result<LiveOutcome, DeployError> {
    let script = plan.io.join("run.sh");
    crate::datadir::private_dir(&plan.io)?;
    super::journal::write_private(&script, &runner_script(&plan.io, &plan.root, &plan.steps))?;
    // 0600 from the start: the change log keeps the mode of the file it
    // opens, and names every path the install touched.
    super::journal::write_private(&plan.changes, b"")?;
    let argv: Vec<OsString> = vec!["/bin/sh".into(), script.into_os_string()];
    let (pipe_tx, pipe_rx) = tokio::sync::oneshot::channel();
    let launch = |register: &mut dyn FnMut(u32) -> crate::Result<()>| {
        let mut t = tree::spawn_tracked(&argv, Stdout::Piped, |pid| {
            cgroup.add(pid).map_err(|e| crate::AgentError::Failed {
                context: format!("placing the live runner {pid} in its cgroup"),
                source: Box::new(e),
            })?;
            register(pid)
        })?;
        if let Exit::Child(c) = &mut t.exit {
            let _ = pipe_tx.send(c.stdout.take());
        }
        Ok(t)
    };
    let opts = TrackOptions {
        stream: Stream::Live,
        window: plan.window,
        scope: plan.disk.clone(),
        stdout: Stdout::Piped,
        kill_grace: Duration::from_secs(10),
        changes: Some(plan.changes.clone()),
        timeout: None,
    };
    let mut sink = StreamSink {
        tx: tx.clone(),
        stream: Stream::Live,
    };
    let tracked = track_with(probes, launch, &opts, None, &mut sink);
    let watched = watch_progress(pipe_rx, plan, cgroup, tx);
    let both = async { tokio::join!(tracked, watched) };
    let (summary, (steps, timed_out)) = super::memory::sampled(cgroup, plan.window, tx, both).await;
    Ok(LiveOutcome {
        steps,
        summary: summary?,
        timed_out,
    })
}

/// Follow the runner's progress lines: time each step, report it when it
/// ends (or when the runner dies under it), and kill the cgroup when one
/// runs past its timeout.
async fn watch_progress(
    pipe: tokio::sync::oneshot::Receiver<Option<tokio::process::ChildStdout>>,
    plan: &LivePlan,
    cgroup: &LiveCgroup,
    tx: &EventTx,
) -> (Vec<StepResult>, Option<usize>) {
    let mut results = Vec::new();
    let mut timed_out = None;
    let Ok(Some(out)) = pipe.await else {
        return (results, timed_out);
    };
    let mut lines = tokio::io::BufReader::new(out).lines();
    let mut running: Option<(usize, Instant)> = None;
    loop {
        let deadline = running.map(|(n, at)| at + plan.steps[n].timeout);
        let expired = async {
            match deadline {
                Some(d) if timed_out.is_none() => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await;
                }
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) => {
                    if let Some(r) = progress(&l, &mut running, plan, timed_out) {
                        let _ = tx.send(super::DeployEvent::Step { stream: Stream::Live, step: r.clone() });
                        results.push(r);
                    }
                }
                _ => break,
            },
            () = expired => {
                let n = running.map_or(0, |(n, _)| n);
                tracing::warn!(step = n, "live step over its timeout: killing the deployment's cgroup");
                timed_out = Some(n);
                let cg = cgroup.clone();
                let killed = tokio::task::spawn_blocking(move || cg.kill()).await;
                if let Ok(Err(e)) | Err(e) = killed.map_err(|e| DeployError::Io { context: "killing the live cgroup".into(), source: std::io::Error::other(e) }) {
                    tracing::error!("{e}");
                }
            }
        }
    }
    // The runner is gone: a step it started and never ended was killed.
    if let Some((n, at)) = running {
        let r = result(plan, n, None, at.elapsed(), timed_out == Some(n));
        let _ = tx.send(super::DeployEvent::Step {
            stream: Stream::Live,
            step: r.clone(),
        });
        results.push(r);
    }
    (results, timed_out)
}

/// One progress line; a finished step's result.
fn progress(
    line: &str,
    running: &mut Option<(usize, Instant)>,
    plan: &LivePlan,
    timed_out: Option<usize>,
) -> Option<StepResult> {
    let mut w = line.split_whitespace();
    let (what, n) = (w.next()?, w.next()?.parse::<usize>().ok()?);
    if n >= plan.steps.len() {
        return None;
    }
    match what {
        "start" => {
            *running = Some((n, Instant::now()));
            None
        }
        "end" => {
            let rc = w.next().and_then(|c| c.parse().ok());
            let at = running.take().map_or_else(Instant::now, |(_, at)| at);
            Some(result(plan, n, rc, at.elapsed(), timed_out == Some(n)))
        }
        _ => None,
    }
}

fn result(
    plan: &LivePlan,
    n: usize,
    exit_code: Option<i32>,
    took: Duration,
    timed_out: bool,
) -> StepResult {
    StepResult {
        index: n,
        name: plan.steps[n].name.clone(),
        exit_code,
        duration_ms: took.as_secs_f64() * 1e3,
        timed_out,
        output_tail: tail(&plan.io.join(format!("{n}.out"))),
    }
}

/// The last bytes of a step's output, read without following a link (the
/// install runs as root and could have replaced the file).
pub fn tail(path: &Path) -> String {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    let open = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let Ok(mut f) = open else {
        return String::new();
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return format!("[backstop: {} is not a regular file]", path.display());
    }
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(std::io::SeekFrom::Start(
        len.saturating_sub(TAIL_BYTES as u64),
    ));
    let mut buf = Vec::new();
    let _ = f.take(TAIL_BYTES as u64).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str]) -> Cmd {
        Cmd {
            name: "s".into(),
            argv: argv.iter().map(std::string::ToString::to_string).collect(),
            timeout: Duration::from_secs(1),
            env: vec![("DEBIAN_FRONTEND".into(), "noninteractive".into())],
        }
    }

    #[test]
    fn steps_are_quoted_chrooted_and_stop_at_the_first_failure() {
        let s = runner_script(
            Path::new("/data/io"),
            Path::new("/srv/root"),
            &[cmd(&["dpkg", "-i", "/tmp/it's.deb"])],
        );
        let s = String::from_utf8(s).unwrap();
        assert!(s.contains("IO='/data/io'"), "{s}");
        assert!(
            s.contains("step 0 'env' 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'DEBIAN_FRONTEND=noninteractive' 'chroot' '/srv/root' 'dpkg' '-i' '/tmp/it'\\''s.deb'\n"),
            "{s}"
        );
        assert!(s.contains("|| exit"), "{s}");
        let host = String::from_utf8(runner_script(
            Path::new("/io"),
            Path::new("/"),
            &[cmd(&["true"])],
        ))
        .unwrap();
        assert!(!host.contains("chroot"), "{host}");
    }

    #[test]
    fn progress_lines_time_steps_and_ignore_noise() {
        let plan = LivePlan {
            root: "/".into(),
            steps: vec![cmd(&["true"]), cmd(&["false"])],
            io: "/nonexistent".into(),
            changes: "/nonexistent".into(),
            window: Duration::from_secs(1),
            disk: "/".into(),
        };
        let mut running = None;
        assert!(progress("start 0", &mut running, &plan, None).is_none());
        assert_eq!(running.map(|(n, _)| n), Some(0));
        let r = progress("end 0 0", &mut running, &plan, None).unwrap();
        assert_eq!((r.index, r.exit_code, r.timed_out), (0, Some(0), false));
        assert!(progress("start 7", &mut running, &plan, None).is_none());
        assert!(running.is_none(), "a step number past the plan is noise");
        assert!(progress("garbage", &mut running, &plan, None).is_none());
        progress("start 1", &mut running, &plan, None);
        let r = progress("end 1 137", &mut running, &plan, Some(1)).unwrap();
        assert_eq!((r.exit_code, r.timed_out), (Some(137), true));
    }
}
