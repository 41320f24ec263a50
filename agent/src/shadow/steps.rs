//! The step runner: the init script a shadow runs (CMD, then each test,
//! each step's output and exit code written to the io directory), and
//! reading those results back without trusting the files the shadow made.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::StepResult;
use super::container;

/// Last bytes of a step's output kept in the report.
const TAIL_BYTES: usize = 4096;

/// `arg` as one single-quoted POSIX shell word, whatever its bytes: the
/// shadow's step runner and the live install's runner both build scripts
/// from argv this way.
pub(crate) fn sh_quote(arg: &[u8]) -> Vec<u8> {
    let mut out = b"'".to_vec();
    for &b in arg {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// The init of a shadow: runs each step with its output and exit code
/// (and start/end in ns) written to the io directory.
pub(super) fn runner_script(cmd: &[OsString], tests: &[String]) -> Vec<u8> {
    let mut s = format!(
        "#!/bin/sh\n# backstop shadow step runner\nIO={io}\nstep() {{\n  n=$1; shift\n  s=$(date +%s%N)\n  \"$@\" </dev/null >\"$IO/$n.out\" 2>&1\n  rc=$?\n  e=$(date +%s%N)\n  echo \"$rc $s $e\" >\"$IO/$n.rc\"\n}}\ncd /\nstep 0",
        io = container::IO_MOUNT
    )
    .into_bytes();
    for a in cmd {
        s.push(b' ');
        s.extend(sh_quote(a.as_bytes()));
    }
    s.push(b'\n');
    for (i, t) in tests.iter().enumerate() {
        s.extend(format!("step {} /bin/sh -c ", i + 1).as_bytes());
        s.extend(sh_quote(t.as_bytes()));
        s.push(b'\n');
    }
    s
}

/// Read at most the last `max` bytes of `path`, a file the shadow could
/// have replaced: never through a symlink (O_NOFOLLOW: `0.out ->
/// /etc/shadow` must not leak the host's file), never blocking (O_NONBLOCK:
/// a fifo), and only from a regular file (fstat: not `/dev/zero`, not a
/// fifo). The size comes from fstat and the bytes from pread, so a file
/// that grows while read costs no more than `max`.
fn read_tail(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let start = m.len().saturating_sub(max as u64);
    let mut buf = vec![0u8; (m.len() - start) as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], start + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The longest `N.rc` line the runner writes ("rc start_ns end_ns").
const RC_BYTES: usize = 128;

pub(super) fn read_step(io: &Path, n: usize, command: String) -> StepResult {
    let rc = read_tail(&io.join(format!("{n}.rc")), RC_BYTES)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let (exit_code, duration_ms) = match rc.as_deref().map(|s| {
        s.split_whitespace()
            .map(|x| x.parse::<i64>().ok())
            .collect::<Vec<_>>()
    }) {
        Some(v) if v.len() == 3 => (
            v[0].map(|c| c as i32),
            match (v[1], v[2]) {
                (Some(s), Some(e)) => Some((e - s) as f64 / 1e6),
                _ => None,
            },
        ),
        _ => (None, None),
    };
    let out = io.join(format!("{n}.out"));
    let output_tail = match read_tail(&out, TAIL_BYTES) {
        Ok(tail) => String::from_utf8_lossy(&tail).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            tracing::warn!("shadow step {n}: {} not read: {e}", out.display());
            format!("[backstop: {n}.out not read: {e}]")
        }
    };
    StepResult {
        command,
        exit_code,
        duration_ms,
        output_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_quotes_arguments() {
        let s = runner_script(
            &["echo".into(), "it's $HOME".into()],
            &["test -x /bin/sh".into()],
        );
        let s = String::from_utf8(s).unwrap();
        assert!(s.contains("step 0 'echo' 'it'\\''s $HOME'\n"), "{s}");
        assert!(s.contains("step 1 /bin/sh -c 'test -x /bin/sh'\n"), "{s}");
    }

    #[test]
    fn read_tail_refuses_links_devices_and_fifos_and_keeps_the_tail() {
        let d = std::env::temp_dir().join(format!("backstop-read-tail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.join("big"), &big).unwrap();
        assert_eq!(
            read_tail(&d.join("big"), 4096).unwrap(),
            big[big.len() - 4096..]
        );
        assert_eq!(read_tail(&d.join("big"), 1 << 20).unwrap(), big);
        std::os::unix::fs::symlink(d.join("big"), d.join("link")).unwrap();
        let e = read_tail(&d.join("link"), 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        let e = read_tail(Path::new("/dev/zero"), 4096).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        let fifo = std::ffi::CString::new(d.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        // A blocking open of a fifo nobody writes would never return.
        let e = read_tail(&d.join("fifo"), 4096).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
