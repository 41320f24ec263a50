//! `backstop-workload`: workloads whose every syscall is known, so tests can
//! assert exact counts and benchmarks can time a loop without timing the
//! process around it.
//!
//! Loop timings go to stderr as `elapsed_ns=N`, then the process's CPU
//! time as `cpu_ns=N`; stdout stays empty.
#![allow(
    clippy::unwrap_used,
    reason = "a test workload: an unwrap that fails aborts the run the test then reports as failed"
)]

use std::ffi::CString;
use std::time::Instant;

fn usage() -> ! {
    eprintln!(
        "usage: backstop-workload missing N | stat N | forks N | fail-child CODE | signal-child SIG | tcp-send BYTES | connect-refused | spin MS | cpu MS | grow MIB | time -- CMD [ARGS...]"
    );
    std::process::exit(64)
}

fn num(arg: Option<&String>) -> u64 {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| usage())
}

#[expect(
    clippy::too_many_lines,
    reason = "one match arm per workload, each a few lines: the list is the documentation"
)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = || num(args.get(1));
    let start = Instant::now();
    let code = match args.first().map(String::as_str) {
        // N opens of a path that does not exist: N syscalls, N ENOENT.
        Some("missing") => {
            let path = CString::new("/nonexistent-backstop-workload/missing").unwrap();
            for _ in 0..n() {
                // SAFETY: valid NUL-terminated path.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
                assert!(fd < 0, "the missing path exists");
            }
            0
        }
        // N stat calls on "/": the syscall-heavy loop of the overhead bench.
        Some("stat") => {
            let path = CString::new("/").unwrap();
            // SAFETY: zeroed stat is a valid out-parameter.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            for _ in 0..n() {
                // SAFETY: valid path and out-pointer.
                unsafe { libc::stat(path.as_ptr(), &raw mut st) };
            }
            0
        }
        // N children that exit at once, each reaped before the next.
        Some("forks") => {
            for _ in 0..n() {
                wait_child(fork_then(|| 0));
            }
            0
        }
        Some("fail-child") => {
            let c = n() as i32;
            wait_child(fork_then(move || c));
            0
        }
        Some("signal-child") => {
            let sig = n() as i32;
            wait_child(fork_then(move || {
                // SAFETY: signalling ourselves.
                unsafe { libc::kill(libc::getpid(), sig) };
                0
            }));
            0
        }
        // A TCP connection over loopback to ourselves, N bytes sent and
        // received: one connect, one accept, one reader thread.
        Some("tcp-send") => {
            use std::io::{Read, Write};
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().unwrap();
            let n = n() as usize;
            let reader = std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().expect("accept");
                let mut got = 0usize;
                let mut buf = vec![0u8; 65536];
                while got < n {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => got += k,
                    }
                }
                got
            });
            let mut client = std::net::TcpStream::connect(addr).expect("connect");
            client.write_all(&vec![7u8; n]).expect("send");
            let got = reader.join().unwrap();
            assert_eq!(got, n, "received {got} of {n} bytes");
            0
        }
        // One connect to a loopback port nobody listens on.
        Some("connect-refused") => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let err =
                std::net::TcpStream::connect(("127.0.0.1", port)).expect_err("the port was closed");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
            0
        }
        Some("spin") => {
            let until = std::time::Duration::from_millis(n());
            let mut x = 0u64;
            while start.elapsed() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            0
        }
        // Busy until this process has had N ms of CPU, however loaded the
        // host is: a known on-CPU time for the scheduler counters (a
        // wall-clock spin gets less CPU on a busy machine).
        Some("cpu") => {
            let until = n() * 1_000_000;
            let mut x = 0u64;
            while cpu_ns() < until {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            0
        }
        // N MiB of anonymous memory, one MiB touched every 20 ms and kept:
        // a leak's shape.
        Some("grow") => {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            for i in 0..n() {
                kept.push(vec![i as u8 | 1; 1 << 20]);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::hint::black_box(&kept);
            0
        }
        Some("time") => {
            let cmd = args
                .get(2..)
                .filter(|c| args.get(1).map(String::as_str) == Some("--") && !c.is_empty());
            let cmd = cmd.unwrap_or_else(|| usage());
            let status = std::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .status()
                .unwrap_or_else(|e| {
                    eprintln!("backstop-workload: starting {}: {e}", cmd[0]);
                    std::process::exit(127)
                });
            eprintln!("elapsed_ns={}", start.elapsed().as_nanos());
            std::process::exit(status.code().unwrap_or(128))
        }
        _ => usage(),
    };
    eprintln!("elapsed_ns={}", start.elapsed().as_nanos());
    // The kernel's own count of this process's CPU time, for tests that
    // check the probes' on-CPU time against it.
    eprintln!("cpu_ns={}", cpu_ns());
    std::process::exit(code)
}

/// fork(); the child runs `f` and `_exit`s with its result.
fn fork_then(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: single-threaded program; the child only calls async-signal-safe
    // functions before _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!(
            "backstop-workload: fork: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(71);
    }
    if pid == 0 {
        let code = f();
        // SAFETY: leaving the child without running atexit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

fn wait_child(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
}

/// This process's CPU time (all threads), in nanoseconds.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
