//! A small Chrome DevTools Protocol client for the dashboard's browser
//! test: Debian's `chromium` started headless, and its DevTools websocket
//! spoken over a plain TcpStream (RFC 6455 framing, client frames masked).
//! Hand-written because no CDP or websocket crate is in the offline
//! registry here; it needs only what the test calls: create a page,
//! navigate, evaluate, capture a screenshot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::eventually;

/// Debian's binary, or a loud skip (a failure under CI=true).
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "{test}: chromium is missing, and under CI a skip is a failure (cargo xtask setup installs it)"
        );
        eprintln!("\n*** SKIPPED {test}: needs chromium (apt-get install chromium) ***\n");
    }
    found
}

/// A headless Chromium, killed (and its profile removed) on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: TcpStream,
    next: u64,
}

impl Browser {
    pub fn start(binary: &Path, profile: PathBuf) -> Browser {
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--window-size=1500,1100",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes "PORT\n/devtools/browser/ID" once it listens.
        let file = profile.join("DevToolsActivePort");
        let ready = eventually(Duration::from_mins(1), || {
            std::fs::read_to_string(&file).is_ok_and(|s| s.lines().count() >= 2)
        });
        assert!(ready, "chromium never wrote {}", file.display());
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines = text.lines();
        let port: u16 = lines.next().unwrap().trim().parse().unwrap();
        let path = lines.next().unwrap().trim().to_string();
        let ws = handshake(port, &path);
        Browser {
            child,
            profile,
            ws,
            next: 0,
        }
    }

    /// A new page at `url`: the session id later calls name.
    pub fn page(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", &json!({ "url": url }));
        let id = target["targetId"].as_str().unwrap().to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            &json!({ "targetId": id, "flatten": true }),
        );
        attached["sessionId"].as_str().unwrap().to_string()
    }

    pub fn navigate(&mut self, session: &str, url: &str) {
        self.call(Some(session), "Page.navigate", &json!({ "url": url }));
    }

    /// The value of a JavaScript expression (awaited when a promise).
    pub fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            &json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// A PNG of the page as it is.
    pub fn screenshot(&mut self, session: &str) -> Vec<u8> {
        let r = self.call(
            Some(session),
            "Page.captureScreenshot",
            &json!({ "format": "png", "captureBeyondViewport": true }),
        );
        base64(r["data"].as_str().unwrap())
    }

    pub fn call(&mut self, session: Option<&str>, method: &str, params: &Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        send(&mut self.ws, msg.to_string().as_bytes());
        loop {
            let v: Value = serde_json::from_slice(&receive(&mut self.ws)).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn handshake(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_mins(1))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: YmFja3N0b3AtZGFzaGJvYXJk\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.contains(" 101 "), "websocket refused: {status}");
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l == "\r\n" || l.is_empty() {
            break;
        }
    }
    s
}

fn send(s: &mut TcpStream, payload: &[u8]) {
    let mut frame = vec![0x81u8];
    let n = payload.len();
    if n < 126 {
        frame.push(0x80 | u8::try_from(n).unwrap());
    } else if let Ok(n16) = u16::try_from(n) {
        frame.push(0x80 | 0x7e);
        frame.extend_from_slice(&n16.to_be_bytes());
    } else {
        frame.push(0x80 | 0x7f);
        frame.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let mask = [0x5a, 0x13, 0xc7, 0x88];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
}

/// One whole message (continuation frames joined); control frames skipped.
fn receive(s: &mut TcpStream) -> Vec<u8> {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).unwrap();
        let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
        let mut n = u64::from(head[1] & 0x7f);
        if n == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            n = u64::from(u16::from_be_bytes(b));
        } else if n == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            n = u64::from_be_bytes(b);
        }
        let mut payload = vec![0u8; usize::try_from(n).unwrap()];
        s.read_exact(&mut payload).unwrap();
        assert_ne!(opcode, 0x8, "chromium closed the DevTools connection");
        if opcode >= 0x8 {
            continue;
        }
        message.extend_from_slice(&payload);
        if fin {
            return message;
        }
    }
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c) << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..=take]);
    }
    out
}
